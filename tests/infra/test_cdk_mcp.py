"""The MCP server's function: its own role (reads, plus budget PutItem and waste-day writes; no KMS, no
Scan), a buffered
public URL (the app authenticates bearer keys), and the output clients configure."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from meterline.store import schema
from tests.infra.test_cdk_iam import grants, table_arn


def test_mcp_function_url_and_output(synth):
    fn_id, fn = synth.function(c.SERVICE_MCP)
    assert fn["Properties"]["Handler"] == c.MCP_HANDLER
    url_id, url = synth.one("AWS::Lambda::Url", AuthType="NONE", InvokeMode="BUFFERED")
    assert url["Properties"]["TargetFunctionArn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    assert synth.template["Outputs"][c.OUT_MCP_URL]["Value"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [url_id, "FunctionUrl"]}, "mcp"]]}
    env = fn["Properties"]["Environment"]["Variables"]
    assert schema.KMS_KEY_ENV_VAR not in env


def test_mcp_role_is_read_only_except_budget_definitions(synth):
    allowed = grants(synth, c.SERVICE_MCP)
    actions = {a for a, _, _ in allowed}
    assert not any(a.startswith("kms:") for a in actions)
    assert "dynamodb:Scan" not in actions
    writes = [(a, r) for a, r, _ in allowed if a.startswith("dynamodb:") and a not in ("dynamodb:GetItem",
                                                                                        "dynamodb:Query")]
    # Budget definitions, waste days, and appending the audit records of what it did (test_cdk_audit).
    assert sorted(writes, key=str) == sorted([("dynamodb:PutItem", table_arn(synth, schema.BUDGETS.logical_name)),
                                              ("dynamodb:BatchWriteItem", table_arn(synth, schema.WASTE.logical_name)),
                                              ("dynamodb:PutItem", table_arn(synth, schema.AUDIT.logical_name))],
                                             key=str)
