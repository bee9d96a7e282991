"""Waste scoring at scale: one workspace-day of 1M ledger records. Prints numbers; not a test.

    python bench/waste.py [--records 1000000] [--io-records 20000]

1. Scorer: 1M generated records (a realistic mix: 200 members, 40 agents, 30 features, 5,000
   customers, 20,000 sessions, 3 models, duplicates, repeated prefixes, cache writes, retries,
   an off-hours burst) streamed through `waste.signals.Scorer` in this process: CPU seconds,
   records per second, peak RSS. The generator's own time is measured apart and subtracted.
2. I/O path: `io-records` of the same mix written to one ledger partition of an embedded AWS
   (moto in its own process), then `waste.job.score_day` exactly as the scheduled function runs it:
   Query pages, bytes, and this process's CPU per record (boto3 parsing + decoding + scoring).
3. Extrapolation to 1M records on Lambda (1769 MB = one vCPU): run time, Query calls, read
   request units, and the AWS cost of one run (DynamoDB on-demand reads and writes, Lambda GB-s).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers"), str(ROOT)]

DAY = "2026-11-10"
T0 = int(datetime.fromisoformat(DAY).replace(tzinfo=UTC).timestamp() * 1000)
MODELS = (("openai/gpt-4o", 2_500_000, 1_250_000, 10_000_000), ("openai/gpt-4o-mini", 150_000, 75_000, 600_000),
          ("anthropic/claude-sonnet-4-5", 3_000_000, 300_000, 15_000_000))
# Prices (USD per 1M tokens, in micro-dollars): us-east-1, December 2026.
RRU_PER_MILLION_USD = 0.125  # DynamoDB on-demand read request units
WRU_PER_MILLION_USD = 0.625  # DynamoDB on-demand write request units
LAMBDA_GB_S_USD = 0.0000166667  # x86_64; arm64 is 0.0000133334
LAMBDA_MB = 1769


def generate(n: int, seed: int = 7, workspace: str = "ws_bench") -> Iterator[dict[str, Any]]:
    rnd = random.Random(seed)
    step = 86_400_000 / n
    recent: list[str] = []
    for i in range(n):
        ts = T0 + int(i * step)
        if 3 * 3_600_000 <= ts - T0 < 4 * 3_600_000 and rnd.random() < 0.5:
            ts = T0 + 3 * 3_600_000 + rnd.randrange(3_600_000)  # off-hours burst (kept in order below)
        model, inp_rate, read_rate, out_rate = MODELS[rnd.randrange(3)]
        inp, out = rnd.randrange(50, 6000), rnd.randrange(0, 1200)
        read = rnd.choice((0, 0, 0, inp // 2))
        if recent and rnd.random() < 0.05:
            fp = rnd.choice(recent)
        else:
            fp = f"{rnd.getrandbits(64):016x}"
            recent.append(fp)
            if len(recent) > 200:
                recent.pop(0)
        rid = f"req_{i:012x}"
        outcome = "ok" if rnd.random() < 0.97 else rnd.choice(("upstream_error", "client_disconnect"))
        cost = (inp * inp_rate + read * read_rate + out * out_rate) // 1_000_000
        record: dict[str, Any] = {
            "request_id": rid, "parent_request_id": rid, "ts": ts, "day": DAY, "month": DAY[:7],
            "endpoint": "chat.completions", "workspace": workspace, "key": f"key_{rnd.randrange(100)}",
            "member": f"member-{rnd.randrange(200)}", "department": f"dept-{rnd.randrange(10)}",
            "agent": f"agent-{rnd.randrange(40)}", "session": f"sess-{rnd.randrange(20_000)}",
            "feature": f"feature-{rnd.randrange(30)}", "customer": f"cust-{rnd.randrange(5000)}",
            "provider": model.split("/")[0], "model": model, "priced_as": model, "stream": rnd.random() < 0.5,
            "outcome": outcome, "status": 200 if outcome == "ok" else rnd.choice((400, 502)),
            "input_uncached": inp - read, "cache_read": read, "cache_write_5m": 0, "cache_write_1h": 0,
            "output": out, "reasoning": 0, "estimated": False, "cost_micros": cost, "unpriced": False,
            "price_source": "https://openai.com/api/pricing (checked 2026-11-22)",
            "latency_ms": rnd.randrange(200, 9000),
            "ttfb_ms": rnd.randrange(100, 900), "req_fp": fp, "prefix_fp": f"p{rnd.randrange(500)}",
            "prefix_tokens": rnd.randrange(500, 4000), "max_tokens": rnd.choice((1024, 4096, 8192)),
            "loop_fp": f"l{rnd.randrange(5000)}",
        }
        if rnd.random() < 0.03:
            record["cache_write_5m"] = inp // 2
        if rnd.random() < 0.02:
            record["json_slack"] = rnd.randrange(10, 400)
        yield record


def ordered(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Query returns a partition in sort-key (time) order; the burst injection above breaks it slightly."""
    last = 0
    for r in records:
        r["ts"] = max(r["ts"], last)
        last = r["ts"]
        yield r


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_scorer(n: int) -> dict[str, float]:
    from meterline.pricing.catalog import default_catalog
    from meterline.waste.signals import Pricer, score_records

    t = time.process_time()
    for _ in ordered(generate(n)):
        pass
    gen_cpu = time.process_time() - t
    before = rss_mb()
    t = time.process_time()
    scorer, _ = score_records(ordered(generate(n)), DAY, Pricer(default_catalog()), "UTC", {})
    total_cpu = time.process_time() - t
    score_cpu = total_cpu - gen_cpu
    print(f"scorer: {n:,} records, {score_cpu:.1f} s CPU ({n / score_cpu:,.0f} records/s, "
          f"{score_cpu / n * 1e6:.1f} us/record); peak RSS {rss_mb():.0f} MB (before {before:.0f} MB); "
          f"{len(scorer.scopes):,} scopes; workspace grade {scorer.total.grade}, "
          f"waste {scorer.total.waste_pct_bp / 100:.1f} %")
    return {"score_us": score_cpu / n * 1e6, "rss_mb": rss_mb(), "scopes": len(scorer.scopes)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_io(n: int, score_us: float) -> dict[str, float]:
    from meterline.devenv import FAKE_CREDENTIALS, provision
    from meterline.store import aws
    from meterline.store.codec import to_item
    from meterline.store.ledger import ledger_keys
    from meterline.store.workspaces import WorkspaceStore
    from meterline.waste.job import score_day

    os.environ.update(FAKE_CREDENTIALS)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "aws_proc.py"), str(port)],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:2])})
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        # moto answers a Query page by sorting the whole partition: slower than DynamoDB, so give the
        # bench's clients a long read timeout (the CPU measured below is this process's only).
        import boto3
        from botocore.config import Config

        aws._clients[("dynamodb", endpoint, "us-east-1")] = boto3.session.Session().client(
            "dynamodb", region_name="us-east-1", endpoint_url=endpoint,
            config=Config(read_timeout=300, retries={"max_attempts": 1}))
        settings = provision(endpoint, prefix="bench")
        WorkspaceStore(settings).create("ws_bench", "Bench")
        ddb = aws.client("dynamodb", settings)
        table = settings.table_names["ledger"]
        batch: list[dict[str, Any]] = []
        raw_bytes = 0
        for r in ordered(generate(n)):
            item = to_item({**r, **ledger_keys(r["workspace"], r["ts"], r["request_id"])})
            raw_bytes += sum(len(k) + len(str(v)) for k, v in r.items())
            batch.append({"PutRequest": {"Item": item}})
            if len(batch) == 25:
                ddb.batch_write_item(RequestItems={table: batch})
                batch = []
        if batch:
            ddb.batch_write_item(RequestItems={table: batch})
        from meterline.store.ddb_http import DynamoHttp

        calls = {"Query": 0, "BatchWriteItem": 0, "GetItem": 0}
        original_call = DynamoHttp.call

        async def counted(self: Any, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
            page = await original_call(self, operation, payload)
            calls[operation] = calls.get(operation, 0) + 1
            return page

        DynamoHttp.call = counted  # type: ignore[method-assign]
        pages_bytes: list[int] = []

        def count(event_name: str, **kwargs: Any) -> None:
            name = event_name.split(".")[-1]
            calls[name] = calls.get(name, 0) + 1

        def size(http_response: Any, **kwargs: Any) -> None:
            pages_bytes.append(len(http_response.content))

        ddb.meta.events.register("before-call.dynamodb.*", count)
        ddb.meta.events.register("after-call.dynamodb.Query", size)
        from meterline.store.ledger import LedgerStore

        t = time.process_time()
        assert sum(1 for _ in LedgerStore(settings).stream_day("ws_bench", DAY)) == n
        read_us = (time.process_time() - t) / n * 1e6
        pages = calls["Query"]
        t, wall = time.process_time(), time.perf_counter()
        scopes, _, read = score_day(settings, "ws_bench", DAY)
        cpu, wall = time.process_time() - t, time.perf_counter() - wall
        assert read == n, (read, n)
        print(f"I/O path: {n:,} records from one partition in {pages} Query pages "
              f"({raw_bytes / n:.0f} B of attributes per record); reading + decoding {read_us:.0f} us/record of "
              f"client CPU; the whole job (read, score, write {len(scopes):,} score items in "
              f"{calls.get('BatchWriteItem', 0)} BatchWriteItem calls) {cpu:.1f} s CPU, {wall:.1f} s wall "
              f"against moto")
        return {"read_us": read_us, "record_bytes": raw_bytes / n, "items": len(scopes)}
    finally:
        proc.kill()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--io-records", type=int, default=20_000)
    args = parser.parse_args()
    scorer = bench_scorer(args.records)
    io = bench_io(args.io_records, scorer["score_us"])
    n = args.records
    # CPU per record (read + decode, score) + ~10 ms of DynamoDB latency per 1 MB page + the score writes.
    items = max(io["items"], scorer["scopes"] + 1)
    run_s = n * (io["read_us"] + scorer["score_us"]) / 1e6 + (n * io["record_bytes"] / 1e6) * 0.01 + items / 25 * 0.02
    pages = n * io["record_bytes"] / 1e6
    rru = n * io["record_bytes"] / 4096 * 0.5  # eventually consistent Query: 0.5 RRU per 4 KB read
    lambda_usd = run_s * LAMBDA_MB / 1024 * LAMBDA_GB_S_USD
    cost = (rru * RRU_PER_MILLION_USD + items * 2 * WRU_PER_MILLION_USD) / 1e6 + lambda_usd
    print(f"1M records on Lambda ({LAMBDA_MB} MB, one vCPU), extrapolated: ~{run_s / 60:.1f} min of the 15-min limit; "
          f"~{pages:.0f} Query calls, ~{rru:,.0f} RRU; ~{items:,} score items; AWS cost of the run "
          f"~${cost:.4f} (reads ${rru * RRU_PER_MILLION_USD / 1e6:.4f}, writes "
          f"${items * 2 * WRU_PER_MILLION_USD / 1e6:.4f}, Lambda ${lambda_usd:.4f}); "
          f"scorer state peak RSS {scorer['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
