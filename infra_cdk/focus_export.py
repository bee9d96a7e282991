"""FOCUS 1.2 export: a scheduled function writing yesterday's chargeback rows of every workspace to S3.

`functions/focus/handler.py: handler` runs daily at 01:00 UTC (EventBridge cron). For each
workspace it Queries the ledger partition `<workspace>#<yesterday>`, builds the FOCUS rows, checks
them (validator) and reconciles them with the records read before writing one CSV object:
`focus/workspace=<ws>/billing_period=<yyyy-mm>/<yyyy-mm-dd>.csv`.

The bucket: SSE-KMS with its own customer-managed key (rotation on; S3 Bucket Key to keep KMS
calls per object low), all public access blocked, TLS only, versioned (an overwritten day keeps
its previous version), lifecycle: Standard-IA after 90 days, expired after 730 days (noncurrent
versions after 30). Retained when the stack is deleted (chargeback records).

Permissions (role of this function only):
    ledger       Query (one partition at a time)
    workspaces   Scan (list workspaces), Query (a workspace's price overrides). No write, no vault key.
    bucket       s3:PutObject on focus/* only; kms:GenerateDataKey on the export key only
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.function import Shared, make_function
from infra_cdk.nag import acknowledge
from meterline.focus.export import S3_PREFIX
from meterline.store import schema

TABLES = (schema.LEDGER, schema.WORKSPACES)


class FocusExport(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, shared: Shared) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(self, "ExportKey", description="Meterline FOCUS export bucket (SSE-KMS)",
                           enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                           pending_window=Duration.days(30))
        self.bucket = s3.Bucket(
            self, "Bucket",
            encryption=s3.BucketEncryption.KMS, encryption_key=self.key, bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True, versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(
                id="focus-exports",
                transitions=[s3.Transition(storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                                           transition_after=Duration.days(c.FOCUS_EXPORT_IA_AFTER_DAYS))],
                expiration=Duration.days(c.FOCUS_EXPORT_RETENTION_DAYS),
                noncurrent_version_expiration=Duration.days(30),
                abort_incomplete_multipart_upload_after=Duration.days(1),
            )],
        )
        acknowledge(self.bucket, "AwsSolutions-S1",
                    "Server access logs would need a second bucket; the only writer is the export function "
                    "(CloudTrail data events can be enabled by the account for reads if required).")
        self.function = make_function(
            self, "Focus", shared=shared, service=c.SERVICE_FOCUS, asset=c.FOCUS_ASSET, handler=c.FOCUS_HANDLER,
            entrypoint=c.FOCUS_HANDLER.split(".")[0] + ".py",
            description="Meterline FOCUS 1.2 export: yesterday's chargeback rows to S3 (daily)",
            memory_mb=c.FOCUS_MEMORY_MB, timeout_s=c.FOCUS_TIMEOUT_S, tables=TABLES,
            environment={c.ENV_FOCUS_BUCKET: self.bucket.bucket_name},
        )
        self.function.configure_async_invoke(retry_attempts=0, max_event_age=Duration.hours(1))
        self.schedule = events.Rule(
            self, "Schedule", description="Meterline FOCUS 1.2 export of yesterday's rows, daily 01:00 UTC",
            schedule=events.Schedule.cron(**c.FOCUS_SCHEDULE),
            targets=[targets.LambdaFunction(self.function, retry_attempts=2, max_event_age=Duration.hours(1))],
        )
        tables = shared.storage.tables
        fn = self.function
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="ReadLedgerPartitions", actions=["dynamodb:Query"],
            resources=[tables[schema.LEDGER.logical_name].table_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="ReadWorkspaceSettings", actions=["dynamodb:Query", "dynamodb:Scan"],
            resources=[tables[schema.WORKSPACES.logical_name].table_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="WriteExports", actions=["s3:PutObject"], resources=[self.bucket.arn_for_objects(f"{S3_PREFIX}/*")]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="EncryptExports", actions=["kms:GenerateDataKey"], resources=[self.key.key_arn]))
        role = fn.role
        assert role is not None
        bucket_id = Stack.of(self).get_logical_id(self.bucket.node.default_child)  # type: ignore[arg-type]
        acknowledge(role, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{S3_PREFIX}/*]",
                    "s3:PutObject is scoped to the export prefix focus/* of the export bucket: one object per "
                    "workspace-day, whose keys are only known at run time.")
