"""Ledger replay: the gateway's `ledger_write_failed` log lines back into the ledger, and its
`budget_settle_failed` lines back onto the budget counters.

When the gateway cannot write a ledger record after the provider answered, it logs the whole record
as one JSON line (`"message": "ledger_write_failed"`). A CloudWatch Logs subscription filter on the
gateway's log group (JSON pattern on `$.message`, so no other line is delivered) invokes this
function (`functions/replay/handler.py: handler`), which writes each record if its key is new
(meterline.replay): a spurious failure (the write had applied) replays as a duplicate, and rollups,
fed by the ledger's stream, count every request once.

Nothing is lost on the way back:
    unreplayable line    (malformed, truncated, a value the ledger refuses) -> the replay dead-letter
                         queue, with its reason and CloudWatch coordinates, by the handler
    store failure        the invocation fails; CloudWatch Logs invokes asynchronously, so Lambda
                         retries it (REPLAY_RETRY_ATTEMPTS, for up to REPLAY_MAX_EVENT_AGE_H hours;
                         a throttled invocation is retried too), then sends the event to the same
                         queue (on-failure destination). Replaying it is safe: writes are idempotent.
The queue's depth is the dashboard's "unreplayed ledger records" and an alarm (monitoring.py).

Permissions (role of this function only): PutItem on the ledger (append; no read, no update),
UpdateItem on the budgets table's counter items only (leading key "<ws>#budget#<scope>", never a
definition: the same lease-keyed settle the gateway makes),
SendMessage to its dead-letter queue (plus what the on-failure destination needs on that queue),
its own log group. Environment: the ledger and budgets table names and the queue URL only.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as log_destinations
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.function import Shared, make_function
from infra_cdk.nag import acknowledge
from meterline.replay import MESSAGE, SETTLE_MESSAGE
from meterline.store import schema


class LedgerReplay(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, shared: Shared, gateway: lambda_.Function) -> None:
        super().__init__(scope, construct_id)
        ledger = shared.storage.tables[schema.LEDGER.logical_name]
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.dead_letters,
            "AwsSolutions-SQS3",
            "This queue IS the dead-letter queue of the ledger replay (unreplayable log lines and "
            "failed invocations); a DLQ of a DLQ would only move the same messages again.",
        )
        self.function = make_function(
            self,
            "Replay",
            shared=shared,
            service=c.SERVICE_REPLAY,
            asset=c.REPLAY_ASSET,
            handler=c.REPLAY_HANDLER,
            entrypoint=c.REPLAY_HANDLER.split(".")[0] + ".py",
            description="Meterline ledger replay: ledger_write_failed log lines -> the ledger, idempotently",
            memory_mb=c.REPLAY_MEMORY_MB,
            timeout_s=c.REPLAY_TIMEOUT_S,
            tables=(schema.LEDGER, schema.BUDGETS),
            environment={c.ENV_REPLAY_DLQ: self.dead_letters.queue_url},
        )
        self.function.configure_async_invoke(
            retry_attempts=c.REPLAY_RETRY_ATTEMPTS,
            max_event_age=Duration.hours(c.REPLAY_MAX_EVENT_AGE_H),
            on_failure=destinations.SqsDestination(self.dead_letters),
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(sid="AppendLedger", actions=["dynamodb:PutItem"], resources=[ledger.table_arn])
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="SettleBudgetCounters",
                actions=["dynamodb:UpdateItem"],
                resources=[shared.storage.tables[schema.BUDGETS.logical_name].table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [c.REPLAY_BUDGET_WRITE_KEY]}},
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(sid="DeadLetter", actions=["sqs:SendMessage"],
                                resources=[self.dead_letters.queue_arn])
        )
        log_group = gateway.log_group
        self.subscription = logs.SubscriptionFilter(
            self,
            "LedgerWriteFailed",
            log_group=log_group,
            destination=log_destinations.LambdaDestination(self.function),
            filter_pattern=logs.FilterPattern.any(
                logs.FilterPattern.string_value("$.message", "=", MESSAGE),
                logs.FilterPattern.string_value("$.message", "=", SETTLE_MESSAGE),
            ),
            filter_name="meterline-ledger-replay",
        )
