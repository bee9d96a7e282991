"""DynamoDB tables (from the shared specs) and the vault's KMS key.

Every table in `meterline.store.schema.ALL_TABLES` is built from its `TableSpec`, the same spec
`meterline dev` creates its local tables from, so the two can never drift apart:
on-demand billing, point-in-time recovery, server-side encryption with the AWS-managed DynamoDB
key (no monthly key charge), and for `retain` tables (money, key material) deletion protection plus
a RETAIN removal policy so that neither `cdk destroy` nor a replaced resource drops them.

The vault key wraps provider credentials only (aws-encryption-sdk envelope encryption, encryption
context `meterline:purpose=provider-key`); rotation is on.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from meterline.store import schema
from meterline.store.schema import KeyAttr, TableSpec

_ATTR_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
_PROJECTIONS = {
    "ALL": dynamodb.ProjectionType.ALL,
    "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY,
}
_STREAMS = {
    "NEW_IMAGE": dynamodb.StreamViewType.NEW_IMAGE,
    "OLD_IMAGE": dynamodb.StreamViewType.OLD_IMAGE,
    "NEW_AND_OLD_IMAGES": dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
    "KEYS_ONLY": dynamodb.StreamViewType.KEYS_ONLY,
}


def _attr(key: KeyAttr) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=key.name, type=_ATTR_TYPES[key.type])


# Item-level changes an append-only table refuses to every principal (resource policy; an explicit
# Deny overrides any Allow, including an administrator's). TTL expiry is done by DynamoDB itself.
APPEND_ONLY_DENIED = ["dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
                      "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete", "dynamodb:RestoreTableToPointInTime"]


def _append_only_policy() -> iam.PolicyDocument:
    return iam.PolicyDocument(statements=[iam.PolicyStatement(
        sid="AppendOnly", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
        actions=APPEND_ONLY_DENIED, resources=["*"])])


class Storage(Construct):
    """`tables[logical_name]` for each spec, and `vault_key`."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.specs: dict[str, TableSpec] = {spec.logical_name: spec for spec in schema.ALL_TABLES}
        self.tables: dict[str, dynamodb.Table] = {
            spec.logical_name: self._table(spec) for spec in schema.ALL_TABLES
        }
        self.vault_key = kms.Key(
            self,
            "VaultKey",
            alias=schema.KMS_KEY_ALIAS,
            description="Meterline vault: wraps provider API keys (envelope encryption)",
            enable_key_rotation=True,
            # Losing this key loses every stored provider credential: never deleted with the stack.
            removal_policy=RemovalPolicy.RETAIN,
            pending_window=Duration.days(30),
        )

    def _table(self, spec: TableSpec) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            spec.logical_name.capitalize(),
            partition_key=_attr(spec.partition_key),
            sort_key=_attr(spec.sort_key) if spec.sort_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=spec.ttl_attribute,
            stream=_STREAMS[spec.stream] if spec.stream else None,
            deletion_protection=spec.retain,
            removal_policy=RemovalPolicy.RETAIN if spec.retain else RemovalPolicy.DESTROY,
            resource_policy=_append_only_policy() if spec.append_only else None,
        )
        for index in spec.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=_attr(index.partition_key),
                sort_key=_attr(index.sort_key) if index.sort_key else None,
                projection_type=_PROJECTIONS[index.projection],
            )
        return table

    def table_env(self, specs: Iterable[TableSpec]) -> dict[str, str]:
        """Environment naming the given tables: `METERLINE_TABLE_<NAME>` = physical table name.

        A function only gets the tables it is granted access to: the application falls back to a
        default name (`meterline-<name>`) for a missing variable, so a table a role cannot reach
        should not be named to it either.
        """
        return {spec.env_var: self.tables[spec.logical_name].table_name for spec in specs}
