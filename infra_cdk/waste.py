"""Waste scoring: a scheduled function that scores yesterday's ledger partition of every workspace.

`functions/waste/handler.py: handler` runs daily at 00:30 UTC (EventBridge cron): for each workspace
it Queries the ledger partition `<workspace>#<yesterday>` (never a Scan of the ledger), streams the
records through the scorer (waste/signals.py) and writes the day's scores to the waste table, then
emits CloudWatch metrics (EMF: WasteMicroUsd, ScoredSpendMicroUsd, SignalMicroUsd by signal).

Re-running a day replaces its items, so the schedule's delivery retries are harmless; Lambda's own
asynchronous retries are off (a failed run is re-run by hand: invoke with {"day": "YYYY-MM-DD"}).

Permissions (role of this function only):
    ledger       Query (one partition at a time)
    workspaces   Scan (list workspaces: settings items), Query (a workspace's settings: time zone,
                 price overrides). No write, no KMS: ciphertexts are never decrypted here.
    waste        BatchWriteItem (a day's scores), Query, GetItem (yesterday's baseline)
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.function import Shared, make_function
from meterline.store import schema

TABLES = (schema.LEDGER, schema.WORKSPACES, schema.WASTE)


class WasteScoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, shared: Shared) -> None:
        super().__init__(scope, construct_id)
        self.function = make_function(
            self,
            "Waste",
            shared=shared,
            service=c.SERVICE_WASTE,
            asset=c.WASTE_ASSET,
            handler=c.WASTE_HANDLER,
            entrypoint=c.WASTE_HANDLER.split(".")[0] + ".py",
            description="Meterline waste scoring: signals and grades per workspace-day (daily)",
            memory_mb=c.WASTE_MEMORY_MB,
            timeout_s=c.WASTE_TIMEOUT_S,
            tables=TABLES,
        )
        self.function.configure_async_invoke(retry_attempts=0, max_event_age=Duration.hours(1))
        self.schedule = events.Rule(
            self,
            "Schedule",
            description="Meterline waste scoring of yesterday's ledger partitions, daily 00:30 UTC",
            schedule=events.Schedule.cron(**c.WASTE_SCHEDULE),
            targets=[targets.LambdaFunction(self.function, retry_attempts=2, max_event_age=Duration.hours(1))],
        )
        tables = shared.storage.tables
        fn = self.function
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadLedgerPartitions",
                actions=["dynamodb:Query"],
                resources=[tables[schema.LEDGER.logical_name].table_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadWorkspaceSettings",
                actions=["dynamodb:Query", "dynamodb:Scan"],
                resources=[tables[schema.WORKSPACES.logical_name].table_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteScores",
                actions=["dynamodb:BatchWriteItem", "dynamodb:Query", "dynamodb:GetItem"],
                resources=[tables[schema.WASTE.logical_name].table_arn],
            )
        )
