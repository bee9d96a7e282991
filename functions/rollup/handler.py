"""Rollup aggregator: a Lambda on the ledger table's DynamoDB stream.

Reports partial batch failures, so the event source retries from the first failed record (and
dead-letters it after the configured attempts) without re-counting the ones before it; re-counting
would be harmless anyway, since RollupStore.apply is idempotent per request id.
"""

from __future__ import annotations

from typing import Any

from meterline.config import Settings
from meterline.logs import configure
from meterline.rollup import apply_stream_records
from meterline.store.rollups import RollupStore

configure("rollup")
_store: RollupStore | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _store
    if _store is None:
        _store = RollupStore(Settings.from_env())
    records = event.get("Records", [])
    failed = apply_stream_records(records, _store)
    if not failed:
        return {"batchItemFailures": []}
    # Everything from the first failure on is retried, in order.
    first = next(i for i, r in enumerate(records) if r["dynamodb"].get("SequenceNumber") == failed[0])
    return {"batchItemFailures": [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]} for r in records[first:]
                                  if r.get("eventName") == "INSERT"]}
