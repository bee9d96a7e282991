"""Aggregation: the ledger's stream folded into spend rollups.

The gateway writes exactly one ledger record per request; this function (`functions/rollup/
handler.py: handler`) reads the ledger's NEW_IMAGE stream in batches of up to 100 (waiting up to
ROLLUP_BATCHING_WINDOW_S to fill one), sums each batch in memory and writes one ADD per (scope,
period) per batch, exactly once through run markers in the same transaction (meterline.rollup).

Failure handling, so that no ledger record is lost or counted twice:
    report_batch_item_failures   the handler reports from the first run it could not commit; the
                                 runs before it are committed and never redelivered
    bisect_batch_on_error        OFF: the handler isolates poison records itself (a `poison` item in
                                 the rollups table), and a bisected redelivery could start in the
                                 middle of a committed run (see the exactly-once argument)
    parallelization_factor       ROLLUP_PARALLELIZATION concurrent batches per shard: a hot shard
                                 keeps up; runs of one workspace spread over write shards
    retry_attempts               bounded (constants.ROLLUP_RETRY_ATTEMPTS)
    on-failure destination       an encrypted SQS dead-letter queue holding the stream coordinates
                                 of records that still failed (alarmed in monitoring.py)

Permissions (role of this function only): read the ledger stream; UpdateItem / PutItem /
ConditionCheckItem on rollups and GetItem (a run marker, on redelivery); SendMessage to its
dead-letter queue. Environment: the rollups table name only. Reserved concurrency: shards x factor
is what the mapping can use; the cap keeps a burst from taking the account's concurrency.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.function import Shared, make_function
from infra_cdk.nag import acknowledge
from meterline.store import schema


class Aggregation(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, shared: Shared) -> None:
        super().__init__(scope, construct_id)
        tables = shared.storage.tables
        ledger = tables[schema.LEDGER.logical_name]
        rollups = tables[schema.ROLLUPS.logical_name]

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
            "This queue IS the dead-letter queue (on-failure destination of the ledger stream "
            "mapping); a DLQ of a DLQ would only move the same messages again.",
        )

        self.function = make_function(
            self,
            "Rollup",
            shared=shared,
            service=c.SERVICE_ROLLUP,
            asset=c.ROLLUP_ASSET,
            handler=c.ROLLUP_HANDLER,
            entrypoint=c.ROLLUP_HANDLER.split(".")[0] + ".py",
            description="Meterline rollup: ledger stream -> spend counters per scope and period",
            memory_mb=c.ROLLUP_MEMORY_MB,
            timeout_s=c.ROLLUP_TIMEOUT_S,
            # The stream is delivered by the event source mapping: only the rollups table is named.
            tables=(schema.ROLLUPS,),
        )
        self.function.add_event_source(
            sources.DynamoEventSource(
                ledger,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=c.ROLLUP_BATCH_SIZE,
                bisect_batch_on_error=False,
                parallelization_factor=c.ROLLUP_PARALLELIZATION,
                max_batching_window=Duration.seconds(c.ROLLUP_BATCHING_WINDOW_S),
                report_batch_item_failures=True,
                retry_attempts=c.ROLLUP_RETRY_ATTEMPTS,
                on_failure=sources.SqsDlq(self.dead_letters),
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteRollups",
                actions=["dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:ConditionCheckItem",
                         "dynamodb:GetItem"],
                resources=[rollups.table_arn],
            )
        )
        assert self.function.role is not None
        acknowledge(
            self.function.role,
            "AwsSolutions-IAM5[Resource::*]",
            "dynamodb:ListStreams has no resource-level permissions (it only accepts '*'); the stream "
            "read actions themselves are scoped to the ledger's stream ARN.",
        )
