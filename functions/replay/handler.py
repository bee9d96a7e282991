"""Ledger replay (CloudWatch Logs subscription on the gateway's log group, `ledger_write_failed` and
`budget_settle_failed` lines only): each carried record is written to the ledger if it is not there
yet, each carried settlement applied to its budget counter, lease-keyed (meterline.replay).

Metrics (EMF, namespace Meterline, dimension service=replay): LedgerReplayed, LedgerReplayDuplicates,
LedgerUnreplayable, BudgetSettlementsReplayed, per invocation. Unreplayable lines are sent to the
replay dead-letter queue (METERLINE_REPLAY_DLQ_URL) with their reason; a store failure raises, so
Lambda retries the event (idempotent) and finally sends it to the same queue as an on-failure record.
"""

from __future__ import annotations

import json
import os
from typing import Any

from meterline.config import Settings
from meterline.logs import configure
from meterline.replay import Unreplayable, budget_settler, decode_subscription, ledger_writer, replay
from meterline.store import aws
from meterline.store.ledger import LedgerStore

configure("replay")
DLQ_ENV = "METERLINE_REPLAY_DLQ_URL"
METRICS = (("LedgerReplayed", "replayed"), ("LedgerReplayDuplicates", "duplicates"),
           ("LedgerUnreplayable", "unreplayable"), ("BudgetSettlementsReplayed", "settled"))


def emit(counts: dict[str, int]) -> None:
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Meterline")
    for name, field in METRICS:
        # One EMF line each, {service} only: the dashboard reads exactly this series (zeros included,
        # so a quiet period graphs as 0, not as missing data).
        with single_metric(name=name, unit=MetricUnit.Count, value=counts[field], namespace=namespace,
                           default_dimensions={"service": "replay"}):
            pass


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    settings = Settings.from_env()
    sqs, queue = aws.client("sqs", settings), os.environ[DLQ_ENV]

    def dead_letter(letter: dict[str, Any]) -> None:
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(letter, separators=(",", ":")))

    try:
        payload = decode_subscription(event)
    except Unreplayable as exc:  # not from the subscription at all: keep it for a human, as is
        dead_letter({"reason": str(exc), "event": json.dumps(event, default=str)[:200_000]})
        counts = {"replayed": 0, "duplicates": 0, "unreplayable": 1, "settled": 0, "settle_duplicates": 0}
    else:
        result = replay(payload, ledger_writer(LedgerStore(settings)), dead_letter, budget_settler(settings))
        counts = {"replayed": result.replayed, "duplicates": result.duplicates,
                  "unreplayable": len(result.unreplayable), "settled": result.settled,
                  "settle_duplicates": result.settle_duplicates}
    emit(counts)
    return counts

