"""Scheduled (EventBridge, daily) FOCUS 1.2 export: yesterday's rows of every workspace to S3.

One object per workspace-day: s3://<bucket>/focus/workspace=<ws>/billing_period=<yyyy-mm>/<day>.csv
(re-running a day overwrites its objects). An event may name a day ({"day": "2026-11-30"}).
"""

from __future__ import annotations

import os
from datetime import date
from typing import Any

from meterline.config import Settings
from meterline.focus.export import run_daily
from meterline.logs import configure
from meterline.store import aws

configure("focus")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    day = event.get("day") if isinstance(event, dict) else None
    if day is not None:
        date.fromisoformat(day)
    settings = Settings.from_env()
    return run_daily(settings, aws.client("s3", settings), os.environ["METERLINE_FOCUS_BUCKET"], day)
