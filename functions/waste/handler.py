"""Scheduled (EventBridge, daily) waste scoring: yesterday's ledger partition of every workspace.

An event may name a day ({"day": "2026-11-30"}) to re-score it; re-scoring replaces that day's items.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from meterline.config import Settings
from meterline.logs import configure
from meterline.waste.job import run_scheduled

configure("waste")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    day = event.get("day") if isinstance(event, dict) else None
    if day is not None:
        date.fromisoformat(day)  # a malformed day fails the run loudly, never scores a wrong partition
    return run_scheduled(Settings.from_env(), day)
