"""Budget alerts: the scheduled function, its schedule, its SES permission, its alarm."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from aws_cdk.assertions import Match, Template

from infra_cdk import constants as c
from meterline.store import schema


@pytest.fixture(scope="module")
def template(synth) -> Template:
    return Template.from_json(synth.template)


def _fn_arn(synth) -> dict:
    fn_id, _ = synth.function("alerts")
    return {"Fn::GetAtt": [fn_id, "Arn"]}


def test_alerts_function_follows_the_conventions(synth):
    _, fn = synth.function("alerts")
    props = fn["Properties"]
    assert props["Handler"] == c.ALERTS_HANDLER == "handler.handler"
    assert props["Runtime"] == f"python{c.PYTHON_VERSION}"
    assert props["Architectures"] == ["arm64"]
    assert props["Timeout"] == 300
    # Same two layers as the other functions (dependencies, application), nothing else.
    layers = props["Layers"]
    assert len(layers) == 2
    assert {synth.resources[layer["Ref"]]["Type"] for layer in layers} == {"AWS::Lambda::LayerVersion"}
    _, gateway = synth.function("gateway")
    assert [layer for layer in gateway["Properties"]["Layers"] if "Ref" in layer] == layers
    # Overlapping runs are safe (claims are conditional writes); reserved concurrency only keeps a
    # busy public URL from starving the schedule.
    assert props["ReservedConcurrentExecutions"] == c.RESERVED_CONCURRENCY["alerts"]
    assert "SnapStart" not in props


def test_alerts_asset_is_the_alerts_folder(synth):
    assert c.ALERTS_ASSET == c.FUNCTIONS_DIR / "alerts"
    assert (c.ALERTS_ASSET / "handler.py").is_file()


def test_schedule_runs_the_alerts_function_every_five_minutes(synth, template):
    template.resource_properties_count_is(
        "AWS::Events::Rule", {"ScheduleExpression": "rate(5 minutes)", "State": "ENABLED"}, 1
    )
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(5 minutes)",
            "Targets": [
                Match.object_like(
                    {
                        "Arn": _fn_arn(synth),
                        # Delivery retries, bounded; an event is stale once the next one is due.
                        "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 300},
                    }
                )
            ],
        },
    )
    rule_id, _ = synth.one("AWS::Events::Rule", ScheduleExpression="rate(5 minutes)")
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": _fn_arn(synth),
            "Principal": "events.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]},
        },
    )


def test_failed_runs_are_not_retried_asynchronously(synth, template):
    fn_id, _ = synth.function("alerts")
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {"FunctionName": {"Ref": fn_id}, "MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 300},
    )


def test_alerts_environment_carries_sender_and_recipients(synth):
    _, fn = synth.function("alerts")
    env = fn["Properties"]["Environment"]["Variables"]
    assert env[c.ENV_ALERT_SENDER] == {"Ref": c.PARAM_ALERT_SENDER}
    assert env[c.ENV_ALERT_RECIPIENTS] == {"Ref": c.PARAM_ALERT_RECIPIENTS}
    assert c.ENV_ALERT_SENDER == "METERLINE_ALERT_SENDER"  # what functions/alerts/handler.py reads
    assert c.ENV_ALERT_RECIPIENTS == "METERLINE_ALERT_RECIPIENTS"
    for spec in (schema.BUDGETS, schema.WORKSPACES, schema.LEDGER):
        assert env[spec.env_var] == {"Ref": synth.table_id(spec.logical_name)}
    assert env["POWERTOOLS_SERVICE_NAME"] == c.SERVICE_ALERTS


def test_handler_reads_the_variables_the_stack_sets():
    text = (c.ALERTS_ASSET / "handler.py").read_text()
    assert c.ENV_ALERT_SENDER in text and c.ENV_ALERT_RECIPIENTS in text


def test_alerts_role_sends_only_from_the_sender_parameter(synth, template):
    role_id = synth.role_of("alerts")
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [{"Ref": role_id}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "SendAlertEmails",
                            "Effect": "Allow",
                            "Action": "ses:SendEmail",
                            "Resource": {
                                "Fn::Join": [
                                    "",
                                    [
                                        "arn:",
                                        {"Ref": "AWS::Partition"},
                                        ":ses:",
                                        {"Ref": "AWS::Region"},
                                        ":",
                                        {"Ref": "AWS::AccountId"},
                                        ":identity/*",
                                    ],
                                ]
                            },
                            "Condition": {"StringEquals": {"ses:FromAddress": {"Ref": c.PARAM_ALERT_SENDER}}},
                        }
                    ]
                )
            },
        },
    )
    ses = [s for s in synth.statements("alerts") if any(a.startswith("ses:") for a in _list(s["Action"]))]
    assert len(ses) == 1  # no other statement grants SES
    actions = [a for s in synth.statements("alerts") for a in _list(s["Action"])]
    assert not [a for a in actions if "*" in a], actions


def test_alerts_pinned_region_uses_literal_identity_arns(synth_x86):
    (ses,) = [s for s in synth_x86.statements("alerts") if s["Action"] == "ses:SendEmail"]
    assert ses["Resource"] == "arn:aws:ses:eu-west-1:123456789012:identity/*"
    assert ses["Condition"] == {"StringEquals": {"ses:FromAddress": {"Ref": c.PARAM_ALERT_SENDER}}}
    assert synth_x86.function("alerts")[1]["Properties"]["Architectures"] == ["x86_64"]


def test_alerts_errors_alarm(synth, template):
    fn_id, _ = synth.function("alerts")
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "Errors",
            "Namespace": "AWS/Lambda",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": fn_id}}],
            "Statistic": "Sum",
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
        },
    )


def _list(value):
    return value if isinstance(value, list) else [value]
