"""Rollup aggregator: a Lambda on the ledger table's DynamoDB stream.

Each batch is summed in memory and committed in runs, each run exactly once (see meterline.rollup
for the argument). Failures are reported as partial batch failures from the first run that could not
be committed, so the event source redelivers from a run's first record, never from its middle.
Records that can never be rolled up are kept as `poison` items, not retried.
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
    failed = apply_stream_records(event.get("Records", []), _store)
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed]}
