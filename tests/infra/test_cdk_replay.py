"""Ledger replay in the template: the gateway log group's subscription filter, the replay function, its
dead-letter queue, its least-privilege role, and the dashboard's unreplayed count (infra_cdk/replay.py).

The handler's behaviour is tested in tests/faults/test_ledger_replay.py."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from meterline.replay import MESSAGE, SETTLE_MESSAGE
from meterline.store import schema
from tests.infra.test_cdk_iam import grants, table_arn
from tests.infra.test_cdk_monitoring import _alarm, _resolve


def _replay(synth):
    fn_id, fn = synth.function("replay")
    return fn_id, fn, synth.queue_id(c.OUT_REPLAY_DLQ_URL)


def test_gateway_log_group_feeds_failed_ledger_writes_to_the_replay_function(synth):
    fn_id, _, _ = _replay(synth)
    _, gateway = synth.function("gateway")
    gateway_group = gateway["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    [(_, sub)] = synth.of_type("AWS::Logs::SubscriptionFilter").items()
    props = sub["Properties"]
    assert props["LogGroupName"] == {"Ref": gateway_group}
    assert props["DestinationArn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    # A JSON pattern on the Powertools line's `message` field: only failed ledger writes and failed
    # settlements are sent.
    assert props["FilterPattern"] == f'{{ ($.message = "{MESSAGE}") || ($.message = "{SETTLE_MESSAGE}") }}'
    assert "DependsOn" in sub  # after the invoke permission, or CloudWatch Logs refuses the filter
    permissions = [p["Properties"] for p in synth.of_type("AWS::Lambda::Permission").values()
                   if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [fn_id, "Arn"]}]
    assert [(p["Principal"], p["SourceArn"]) for p in permissions] == [
        ("logs.amazonaws.com", {"Fn::GetAtt": [gateway_group, "Arn"]})]


def test_the_gateway_logs_the_line_the_filter_matches():
    """Every place that gives up on a ledger write logs MESSAGE with the record as `ledger_record`."""
    from infra_cdk.constants import APP_PACKAGE_DIR

    sites = [p for p in (APP_PACKAGE_DIR / "gateway").glob("*.py")
             if re.search(r'log\.error\("ledger_write_failed", extra=\{"ledger_record": record', p.read_text())]
    assert {p.name for p in sites} >= {"pipeline.py", "proxy.py", "semantic.py"}
    assert MESSAGE == "ledger_write_failed"
    enforcement = (APP_PACKAGE_DIR / "gateway" / "enforcement.py").read_text()
    assert re.search(r'log\.error\("budget_settle_failed", extra=\{[^}]*"settlement": \{', enforcement)
    # ... and the store, for a pooled request whose ledger record's write failed (BudgetStore.ledgered).
    store = (APP_PACKAGE_DIR / "store" / "budgets.py").read_text()
    assert re.search(r'log\.error\("budget_settle_failed", extra=\{[^}]*"settlement": \{', store)
    assert SETTLE_MESSAGE == "budget_settle_failed"


def test_replay_function_retries_then_dead_letters(synth):
    fn_id, fn, dlq_id = _replay(synth)
    props = fn["Properties"]
    assert props["Handler"] == c.REPLAY_HANDLER and props["Timeout"] == c.REPLAY_TIMEOUT_S
    env = props["Environment"]["Variables"]
    assert env[c.ENV_REPLAY_DLQ] == {"Ref": dlq_id}
    assert {spec.env_var for spec in schema.ALL_TABLES if spec.env_var in env} == {schema.LEDGER.env_var,
                                                                                   schema.BUDGETS.env_var}
    assert props["ReservedConcurrentExecutions"] == c.RESERVED_CONCURRENCY["replay"]
    [(_, config)] = [(k, v) for k, v in synth.of_type("AWS::Lambda::EventInvokeConfig").items()
                     if v["Properties"]["FunctionName"] == {"Ref": fn_id}]
    config = config["Properties"]
    assert config["MaximumRetryAttempts"] == c.REPLAY_RETRY_ATTEMPTS == 2
    assert config["MaximumEventAgeInSeconds"] == c.REPLAY_MAX_EVENT_AGE_H * 3600
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    queue = synth.resources[dlq_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True and queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    _, policy = synth.one("AWS::SQS::QueuePolicy", Queues=[{"Ref": dlq_id}])
    assert [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]


def test_handler_reads_the_queue_the_stack_names():
    text = (c.REPLAY_ASSET / "handler.py").read_text()
    assert f'DLQ_ENV = "{c.ENV_REPLAY_DLQ}"' in text


def test_replay_role_appends_to_the_ledger_settles_counters_and_dead_letters_only(synth):
    _, _, dlq_id = _replay(synth)
    dlq_arn = {"Fn::GetAtt": [dlq_id, "Arn"]}
    allowed = grants(synth, "replay")
    dynamo = {(a, json.dumps(r, sort_keys=True), json.dumps(cond, sort_keys=True))
              for a, r, cond in allowed if a.startswith("dynamodb:")}
    assert dynamo == {
        ("dynamodb:PutItem", json.dumps(table_arn(synth, schema.LEDGER.logical_name), sort_keys=True), "null"),
        # Counter items only (never a budget definition, whose partition key is the bare workspace id).
        ("dynamodb:UpdateItem", json.dumps(table_arn(synth, schema.BUDGETS.logical_name), sort_keys=True),
         json.dumps({"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["*#budget#*"]}}, sort_keys=True)),
    }
    sqs = {(a, json.dumps(r, sort_keys=True)) for a, r, _ in allowed if a.startswith("sqs:")}
    assert {r for _, r in sqs} == {json.dumps(dlq_arn, sort_keys=True)}  # its own queue, nothing else
    assert {a for a, _ in sqs} <= {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
    others = {a for a, _, _ in allowed if not a.startswith(("dynamodb:", "sqs:", "logs:"))}
    assert others == set()  # no KMS, no reads, no other service


def test_dashboard_counts_unreplayed_records_and_alarms_on_them(synth):
    _, _, dlq_id = _replay(synth)
    _, resource = synth.one("AWS::CloudWatch::Dashboard")
    dashboard = json.loads(_resolve(resource["Properties"]["DashboardBody"], synth))
    [single] = [w for w in dashboard["widgets"] if w["type"] == "metric"
                and w["properties"].get("title") == "Unreplayed ledger records"]
    [row] = single["properties"]["metrics"]
    assert row[:4] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", f"<GetAtt:{dlq_id}.QueueName>"]
    title = "Ledger replay (failed ledger writes and settlements)"
    [graph] = [w for w in dashboard["widgets"] if w["properties"].get("title") == title]
    rows = graph["properties"]["metrics"]
    replay_rows = {r[1] for r in rows if r[0] == "Meterline" and r[2:4] == ["service", "replay"]}
    assert replay_rows == {"LedgerReplayed", "LedgerReplayDuplicates", "LedgerUnreplayable",
                           "BudgetSettlementsReplayed"}
    alarm = _alarm(synth, {"ApproximateNumberOfMessagesVisible"},
                   [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}])
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    [status] = [w for w in dashboard["widgets"] if w["type"] == "alarm"]
    alarm_ids = [lid for lid, a in synth.of_type("AWS::CloudWatch::Alarm").items() if a["Properties"] is alarm]
    assert f"<GetAtt:{alarm_ids[0]}.Arn>" in status["properties"]["alarms"]
