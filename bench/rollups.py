"""Rollup aggregation throughput and write units, for one hot workspace.

Feeds N synthetic ledger stream records (one workspace, realistic attribution cardinality) through
the real aggregator (meterline.rollup.apply_stream_records) into the embedded AWS (moto server), in
batches of --batch records, from --workers concurrent "batchers" (the event source mapping's
parallelization factor), then checks the totals against the records and prints:

    aggregation     CPU records/s of the aggregator itself (parse, attribute, sum, build the
                    transactions), without any I/O: what one batcher can do before it waits on DynamoDB
    records/s       end-to-end on moto, failed tails redelivered as Lambda would; moto serialises every
                    call and deep-copies the table per transaction item, so this is a floor only
    write units     counted per TransactWriteItems item (2 per item <= 1 KB), per request amortized,
                    next to the former per-record design (a 19-item transaction: 38 units)
    transactions    per batch, and writes (items) per batch
    handler CPU     the batcher thread's own CPU per record (aggregation + boto3), apart from the time it
                    waited on moto: the function's own processing rate, and a projection for Lambda

    python bench/rollups.py [--records 5000] [--batch 100] [--workers 4] [--customers 20]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "layers")]

from meterline.devenv import provision, start_moto  # noqa: E402
from meterline.rollup import apply_stream_records, entries_of  # noqa: E402
from meterline.store.rollups import RollupStore, run_end  # noqa: E402

OLD_UNITS_PER_RECORD = 2 * 19  # marker + 2 periods x 9 scopes, transactional


def record(i: int, customers: int) -> dict:
    fields = {"request_id": f"req{i}", "workspace": "hot", "day": "2026-12-01", "month": "2026-12",
              "outcome": "ok", "key": f"k{i % 5}", "member": f"m{i % 5}", "department": f"d{i % 2}",
              "agent": f"a{i % 3}", "feature": f"f{i % 4}", "customer": f"c{i % customers}",
              "provider": "openai", "model": f"model{i % 3}"}
    image = {k: {"S": v} for k, v in fields.items()}
    image |= {"cost_micros": {"N": str(100 + i % 7)}, "input_uncached": {"N": "1200"}, "output": {"N": "40"}}
    return {"eventID": f"ev{i:09d}", "eventName": "INSERT",
            "dynamodb": {"SequenceNumber": f"{i:021d}", "NewImage": image}}


class _EmptyBody:
    def stream(self, **_: object):
        yield b"{}"


def instant_dynamodb(settings) -> None:
    """Answer every DynamoDB call of these settings' client at once with 200 {}: what remains is the
    handler's own CPU (parse, aggregate, botocore validating, serialising, signing, parsing)."""
    from botocore.awsrequest import AWSResponse

    from meterline.store import aws

    def answer(request, **_: object) -> AWSResponse:
        return AWSResponse(request.url, 200, {"content-type": "application/x-amz-json-1.0"}, _EmptyBody())

    aws.client("dynamodb", settings).meta.events.register("before-send.dynamodb", answer)


def own_rate(batches: list[list[dict]], records: int) -> dict[str, float]:
    """The aggregator end to end with DynamoDB answering instantly: its CPU per record, the part of a
    batch spent in botocore, transactions and write units per batch."""
    import os

    from meterline.config import Settings
    from meterline.devenv import FAKE_CREDENTIALS

    for name, value in FAKE_CREDENTIALS.items():  # signed as on Lambda, never sent
        os.environ.setdefault(name, value)
    settings = Settings(aws_endpoint="http://127.0.0.1:9", table_names={"rollups": "bench-rollups"})
    instant_dynamodb(settings)
    store = RollupStore(settings)
    started = time.thread_time()
    for batch in batches:
        assert not apply_stream_records(batch, store)
    total = time.thread_time() - started
    started = time.thread_time()
    for batch in batches:
        entries, _ = entries_of(batch)
        store.transact_items(entries[:run_end(entries)], 0)
    aggregation = time.thread_time() - started
    return {"us_per_record": total / records * 1e6, "botocore_ms_per_batch": (total - aggregation) / len(batches) * 1e3,
            "tx_per_batch": store.transactions / len(batches), "units_per_batch": store.units / len(batches)}


