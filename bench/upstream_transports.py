"""CPU per provider call of each upstream transport, on its own (no gateway around it).

Starts the benchmark's fake OpenAI upstream (bench/upstream.py, its own process) and sends chat
completions through `http_upstream(transport=...)` from this process, one at a time on a warm
keep-alive connection, reading each body whole (non-stream) or chunk by chunk (stream). Transports
take turns in rounds, so a load change on the machine hits them alike; the median round is printed.
CPU is this process's user+sys time (time.process_time): the client's work, not the server's.

    python bench/upstream_transports.py [--calls 2000] [--rounds 5] [--transports aiohttp,http1,httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers"), str(ROOT)]

from bench.overhead import free_port, wait_http  # noqa: E402
from meterline.providers.base import UpstreamRequest  # noqa: E402
from meterline.providers.http import http_upstream  # noqa: E402

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello. " * 40}], "max_tokens": 16}


async def calls(transport: str, url: str, count: int, stream: bool) -> float:
    """CPU seconds per call, after a warm-up that opens the connection."""
    upstream = http_upstream(connect_timeout=10, read_timeout=60, transport=transport, allow_hosts=("127.0.0.1",))
    body = json.dumps({**BODY, "stream": stream}).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench",
               "accept": "text/event-stream" if stream else "application/json"}

    async def one() -> None:
        response = await upstream.send(UpstreamRequest("POST", url, dict(headers), body, stream))
        try:
            async for _ in response.aiter_bytes():
                pass
        finally:
            await response.aclose()

    try:
        for _ in range(20):
            await one()
        started = time.process_time()
        for _ in range(count):
            await one()
        return (time.process_time() - started) / count
    finally:
        await upstream.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--transports", default="aiohttp,http1,httpx")
    args = parser.parse_args()
    transports = args.transports.split(",")
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "bench/upstream.py"), str(port)])
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        results: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.rounds):
            for stream in (False, True):
                for transport in transports:
                    cpu = asyncio.run(calls(transport, url, args.calls, stream))
                    results.setdefault((transport, stream), []).append(cpu)
        load = os.getloadavg()
        print(f"Upstream transport CPU per call (client process only; median of {args.rounds} rounds of "
              f"{args.calls} sequential calls; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n")
        print(f"{'transport':14} | {'non-stream':>10} | {'stream (13 events)':>18}")
        for transport in transports:
            plain = statistics.median(results[(transport, False)]) * 1e6
            streamed = statistics.median(results[(transport, True)]) * 1e6
            print(f"{transport:14} | {plain:8.0f}us | {streamed:16.0f}us")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
