"""One Lambda function the Meterline way: its own role, its own log group, the shared layers.

Each function gets a dedicated IAM role that starts empty (no managed policy) and receives only
what its construct grants: writing to its own log group here, table and key access in the
data/control/aggregation/alerts constructs. Likewise its environment names only the tables (and
the vault key) that construct uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Annotations, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.layer import architecture, runtime
from infra_cdk.nag import acknowledge
from infra_cdk.settings import DeploySettings
from infra_cdk.storage import Storage
from meterline.store import schema
from meterline.store.schema import TableSpec


@dataclass(frozen=True)
class Shared:
    """What every function construct is given by the stack."""

    settings: DeploySettings
    storage: Storage
    layers: tuple[lambda_.ILayerVersion, ...]


def base_environment(
    shared: Shared, service: str, tables: Sequence[TableSpec], vault_key: bool
) -> dict[str, str]:
    """Names of the tables the function uses (and only those), the vault key if it uses it, and the
    Powertools settings every function shares."""
    env = shared.storage.table_env(tables)
    if vault_key:
        # A key ARN, not a bare id: aws-encryption-sdk's KMS keyring can only decrypt with key ARNs.
        env[schema.KMS_KEY_ENV_VAR] = shared.storage.vault_key.key_arn
    env["POWERTOOLS_SERVICE_NAME"] = service
    env["POWERTOOLS_METRICS_NAMESPACE"] = c.METRICS_NAMESPACE
    env["LOG_LEVEL"] = c.LOG_LEVEL
    return env


def make_function(
    scope: Construct,
    construct_id: str,
    *,
    shared: Shared,
    service: str,
    asset: Path,
    handler: str,
    entrypoint: str,
    description: str,
    memory_mb: int,
    timeout_s: int,
    tables: Sequence[TableSpec],
    vault_key: bool = False,
    environment: dict[str, str] | None = None,
    extra_layers: tuple[lambda_.ILayerVersion, ...] = (),
    snap_start: bool = False,
) -> lambda_.Function:
    """A function over `asset` (a folder under functions/) whose entry point file is `entrypoint`.

    `tables` are the tables whose names the function gets (`METERLINE_TABLE_<NAME>`): those its
    construct grants access to. `vault_key`: whether it gets the vault key ARN (gateway, admin).
    """
    if not asset.is_dir():
        raise FileNotFoundError(f"function asset {asset} is missing (it holds the {service} entry point)")
    if not (asset / entrypoint).is_file():
        Annotations.of(scope).add_warning_v2(
            f"meterline:{service}-entrypoint",
            f"{asset.relative_to(c.REPO_ROOT)}/{entrypoint} does not exist: the {service} function "
            "will fail at run time",
        )

    log_group = logs.LogGroup(
        scope,
        f"{construct_id}Logs",
        retention=logs.RetentionDays.ONE_MONTH,
        removal_policy=RemovalPolicy.DESTROY,
    )
    role = iam.Role(
        scope,
        f"{construct_id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"Meterline {service} function: least privilege, one role per function",
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="WriteOwnLogs",
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],
        )
    )

    env = base_environment(shared, service, tables, vault_key)
    env.update(environment or {})
    fn = lambda_.Function(
        scope,
        construct_id,
        description=description,
        runtime=runtime(shared.settings),
        architecture=architecture(shared.settings),
        code=lambda_.Code.from_asset(str(asset), exclude=["__pycache__", "*.pyc", "tests"]),
        handler=handler,
        memory_size=memory_mb,
        timeout=Duration.seconds(timeout_s),
        role=role,
        log_group=log_group,
        layers=[*extra_layers, *shared.layers],
        environment=env,
        # Guard rails: admin, rollup and alerts keep capacity however busy the public URL is; the
        # gateway may be capped (DeploySettings.concurrency_of).
        reserved_concurrent_executions=shared.settings.concurrency_of(service),
        snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if snap_start else None,
        # Superseded versions are deleted on update (each cached SnapStart snapshot is billed).
        current_version_options=lambda_.VersionOptions(removal_policy=RemovalPolicy.DESTROY),
    )
    if snap_start:
        Annotations.of(fn).acknowledge_warning(
            "@aws-cdk/aws-lambda:snapStartRequirePublish",
            "The version is published (current_version) and served through an alias by the caller.",
        )
    acknowledge(
        fn,
        "AwsSolutions-L1",
        f"Pinned to python{shared.settings.python_version} on purpose: the dependency layer's wheels are "
        "resolved for exactly this version (pip --python-version). Bump constants.PYTHON_VERSION (or "
        "MANAGED_PYTHON_VERSION) to move runtime and layer together.",
    )
    return fn
