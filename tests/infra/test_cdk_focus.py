"""FOCUS export: the encrypted, private, lifecycle-managed bucket and the daily function's narrow role."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from tests.infra.test_cdk_iam import DYNAMODB_WRITES, actions_on, grants, table_arn


def _bucket(synth):
    (bucket_id, bucket), = [(lid, b) for lid, b in synth.of_type("AWS::S3::Bucket").items() if "FocusExport" in lid]
    return bucket_id, bucket


def test_export_bucket_is_kms_encrypted_private_and_expires(synth):
    bucket_id, bucket = _bucket(synth)
    props = bucket["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms" and rule["BucketKeyEnabled"] is True
    key_arn = rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]
    key_id = key_arn["Fn::GetAtt"][0]
    assert synth.resources[key_id]["Properties"]["EnableKeyRotation"] is True
    assert props["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                       "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (life,) = props["LifecycleConfiguration"]["Rules"]
    assert life["ExpirationInDays"] == c.FOCUS_EXPORT_RETENTION_DAYS and life["Status"] == "Enabled"
    assert life["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": c.FOCUS_EXPORT_IA_AFTER_DAYS}]
    assert bucket["DeletionPolicy"] == "Retain"
    (policy,) = [p for p in synth.of_type("AWS::S3::BucketPolicy").values()
                 if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
    denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


def test_focus_function_runs_daily_and_writes_only_exports(synth):
    _, fn = synth.function("focus")
    bucket_id, _ = _bucket(synth)
    assert fn["Properties"]["Environment"]["Variables"][c.ENV_FOCUS_BUCKET] == {"Ref": bucket_id}
    synth.one("AWS::Events::Rule", ScheduleExpression="cron(0 1 * * ? *)")
    assert actions_on(synth, "focus", table_arn(synth, "ledger")) == {"dynamodb:Query"}
    assert actions_on(synth, "focus", table_arn(synth, "workspaces")) == {"dynamodb:Query", "dynamodb:Scan"}
    assert not {a for a, _, _ in grants(synth, "focus")} & DYNAMODB_WRITES
    s3 = [(a, r) for a, r, _ in grants(synth, "focus") if a.startswith("s3:")]
    assert s3 == [("s3:PutObject", {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/focus/*"]]})]
    kms = [a for a, _, _ in grants(synth, "focus") if a.startswith("kms:")]
    assert kms == ["kms:GenerateDataKey"]
    assert synth.template["Outputs"][c.OUT_FOCUS_BUCKET]["Value"] == {"Ref": bucket_id}
