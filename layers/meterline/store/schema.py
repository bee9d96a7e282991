"""The DynamoDB tables, defined once.

`meterline dev` creates these tables in the embedded moto server from the specs below, and the CDK
stack (`infra_cdk`) builds its tables from the same specs, so the two can never drift apart.
Each table's key layout and access patterns are owned by its data-access module:

    workspaces  -> meterline.store.workspaces   (settings, provider credentials)
                   meterline.store.templates    (prompt templates, pk "<workspace>#template")
    keys        -> meterline.store.keys         (virtual keys, by hash; by workspace via GSI)
    ledger      -> meterline.store.ledger       (one record per request; stream feeds rollups)
    rollups     -> meterline.store.rollups      (spend counters per scope and period)
    budgets     -> meterline.store.budgets      (budgets, rate limits, reservations, alert markers)
    cache       -> meterline.store.cache        (exact-match response cache entries, fill markers)
    semantic    -> meterline.store.semantic     (semantic-dedup LSH buckets and stored answers, TTL)
    waste       -> meterline.store.waste        (waste scores per workspace-day and scope)
    audit       -> meterline.store.audit        (immutable audit trail of admin actions and reads)

This module is pure data: no boto3 import.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeyAttr:
    name: str
    type: str = "S"  # DynamoDB scalar type: S, N or B


@dataclass(frozen=True)
class IndexSpec:
    name: str
    partition_key: KeyAttr
    sort_key: KeyAttr | None = None
    projection: str = "ALL"


@dataclass(frozen=True)
class TableSpec:
    logical_name: str
    partition_key: KeyAttr
    sort_key: KeyAttr | None = None
    indexes: tuple[IndexSpec, ...] = field(default_factory=tuple)
    ttl_attribute: str | None = None
    # NEW_IMAGE stream for tables whose writes are aggregated asynchronously.
    stream: str | None = None
    # Tables that hold money or key material survive a stack deletion and cannot be dropped by accident.
    retain: bool = False
    # Records are never updated or deleted (TTL aside): the CDK table's resource policy denies item
    # updates and deletes to every principal, on top of no role being granted them.
    append_only: bool = False
    description: str = ""

    @property
    def env_var(self) -> str:
        """Environment variable carrying the physical table name into the functions."""
        return f"METERLINE_TABLE_{self.logical_name.upper()}"

    def create_table_kwargs(self, physical_name: str) -> dict:
        """boto3 `create_table` arguments (used by `meterline dev` and the tests)."""
        attrs: dict[str, str] = {}
        key_schema = [{"AttributeName": self.partition_key.name, "KeyType": "HASH"}]
        attrs[self.partition_key.name] = self.partition_key.type
        if self.sort_key:
            key_schema.append({"AttributeName": self.sort_key.name, "KeyType": "RANGE"})
            attrs[self.sort_key.name] = self.sort_key.type
        gsis = []
        for index in self.indexes:
            schema = [{"AttributeName": index.partition_key.name, "KeyType": "HASH"}]
            attrs[index.partition_key.name] = index.partition_key.type
            if index.sort_key:
                schema.append({"AttributeName": index.sort_key.name, "KeyType": "RANGE"})
                attrs[index.sort_key.name] = index.sort_key.type
            gsis.append(
                {"IndexName": index.name, "KeySchema": schema, "Projection": {"ProjectionType": index.projection}}
            )
        kwargs: dict = {
            "TableName": physical_name,
            "KeySchema": key_schema,
            "AttributeDefinitions": [{"AttributeName": k, "AttributeType": v} for k, v in attrs.items()],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if gsis:
            kwargs["GlobalSecondaryIndexes"] = gsis
        if self.stream:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": self.stream}
        return kwargs


PK = KeyAttr("pk")
SK = KeyAttr("sk")

WORKSPACES = TableSpec(
    logical_name="workspaces",
    partition_key=PK,  # workspace id
    sort_key=SK,  # "settings" | "provider#<name>"
    retain=True,
    description="Workspace settings and KMS-encrypted provider credentials (the vault).",
)

KEYS = TableSpec(
    logical_name="keys",
    partition_key=KeyAttr("key_hash"),  # sha256 of the virtual key; the key itself is never stored
    indexes=(IndexSpec("by_workspace", KeyAttr("workspace"), KeyAttr("key_id")),),
    retain=True,
    description="Virtual keys, stored only as hashes.",
)

LEDGER = TableSpec(
    logical_name="ledger",
    partition_key=PK,  # "<workspace>#<yyyy-mm-dd>" (UTC day of the request)
    sort_key=SK,  # "<epoch ms, 13 digits>#<request id>"
    ttl_attribute="expires_at",
    stream="NEW_IMAGE",
    retain=True,
    description="One record per request that reached a provider and per rejection.",
)

ROLLUPS = TableSpec(
    logical_name="rollups",
    partition_key=PK,  # "<workspace>#D#<yyyy-mm-dd>" | "<workspace>#M#<yyyy-mm>" | "applied#<request id>"
    sort_key=SK,  # "<dimension>#<value>"
    ttl_attribute="expires_at",
    retain=True,
    description="Spend counters per attribution scope and period, aggregated from the ledger stream.",
)

BUDGETS = TableSpec(
    logical_name="budgets",
    partition_key=PK,  # "<workspace>" (definitions) | "<workspace>#<scope>" (counters) | ... see store/budgets.py
    sort_key=SK,
    ttl_attribute="expires_at",
    retain=True,
    description="Budget and rate-limit definitions, atomic spend/reservation counters, windows, alert markers.",
)

CACHE = TableSpec(
    logical_name="cache",
    partition_key=PK,  # "<workspace>#<sha-256 of the canonical request>" | the same + "#fill" (marker)
    ttl_attribute="expires_at",  # DynamoDB deletes late: every read checks expires_at itself
    description="Exact-match response cache: compressed answers with their usage; short fill markers.",
)

SEMANTIC = TableSpec(
    logical_name="semantic",
    partition_key=PK,  # "<workspace>#b#<scope>#<band>#<bits>" (LSH bucket) | "<workspace>#e#<scope>" (answers)
    sort_key=SK,  # "<epoch ms, 13 digits>#<entry id>"
    ttl_attribute="expires_at",
    description="Semantic dedup: embedding LSH buckets and stored answers per workspace scope; expires (TTL).",
)

WASTE = TableSpec(
    logical_name="waste",
    partition_key=PK,  # "<workspace>#<yyyy-mm-dd>" (the scored ledger partition's UTC day)
    sort_key=SK,  # "total#all" | "<dimension>#<value>" | "baseline#p95"
    ttl_attribute="expires_at",
    retain=False,  # derived data: recomputable from the ledger at any time
    description="Waste scores (signals, grades) per workspace-day and attribution scope.",
)

AUDIT = TableSpec(
    logical_name="audit",
    partition_key=PK,  # "<workspace>" ("-" for actions on no workspace)
    sort_key=SK,  # "<epoch ms, 13 digits>#<random id>"
    indexes=(IndexSpec("by_actor", KeyAttr("actor"), KeyAttr("sk")),),
    ttl_attribute="expires_at",  # retention (METERLINE_AUDIT_RETENTION_DAYS, default 7 years)
    retain=True,
    append_only=True,
    description="Immutable audit trail: who did what to which workspace, before and after, when.",
)

ALL_TABLES: tuple[TableSpec, ...] = (WORKSPACES, KEYS, LEDGER, ROLLUPS, BUDGETS, CACHE, SEMANTIC, WASTE, AUDIT)

# The KMS key that wraps provider credentials. Encryption context on every ciphertext:
# {"meterline:purpose": "provider-key", "workspace": <id>, "provider": <name>}.
KMS_KEY_ALIAS = "alias/meterline-vault"
KMS_KEY_ENV_VAR = "METERLINE_KMS_KEY_ID"
ENCRYPTION_PURPOSE = "provider-key"
