"""Budget alert e-mails and the lease sweeper, run on a schedule (functions/alerts/handler.py).

The data plane only records threshold crossings (an outbox item per budget, period and threshold,
written once). This job claims each pending item with a conditional write - so any number of runs,
repeated or concurrent, send each alert once - composes the e-mail (scope, spend, cap, top
contributors, projection) and sends it with SES. A run that dies after claiming leaves the claim to
expire (5 minutes) and a later run retries it: at-least-once across crashes, exactly once otherwise.
One alert failing (SES refuses, a workspace is gone) is logged and retried on a later run; it never
stops the other alerts of the run.

Cost is bounded whatever the traffic: a workspace-wide budget's top contributors come from the
rollups of the alert's period (a few queries); a scoped budget's (e.g. feature:search) from the
workspace's newest SCOPED_SAMPLE ledger records of the day (one bounded query), said so in the mail.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from meterline.config import Settings
from meterline.money import micros_to_usd
from meterline.store.budgets import BudgetStore, expired_entries
from meterline.store.ddb_http import DynamoHttp
from meterline.store.ledger import LedgerStore
from meterline.store.rollups import RollupStore
from meterline.store.workspaces import WorkspaceStore

log = logging.getLogger("meterline.alerts")


@dataclass(frozen=True)
class Projection:
    projected_micros: int
    cap_date: str | None  # the day the cap is reached at the current rate, if within the period


def period_bounds(period: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    kind, value = period.split("#", 1)
    if kind == "D":
        start = datetime.fromisoformat(value).replace(tzinfo=tz)
        return start, start + timedelta(days=1)
    year, month = (int(x) for x in value.split("-"))
    start = datetime(year, month, 1, tzinfo=tz)
    return start, start + timedelta(days=calendar.monthrange(year, month)[1])


def project(spent: int, cap: int, start: datetime, end: datetime, now: datetime) -> Projection:
    """Straight-line projection at the period's average rate so far."""
    elapsed = max((now - start).total_seconds(), 60.0)
    rate = spent / elapsed  # micro-dollars per second
    projected = int(rate * (end - start).total_seconds())
    if spent >= cap:
        return Projection(projected, now.date().isoformat())
    if rate <= 0:
        return Projection(projected, None)
    reach = start + timedelta(seconds=cap / rate)
    return Projection(projected, reach.date().isoformat() if reach < end else None)


CONTRIBUTOR_DIMENSIONS = ("member", "feature", "agent", "model")
SCOPED_SAMPLE = 5_000


def top_contributors(rollups: RollupStore, ledger: LedgerStore, workspace: str, scope: str, period: str,
                     now: datetime, limit: int = 5) -> tuple[dict[str, list[tuple[str, int]]], str]:
    """Top contributors by dimension, and where they come from (a line for the e-mail)."""
    scope_type, scope_value = scope.split(":", 1) if ":" in scope else (scope, "")
    if scope_type == "workspace":
        out = {}
        for dim in CONTRIBUTOR_DIMENSIONS:
            rows = [(r["value"], int(r.get("cost_micros", 0))) for r in rollups.by_dimension(workspace, period, dim)]
            out[dim] = sorted((r for r in rows if r[1] > 0), key=lambda r: (-r[1], r[0]))[:limit]
        return out, f"for the period {period[2:]}"
    by: dict[str, Counter[str]] = {dim: Counter() for dim in CONTRIBUTOR_DIMENSIONS}
    for record in ledger.recent(workspace, now.astimezone(UTC).date().isoformat(), SCOPED_SAMPLE):
        if record.get(scope_type) != scope_value:
            continue
        for dim, counter in by.items():
            counter[record.get(dim) or "-"] += int(record.get("cost_micros", 0))
    return ({dim: counter.most_common(limit) for dim, counter in by.items()},
            f"among the workspace's latest {SCOPED_SAMPLE:,} requests today (UTC)")


