"""The control plane: the admin API (workspaces, vault, virtual keys, budgets, reports).

A Mangum handler (`functions/admin/handler.py: handler`) on a BUFFERED function URL with AWS_IAM
auth: only principals of this account holding `lambda:InvokeFunctionUrl` and `lambda:InvokeFunction`
on this function (the `meterline` CLI signs its requests with SigV4) can call it.

Permissions (role of this function only):
    workspaces, keys (+ by_workspace index)  read and write (Scan on workspaces: listing them)
    rollups, ledger                          GetItem / Query / BatchGetItem (reports)
    waste                                    Query / GetItem / BatchWriteItem (scores on demand)
    audit (+ by_actor index)                 PutItem (append; the code conditions it on a new key) and
                                             Query. No UpdateItem, DeleteItem or BatchWriteItem.
    budgets                                  GetItem / Query / PutItem / UpdateItem / DeleteItem
                                             (budget, limit and policy definitions; the spend
                                             counters `budgets list` shows). No Scan.
    vault key                                kms:GenerateDataKey + kms:Encrypt, only with encryption
                                             context meterline:purpose=provider-key (the
                                             aws-encryption-sdk KMS keyring calls GenerateDataKey to
                                             encrypt). No kms:Decrypt: the control plane stores
                                             provider keys but can never read one back.

Environment: every table's name (it touches all of them) and the vault key ARN.

Optional schedule (context `meterline:prices-sync`, e.g. `rate(1 day)`; off by default): an
EventBridge rule invokes this function with {"meterline_task": "prices.sync"}, which runs `prices
sync --yes` (never with removals: data that would drop priced models is refused and the run fails,
visible as a Lambda error). Its writes are the ones `prices sync` already makes (the `#catalog`
items of the workspaces table, an audit record); it needs no other permission. Asynchronous retries
are off: a failed sync is re-run by the next schedule or by hand.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.function import Shared, make_function
from meterline.store import schema

TABLES = (schema.WORKSPACES, schema.KEYS, schema.LEDGER, schema.ROLLUPS, schema.BUDGETS, schema.WASTE, schema.AUDIT)
READ = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"]
WRITE = [
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
]


class ControlPlane(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, shared: Shared) -> None:
        super().__init__(scope, construct_id)
        self.function = make_function(
            self,
            "Admin",
            shared=shared,
            service=c.SERVICE_ADMIN,
            asset=c.ADMIN_ASSET,
            handler=c.ADMIN_HANDLER,
            entrypoint=c.ADMIN_HANDLER.split(".")[0] + ".py",
            description="Meterline admin API (Mangum, buffered, IAM-authenticated)",
            memory_mb=c.ADMIN_MEMORY_MB,
            timeout_s=c.ADMIN_TIMEOUT_S,
            tables=TABLES,
            vault_key=True,
        )
        self.url = self.function.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.AWS_IAM,
            invoke_mode=lambda_.InvokeMode.BUFFERED,
        )
        self._grant(shared)
        self.prices_sync = self._schedule_prices_sync(shared)

    def _schedule_prices_sync(self, shared: Shared) -> events.Rule | None:
        expression = shared.settings.prices_sync_schedule
        if expression is None:
            return None
        task = dict(c.PRICES_SYNC_TASK)
        if shared.settings.prices_sync_source:
            task["source"] = shared.settings.prices_sync_source
        self.function.configure_async_invoke(retry_attempts=0, max_event_age=Duration.hours(1))
        return events.Rule(
            self,
            "PricesSyncSchedule",
            description=f"Meterline prices sync (accept new and changed prices, never removals), {expression}",
            schedule=events.Schedule.expression(expression),
            targets=[targets.LambdaFunction(self.function, event=events.RuleTargetInput.from_object(task),
                                            retry_attempts=2, max_event_age=Duration.hours(1))],
        )

    def _grant(self, shared: Shared) -> None:
        fn = self.function
        tables = shared.storage.tables
        workspaces = tables[schema.WORKSPACES.logical_name]
        keys = tables[schema.KEYS.logical_name]
        key_indexes = [f"{keys.table_arn}/index/{index.name}" for index in schema.KEYS.indexes]
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadWriteWorkspacesAndKeys",
                actions=[*READ, *WRITE],
                resources=[workspaces.table_arn, keys.table_arn, *key_indexes],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ListWorkspaces", actions=["dynamodb:Scan"], resources=[workspaces.table_arn]
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadReports",
                actions=READ,
                resources=[
                    tables[schema.ROLLUPS.logical_name].table_arn,
                    tables[schema.LEDGER.logical_name].table_arn,
                ],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ManageBudgets",
                actions=[
                    "dynamodb:GetItem",
                    "dynamodb:Query",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                ],
                resources=[tables[schema.BUDGETS.logical_name].table_arn],
            )
        )
        audit = tables[schema.AUDIT.logical_name]
        fn.add_to_role_policy(
            iam.PolicyStatement(sid="AppendAuditRecords", actions=["dynamodb:PutItem"], resources=[audit.table_arn])
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadAuditTrail",
                actions=["dynamodb:Query"],
                resources=[audit.table_arn, *(f"{audit.table_arn}/index/{i.name}" for i in schema.AUDIT.indexes)],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ScoreWasteOnDemand",
                actions=["dynamodb:Query", "dynamodb:GetItem", "dynamodb:BatchWriteItem"],
                resources=[tables[schema.WASTE.logical_name].table_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="EncryptProviderKeys",
                actions=["kms:GenerateDataKey", "kms:Encrypt"],
                resources=[shared.storage.vault_key.key_arn],
                conditions={
                    "StringEquals": {
                        f"kms:EncryptionContext:{c.ENCRYPTION_CONTEXT_PURPOSE_KEY}": schema.ENCRYPTION_PURPOSE
                    }
                },
            )
        )
