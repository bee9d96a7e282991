"""The rollup aggregator: ledger stream records in, spend counters out.

On AWS it is a Lambda on the ledger table's DynamoDB stream (functions/rollup/handler.py). Under
`meterline dev` the same function is fed by `StreamPoller`, which reads the embedded table's stream.

Cost: a batch's records are summed in memory and written as one ADD per (period, scope) they touch,
in as few TransactWriteItems as fit (<= 100 items each), instead of a 19-item transaction per record.

Exactly once, the argument:
  * A *run* is a contiguous slice of a delivered batch, committed in ONE transaction together with a
    marker keyed by the run's first stream record (`applied#<eventID>`, condition: new) that names
    the run's last record. Either all of a run's counters and its marker are written, or none.
  * Lambda delivers a shard's records (per concurrent batcher, with a parallelization factor) as
    contiguous batches in stream order, and after a failed invocation re-delivers from the first
    record it has not checkpointed, i.e. from the start of a batch or of a reported failure. This
    handler reports failures only from the first run it could not commit, and bisection is off, so
    every redelivery starts at a record that began a run (committed or not).
  * So, walking a batch: if the run starting at record i is already marked, its records up to the
    marker's `last` were counted - skip them and continue after it (the next record began the next
    run, or is new); otherwise commit. A redelivered batch is skipped, a longer one only adds its
    new tail. `meterline dev`'s poller replaying the stream from the start walks the same way.
  * Poison: a record that cannot be rolled up (missing fields, non-numeric counters, a key DynamoDB
    rejects) is written as a `poison` item inside the run instead of blocking its shard. Attributed
    values are bounded (store.rollups.bound_value), so a 2 KB model name is rolled up, not poison.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import from_item
from meterline.store.rollups import (
    AlreadyApplied,
    Entry,
    RollupStore,
    contribution_of,
    poison_of,
    run_end,
)

log = logging.getLogger("meterline.rollup")


def entries_of(records: list[dict[str, Any]]) -> tuple[list[Entry], list[str]]:
    """INSERT records as contributions (or poison), with their sequence numbers."""
    entries: list[Entry] = []
    sequences: list[str] = []
    for record in records:
        if record.get("eventName") != "INSERT":
            continue  # the ledger is append-only: TTL deletions are not spend
        data = record.get("dynamodb", {})
        event_id = str(record.get("eventID") or data.get("SequenceNumber", ""))
        image: dict[str, Any] = {}
        try:
            image = from_item(data["NewImage"])
            entries.append(contribution_of(event_id, image))
        except Exception as exc:  # a malformed record must not stop the stream
            log.error("rollup_poison_record", extra={"event_id": event_id, "error": repr(exc)[:300]})
            entries.append(poison_of(event_id, image, exc))
        sequences.append(str(data.get("SequenceNumber", "")))
    return entries, sequences


def _is_validation(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    reasons = response.get("CancellationReasons", [])
    return code == "ValidationException" or any(r.get("Code") == "ValidationError" for r in reasons)


def apply_entries(entries: list[Entry], store: RollupStore) -> int:
    """Commit `entries` run by run; returns the index of the first one that could not be committed
    (len(entries) when all were)."""
    i = 0
    limit = len(entries)  # shrinks while isolating a record DynamoDB refuses
    while i < len(entries):
        end = min(i + limit, run_end(entries, i, store.max_items))
        run = entries[i:end]
        try:
            store.commit_run(run)
        except AlreadyApplied as done:
            ids = [e.event_id for e in entries]
            if done.last in ids[i:]:
                i = ids.index(done.last, i) + 1
            else:  # a shorter redelivery than the commit: all of it was counted
                log.warning("rollup_short_redelivery", extra={"event_id": run[0].event_id})
                i = len(entries)
            continue
        except Exception as exc:
            if not _is_validation(exc):
                log.exception("rollup_commit_failed", extra={"event_id": run[0].event_id})
                return i
            if len(run) > 1:
                limit = max(1, len(run) // 2)  # halve until the refused record is alone
                continue
            log.error("rollup_poison_record", extra={"event_id": run[0].event_id, "error": repr(exc)[:300]})
            entries[i] = poison_of(run[0].event_id, {}, f"rejected by DynamoDB: {exc}"[:500])
            continue
        i = end
        limit = len(entries)
    return i


def apply_stream_records(records: list[dict[str, Any]], store: RollupStore) -> list[str]:
    """Apply a batch; return the sequence numbers to redeliver (from the first uncommitted run on)."""
    entries, sequences = entries_of(records)
    done = apply_entries(entries, store)
    return sequences[done:]


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
