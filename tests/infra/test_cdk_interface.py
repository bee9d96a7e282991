"""What a user and the CLI see of the stack: parameters and outputs."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from meterline.store import schema

# The vault key (the FOCUS export bucket has a key of its own).
VAULT_KEY = {"Description": "Meterline vault: wraps provider API keys (envelope encryption)"}


def test_outputs_let_a_cli_find_everything(synth):
    outputs = synth.template["Outputs"]
    expected = {
        c.OUT_GATEWAY_URL,
        c.OUT_ADMIN_URL,
        c.OUT_KMS_KEY_ID,
        c.OUT_KMS_KEY_ARN,
        c.OUT_DASHBOARD,
        c.OUT_DLQ_URL,
        c.OUT_ALERT_SENDER,
        c.OUT_ALERT_RECIPIENTS,
        *(c.table_output_key(spec.logical_name) for spec in schema.ALL_TABLES),
    }
    assert expected <= set(outputs)
    key_id, _ = synth.one("AWS::KMS::Key", **VAULT_KEY)
    assert outputs[c.OUT_KMS_KEY_ID]["Value"] == {"Ref": key_id}
    assert outputs[c.OUT_KMS_KEY_ARN]["Value"] == {"Fn::GetAtt": [key_id, "Arn"]}


def test_gateway_url_is_the_sdk_base_url(synth):
    url_id, _ = synth.one("AWS::Lambda::Url", AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    value = synth.template["Outputs"][c.OUT_GATEWAY_URL]["Value"]
    assert value == {"Fn::Join": ["", [{"Fn::GetAtt": [url_id, "FunctionUrl"]}, "v1/"]]}
    admin_id, _ = synth.one("AWS::Lambda::Url", AuthType="AWS_IAM")
    assert synth.template["Outputs"][c.OUT_ADMIN_URL]["Value"] == {"Fn::GetAtt": [admin_id, "FunctionUrl"]}


def _pattern(synth, name: str) -> re.Pattern[str]:
    param = synth.template["Parameters"][name]
    assert param["Type"] == "String"
    assert param["Default"] == ""
    return re.compile(param["AllowedPattern"])


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("alerts@example.com", True),
        ("a@b", False),
        ("two@x.io,three@y.io", False),
        ("a b@x.io", False),
    ],
)
def test_alert_sender_parameter(synth, value, ok):
    assert bool(_pattern(synth, c.PARAM_ALERT_SENDER).fullmatch(value)) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("finance@example.com", True),
        ("finance@example.com,cto@example.com", True),
        ("finance@example.com, cto@example.com", False),
        ("finance@example.com,", False),
        ("not-an-address", False),
    ],
)
def test_alert_recipients_parameter(synth, value, ok):
    assert bool(_pattern(synth, c.PARAM_ALERT_RECIPIENTS).fullmatch(value)) is ok


def test_alert_parameters_are_echoed(synth):
    outputs = synth.template["Outputs"]
    assert outputs[c.OUT_ALERT_SENDER]["Value"] == {"Ref": c.PARAM_ALERT_SENDER}
    assert outputs[c.OUT_ALERT_RECIPIENTS]["Value"] == {"Ref": c.PARAM_ALERT_RECIPIENTS}


def test_every_resource_is_cost_tagged(synth):
    key, value = c.COST_ALLOCATION_TAG
    taggable = (
        "AWS::DynamoDB::Table",
        "AWS::Lambda::Function",
        "AWS::SQS::Queue",
        "AWS::KMS::Key",
        "AWS::IAM::Role",
        "AWS::Events::Rule",
        "AWS::CloudWatch::Alarm",
    )
    for cfn_type in taggable:
        for lid, resource in synth.of_type(cfn_type).items():
            assert {"Key": key, "Value": value} in resource["Properties"].get("Tags", []), lid


def test_outputs_carry_what_the_cli_reads_with_stack(synth):
    from infra_cdk.constants import OUT_KMS_KEY_ARN, table_output_key
    from meterline.store.schema import ALL_TABLES

    outputs = synth.template["Outputs"]
    for spec in ALL_TABLES:
        assert table_output_key(spec.logical_name) in outputs
    assert OUT_KMS_KEY_ARN in outputs
