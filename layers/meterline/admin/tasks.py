"""Scheduled control-plane tasks: events an EventBridge rule sends the admin function directly
(not HTTP). Today one: `prices.sync`, the `meterline prices sync --yes` of the optional schedule
(CDK context `meterline:prices-sync`).

A scheduled sync accepts new models and changed prices, never removals: data that would drop priced
models is refused (the run fails, so the Lambda error metric and the log say why) and the catalog in
force is kept. Every accepted sync is an audit event, as from the CLI, by actor `schedule:prices-sync`.
"""

from __future__ import annotations

import logging
from typing import Any

from meterline.admin.ops import OpError, Ops
from meterline.config import Settings

TASK_KEY = "meterline_task"
PRICES_SYNC = "prices.sync"
ACTOR = "schedule:prices-sync"

log = logging.getLogger("meterline.admin.tasks")


class TaskError(RuntimeError):
    """A scheduled task failed; raised so the invocation counts as a Lambda error."""


def is_task(event: Any) -> bool:
    return isinstance(event, dict) and TASK_KEY in event


def run(event: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    task = event.get(TASK_KEY)
    if task != PRICES_SYNC:
        raise TaskError(f"unknown task {task!r}")
    source = event.get("source")
    if source is not None and (not isinstance(source, str) or not source.startswith("https://")):
        raise TaskError("a scheduled prices sync reads an https:// URL")
    ops = Ops(settings or Settings.from_env(), actor=ACTOR)
    try:
        out = ops.prices_sync(source, accept=True, allow_removals=False)
    except OpError as exc:
        log.error("scheduled prices sync refused", extra={"prices_sync": {"error": str(exc), "source": source}})
        raise TaskError(str(exc)) from exc
    diff = out["diff"]
    summary = {"accepted": out["accepted"], "digest": out.get("digest"), "source": out["source"],
               "new": len(diff["new"]), "changed": len(diff["changed"]), "removed": len(diff["removed"])}
    log.info("scheduled prices sync", extra={"prices_sync": summary})
    return summary