def compose(alert: dict[str, Any], workspace_name: str, tz: ZoneInfo, contributors: dict[str, list[tuple[str, int]]],
            projection: Projection, basis: str = "") -> tuple[str, str]:
    kind = "daily" if alert["period"].startswith("D#") else "monthly"
    subject = (f"[Meterline] {alert['scope']} reached {alert['threshold']}% of its {kind} budget "
               f"(${micros_to_usd(int(alert['spent']))} of ${micros_to_usd(int(alert['cap']))})")
    lines = [
        f"Workspace: {workspace_name} ({alert['workspace']})",
        f"Budget: {alert['scope']}, {kind}, period {alert['period'][2:]} ({tz.key})",
        f"Spent: ${micros_to_usd(int(alert['spent']))} of ${micros_to_usd(int(alert['cap']))} "
        f"({alert['threshold']}% threshold crossed)",
        f"Projection at the current rate: ${micros_to_usd(projection.projected_micros)} for the period; "
        + (f"cap reached on {projection.cap_date}." if projection.cap_date else "cap not reached this period."),
        "",
        f"Top contributors ({basis}):" if basis else "Top contributors:",
    ]
    for dim, rows in contributors.items():
        if rows:
            lines.append(f"  by {dim}: " + ", ".join(f"{name} ${micros_to_usd(cost)}" for name, cost in rows))
    lines += ["", "Sent once per threshold and period by Meterline."]
    return subject, "\n".join(lines)


def send_pending_alerts(settings: Settings, ses: Any, sender: str, default_recipients: list[str],
                        now: float | None = None) -> int:
    """Send every pending alert once. Returns how many e-mails this run sent."""
    now = now if now is not None else time.time()
    store = BudgetStore(settings)
    sent = 0
    context = (store, LedgerStore(settings), RollupStore(settings), WorkspaceStore(settings))
    for alert in store.pending_alerts():
        try:
            if not store.claim_alert(alert["sk"], int(now)):
                continue  # another run has it
            sent += _send_one(alert, context, ses, sender, default_recipients, now)
        except Exception:
            # Left claimed: the claim expires and a later run retries this alert; the others go on.
            log.exception("alert_failed", extra={"alert": alert.get("sk")})
    return sent


def _send_one(alert: dict[str, Any], context: tuple[BudgetStore, LedgerStore, RollupStore, WorkspaceStore],
              ses: Any, sender: str, default_recipients: list[str], now: float) -> int:
    store, ledger, rollups, workspaces = context
    config = workspaces.load(alert["workspace"])
    recipients = list(config.alert_recipients) if config and config.alert_recipients else default_recipients
    if not recipients or not sender:
        log.warning("alert_without_recipients", extra={"alert": alert["sk"]})
        store.mark_alert_sent(alert["sk"], "no-recipients")
        return 0
    tz = ZoneInfo(config.timezone if config else "UTC")
    start, end = period_bounds(alert["period"], tz)
    moment = datetime.fromtimestamp(now, tz)
    contributors, basis = top_contributors(rollups, ledger, alert["workspace"], alert["scope"], alert["period"],
                                           min(moment, end))
    projection = project(int(alert["spent"]), int(alert["cap"]), start, end, moment)
    subject, body = compose(alert, config.name if config else alert["workspace"], tz, contributors, projection,
                            basis)
    response = ses.send_email(
        FromEmailAddress=sender, Destination={"ToAddresses": recipients},
        Content={"Simple": {"Subject": {"Data": subject}, "Body": {"Text": {"Data": body}}}})
    store.mark_alert_sent(alert["sk"], response.get("MessageId", ""))
    return 1


async def _sweep(settings: Settings, now: float) -> int:
    store = BudgetStore(settings)
    ledger = LedgerStore(settings)
    client = DynamoHttp(settings)
    released = 0
    definitions: dict[str, dict[str, Any]] = {}  # workspace -> {scope: budget} (alerts of a folded pool)
    try:
        for item in store.counters_with_leases():
            expired, tombs = expired_entries(item, now)
            if not expired and not tombs:
                continue
            workspace, scope = item["pk"].split("#budget#", 1)
            month = item["sk"][2:]
            # A reservation pool's lease ("n": its settlement count) may owe its requests' costs
            # (settled through the ledger): folded from the ledger, one write per pool.
            pooled = {attr: lease for attr, lease in expired.items() if "n" in lease}
            leases = {attr: lease for attr, lease in expired.items() if attr not in pooled}
            if leases or tombs:
                await store.release_leases(client, workspace, scope, month, leases, tombs)
            for attr, lease in pooled.items():
                if workspace not in definitions:
                    definitions[workspace] = {b.scope: b for b in store.definitions(workspace).budgets}
                await store.fold_pool(client, ledger, workspace, scope, month, attr, lease, item,
                                      definitions[workspace].get(scope))
            released += len(expired)
    finally:
        await client.aclose()
    return released


def sweep_expired_leases(settings: Settings, now: float | None = None) -> int:
    """Release reservations whose lease ran out (a crashed or frozen call). Returns how many."""
    return asyncio.run(_sweep(settings, now if now is not None else time.time()))
