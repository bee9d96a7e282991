"""The gateway's own work per warm request, apart from uvicorn, the loopback client and the machine.

Drives the data plane's ASGI app directly in this process (no uvicorn, no HTTP client): each request
is a scope, a receive that hands over the body and a send that keeps the status, so what is measured
is the gateway's code path itself. The embedded AWS and the fake upstream are real processes, as in
bench/overhead.py, reached over loopback by the gateway's own clients.

Two figures:
- CPU per request (user + system, `getrusage`), min of 3 rounds: on a 2-core machine it includes the
  cache misses the embedded AWS's work causes between the gateway's steps;
- with --instructions, instructions per request counted by valgrind (callgrind, instrumentation on
  only around the measured requests): deterministic to ~0.1 % run to run, independent of load, so two
  code trees compare exactly. Needs valgrind (`apt install valgrind`); ~30 s.

    python bench/inprocess.py [--budgets] [--stream] [--transport http1] [--requests 1000]
    python bench/inprocess.py --instructions [--budgets] [--stream] [--requests 100]
    python bench/inprocess.py --sample FILE | --cprofile FILE [--budgets] [--requests 10000]

--sample writes a CPU-time sampled profile (bench/cpuprof.py; work in tasks the request spawns shows
under its own root, not under the request), --cprofile a cProfile (call counts; its times are wall
times with the profiler's overhead, so only the counts and relative Python costs are trustworthy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from overhead import start_world  # noqa: E402


def under_callgrind(argv: list[str]) -> None:
    """Re-run this script under callgrind with instrumentation off until the measured loop."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind")
    out = Path(tempfile.mkdtemp()) / "callgrind.out"
    args = [a for a in argv if a != "--instructions"]
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                           sys.executable, __file__, *args, "--callgrind-child"], capture_output=True, text=True)
    collected = [line for line in proc.stderr.splitlines() if "Collected :" in line]
    if proc.returncode != 0 or not collected:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-3000:])
    print(proc.stdout.strip())
    requests = int(next(a.split("=", 1)[1] for a in proc.stdout.split() if a.startswith("requests=")))
    total = int(collected[0].split()[-1])
    print(f"instructions per request: {total // requests:,} (callgrind, {requests} requests)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--budgets", action="store_true", help="3 budgets and a key rate limit, as bench/overhead.py")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--transport", default=None, help="METERLINE_UPSTREAM_TRANSPORT (default: the gateway's)")
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind")
    parser.add_argument("--cprofile", metavar="FILE", help="write a cProfile of the measured requests (pstats)")
    parser.add_argument("--sample", metavar="FILE", help="write a CPU-time sampled profile of the measured requests "
                        "(collapsed stacks: bench/profile_report.py)")
    parser.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instructions:
        under_callgrind(sys.argv[1:])
        return

    procs: list[subprocess.Popen] = []
    try:
        settings, _, demo = start_world(procs, budgets=args.budgets)
        os.environ.update(settings.to_env())
        if args.transport:
            os.environ["METERLINE_UPSTREAM_TRANSPORT"] = args.transport
        uvloop.run(drive(args, demo["api_key"]))  # uvicorn runs the gateway on uvloop: so does this
    finally:
        for proc in procs:
            proc.terminate()


def instrument(args: argparse.Namespace) -> tuple[Callable[[], None], Callable[[int], str]]:
    """(start, stop) around the measured requests: callgrind's instrumentation (--callgrind-child),
    the CPU-time sampler (--sample) or cProfile (--cprofile); stop(n) writes the result and says so."""
    if args.callgrind_child:
        def toggle(state: str) -> None:
            subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], capture_output=True, check=True)

        def stop_callgrind(n: int) -> str:
            toggle("off")
            return f"requests={n}"
        return lambda: toggle("on"), stop_callgrind
    if args.sample:
        from cpuprof import CpuSampler

        sampler = CpuSampler(0.0002)

        def stop_sampler(n: int) -> str:
            sampler.stop()
            sampler.write(args.sample)
            return f"{sum(sampler.counts.values())} samples of {n} requests: {args.sample}"
        return sampler.start, stop_sampler
    import cProfile

    profiler = cProfile.Profile()

    def stop_profiler(n: int) -> str:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
        return f"cProfile of {n} requests: {args.cprofile}"
    return profiler.enable, stop_profiler


async def drive(args: argparse.Namespace, api_key: str) -> None:
    from meterline.config import Settings
    from meterline.gateway.app import create_app
    from meterline.gateway.services import Services

    app = create_app(services=Services.build(Settings.from_env()))
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 20}],
                       "stream": args.stream}).encode()
    headers = [(b"host", b"gateway"), (b"authorization", f"Bearer {api_key}".encode()),
               (b"meterline-feature", b"bench"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]

    async def one() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 80), "state": {}}
        delivered = False
        statuses: list[int] = []

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client never disconnects
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise SystemExit(f"the gateway answered {statuses}")

    async with app.router.lifespan_context(app):
        for _ in range(300):  # warm: caches, pools, the first minute window
            await one()
        if args.callgrind_child or args.sample or args.cprofile:
            n = args.requests or (100 if args.callgrind_child else 1000)
            begin, finish = instrument(args)
            begin()
            for _ in range(n):
                await one()
            print(finish(n))
            return
        n = args.requests or 1000
        best: tuple[float, float] | None = None
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(n):
                await one()
            after = resource.getrusage(resource.RUSAGE_SELF)
            usr, sys_ = (after.ru_utime - before.ru_utime) / n, (after.ru_stime - before.ru_stime) / n
            if best is None or usr + sys_ < sum(best):
                best = (usr, sys_)
        mode = ("stream" if args.stream else "non-stream") + (", 3 budgets + key rate limit" if args.budgets else "")
        print(f"in-process ({mode}): CPU per request {best[0] * 1000:.3f} + {best[1] * 1000:.3f} ms "
              f"(usr + sys, min of 3 x {n})")


if __name__ == "__main__":
    main()
