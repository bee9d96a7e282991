"""CPU of the per-request telemetry (meterline.telemetry.record_request) as it runs on Lambda.

The environment Lambda gives the gateway for logging and metrics: AWS_LAMBDA_FUNCTION_NAME set (so
logs.configure installs the JSON request log), metrics on (METERLINE_METRICS defaults to 1 there),
stdout a pipe that another process drains (the Lambda runtime's log capture). Prints CPU microseconds
per request for a few request shapes, and the bytes each writes.

    python bench/telemetry.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace


def contexts() -> dict[str, object]:
    import datetime

    from meterline.errors import GatewayError
    from meterline.gateway.context import RequestContext
    from meterline.pricing.catalog import Rates
    from meterline.pricing.cost import Cost
    from meterline.usage import Usage

    def ok(**kw: object) -> RequestContext:
        ctx = RequestContext(endpoint="chat.completions", headers={})
        # The telemetry reads only these attributes of the key and workspace records.
        ctx.key = SimpleNamespace(key_id="key_0123456789abcdef")  # type: ignore[assignment]
        ctx.workspace = SimpleNamespace(workspace="demo")  # type: ignore[assignment]
        ctx.model_id = "openai/gpt-4o-mini"
        ctx.upstream_status = 200
        ctx.usage = Usage(input_uncached=830, cache_read=1024, output=212)
        ctx.cost = Cost(1234, Rates(1, 1, 1, 1, 1), "catalog", datetime.date(2026, 12, 1))
        ctx.upstream_ms = 0.5
        for name, value in kw.items():
            setattr(ctx, name, value)
        return ctx

    rejected = RequestContext(endpoint="chat.completions", headers={})
    rejected.outcome, rejected.error = "rejected", GatewayError("budget exceeded", code="budget_exceeded", status=429)
    saved_one, saved_two = ok(), ok()
    saved_one.save("exact_cache", 4500)
    saved_two.save("prompt_cache", 800)
    saved_two.save("compression", 310)
    return {"ok": ok(), "streamed": ok(stream=True, client_ms=0.2), "rejected": rejected,
            "1 lever saved": saved_one, "2 levers saved": saved_two}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "Meterline-DataPlaneGateway")
    os.environ.setdefault("METERLINE_METRICS", "1")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "gateway")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Meterline")
    os.environ.setdefault("LOG_LEVEL", "INFO")
    report = os.fdopen(os.dup(1), "w")
    # stdout: a pipe drained by another process, as the Lambda runtime captures it.
    drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert drain.stdin is not None
    pipe = drain.stdin.fileno()

    def stdout_to(fd: int) -> None:
        sys.stdout.flush()
        os.dup2(fd, 1)

    stdout_to(pipe)
    from meterline import logs, telemetry

    logs.configure("gateway")
    print(f"record_request on Lambda (JSON log + metrics on, stdout a pipe), {args.requests} calls per shape",
          file=report)
    with tempfile.TemporaryFile() as sink:
        for name, ctx in contexts().items():
            for _ in range(200):  # warm: imports, memos
                telemetry.record_request(ctx)
            stdout_to(sink.fileno())  # one call into a file: what a request writes
            start = os.fstat(1).st_size
            telemetry.record_request(ctx)
            stdout_to(pipe)
            sink.seek(start)
            written = sink.read()
            t0 = time.process_time()
            for _ in range(args.requests):
                telemetry.record_request(ctx)
            sys.stdout.flush()
            cpu_us = (time.process_time() - t0) / args.requests * 1e6
            lines = written.count(b"\n")
            print(f"  {name:15} {cpu_us:6.1f} us CPU/request   {lines} lines, {len(written):5} bytes",
                  file=report, flush=True)
    stdout_to(report.fileno())  # the pipe's last writer gone: the drain sees its end
    drain.stdin.close()
    drain.wait()


if __name__ == "__main__":
    main()
