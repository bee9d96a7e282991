"""Least privilege, per function role: what each may do, and what it must not be able to do."""

from __future__ import annotations

from typing import Any

import pytest

from infra_cdk import constants as c

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from meterline.cache.rules import MAX_TTL_S
from meterline.config import CACHE_SPILL_ENV
from meterline.store import schema

PURPOSE_CONDITION = {"StringEquals": {"kms:EncryptionContext:meterline:purpose": schema.ENCRYPTION_PURPOSE}}
DYNAMODB_WRITES = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
    "dynamodb:*",
}


# The vault key (the FOCUS export bucket has a key of its own).
VAULT_KEY = {"Description": "Meterline vault: wraps provider API keys (envelope encryption)"}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants(synth, service: str) -> list[tuple[str, Any, dict[str, Any] | None]]:
    """(action, resource, condition) for every Allow in the service's role."""
    out = []
    for statement in synth.statements(service):
        assert statement["Effect"] == "Allow"
        for action in _list(statement["Action"]):
            for resource in _list(statement["Resource"]):
                out.append((action, resource, statement.get("Condition")))
    return out


def table_arn(synth, name: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [synth.table_id(name), "Arn"]}


def index_arn(synth, name: str, index: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [table_arn(synth, name), f"/index/{index}"]]}


def key_arn(synth) -> dict[str, Any]:
    key_id, _ = synth.one("AWS::KMS::Key", **VAULT_KEY)
    return {"Fn::GetAtt": [key_id, "Arn"]}


def actions_on(synth, service: str, resource: Any) -> set[str]:
    return {a for a, r, _ in grants(synth, service) if r == resource}


SERVICES = ("gateway", "admin", "rollup", "alerts", "waste", "focus", "replay")


def test_no_role_has_a_wildcard_action(synth):
    for service in SERVICES:
        for action, _, _ in grants(synth, service):
            assert "*" not in action, (service, action)


def test_only_liststreams_uses_a_star_resource(synth):
    for service in SERVICES:
        starred = {a for a, r, _ in grants(synth, service) if r == "*"}
        assert starred <= {"dynamodb:ListStreams"}, (service, starred)
    assert ("dynamodb:ListStreams", "*", None) in grants(synth, "rollup")


# --- data plane -----------------------------------------------------------------------------------


