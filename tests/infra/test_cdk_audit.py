"""The audit trail is immutable: no role may update or delete a record, and the table itself says so."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk.storage import APPEND_ONLY_DENIED
from tests.infra.test_cdk_iam import DYNAMODB_WRITES, actions_on, grants, index_arn, table_arn

ALL_SERVICES = ("gateway", "admin", "rollup", "alerts", "waste", "focus", "mcp")


def test_no_role_may_change_or_delete_audit_records(synth):
    audit, index = table_arn(synth, "audit"), index_arn(synth, "audit", "by_actor")
    for service in ALL_SERVICES:
        on_audit = {a for a, r, _ in grants(synth, service) if r in (audit, index)}
        assert on_audit <= {"dynamodb:PutItem", "dynamodb:Query"}, (service, on_audit)
        assert not on_audit & (DYNAMODB_WRITES - {"dynamodb:PutItem"}), service


def test_writers_only_append_and_readers_only_query(synth):
    audit, index = table_arn(synth, "audit"), index_arn(synth, "audit", "by_actor")
    assert actions_on(synth, "admin", audit) == {"dynamodb:PutItem", "dynamodb:Query"}
    assert actions_on(synth, "admin", index) == {"dynamodb:Query"}
    assert actions_on(synth, "mcp", audit) == {"dynamodb:PutItem"}
    for service in ("gateway", "rollup", "alerts", "waste", "focus"):
        assert actions_on(synth, service, audit) == set(), service


def test_the_table_denies_updates_and_deletes_to_every_principal(synth):
    table = synth.resources[synth.table_id("audit")]
    props = table["Properties"]
    (statement,) = props["ResourcePolicy"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == {"AWS": "*"}
    assert set(statement["Action"]) == set(APPEND_ONLY_DENIED)
    assert {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"} <= set(statement["Action"])
    assert "dynamodb:PutItem" not in statement["Action"] and "dynamodb:Query" not in statement["Action"]
    assert table["DeletionPolicy"] == "Retain" and props["DeletionProtectionEnabled"] is True
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    # No other table carries the append-only policy.
    others = [lid for lid, r in synth.of_type("AWS::DynamoDB::Table").items()
              if "ResourcePolicy" in r["Properties"] and lid != synth.table_id("audit")]
    assert others == []
