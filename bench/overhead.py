"""Gateway overhead: direct vs through Meterline, at concurrency 1 and 16.

Starts three processes on loopback - embedded AWS (moto server), a fake OpenAI upstream, and the
gateway - then drives a bounded load and prints, per transport (aiohttp, httpx) and concurrency:
p50/p99 latency direct and through the gateway, the added latency, gateway-process CPU per
request (from /proc, excluding moto and the upstream), and AWS calls per request split into
"sequential before the first upstream byte", "after the last upstream byte" and "background".

    python bench/overhead.py [--requests 400] [--stream] [--budgets] [--lambda-telemetry] [--pin]
        [--transports bare,aiohttp,http1,httpx] [--concurrency 1,16]

--pin puts the gateway alone on the first core and the rest on the others. Unpinned, on a 2-core
machine the embedded AWS (moto: several ms of CPU per store call, far more than the gateway's own)
runs between the gateway's steps on the same cores and evicts its caches, so every figure includes
the gateway's cache misses after each wake-up; pinned is closer to Lambda (store, provider and
client on other machines). Both are real measurements of this machine; say which one you quote.

--lambda-telemetry runs the gateway with the logging and metrics Lambda gives it (the JSON request line
with its EMF metrics on stdout, a pipe this script drains), which the default run leaves out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process: system time is mostly loopback TCP to the embedded
    store and the upstream, which a real deployment spends on the NIC path instead."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def load(url: str, key: str, total: int, concurrency: int, stream: bool) -> list[float]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 20}], "stream": stream}
    headers = {"authorization": f"Bearer {key}", "meterline-feature": "bench"}
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                async with client.stream("POST", url + "/chat/completions", json=body, headers=headers) as r:
                    async for _ in r.aiter_bytes():
                        pass
                    assert r.status_code == 200, r.status_code
                latencies.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def start_world(procs: list[subprocess.Popen], *, budgets: bool) -> tuple[Any, str, dict[str, str]]:
    """The embedded AWS and the fake upstream (appended to `procs`), a demo workspace whose key has
    an explicit rate limit (every key has one: one rate-window write per request either way) and,
    with `budgets`, 3 budgets: (settings, upstream base URL, demo workspace and key)."""
    from meterline.budgets.model import Budget, RateLimit
    from meterline.devenv import FAKE_CREDENTIALS, provision, seed_demo
    from meterline.store.budgets import BudgetStore
    from meterline.store.workspaces import ProviderEntry, WorkspaceStore
    from meterline.vault import Vault

    os.environ.update(FAKE_CREDENTIALS)
    moto_port, up_port = free_port(), free_port()
    procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench/aws_proc.py"), str(moto_port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench/upstream.py"), str(up_port)]))
    endpoint, upstream = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{up_port}/v1"
    wait_http(endpoint)
    wait_http(f"http://127.0.0.1:{up_port}/")
    settings = provision(endpoint, prefix="bench")
    demo = seed_demo(settings)
    WorkspaceStore(settings).update_settings("demo", default_provider="openai")
    WorkspaceStore(settings).put_provider("demo", ProviderEntry(
        "openai", "openai", upstream, Vault(settings).encrypt("sk-bench-key", "demo", "openai"), "openai"))
    store = BudgetStore(settings)
    store.put_limit("demo", RateLimit("key", demo["key_id"], rpm=10**6, tpm=10**9))
    if budgets:
        for budget in (Budget("workspace", "demo", monthly_micros=10**12),
                       Budget("member", "demo-user", monthly_micros=10**12, daily_micros=10**11),
                       Budget("feature", "bench", monthly_micros=10**12, throttle_at=95, throttle_rpm=10**6)):
            store.put_budget("demo", budget)
    return settings, upstream, demo


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--budgets", action="store_true",
                        help="3 budgets (workspace, member, feature) and a key rate limit active")
    parser.add_argument("--lambda-telemetry", action="store_true",
                        help="the gateway's logging and metrics as on Lambda: AWS_LAMBDA_FUNCTION_NAME set, "
                             "METERLINE_METRICS=1, stdout a pipe drained here (priming stays off, as in the default)")
    parser.add_argument("--transports", default="aiohttp,httpx",
                        help="upstream transports of the gateway, one row each; 'bare' adds the floor: a FastAPI + "
                             "aiohttp pass-through with no metering (bench/bare_proc.py)")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated concurrency levels, one row each")
    parser.add_argument("--pin", action="store_true",
                        help="the gateway alone on the first core, everything else (this load generator, the "
                             "embedded AWS, the upstream) on the others: as on Lambda, where the store, the provider "
                             "and the client are other machines, so their work does not evict the gateway's caches")
    parser.add_argument("--profile", metavar="FILE",
                        help="CPU-time profile of the gateway process during the concurrency-1 row, written as "
                             "collapsed stacks to FILE.<transport> (summarise with bench/profile_report.py)")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if args.pin:
        if len(cores) < 2:
            raise SystemExit("--pin needs at least 2 cores")
        # The bench (load generator), the embedded AWS and the upstream on the other cores (children
        # inherit this); the gateway alone on the first one, set below once it is started.
        os.sched_setaffinity(0, set(cores[1:]))

    procs: list[subprocess.Popen] = []
    try:
        settings, upstream, demo = start_world(procs, budgets=args.budgets)
        mode = ("stream" if args.stream else "non-stream") + (", 3 budgets + key rate limit" if args.budgets else "") \
            + (", Lambda telemetry (JSON request line + EMF on stdout)" if args.lambda_telemetry else "")
        print(f"Meterline overhead ({mode}, {args.requests} requests per row, 2-core machine, loopback)\n")
        print(f"{'transport':9} {'conc':>4} | {'direct p50':>10} {'p99':>7} | {'gateway p50':>11} {'p99':>7} | "
              f"{'added p50':>9} {'p99':>7} | {'store':>8} {'own':>8} | {'CPU usr+sys':>11} | "
              "AWS/req before  after  background"
              "   enforcement writes/req (concurrent: 1 round trip before, settles beside the ledger write), "
              "of which rate windows, budget pools, budget reservations alone, settlements; "
              "settlements through the ledger record (no write of their own)")
        floors: dict[int, float] = {}  # concurrency -> the bare pass-through's CPU per request
        for transport in args.transports.split(","):
            gw_port = free_port()
            stats_file = Path(tempfile.mkdtemp()) / "stats.json"
            env = {**os.environ, **settings.to_env(), "METERLINE_UPSTREAM_TRANSPORT": transport,
                   "BENCH_UPSTREAM": upstream}
            if args.lambda_telemetry:
                env.update(AWS_LAMBDA_FUNCTION_NAME="Meterline-DataPlaneGateway", METERLINE_METRICS="1",
                           POWERTOOLS_SERVICE_NAME="gateway", POWERTOOLS_METRICS_NAMESPACE="Meterline",
                           LOG_LEVEL="INFO", METERLINE_PRIME=os.environ.get("METERLINE_PRIME", "0"))
            profile_file = Path(f"{args.profile}.{transport}").resolve() if args.profile else None
            if profile_file:
                profile_file.unlink(missing_ok=True)
                env["BENCH_PROFILE"] = str(profile_file)
            # BENCH_GATEWAY: another gateway script (e.g. one wrapped in cProfile) with the same arguments.
            # "bare": not the gateway but the floor it is compared with (bench/bare_proc.py).
            script = os.environ.get("BENCH_GATEWAY", str(ROOT / "bench/gateway_proc.py"))
            if transport == "bare":
                script = str(ROOT / "bench/bare_proc.py")
            log_pipe = None
            if args.lambda_telemetry:  # the Lambda runtime's log capture: a pipe, read and dropped
                drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
                procs.append(drain)
                log_pipe = drain.stdin
            gw = subprocess.Popen([sys.executable, script, str(gw_port), str(stats_file)],
                                  env=env, stdout=log_pipe)
            procs.append(gw)
            if args.pin:
                os.sched_setaffinity(gw.pid, {cores[0]})
            if log_pipe is not None:
                log_pipe.close()  # the gateway holds the pipe's only write end now
            wait_http(f"http://127.0.0.1:{gw_port}/healthz")
            base = f"http://127.0.0.1:{gw_port}/v1"
            asyncio.run(load(base, demo["api_key"], 50, 4, args.stream))  # warm-up: caches, pools
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                direct = asyncio.run(load(upstream, "x", args.requests, concurrency, args.stream))
                gw.send_signal(signal.SIGUSR1)
                time.sleep(0.3)
                before_stats = json.loads(stats_file.read_text())
                profiling = bool(args.profile) and concurrency == 1
                if profiling:
                    gw.send_signal(signal.SIGUSR2)  # start the sampler (bench/cpuprof.py)
                    time.sleep(0.3)
                user0, sys0 = cpu_split(gw.pid)
                through = asyncio.run(load(base, demo["api_key"], args.requests, concurrency, args.stream))
                user1, sys1 = cpu_split(gw.pid)
                if profiling:
                    gw.send_signal(signal.SIGUSR2)  # stop it and write the profile
                gw.send_signal(signal.SIGUSR1)
                time.sleep(0.3)
                after_stats = json.loads(stats_file.read_text())
                delta = {k: after_stats[k] - before_stats[k] for k in after_stats}
                n = args.requests
                before = (delta["key_misses"] + delta["workspace_misses"] + delta["kms_decrypts"]
                          + delta["enforcement_misses"]) / n
                # Budget reservations and rate windows: concurrent single-item writes (one round trip).
                enforce = (delta["dynamo_calls"] - delta["ledger_writes"]) / n
                windows = delta["window_writes"] / n  # of which rate windows (blocks under steady traffic)
                pooling = delta["pool_writes"] / n  # budget pool claims and releases (budgets/pool.py)
                alone = delta["alone_writes"] / n  # budget reservations a request made on its own
                settles = delta["settle_writes"] / n  # budget settlement writes (coalesced ones count once)
                ledgered = delta["ledger_settlements"] / n  # pooled settlements carried by the ledger record
                background = (delta["key_refreshes"] + delta["workspace_refreshes"]) / n
                after = delta["ledger_writes"] / n
                d50, d99 = statistics.median(direct), pct(direct, 0.99)
                g50, g99 = statistics.median(through), pct(through, 0.99)
                store_ms = delta["dynamo_busy_s"] / n * 1000
                # Means, like store_ms: the gateway's own added latency, apart from the store's.
                own = (statistics.mean(through) - statistics.mean(direct)) - store_ms if concurrency == 1 \
                    else float("nan")
                cpu = (user1 - user0 + sys1 - sys0) / n * 1000
                # The same machine's floor in the same run: this machine's speed swings run to run (other
                # tenants of its host), a ratio to the bare pass-through much less.
                if transport == "bare":
                    floors[concurrency] = cpu
                ratio = f" {cpu / floors[concurrency]:4.1f}x bare" if transport != "bare" and floors.get(concurrency) \
                    else ""
                print(f"{transport:9} {concurrency:>4} | {d50:8.2f}ms {d99:5.2f}ms | {g50:9.2f}ms {g99:5.2f}ms | "
                      f"{g50 - d50:7.2f}ms {g99 - d99:5.2f}ms | {store_ms:6.2f}ms {own:6.2f}ms | "
                      f"{(user1 - user0) / n * 1000:5.2f}+{(sys1 - sys0) / n * 1000:4.2f}ms{ratio} | "
                      f"        {before:6.3f} {after:6.3f} {background:8.3f}   {enforce:5.2f} {windows:5.2f} "
                      f"{pooling:5.2f} {alone:5.2f} {settles:5.2f}   {ledgered:5.2f}")
            gw.terminate()
            gw.wait(timeout=10)
            if profile_file:
                if not profile_file.exists():
                    raise SystemExit(f"the gateway wrote no profile to {profile_file}")
                print(f"  profile: {profile_file} (python bench/profile_report.py {profile_file}); the sampler's own "
                      "CPU is in that row's figures")
        print("\nstore = wall time per request with a store call in flight (the embedded AWS answering); own = "
              "mean added latency minus store (concurrency 1 only): the gateway's own latency. CPU usr+sys = gateway "
              "process CPU per request; sys is mostly loopback TCP to the embedded store and the upstream.")
        print("\nAWS calls/request: 'before' = store/KMS round trips a request waited for before its first upstream "
              "byte (0 when warm); 'after' = the ledger write after the last upstream byte; 'background' = "
              "refresh-ahead cache reloads off the request path. Rollups cost no request-path call (ledger stream). "
              "Enforcement writes: budget reservations + rate windows sent concurrently before the upstream "
              "(one round trip), settlements sent concurrently with the ledger write after it. Rate windows: "
              "under steady traffic a process claims a block of a subject's minute window in one write and "
              "admits the next requests from it (budgets/quota.py), so fewer than one per request. Budgets: likewise "
              "a process reserves a pool of several requests' worst cases in one write and carves the next "
              "requests' reservations from it (budgets/pool.py); a request carved from a pool settles through "
              "its ledger record, which names the pool and its cost (no write of its own): the pool's release "
              "adds what its requests cost. Settlements: the writes of the settlements that cannot (a request "
              "reserved alone, a side call, a pool about to expire, a record whose write failed).")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
