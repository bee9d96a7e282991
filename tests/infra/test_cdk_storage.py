"""Tables are built from meterline.store.schema, with the durability and encryption we promise."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from meterline.store import schema
from meterline.store.schema import TableSpec

SPECS = {spec.logical_name: spec for spec in schema.ALL_TABLES}


# The vault key (the FOCUS export bucket has a key of its own).
VAULT_KEY = {"Description": "Meterline vault: wraps provider API keys (envelope encryption)"}


def test_one_table_per_spec(synth):
    assert len(synth.of_type("AWS::DynamoDB::Table")) == len(schema.ALL_TABLES)
    for name in SPECS:
        assert synth.resources[synth.table_id(name)]["Type"] == "AWS::DynamoDB::Table"


def _expected_keys(spec: TableSpec) -> list[dict[str, str]]:
    keys = [{"AttributeName": spec.partition_key.name, "KeyType": "HASH"}]
    if spec.sort_key:
        keys.append({"AttributeName": spec.sort_key.name, "KeyType": "RANGE"})
    return keys


@pytest.mark.parametrize("name", sorted(SPECS))
def test_table_matches_its_spec(synth, name):
    spec = SPECS[name]
    table = synth.resources[synth.table_id(name)]
    props = table["Properties"]
    # The same shape `meterline dev` creates locally from the same spec.
    local = spec.create_table_kwargs("local")
    assert props["KeySchema"] == _expected_keys(spec)
    assert {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]} == {
        a["AttributeName"]: a["AttributeType"] for a in local["AttributeDefinitions"]
    }
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    expected_gsis = {
        g["IndexName"]: (g["KeySchema"], g["Projection"]["ProjectionType"])
        for g in local.get("GlobalSecondaryIndexes", [])
    }
    actual_gsis = {
        g["IndexName"]: (g["KeySchema"], g["Projection"]["ProjectionType"])
        for g in props.get("GlobalSecondaryIndexes", [])
    }
    assert actual_gsis == expected_gsis
    if spec.ttl_attribute:
        assert props["TimeToLiveSpecification"] == {"AttributeName": spec.ttl_attribute, "Enabled": True}
    else:
        assert "TimeToLiveSpecification" not in props
    if spec.stream:
        assert props["StreamSpecification"] == {"StreamViewType": spec.stream}
    else:
        assert "StreamSpecification" not in props


@pytest.mark.parametrize("name", sorted(SPECS))
def test_table_durability_and_encryption(synth, name):
    table = synth.resources[synth.table_id(name)]
    props = table["Properties"]
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True
    if SPECS[name].retain:
        assert table["DeletionPolicy"] == "Retain"
        assert table["UpdateReplacePolicy"] == "Retain"
        assert props["DeletionProtectionEnabled"] is True
    else:
        assert table.get("DeletionPolicy") == "Delete"


def test_ledger_stream_feeds_rollups(synth):
    _, mapping = synth.one("AWS::Lambda::EventSourceMapping")
    assert mapping["Properties"]["EventSourceArn"] == {
        "Fn::GetAtt": [synth.table_id(schema.LEDGER.logical_name), "StreamArn"]
    }


def test_vault_key(synth):
    key_id, key = synth.one("AWS::KMS::Key", **VAULT_KEY)
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"
    _, alias = synth.one("AWS::KMS::Alias")
    assert alias["Properties"]["AliasName"] == schema.KMS_KEY_ALIAS
    assert alias["Properties"]["TargetKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}


# Tables each function is given the name of (and may use): see test_cdk_iam for the grants.
FUNCTION_TABLES = {
    "gateway": {"workspaces", "keys", "ledger", "budgets", "cache", "semantic"},
    "admin": {"workspaces", "keys", "ledger", "rollups", "budgets", "waste", "audit"},
    "rollup": {"rollups"},
    "alerts": {"budgets", "workspaces", "ledger", "rollups"},
    "waste": {"ledger", "workspaces", "waste"},
    "focus": {"ledger", "workspaces"},
}
KEY_USERS = {"gateway", "admin"}


@pytest.mark.parametrize("service", sorted(FUNCTION_TABLES))
def test_functions_get_the_table_names_they_use(synth, service):
    _, fn = synth.function(service)
    env = fn["Properties"]["Environment"]["Variables"]
    for name in FUNCTION_TABLES[service]:
        assert env[SPECS[name].env_var] == {"Ref": synth.table_id(name)}, (service, name)
    table_vars = {k for k in env if k.startswith("METERLINE_TABLE_")}
    assert table_vars == {SPECS[name].env_var for name in FUNCTION_TABLES[service]}


def test_every_table_is_used_by_some_function():
    assert set().union(*FUNCTION_TABLES.values()) == set(SPECS)


@pytest.mark.parametrize("service", sorted(FUNCTION_TABLES))
def test_only_key_users_get_the_vault_key(synth, service):
    key_id, _ = synth.one("AWS::KMS::Key", **VAULT_KEY)
    env = synth.function(service)[1]["Properties"]["Environment"]["Variables"]
    if service in KEY_USERS:
        # A key ARN: the encryption SDK's KMS keyring decrypts only with key ARNs.
        assert env[schema.KMS_KEY_ENV_VAR] == {"Fn::GetAtt": [key_id, "Arn"]}
    else:
        assert schema.KMS_KEY_ENV_VAR not in env
