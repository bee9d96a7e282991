"""Budget alert e-mails from rollups (bounded work however busy the workspace), one failure per alert."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from meterline.budgets.alerts import send_pending_alerts
from meterline.rollup import apply_stream_records
from meterline.store import aws
from meterline.store.budgets import ALERT_PK, BudgetStore
from meterline.store.rollups import RollupStore
from meterline.store.schema import BUDGETS
from meterline.store.workspaces import WorkspaceStore


def _record(i: int, workspace: str, day: str, month: str, member: str, model: str, cost: int) -> dict:
    image = {"request_id": {"S": f"r{i}"}, "workspace": {"S": workspace}, "day": {"S": day},
             "month": {"S": month}, "cost_micros": {"N": str(cost)}, "outcome": {"S": "ok"},
             "member": {"S": member}, "model": {"S": model}}
    return {"eventID": f"e{i}", "eventName": "INSERT", "dynamodb": {"SequenceNumber": str(i), "NewImage": image}}


def _alert(settings, workspace: str, scope: str, period: str, threshold: int, spent: dict, cap: int) -> None:
    aws.client("dynamodb", settings).put_item(TableName=settings.table(BUDGETS), Item={
        "pk": {"S": ALERT_PK}, "sk": {"S": f"{workspace}#{scope}#{period}#{threshold}"},
        "workspace": {"S": workspace}, "scope": {"S": scope}, "period": {"S": period},
        "threshold": {"N": str(threshold)}, "spent": spent, "cap": {"N": str(cap)},
        "status": {"S": "pending"}, "created_at": {"N": str(int(time.time()))}})


def test_workspace_alert_uses_rollups_and_a_broken_alert_does_not_stop_the_others(settings):
    now = datetime.now(UTC)
    day, month = f"{now:%Y-%m-%d}", f"{now:%Y-%m}"
    workspaces = WorkspaceStore(settings)
    for ws in ("busy", "other"):
        workspaces.create(ws, f"Workspace {ws}", default_provider="openai")
        workspaces.update_settings(ws, alert_recipients=["finance@example.com"])
    # 300 requests aggregated into rollups; the ledger itself is empty: the e-mail cannot scan it.
    records = [_record(i, "busy", day, month, f"m{i % 3}", "gpt-4o" if i % 2 else "gpt-4o-mini", 100 + i % 3)
               for i in range(300)]
    assert apply_stream_records(records, RollupStore(settings)) == []

    ses = aws.client("sesv2", settings)
    ses.create_email_identity(EmailIdentity="alerts@example.com")
    backend = ses_backends[DEFAULT_ACCOUNT_ID][settings.region]
    before = len(backend.sent_messages)
    # A corrupt outbox item (its spend is not a number) fails alone, before and after the good one.
    _alert(settings, "another", "workspace:another", f"M#{month}", 50, {"S": "garbage"}, 1000)
    _alert(settings, "busy", "workspace:busy", f"M#{month}", 50, {"N": "30300"}, 60000)
    _alert(settings, "other", "workspace:other", f"M#{month}", 90, {"S": "x"}, 1000)
    assert send_pending_alerts(settings, ses, "alerts@example.com", ["ops@example.com"]) == 1
    [mail] = backend.sent_messages[before:]
    assert "workspace:busy reached 50%" in mail.subject
    # m0: i%3 == 0 -> 100 each x 100 requests; m1 101 x 100; m2 102 x 100.
    assert "by member: m2 $0.010200, m1 $0.010100, m0 $0.010000" in mail.body
    assert f"Top contributors (for the period {month})" in mail.body
    # odd i -> gpt-4o: 150 requests costing 100/101/102 in turn; ties break by name.
    assert "by model: gpt-4o $0.015150, gpt-4o-mini $0.015150" in mail.body
    pending = {a["sk"]: a["status"] for a in BudgetStore(settings).pending_alerts()}
    assert pending == {f"another#workspace:another#M#{month}#50": "claimed",
                       f"other#workspace:other#M#{month}#90": "claimed"}
