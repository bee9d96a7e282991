"""Waste scoring: the daily scheduled function, its least-privilege role, the admin's on-demand access."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from tests.infra.test_cdk_iam import DYNAMODB_WRITES, actions_on, grants, table_arn


def test_waste_function_runs_daily_on_a_full_vcpu(synth):
    fn_id, fn = synth.function("waste")
    props = fn["Properties"]
    assert props["Handler"] == c.WASTE_HANDLER and (c.WASTE_ASSET / "handler.py").is_file()
    assert props["MemorySize"] == 1769 and props["Timeout"] == 900
    _, rule = synth.one("AWS::Events::Rule", ScheduleExpression="cron(30 0 * * ? *)")
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}
    (config,) = [r for r in synth.of_type("AWS::Lambda::EventInvokeConfig").values()
                 if r["Properties"]["FunctionName"] == {"Ref": fn_id}]
    assert config["Properties"]["MaximumRetryAttempts"] == 0


def test_waste_role_reads_partitions_and_writes_only_scores(synth):
    assert actions_on(synth, "waste", table_arn(synth, "ledger")) == {"dynamodb:Query"}  # never a Scan
    assert actions_on(synth, "waste", table_arn(synth, "workspaces")) == {"dynamodb:Query", "dynamodb:Scan"}
    assert actions_on(synth, "waste", table_arn(synth, "waste")) == {
        "dynamodb:BatchWriteItem", "dynamodb:Query", "dynamodb:GetItem"}
    for name in ("keys", "rollups", "budgets"):
        assert actions_on(synth, "waste", table_arn(synth, name)) == set(), name
    for name in ("ledger", "workspaces"):
        assert not actions_on(synth, "waste", table_arn(synth, name)) & DYNAMODB_WRITES
    assert not [a for a, _, _ in grants(synth, "waste") if a.startswith("kms:")]


def test_admin_scores_on_demand(synth):
    assert actions_on(synth, "admin", table_arn(synth, "waste")) == {
        "dynamodb:BatchWriteItem", "dynamodb:Query", "dynamodb:GetItem"}
