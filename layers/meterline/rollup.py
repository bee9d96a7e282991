"""The rollup aggregator: ledger stream records in, spend counters out.

On AWS it is a Lambda on the ledger table's DynamoDB stream (functions/rollup/handler.py), with
partial-batch failure reporting, so a poison record is retried alone and then dead-lettered. Under
`meterline dev` the same function is fed by `StreamPoller`, which reads the embedded table's stream.
Applying a record twice changes nothing (RollupStore.apply writes an idempotency marker in the same
transaction), so at-least-once delivery gives exactly-once counts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import from_item
from meterline.store.rollups import RollupStore

log = logging.getLogger("meterline.rollup")


def apply_stream_records(records: list[dict[str, Any]], store: RollupStore) -> list[str]:
    """Apply INSERT records; return the sequence numbers that failed (for batchItemFailures)."""
    failed: list[str] = []
    for record in records:
        if record.get("eventName") != "INSERT":
            continue  # the ledger is append-only: TTL deletions are not spend
        data = record["dynamodb"]
        try:
            store.apply(from_item(data["NewImage"]))
        except Exception:
            log.exception("rollup_apply_failed", extra={"sequence_number": data.get("SequenceNumber")})
            failed.append(data.get("SequenceNumber", ""))
            # Stop here: later records of the same shard must not overtake a failed one.
            break
    return failed


class StreamPoller:
    """Reads a DynamoDB stream (the embedded one under `meterline dev`) and applies its records."""

    def __init__(self, settings: Settings, interval_s: float = 0.5):
        from meterline.store.schema import LEDGER

        self.settings = settings
        self.interval_s = interval_s
        self.table = settings.table(LEDGER)
        self.store = RollupStore(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iterators: dict[str, str] = {}

    def _streams(self) -> Any:
        return aws.client("dynamodbstreams", self.settings)

    def poll_once(self) -> int:
        ddb = aws.client("dynamodb", self.settings)
        arn = ddb.describe_table(TableName=self.table)["Table"]["LatestStreamArn"]
        streams = self._streams()
        shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        applied = 0
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = streams.get_shard_iterator(
                    StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            while True:
                page = streams.get_records(ShardIterator=self._iterators[shard_id], Limit=1000)
                records = page.get("Records", [])
                failed = apply_stream_records(records, self.store)
                if failed:
                    return applied  # retry from the same iterator next time
                applied += len(records)
                if page.get("NextShardIterator"):
                    self._iterators[shard_id] = page["NextShardIterator"]
                if not records:
                    break
        return applied

    def start(self) -> None:
        def run() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.poll_once()
                except Exception:
                    log.exception("rollup_poll_failed")

        self._thread = threading.Thread(target=run, name="meterline-rollups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