def project(own: dict[str, float], batch: int, memory_mb: int, batchers: int) -> None:
    """One workspace on Lambda: a `memory_mb` function has memory/1769 of a vCPU (CPU time stretches by
    1769/memory); a TransactWriteItems of ~90 items takes L ms on DynamoDB (assumed: 15-60 ms, not
    measured here). One batcher does batch / (cpu + transactions * L) records/s; the event source runs
    ROLLUP_PARALLELIZATION batchers per stream shard, but records of one ledger partition key (one
    workspace-day) always go to the same batcher, in order: ONE batcher is a hot workspace's ceiling."""
    stretch = 1769 / memory_mb
    cpu_s = own["us_per_record"] * batch * stretch / 1e6
    for latency in (15, 30, 60):
        per_batcher = batch / (cpu_s + own["tx_per_batch"] * latency / 1000)
        print(f"projected Lambda   {per_batcher:,.0f} records/s for one workspace (one batcher) at {memory_mb} MB "
              f"with {latency} ms transactions; {per_batcher * batchers:,.0f} across {batchers} busy workspaces")
    # DynamoDB's per-partition ceiling (1,000 WCU/s): a batch's units land on 2 period keys x write shards.
    from meterline.store.rollups import WRITE_SHARDS

    wcu = own["units_per_batch"] * 1000 / batch
    print(f"partition load     at 1,000 records/s: {wcu:,.0f} WCU/s over 2 periods x {WRITE_SHARDS} write shards "
          f"= {wcu / (2 * WRITE_SHARDS):,.0f} WCU/s per key (DynamoDB allows 1,000 per partition)")
    # Upstream of the rollups: a workspace-day is ONE ledger partition key, time-ordered sort keys (no
    # split for heat), 2 WCU per ledger record.
    print("ledger ceiling     one workspace-day = one ledger partition key: 1,000 WCU/s / 2 WCU per record "
          "= ~500 requests/s per workspace before the ledger write itself is throttled")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--lambda-memory", type=int, default=1024, help="the rollup function's memory (MB)")
    parser.add_argument("--own-only", action="store_true", help="only the handler's own rate (no moto)")
    args = parser.parse_args()

    records = [record(i, args.customers) for i in range(args.records)]
    batches = [records[i:i + args.batch] for i in range(0, len(records), args.batch)]
    own = own_rate(batches, args.records)
    print(f"own rate           {own['us_per_record']:.0f} us of CPU per record with DynamoDB answering at once "
          f"= {1e6 / own['us_per_record']:,.0f} records/s per core ({own['botocore_ms_per_batch']:.1f} ms per batch "
          f"in botocore); {own['tx_per_batch']:.2f} transactions, {own['units_per_batch'] / 2:.0f} writes "
          f"({own['units_per_batch'] / args.batch:.2f} WCU per record) per batch of {args.batch}")
    project(own, args.batch, args.lambda_memory, args.workers)
    if args.own_only:
        return
    aws = start_moto()
    try:
        settings = provision(aws.endpoint, prefix="bench")
        stores = [RollupStore(settings) for _ in range(args.workers)]
        probe = RollupStore(settings)

        started = time.thread_time()  # this thread's CPU: the aggregation alone, no I/O
        for batch in batches:
            entries, _ = entries_of(batch)
            probe.transact_items(entries[:run_end(entries)], 0)
        cpu = time.thread_time() - started

        def run(worker: int) -> tuple[int, float]:
            # thread_time: the CPU of this batcher's thread only (our code + boto3 serialising, signing,
            # sending, parsing), not moto's, whose server threads do the writes.
            redelivered, cpu0 = 0, time.thread_time()
            for batch in batches[worker::args.workers]:
                while failed := apply_stream_records(batch, stores[worker]):
                    redelivered += 1  # the event source redelivers from the first failed record
                    batch = [r for r in batch if r["dynamodb"]["SequenceNumber"] >= failed[0]]
            return redelivered, time.thread_time() - cpu0

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(run, range(args.workers)))
        elapsed = time.perf_counter() - started
        redelivered = sum(r for r, _ in results)
        handler_cpu = sum(c for _, c in results)
        units = sum(s.units for s in stores)
        [total] = RollupStore(settings).by_dimension("hot", "M#2026-12", "total")
        expected = sum(100 + i % 7 for i in range(args.records))
        assert total["cost_micros"] == expected and total["requests"] == args.records, total
        print(f"records            {args.records} in batches of {args.batch}, {args.workers} concurrent batchers, "
              f"{args.customers} customers")
        print(f"aggregation        {args.records / cpu:,.0f} records/s of CPU (no I/O): "
              f"{cpu / args.records * 1e6:.0f} us per record to parse, attribute, sum and build the transactions")
        print(f"records/s (moto)   {args.records / elapsed:,.0f}   ({elapsed:.2f} s, {redelivered} redeliveries; "
              "totals checked exactly)")
        print(f"write units        {units / args.records:.2f} per request "
              f"(former per-record transaction: {OLD_UNITS_PER_RECORD})")
        transactions = sum(s.transactions for s in stores)
        per_batch_tx = transactions / len(batches)
        print(f"transactions       {per_batch_tx:.2f} per batch, {units / 2 / transactions:.0f} items each "
              f"({units / 2 / len(batches):.0f} writes per batch of {args.batch})")
        # The aggregator's own rate: its thread's CPU per record, boto3 included, apart from moto's
        # time to apply the writes (wall time the batchers spent waiting on moto).
        cpu_ms_batch = handler_cpu / len(batches) * 1000
        wait_ms_tx = max(elapsed * args.workers - handler_cpu, 0) / transactions * 1000
        print(f"handler CPU        {handler_cpu / args.records * 1e6:,.0f} us per record (boto3 included) = "
              f"{args.records / handler_cpu:,.0f} records/s per core; {cpu_ms_batch:.1f} ms per batch")
        print(f"moto               {wait_ms_tx:.0f} ms per transaction waited "
              "(the embedded store's time, not DynamoDB's latency)")
    finally:
        aws.stop()


if __name__ == "__main__":
    main()
