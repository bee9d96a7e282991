"""Tables are built from meterline.store.schema, with the durability and encryption we promise."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from meterline.store import schema
from meterline.store.schema import TableSpec

SPECS = {spec.logical_name: spec for spec in schema.ALL_TABLES}


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
    key_id, key = synth.one("AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"
    _, alias = synth.one("AWS::KMS::Alias")
    assert alias["Properties"]["AliasName"] == schema.KMS_KEY_ALIAS
    assert alias["Properties"]["TargetKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}


def test_every_function_gets_table_names_and_key(synth):
    key_id, _ = synth.one("AWS::KMS::Key")
    for service in ("gateway", "admin", "rollup"):
        _, fn = synth.function(service)
        env = fn["Properties"]["Environment"]["Variables"]
        for name, spec in SPECS.items():
            assert env[spec.env_var] == {"Ref": synth.table_id(name)}, (service, spec.env_var)
        # A key ARN: the encryption SDK's KMS keyring decrypts only with key ARNs.
        assert env[schema.KMS_KEY_ENV_VAR] == {"Fn::GetAtt": [key_id, "Arn"]}
