"""The optional `prices sync` schedule: off by default; with context `meterline:prices-sync` an
EventBridge rule invokes the admin function with the task event, nag- and lint-clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from infra_cdk.settings import ContextError, _schedule
from meterline.admin import tasks
from tests.infra.test_cdk_lint import CFN_LINT_ACCEPTED, LINT_REGIONS


def _rules_targeting(synth, fn_id: str) -> list[dict]:
    return [r for r in synth.of_type("AWS::Events::Rule").values()
            if any(t["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]} for t in r["Properties"]["Targets"])]


def test_off_by_default(synth):
    admin_id, _ = synth.function("admin")
    assert _rules_targeting(synth, admin_id) == []
    assert not [r for r in synth.of_type("AWS::Lambda::EventInvokeConfig").values()
                if r["Properties"]["FunctionName"] == {"Ref": admin_id}]


def test_context_schedules_the_admin_function_with_the_task_event(synth_x86):
    admin_id, _ = synth_x86.function("admin")
    [rule] = _rules_targeting(synth_x86, admin_id)
    props = rule["Properties"]
    assert props["ScheduleExpression"] == "rate(1 day)" and props["State"] == "ENABLED"
    [target] = props["Targets"]
    event = json.loads(target["Input"])
    assert event == {tasks.TASK_KEY: tasks.PRICES_SYNC, "source": "https://prices.example.com/data.json"}
    assert {k: v for k, v in event.items() if k != "source"} == c.PRICES_SYNC_TASK
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}
    [config] = [r for r in synth_x86.of_type("AWS::Lambda::EventInvokeConfig").values()
                if r["Properties"]["FunctionName"] == {"Ref": admin_id}]
    assert config["Properties"]["MaximumRetryAttempts"] == 0
    # Only EventBridge, only from this rule, may invoke the function for it.
    rule_id = next(lid for lid, r in synth_x86.of_type("AWS::Events::Rule").items() if r is rule)
    perms = [p["Properties"] for p in synth_x86.of_type("AWS::Lambda::Permission").values()
             if p["Properties"].get("Principal") == "events.amazonaws.com"
             and p["Properties"]["FunctionName"] == {"Fn::GetAtt": [admin_id, "Arn"]}]
    assert perms and all(p["SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]} for p in perms)


def test_the_scheduled_synth_passes_cfn_lint(synth_x86):
    from cfnlint.api import ManualArgs, lint_file

    template = Path(synth_x86.outdir) / f"{synth_x86.stack.artifact_id}.template.json"
    if not template.exists():  # written under the assembly directory
        template = next(Path(synth_x86.outdir).rglob(f"{synth_x86.stack.artifact_id}.template.json"))
    matches = lint_file(template, config=ManualArgs(regions=LINT_REGIONS))
    problems = [f"{m.rule.id}: {m.message}" for m in matches
                if m.rule.id not in CFN_LINT_ACCEPTED and m.rule.severity in ("error", "warning")]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("value", ["rate(1 day)", "rate(6 hours)", "rate(2 days)", "cron(0 6 * * ? *)"])
def test_valid_expressions(value):
    assert _schedule(value) == value


@pytest.mark.parametrize("value", [None, "", "off", "false"])
def test_off_values(value):
    assert _schedule(value) is None


@pytest.mark.parametrize("value", ["rate(1 days)", "rate(2 day)", "rate(5 minutes)", "rate(0 hours)", "daily",
                                   "cron(0 6 * *)"])
def test_invalid_expressions_fail_the_synth(value):
    with pytest.raises(ContextError, match=c.CTX_PRICES_SYNC):
        _schedule(value)
