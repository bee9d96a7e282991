"""Waste scoring's I/O edge: ledger partitions in, scores out (DynamoDB, CloudWatch metrics).

Reads one workspace-day at a time with `LedgerStore.query_day` (a Query on the partition key,
never a Scan), streams the records through the scorer (memory bounded by the signals' windows, not
by the day's volume), and writes the day's scope reports to the waste table. Used by the scheduled
function (functions/waste, every day for yesterday's partitions), by `meterline waste` and by the
admin API (`GET /workspaces/{ws}/waste`), which score on demand: today's partition is re-scored each
time, closed days are read back from the table when already scored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from meterline.config import Settings
from meterline.pricing.catalog import default_catalog
from meterline.store.ledger import LedgerStore
from meterline.store.waste import WasteStore
from meterline.store.workspaces import WorkspaceStore
from meterline.waste import BILLED, DIMENSIONS, SIGNALS
from meterline.waste.grades import ScopeReport
from meterline.waste.signals import Pricer, score_records

log = logging.getLogger("meterline.waste")
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def period_days(period: str, today: date | None = None) -> list[str]:
    """UTC days of a period: today, yesterday, month (this month so far), 7d, 30d, YYYY-MM, YYYY-MM-DD."""
    today = today or datetime.now(UTC).date()
    if period == "today":
        days = [today]
    elif period == "yesterday":
        days = [today - timedelta(days=1)]
    elif period in ("7d", "30d"):
        n = int(period[:-1])
        days = [today - timedelta(days=i) for i in range(n - 1, -1, -1)]
    elif period == "month":
        days = [today.replace(day=d) for d in range(1, today.day + 1)]
    elif _MONTH.match(period):
        first = date.fromisoformat(period + "-01")
        try:
            last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        except OverflowError as exc:  # 9999-12: the month after it is no date
            raise ValueError(f"{period} is out of range") from exc
        days = [first + timedelta(days=i) for i in range((min(last, today) - first).days + 1)]
    elif _DAY.match(period):
        days = [date.fromisoformat(period)]
    else:
        raise ValueError("period must be today, yesterday, month, 7d, 30d, YYYY-MM or YYYY-MM-DD")
    return [d.isoformat() for d in days]


@dataclass
class PeriodReport:
    workspace: str
    days: list[str]
    total: ScopeReport = field(default_factory=ScopeReport)
    scopes: dict[str, ScopeReport] = field(default_factory=dict)  # "<dimension>#<value>" -> report
    records: int = 0

    def merge_day(self, day_scopes: dict[str, ScopeReport]) -> None:
        for sk, report in day_scopes.items():
            if sk == "total#all":
                self.total.merge(report)
            else:
                self.scopes.setdefault(sk, ScopeReport()).merge(report)

    def as_dict(self, by: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"workspace": self.workspace, "period": [self.days[0], self.days[-1]],
                               "total": self.total.as_dict(), "signals": dict(SIGNALS), "graded": list(BILLED)}
        dims = [by] if by else list(DIMENSIONS)
        out["by"] = {}
        for dim in dims:
            rows = [{"value": sk.split("#", 1)[1], **r.as_dict()} for sk, r in self.scopes.items()
                    if sk.startswith(dim + "#")]
            rows.sort(key=lambda row: (-row["waste_micros"], -row["spend_micros"], row["value"]))
            out["by"][dim] = rows
        return out


def _records(ledger: LedgerStore, workspace: str, day: str, counter: list[int]) -> Iterator[dict[str, Any]]:
    for record in ledger.stream_day(workspace, day):
        counter[0] += 1
        yield record


def score_day(settings: Settings, workspace: str, day: str, *, timezone: str | None = None,
              catalog: Any = None, baseline: dict[str, int] | None = None, store: bool = True,
              ) -> tuple[dict[str, ScopeReport], dict[str, int], int]:
    """Score one ledger partition. Returns (sk -> scope report, the day's p95 baseline, records read)."""
    if timezone is None or catalog is None:
        config = WorkspaceStore(settings).load(workspace)
        timezone = timezone or (config.timezone if config else "UTC")
        catalog = catalog or default_catalog().with_overrides(config.price_overrides if config else None)
    waste = WasteStore(settings)
    if baseline is None:
        previous = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        baseline = waste.baseline(workspace, previous) or {}
    counter = [0]
    scorer, p95 = score_records(_records(LedgerStore(settings), workspace, day, counter), day, Pricer(catalog),
                                timezone, baseline)
    scopes = {"total#all": scorer.total, **{f"{dim}#{value}": report for (dim, value), report in scorer.scopes.items()}}
    if store:
        waste.put_day(workspace, day, {sk: r.as_dict() for sk, r in scopes.items()}, p95)
    return scopes, p95, counter[0]


def score_period(settings: Settings, workspace: str, period: str, *, today: date | None = None) -> PeriodReport:
    """Scores of a period: closed days already scored are read back; the others are scored (and stored)."""
    today = today or datetime.now(UTC).date()
    days = period_days(period, today)
    config = WorkspaceStore(settings).load(workspace)
    timezone = config.timezone if config else "UTC"
    catalog = default_catalog().with_overrides(config.price_overrides if config else None)
    waste = WasteStore(settings)
    report = PeriodReport(workspace, days)
    baseline: dict[str, int] | None = None
    for day in days:
        stored = waste.day(workspace, day) if day < today.isoformat() else {}
        if stored:
            report.merge_day({sk: ScopeReport.from_dict(r) for sk, r in stored.items()})
            baseline = None
            continue
        scopes, baseline, n = score_day(settings, workspace, day, timezone=timezone, catalog=catalog,
                                        baseline=baseline)
        report.records += n
        report.merge_day(scopes)
    return report


def run_scheduled(settings: Settings, day: str | None = None) -> dict[str, Any]:
    """Score `day` (default: yesterday, UTC) for every workspace; emit CloudWatch metrics (EMF)."""
    day = day or (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    summary: dict[str, Any] = {"day": day, "workspaces": 0, "records": 0, "spend_micros": 0, "waste_micros": 0,
                               "grades": {}}
    signal_totals: dict[str, int] = {}
    for ws in WorkspaceStore(settings).list_workspaces():
        workspace = ws["pk"]
        scopes, _, n = score_day(settings, workspace, day, timezone=ws.get("timezone") or "UTC")
        total = scopes["total#all"]
        summary["workspaces"] += 1
        summary["records"] += n
        summary["spend_micros"] += total.spend_micros
        summary["waste_micros"] += total.waste_micros
        summary["grades"][workspace] = total.grade
        for code, s in total.signals.items():
            signal_totals[code] = signal_totals.get(code, 0) + s.micros
        log.info("waste_scored", extra={"waste": {"workspace": workspace, "day": day, "records": n,
                                                  "grade": total.grade, "spend_micros": total.spend_micros,
                                                  "waste_micros": total.waste_micros}})
    emit_metrics(summary, signal_totals)
    return summary


def emit_metrics(summary: dict[str, Any], signal_totals: dict[str, int]) -> None:
    """EMF: totals per run ({service}) and $ per signal ({service, signal}); bounded dimensions."""
    from meterline.telemetry import metrics_enabled

    if not metrics_enabled():
        return
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    ns = "Meterline"
    for name, value in (("WasteMicroUsd", summary["waste_micros"]), ("ScoredSpendMicroUsd", summary["spend_micros"]),
                        ("ScoredRecords", summary["records"]),
                        ("WorkspacesGradedD", sum(1 for g in summary["grades"].values() if g == "D"))):
        with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=ns,
                           default_dimensions={"service": "waste"}):
            pass
    for code, micros in sorted(signal_totals.items()):
        with single_metric(name="SignalMicroUsd", unit=MetricUnit.Count, value=micros, namespace=ns,
                           default_dimensions={"service": "waste"}) as metric:
            metric.add_dimension(name="signal", value=code)
