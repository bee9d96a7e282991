"""FOCUS export's I/O edge: ledger partitions in, CSV out (a file, or S3 for the daily export).

Reads the workspace's ledger one UTC day at a time (`LedgerStore.stream_day`, a Query on the
partition key), builds the rows, checks them (validate.validate) and reconciles the export's totals
with the records it read (validate.compare) before anything is written: an export that does not
validate or reconcile is refused, never half-written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from meterline.config import Settings
from meterline.focus.columns import COLUMNS
from meterline.focus.rows import GROUPINGS, FocusBuilder
from meterline.focus.validate import LedgerTotals, compare, validate
from meterline.pricing.catalog import default_catalog
from meterline.store.ledger import LedgerStore
from meterline.store.workspaces import WorkspaceStore

S3_PREFIX = "focus"


class ExportError(ValueError):
    pass


@dataclass
class Export:
    rows: list[dict[str, str]]
    records: int
    billed_micros: int
    avoided_micros: int

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue()


def month_days(month: str, today: date | None = None) -> list[str]:
    try:
        first = date.fromisoformat(month + "-01")
    except ValueError as exc:
        raise ExportError("month must be YYYY-MM") from exc
    today = today or datetime.now(UTC).date()
    try:
        last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    except OverflowError as exc:  # 9999-12: the month after it is no date
        raise ExportError("month is out of range") from exc
    return [(first + timedelta(days=i)).isoformat() for i in range((min(last, today) - first).days + 1)]


def _records(ledger: LedgerStore, workspace: str, days: list[str]) -> Iterator[dict[str, Any]]:
    for day in days:
        yield from ledger.stream_day(workspace, day)


def export(settings: Settings, workspace: str, days: list[str], by: str = "all") -> Export:
    if by not in GROUPINGS:
        raise ExportError(f"by must be one of {sorted(GROUPINGS)}")
    config = WorkspaceStore(settings).load(workspace)
    if config is None:
        raise ExportError(f"no workspace {workspace!r}")
    builder = FocusBuilder(default_catalog().with_overrides(config.price_overrides), default_catalog(), by)
    ledger = LedgerTotals()
    for record in _records(LedgerStore(settings), workspace, days):
        builder.add(record)
        ledger.add(record)
    rows = builder.rows()
    problems = validate(list(COLUMNS), rows) + compare(rows, ledger.totals)
    if problems:
        raise ExportError("the export does not validate or reconcile: " + "; ".join(problems[:5]))
    return Export(rows, builder.records, ledger.totals["billed_micros"], ledger.totals["avoided_micros"])


def s3_key(workspace: str, day: str) -> str:
    return f"{S3_PREFIX}/workspace={workspace}/billing_period={day[:7]}/{day}.csv"


def export_day_to_s3(settings: Settings, s3: Any, bucket: str, workspace: str, day: str) -> tuple[str, Export]:
    result = export(settings, workspace, [day])
    key = s3_key(workspace, day)
    s3.put_object(Bucket=bucket, Key=key, Body=result.csv().encode(), ContentType="text/csv")
    return key, result


def run_daily(settings: Settings, s3: Any, bucket: str, day: str | None = None) -> dict[str, Any]:
    """Yesterday's (UTC) rows of every workspace, one object per workspace-day."""
    day = day or (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    summary: dict[str, Any] = {"day": day, "objects": [], "rows": 0, "billed_micros": 0}
    for ws in WorkspaceStore(settings).list_workspaces():
        key, result = export_day_to_s3(settings, s3, bucket, ws["pk"], day)
        summary["objects"].append(key)
        summary["rows"] += len(result.rows)
        summary["billed_micros"] += result.billed_micros
    return summary
