"""Budget alert e-mails and the lease sweeper, run on a schedule (functions/alerts/handler.py).

The data plane only records threshold crossings (an outbox item per budget, period and threshold,
written once). This job claims each pending item with a conditional write - so any number of runs,
repeated or concurrent, send each alert once - composes the e-mail (scope, spend, cap, top
contributors, projection) and sends it with SES. A run that dies after claiming leaves the claim to
expire (5 minutes) and a later run retries it: at-least-once across crashes, exactly once otherwise.
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
from meterline.store.budgets import LEASE_PREFIX, BudgetStore
from meterline.store.ddb_http import DynamoHttp
from meterline.store.ledger import LedgerStore
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


def top_contributors(ledger: LedgerStore, workspace: str, scope: str, start: datetime, now: datetime,
                     limit: int = 5) -> dict[str, list[tuple[str, int]]]:
    scope_type, scope_value = scope.split(":", 1)
    by: dict[str, Counter[str]] = {"member": Counter(), "feature": Counter(), "agent": Counter(), "model": Counter()}
    day = start.astimezone(UTC).date()
    while day <= now.astimezone(UTC).date():
        for record in ledger.query_day(workspace, day.isoformat()):
            if scope_type != "workspace" and record.get(scope_type) != scope_value:
                continue
            for dim, counter in by.items():
                counter[record.get(dim) or "-"] += int(record.get("cost_micros", 0))
        day += timedelta(days=1)
    return {dim: counter.most_common(limit) for dim, counter in by.items()}


def compose(alert: dict[str, Any], workspace_name: str, tz: ZoneInfo, contributors: dict[str, list[tuple[str, int]]],
            projection: Projection) -> tuple[str, str]:
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
        "Top contributors:",
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
    store, ledger, workspaces = BudgetStore(settings), LedgerStore(settings), WorkspaceStore(settings)
    sent = 0
    for alert in store.pending_alerts():
        if not store.claim_alert(alert["sk"], int(now)):
            continue  # another run has it
        config = workspaces.load(alert["workspace"])
        recipients = list(config.alert_recipients) if config and config.alert_recipients else default_recipients
        if not recipients or not sender:
            log.warning("alert_without_recipients", extra={"alert": alert["sk"]})
            store.mark_alert_sent(alert["sk"], "no-recipients")
            continue
        tz = ZoneInfo(config.timezone if config else "UTC")
        start, end = period_bounds(alert["period"], tz)
        moment = datetime.fromtimestamp(now, tz)
        contributors = top_contributors(ledger, alert["workspace"], alert["scope"], start, min(moment, end))
        projection = project(int(alert["spent"]), int(alert["cap"]), start, end, moment)
        subject, body = compose(alert, config.name if config else alert["workspace"], tz, contributors, projection)
        response = ses.send_email(
            FromEmailAddress=sender, Destination={"ToAddresses": recipients},
            Content={"Simple": {"Subject": {"Data": subject}, "Body": {"Text": {"Data": body}}}})
        store.mark_alert_sent(alert["sk"], response.get("MessageId", ""))
        sent += 1
    return sent


async def _sweep(settings: Settings, now: float) -> int:
    store = BudgetStore(settings)
    client = DynamoHttp(settings)
    released = 0
    try:
        for item in store.counters_with_leases():
            expired = {k: v for k, v in item.items() if k.startswith(LEASE_PREFIX) and int(v["exp"]) < now}
            if expired:
                workspace, scope = item["pk"].split("#budget#", 1)
                await store.release_leases(client, workspace, scope, item["sk"][2:], expired)
                released += len(expired)
    finally:
        await client.aclose()
    return released


def sweep_expired_leases(settings: Settings, now: float | None = None) -> int:
    """Release reservations whose lease ran out (a crashed or frozen call). Returns how many."""
    return asyncio.run(_sweep(settings, now if now is not None else time.time()))
