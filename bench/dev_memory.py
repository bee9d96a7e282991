"""RSS of `meterline dev` over many requests: prints the curve (requests, RSS MB, requests/s).

    python bench/dev_memory.py [--requests 10000] [--concurrency 8] [--every 1000]

Starts `meterline dev --fresh --quiet` on a free loopback port with a throwaway state dir, sends
chat completions to the simulator (attributed to a rotating feature and session, every 10th
streamed; the key's rate limit and the agent-loop breaker lifted first), samples the server's
resident memory from /proc, times the CLI views on the full ledger (requests, requests show, spend,
savings, waste, audit --decisions), then stops it with SIGINT and reports how long the exit took,
restarts it on the same state (not --fresh) and checks the demo key and the ledger survived.
Bounded in requests and in time (--max-seconds). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(state_dir: str, port: int, *args: str) -> str:
    env = {**os.environ, "METERLINE_STATE_DIR": state_dir, "METERLINE_DEV_PORT": str(port)}
    return subprocess.run([sys.executable, "-m", "meterline.cli.main", *args], env=env, check=True, timeout=300,
                          stdout=subprocess.PIPE, text=True).stdout


def views(state_dir: str, port: int) -> None:
    """Each CLI view on the whole ledger, timed (a process start included), with the lines it printed."""
    import json

    newest = json.loads(cli(state_dir, port, "requests", "--last", "1", "--json"))
    request_id = (newest[0] if isinstance(newest, list) else newest["requests"][0])["request_id"]
    for args in (("requests", "--last", "20"), ("requests", "--last", "500", "--feature", "f3"),
                 ("requests", "show", request_id), ("spend", "--by", "feature"), ("spend", "--by", "session"),
                 ("savings",), ("waste",), ("audit", "--decisions")):
        began = time.monotonic()
        try:
            outcome = f"{cli(state_dir, port, *args).count(chr(10)):>5} lines"
        except subprocess.SubprocessError as exc:
            outcome = f"FAILED ({type(exc).__name__})"
        print(f"  meterline {' '.join(args)[:40]:<40} {time.monotonic() - began:6.2f} s  {outcome}", flush=True)


def start(port: int, state_dir: str, fresh: bool = True) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "METERLINE_STATE_DIR": state_dir}
    proc = subprocess.Popen([sys.executable, "-m", "meterline.cli.main", "dev", "--port", str(port), "--quiet",
                             *(["--fresh"] if fresh else [])],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("api_key: "):
            return proc, line.split(": ", 1)[1].strip()
    proc.kill()
    raise SystemExit("meterline dev did not print a key")


async def drive(base: str, key: str, total: int, concurrency: int, every: int, pid: int, max_s: float) -> None:
    sent = 0
    started = time.monotonic()
    statuses: dict[object, int] = {}
    print(f"{'requests':>9} {'rss_mb':>8} {'req/s':>7}", flush=True)
    print(f"{0:>9} {rss_mb(pid):>8.1f} {'-':>7}", flush=True)
    async with httpx.AsyncClient(base_url=base, timeout=60,
                                 headers={"authorization": f"Bearer {key}"}) as client:
        async def one(i: int) -> None:
            body = {"model": "sim/gpt-4o-mini", "messages": [{"role": "user", "content": f"question {i}"}],
                    "stream": i % 10 == 0}
            headers = {"meterline-feature": f"f{i % 7}", "meterline-session-id": f"s{i % 100}"}
            try:
                response = await client.post("/chat/completions", json=body, headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1

        while sent < total and time.monotonic() - started < max_s:
            batch = min(every, total - sent)
            window_start = time.monotonic()
            for offset in range(0, batch, concurrency):
                await asyncio.gather(*(one(sent + offset + j) for j in range(min(concurrency, batch - offset))))
            sent += batch
            rate = batch / (time.monotonic() - window_start)
            print(f"{sent:>9} {rss_mb(pid):>8.1f} {rate:>7.1f}", flush=True)
    print(f"responses: {dict(sorted(statuses.items(), key=str))}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--every", type=int, default=1_000, help="sample RSS every N requests")
    parser.add_argument("--max-seconds", type=float, default=3_600)
    parser.add_argument("--no-views", dest="views", action="store_false", help="skip timing the CLI views")
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="skip the restart on the saved state")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as state_dir:
        proc, key = start(port, state_dir)
        try:
            # The demo key's 100 RPM floor would turn most of the load into 429s: lift it for the bench.
            cli(state_dir, port, "limits", "set", "--key", "*", "--rpm", "10000000")
            # The numbers in the prompts fold to one fingerprint per session: lift the agent-loop breaker.
            cli(state_dir, port, "enforcement", "set", "--loop-throttle-after", "1000000", "--loop-reject-after",
                "1000000")
            time.sleep(1)
            asyncio.run(drive(f"http://127.0.0.1:{port}/v1", key, args.requests, args.concurrency, args.every,
                              proc.pid, args.max_seconds))
            if args.views:
                print("CLI views on the full ledger (RSS after: see below):", flush=True)
                views(state_dir, port)
                print(f"RSS after the views: {rss_mb(proc.pid):.1f} MB", flush=True)
        finally:
            stop(proc)
        if args.restart:
            began = time.monotonic()
            again, same_key = start(port, state_dir, fresh=False)
            try:
                print(f"restart on the saved state: key printed after {time.monotonic() - began:.1f} s, "
                      f"same demo key: {same_key == key}, RSS {rss_mb(again.pid):.1f} MB", flush=True)
                newest = cli(state_dir, port, "requests", "--last", "3")
                print(f"  `meterline requests --last 3` after the restart: {newest.count(chr(10))} lines", flush=True)
            finally:
                stop(again)


def stop(proc: subprocess.Popen[str]) -> None:
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
        print(f"Ctrl-C exit: {time.monotonic() - began:.2f} s (exit code {proc.returncode})", flush=True)
    except subprocess.TimeoutExpired:
        proc.kill()
        print("Ctrl-C exit: did not exit within 30 s (killed)", flush=True)


if __name__ == "__main__":
    main()
