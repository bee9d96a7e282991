"""Scheduled (EventBridge) budget maintenance: send pending alert e-mails with SES, release expired
reservation leases. Safe to run repeatedly and concurrently."""

from __future__ import annotations

import os
from typing import Any

from meterline.budgets.alerts import send_pending_alerts, sweep_expired_leases
from meterline.config import Settings
from meterline.logs import configure
from meterline.store import aws

configure("alerts")


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    settings = Settings.from_env()
    sender = os.environ.get("METERLINE_ALERT_SENDER", "")
    recipients = [r for r in os.environ.get("METERLINE_ALERT_RECIPIENTS", "").split(",") if r]
    # Sweep first: a misconfigured SES (unverified sender, sandbox recipient) must not keep expired
    # reservations blocking budgets; a failed send is retried on the next run.
    released = sweep_expired_leases(settings)
    sent = send_pending_alerts(settings, aws.client("sesv2", settings), sender, recipients)
    return {"alerts_sent": sent, "leases_released": released}