def test_gateway_reads_workspaces_and_keys(synth):
    read = {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"}
    assert actions_on(synth, "gateway", table_arn(synth, "workspaces")) == read
    assert actions_on(synth, "gateway", table_arn(synth, "keys")) == read
    assert actions_on(synth, "gateway", index_arn(synth, "keys", "by_workspace")) == read


def test_gateway_only_appends_to_the_ledger(synth):
    assert actions_on(synth, "gateway", table_arn(synth, "ledger")) == {"dynamodb:PutItem"}
    assert actions_on(synth, "gateway", table_arn(synth, "rollups")) == set()


def test_gateway_cannot_write_budget_definitions(synth):
    from fnmatch import fnmatchcase

    budgets = table_arn(synth, "budgets")
    writes = [(a, cond) for a, r, cond in grants(synth, "gateway")
              if r == budgets and a in ("dynamodb:UpdateItem", "dynamodb:PutItem")]
    assert {a for a, _ in writes} == {"dynamodb:UpdateItem"}  # the alert outbox too: created by an UpdateItem
    for _, cond in writes:
        patterns = cond["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        assert patterns == list(c.GATEWAY_BUDGET_WRITE_KEYS)
    # The keys enforcement writes match; a definition's (the bare workspace id) does not.
    for key in ("ws1#budget#feature:search", "ws1#rl#key:k1", "ws1#loop#sess", "alert"):
        assert any(fnmatchcase(key, p) for p in patterns), key
    assert not any(fnmatchcase("ws1", p) for p in patterns)


def test_gateway_enforces_budgets_without_scan_or_delete(synth):
    # Query/GetItem: definitions; UpdateItem: reservations, windows, inline sweep, the alert outbox.
    assert actions_on(synth, "gateway", table_arn(synth, "budgets")) == {
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
    }
    everything = {a for a, _, _ in grants(synth, "gateway")}
    assert not everything & {"dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}


def test_gateway_reads_and_fills_the_response_cache_only(synth):
    assert actions_on(synth, "gateway", table_arn(synth, "cache")) == {"dynamodb:GetItem", "dynamodb:PutItem"}
    for service in ("admin", "rollup", "alerts"):
        assert actions_on(synth, service, table_arn(synth, "cache")) == set(), service


def test_gateway_reads_and_writes_semantic_entries_only(synth):
    # Query: LSH buckets; GetItem: a stored answer; PutItem: new entries (they expire by TTL).
    assert actions_on(synth, "gateway", table_arn(synth, "semantic")) == {
        "dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem"}
    for service in ("admin", "rollup", "alerts"):
        assert actions_on(synth, service, table_arn(synth, "semantic")) == set()


def test_gateway_cannot_write_the_vault_or_keys(synth):
    for name in ("workspaces", "keys"):
        assert not actions_on(synth, "gateway", table_arn(synth, name)) & DYNAMODB_WRITES, name


def test_gateway_decrypts_provider_keys_only(synth):
    spill_key = [lid for lid in synth.of_type("AWS::KMS::Key") if "CacheSpillKey" in lid]
    kms = [(a, r, cond) for a, r, cond in grants(synth, "gateway") if a.startswith("kms:")
           and r != {"Fn::GetAtt": [*spill_key, "Arn"]}]
    assert kms == [("kms:Decrypt", key_arn(synth), PURPOSE_CONDITION)]


def test_gateway_reads_and_writes_only_spilled_cache_objects(synth):
    (bucket_id, bucket), = [(lid, b) for lid, b in synth.of_type("AWS::S3::Bucket").items() if "CacheSpill" in lid]
    (key_id,) = [lid for lid in synth.of_type("AWS::KMS::Key") if "CacheSpillKey" in lid]
    props = bucket["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms",
                                                     "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]}}
    assert synth.resources[key_id]["Properties"]["EnableKeyRotation"] is True
    assert props["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True
    (life,) = props["LifecycleConfiguration"]["Rules"]
    assert life["ExpirationInDays"] == c.CACHE_SPILL_RETENTION_DAYS == MAX_TTL_S // 86400 + 1
    s3 = [(a, r) for a, r, _ in grants(synth, "gateway") if a.startswith("s3:")]
    objects = {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/cache/*"]]}
    assert sorted(s3, key=str) == [("s3:GetObject", objects), ("s3:PutObject", objects)]
    assert actions_on(synth, "gateway", {"Fn::GetAtt": [key_id, "Arn"]}) == {"kms:GenerateDataKey", "kms:Decrypt"}
    for service in ("admin", "rollup", "alerts", "waste", "focus"):
        assert not [a for a, _, _ in grants(synth, service) if a.startswith("s3:Get")], service
    _, fn = synth.function("gateway")
    assert fn["Properties"]["Environment"]["Variables"][CACHE_SPILL_ENV] == {"Ref": bucket_id}


# --- control plane --------------------------------------------------------------------------------


def test_admin_reads_and_writes_workspaces_and_keys(synth):
    needed = {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
    }
    for resource in (
        table_arn(synth, "workspaces"),
        table_arn(synth, "keys"),
        index_arn(synth, "keys", "by_workspace"),
    ):
        assert needed <= actions_on(synth, "admin", resource), resource


def test_admin_only_reads_reports(synth):
    for name in ("rollups", "ledger"):
        assert actions_on(synth, "admin", table_arn(synth, name)) == {
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:BatchGetItem",
        }, name


def test_admin_manages_budget_definitions(synth):
    assert actions_on(synth, "admin", table_arn(synth, "budgets")) == {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }


def test_admin_encrypts_but_never_decrypts(synth):
    kms = {(a, str(r), str(cond)) for a, r, cond in grants(synth, "admin") if a.startswith("kms:")}
    expected = {
        (a, str(key_arn(synth)), str(PURPOSE_CONDITION)) for a in ("kms:GenerateDataKey", "kms:Encrypt")
    }
    assert kms == expected


# --- aggregation ----------------------------------------------------------------------------------


def test_rollup_reads_the_stream_and_writes_rollups_only(synth):
    stream = {"Fn::GetAtt": [synth.table_id("ledger"), "StreamArn"]}
    assert {"dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:DescribeStream"} <= actions_on(
        synth, "rollup", stream
    )
    assert actions_on(synth, "rollup", table_arn(synth, "rollups")) == {
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:GetItem",
    }
    for name in ("workspaces", "keys", "ledger", "budgets"):
        assert actions_on(synth, "rollup", table_arn(synth, name)) == set(), name
    assert not [a for a, _, _ in grants(synth, "rollup") if a.startswith("kms:")]


def test_rollup_can_dead_letter(synth):
    dlq_id = synth.queue_id(c.OUT_DLQ_URL)
    assert "sqs:SendMessage" in actions_on(synth, "rollup", {"Fn::GetAtt": [dlq_id, "Arn"]})


# --- budget alerts --------------------------------------------------------------------------------


def test_alerts_reads_outbox_and_sweeps_leases(synth):
    assert actions_on(synth, "alerts", table_arn(synth, "budgets")) == {
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:Scan",
    }
    for name in ("workspaces", "ledger", "rollups"):  # rollups: top contributors without a ledger scan
        assert actions_on(synth, "alerts", table_arn(synth, name)) == {"dynamodb:Query"}, name
    assert actions_on(synth, "alerts", table_arn(synth, "keys")) == set()
    assert not [a for a, _, _ in grants(synth, "alerts") if a.startswith("kms:")]


def test_alerts_sends_email_only_from_the_sender(synth):
    ses = [(a, cond) for a, _, cond in grants(synth, "alerts") if a.startswith("ses:")]
    assert ses == [("ses:SendEmail", {"StringEquals": {"ses:FromAddress": {"Ref": "AlertSender"}}})]
    for service in ("gateway", "admin", "rollup"):
        assert not [a for a, _, _ in grants(synth, service) if a.startswith("ses:")], service


# --- all functions --------------------------------------------------------------------------------


def test_table_names_only_where_granted(synth):
    """A function's environment names exactly the tables its role can use (table-level grants)."""
    for service in SERVICES:
        _, fn = synth.function(service)
        env = fn["Properties"]["Environment"]["Variables"]
        named = {spec.logical_name for spec in schema.ALL_TABLES if spec.env_var in env}
        granted = {
            spec.logical_name
            for spec in schema.ALL_TABLES
            if actions_on(synth, service, table_arn(synth, spec.logical_name))
        }
        assert named == granted, service


@pytest.mark.parametrize("service", SERVICES)
def test_logs_only_to_own_group(synth, service):
    _, fn = synth.function(service)
    group_id = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    logs = [(a, r) for a, r, _ in grants(synth, service) if a.startswith("logs:")]
    assert sorted(logs, key=str) == sorted(
        [(a, {"Fn::GetAtt": [group_id, "Arn"]}) for a in ("logs:CreateLogStream", "logs:PutLogEvents")],
        key=str,
    )



def test_gateway_may_invoke_bedrock_models_and_nothing_else_of_bedrock(synth):
    bedrock = {a for a, _, _ in grants(synth, "gateway") if a.startswith("bedrock:")}
    assert bedrock == {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}
    for service in ("admin", "rollup", "alerts"):
        assert not [a for a, _, _ in grants(synth, service) if a.startswith("bedrock:")], service
