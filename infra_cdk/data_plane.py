"""The data plane: the OpenAI/Anthropic-compatible gateway (`/v1/*`), streamed.

Mangum buffers whole responses, so the gateway instead runs uvicorn behind the AWS Lambda Web
Adapter (LWA) layer: the handler is `run.sh` (exec'd by the adapter's /opt/bootstrap wrapper), LWA
waits for `GET /healthz`, then relays each invoke to uvicorn and streams the body back
(`AWS_LWA_INVOKE_MODE=response_stream` + a RESPONSE_STREAM function URL). The URL has no IAM auth:
callers present a Meterline virtual key, which the app checks.

SnapStart (context `meterline:snapstart`, default on): the URL points at alias `live` on a
published version, so new execution environments resume from a snapshot holding a running,
fully-imported uvicorn instead of booting one. See constants.py for why this works with LWA.

Managed instances (context `meterline:compute=managed-instances`, compute.py): the function runs on
the capacity provider instead, Python 3.13, no SnapStart (environments start ahead of traffic and
live long), `meterline:managed-concurrency` requests per environment: LWA >= 1.0 forwards concurrent
invocations to the one uvicorn process (its "Lambda Managed Instances" support, LWA PR #625). The
URL serves alias `live` (managed instances run published versions only).

Permissions (role of this function only):
    workspaces, keys (+ by_workspace index)  GetItem / Query / BatchGetItem      (read only)
    ledger                                   PutItem                            (append only)
    budgets                                  Query / GetItem (definitions), UpdateItem (reservations,
                                             settle/release, rate and loop windows, inline lease
                                             sweep, alert outbox items created conditional on new);
                                             writes only under "<ws>#..." and "alert" partition keys
                                             (dynamodb:LeadingKeys), never a definition
    cache                                    GetItem (entries), PutItem (entries, fill markers)
    cache spill bucket                       s3:GetObject / s3:PutObject on cache/* (answers too large
                                             for an item), kms:GenerateDataKey / kms:Decrypt on its
                                             own key only
    vault key                                kms:Decrypt, only for ciphertexts whose encryption
                                             context says meterline:purpose=provider-key
    bedrock                                  InvokeModel / InvokeModelWithResponseStream (Converse,
                                             ConverseStream) on foundation models and this account's
                                             inference profiles: Bedrock needs no stored key
Nothing else: it cannot write the vault, cannot encrypt, cannot read the ledger back, cannot Scan
or delete budget items (the lease sweeper and the alert sender are the alerts function's job).
The hot path calls DynamoDB through the lean SigV4 client (meterline.store.ddb_http) as well as
boto3; both sign with this role, so the same IAM actions apply.

Environment: the workspaces, keys, ledger, budgets and cache table names, the vault key ARN and the
cache spill bucket.

The cache spill bucket: SSE-KMS with its own customer-managed key (rotation on, S3 Bucket Key), all
public access blocked, TLS only, unversioned (an entry is disposable: overwritten or expired, it is
gone), lifecycle: objects expire CACHE_SPILL_RETENTION_DAYS after creation (one day past the
longest entry TTL; the DynamoDB item's expires_at decides what is served). Retained on stack delete
(a non-empty bucket cannot be removed; the lifecycle rule empties it).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.compute import ManagedCompute
from infra_cdk.function import Shared, make_function
from infra_cdk.nag import acknowledge
from meterline.config import CACHE_SPILL_ENV
from meterline.store import schema
from meterline.store.cache import SPILL_PREFIX

TABLES = (schema.WORKSPACES, schema.KEYS, schema.LEDGER, schema.BUDGETS, schema.CACHE, schema.SEMANTIC)


def lwa_layer_arn(region: str, architecture: str) -> str:
    """The public LWA layer for a region (CloudFormation token allowed) and architecture."""
    name = c.LWA_LAYER_NAMES[architecture]
    # Published in the commercial partition only (China regions use other accounts).
    return f"arn:aws:lambda:{region}:{c.LWA_ACCOUNT}:layer:{name}:{c.LWA_LAYER_VERSION}"


def lwa_environment() -> dict[str, str]:
    return {
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
        "AWS_LWA_INVOKE_MODE": "response_stream",
        "AWS_LWA_READINESS_CHECK_PATH": c.READINESS_PATH,
        "PORT": c.GATEWAY_PORT,
    }


class DataPlane(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, shared: Shared,
                 compute: ManagedCompute | None = None) -> None:
        super().__init__(scope, construct_id)
        settings = shared.settings
        # Prime before the first request where start-up is not on a request's path: the SnapStart
        # snapshot, and managed instances (environments are started ahead of traffic).
        preload = settings.gateway_snapstart or compute is not None
        web_adapter = lambda_.LayerVersion.from_layer_version_arn(
            self, "WebAdapter", lwa_layer_arn(Stack.of(self).region, settings.architecture)
        )
        self.function = make_function(
            self,
            "Gateway",
            shared=shared,
            service=c.SERVICE_GATEWAY,
            asset=c.GATEWAY_ASSET,
            handler=c.GATEWAY_HANDLER,
            entrypoint=c.GATEWAY_HANDLER,
            description="Meterline gateway: OpenAI/Anthropic-compatible proxy (uvicorn behind LWA, streamed)",
            memory_mb=settings.gateway_memory_mb,
            timeout_s=c.GATEWAY_TIMEOUT_S,
            tables=TABLES,
            vault_key=True,
            # With SnapStart the tokenizer (prompt compression) loads before the snapshot, never on a
            # restored warm request (levers/tokens.py).
            environment={**lwa_environment(), **({"METERLINE_PRELOAD_TOKENIZER": "1"} if preload else {})},
            extra_layers=(web_adapter,),
            snap_start=settings.gateway_snapstart,
        )
        if compute is not None:
            compute.attach(self.function)
        target: lambda_.IFunction = self.function
        self.alias: lambda_.Alias | None = None
        # SnapStart restores and managed instances run only published versions: the URL serves alias `live`.
        if settings.gateway_snapstart or compute is not None:
            self.alias = lambda_.Alias(
                self,
                "Live",
                alias_name=c.GATEWAY_ALIAS,
                version=self.function.current_version,
                description="The published version the function URL serves (SnapStart or managed instances)",
            )
            target = self.alias
        self.url = target.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.NONE,
            invoke_mode=lambda_.InvokeMode.RESPONSE_STREAM,
        )
        self._spill_bucket()
        self._grant(shared)

    def _spill_bucket(self) -> None:
        self.spill_key = kms.Key(self, "CacheSpillKey", description="Meterline exact-cache spill bucket (SSE-KMS)",
                                 enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                                 pending_window=Duration.days(7))
        self.spill_bucket = s3.Bucket(
            self, "CacheSpill",
            encryption=s3.BucketEncryption.KMS, encryption_key=self.spill_key, bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True, versioned=False,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(
                id="cache-spill", expiration=Duration.days(c.CACHE_SPILL_RETENTION_DAYS),
                abort_incomplete_multipart_upload_after=Duration.days(1))],
        )
        acknowledge(self.spill_bucket, "AwsSolutions-S1",
                    "Server access logs would need a second bucket for disposable cache objects; the only "
                    "reader and writer is the gateway role.")
        self.function.add_environment(CACHE_SPILL_ENV, self.spill_bucket.bucket_name)

    def _grant(self, shared: Shared) -> None:
        fn = self.function
        tables = shared.storage.tables
        workspaces = tables[schema.WORKSPACES.logical_name]
        keys = tables[schema.KEYS.logical_name]
        ledger = tables[schema.LEDGER.logical_name]
        budgets = tables[schema.BUDGETS.logical_name]
        key_indexes = [f"{keys.table_arn}/index/{index.name}" for index in schema.KEYS.indexes]
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadWorkspacesAndKeys",
                actions=["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"],
                resources=[workspaces.table_arn, keys.table_arn, *key_indexes],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="AppendLedger", actions=["dynamodb:PutItem"], resources=[ledger.table_arn]
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadBudgetDefinitions",
                actions=["dynamodb:Query", "dynamodb:GetItem"],
                resources=[budgets.table_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                # Counters, leases, rate and loop windows live under "<ws>#..." partition keys and
                # the alert outbox under "alert"; definitions live under the bare "<ws>" (workspace ids
                # cannot contain '#'). So the gateway can write what enforcement needs and never a
                # budget, limit or policy definition, even if its code were subverted.
                sid="EnforceBudgets",
                actions=["dynamodb:UpdateItem"],
                resources=[budgets.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": list(c.GATEWAY_BUDGET_WRITE_KEYS)}},
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                # Read an entry, store one, claim or lapse a fill marker: no Query, Scan or Delete.
                sid="ResponseCache", actions=["dynamodb:GetItem", "dynamodb:PutItem"],
                resources=[tables[schema.CACHE.logical_name].table_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                # Answers too large for a cache item: one object per entry, under cache/<ws>/<key>.
                sid="ResponseCacheSpill", actions=["s3:GetObject", "s3:PutObject"],
                resources=[self.spill_bucket.arn_for_objects(f"{SPILL_PREFIX}/*")],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ResponseCacheSpillKey", actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[self.spill_key.key_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="SemanticDedup",  # LSH buckets and stored answers (cache/semantic.py), TTL-expired
                actions=["dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem"],
                resources=[tables[schema.SEMANTIC.logical_name].table_arn],
            )
        )
        stack = Stack.of(self)
        # Cross-region inference profiles (us., eu., global.) route to foundation models in several
        # regions, so the model ARNs carry a region wildcard; profiles are this account's only.
        bedrock_resources = [
            f"arn:{stack.partition}:bedrock:*::foundation-model/*",
            f"arn:{stack.partition}:bedrock:*:{stack.account}:inference-profile/*",
        ]
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="InvokeBedrockModels",
                actions=["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
                resources=bedrock_resources,
            )
        )
        role = fn.role
        assert role is not None
        bucket_id = stack.get_logical_id(self.spill_bucket.node.default_child)  # type: ignore[arg-type]
        acknowledge(role, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{SPILL_PREFIX}/*]",
                    "s3:GetObject/PutObject are scoped to the cache/* prefix of the spill bucket: one object per "
                    "cache entry, whose keys (workspace and request hash) are only known at run time.")
        account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
        partition = "<AWS::Partition>" if Token.is_unresolved(stack.partition) else stack.partition
        for finding in (f"arn:{partition}:bedrock:*::foundation-model/*",
                        f"arn:{partition}:bedrock:*:{account}:inference-profile/*"):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::{finding}]",
                "Bedrock models are chosen per request by the workspace (bedrock/<model or profile>), and "
                "cross-region inference profiles invoke foundation models in several regions; the actions "
                "are limited to model invocation and profiles to this account.",
            )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="DecryptProviderKeys",
                actions=["kms:Decrypt"],
                resources=[shared.storage.vault_key.key_arn],
                conditions={
                    "StringEquals": {
                        f"kms:EncryptionContext:{c.ENCRYPTION_CONTEXT_PURPOSE_KEY}": schema.ENCRYPTION_PURPOSE
                    }
                },
            )
        )
