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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--lambda-memory", type=int, default=512, help="the rollup function's memory (MB)")
    args = parser.parse_args()

    aws = start_moto()
    try:
        settings = provision(aws.endpoint, prefix="bench")
        records = [record(i, args.customers) for i in range(args.records)]
        batches = [records[i:i + args.batch] for i in range(0, len(records), args.batch)]
        stores = [RollupStore(settings) for _ in range(args.workers)]
        probe = RollupStore(settings)

        started = time.perf_counter()
        for batch in batches:
            entries, _ = entries_of(batch)
            probe.transact_items(entries[:run_end(entries)], 0)
        cpu = time.perf_counter() - started

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
        print(f"aggregation        {args.records / cpu:,.0f} records/s of CPU (no I/O)")
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
        print(f"moto               {wait_ms_tx:.0f} ms per transaction waited (moto applies each item "
              "under one lock, copying items: not DynamoDB's latency)")
        # Projection for Lambda: a 512 MB function has ~512/1769 of a vCPU (CPU time stretches by
        # 1769/512); a TransactWriteItems of ~this many items takes ~L ms on DynamoDB (assumed, not
        # measured here). One batcher then does batch / (cpu + tx * L) records/s; the event source
        # runs ROLLUP_PARALLELIZATION of them per shard.
        stretch = 1769 / args.lambda_memory
        for latency in (15, 30, 60):
            per_batcher = args.batch / (cpu_ms_batch * stretch / 1000 + per_batch_tx * latency / 1000)
            print(f"projected Lambda   {per_batcher:,.0f} records/s per batcher at {args.lambda_memory} MB with "
                  f"{latency} ms transactions; x{args.workers} batchers = {per_batcher * args.workers:,.0f} "
                  "records/s for one workspace (if no transaction conflicts)")
    finally:
        aws.stop()


if __name__ == "__main__":
    main()
