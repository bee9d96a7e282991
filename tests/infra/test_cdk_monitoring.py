"""Dashboard widgets over the gateway's metrics, and the alarms."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from infra_cdk.monitoring import GATEWAY_METRICS


def _resolve(value: Any, synth) -> str:
    """Render a Fn::Join dashboard body to text, tokens as <Ref:LogicalId>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_resolve(p, synth) for p in parts)
    if "Ref" in value:
        return f"<Ref:{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return f"<GetAtt:{'.'.join(value['Fn::GetAtt'])}>"
    raise AssertionError(f"unexpected token {value}")


@pytest.fixture(scope="module")
def dashboard(synth) -> dict[str, Any]:
    _, resource = synth.one("AWS::CloudWatch::Dashboard")
    return json.loads(_resolve(resource["Properties"]["DashboardBody"], synth))


def _metric_rows(dashboard: dict[str, Any]) -> list[list[Any]]:
    return [row for w in dashboard["widgets"] for row in w.get("properties", {}).get("metrics", [])]


def _dimensions(row: list[Any]) -> dict[str, str]:
    """A metric row's dimensions: [namespace, name, dim, value, ..., {options}?]."""
    pairs = [x for x in row[2:] if isinstance(x, str)]
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def _named(rows, namespace: str) -> list[list[Any]]:
    return [row for row in rows if row and row[0] == namespace]


def test_every_gateway_metric_is_graphed_by_service(dashboard):
    rows = _named(_metric_rows(dashboard), "Meterline")
    graphed = {row[1] for row in rows}
    assert set(GATEWAY_METRICS) <= graphed
    for row in rows:
        # the gateway's series; the replay function's own counts are {service=replay} (test_cdk_replay.py)
        replay = row[1].startswith(("Ledger", "BudgetSettlements"))
        assert _dimensions(row).get("service") == ("replay" if replay else "gateway"), row
    latency_stats = {row[4]["stat"] for row in rows if row[1] == "LatencyMs"}
    assert {"p50", "p99"} <= latency_stats


def test_gateway_added_latency_widget_plots_the_added_metric_not_end_to_end(dashboard):
    (widget,) = [w for w in dashboard["widgets"] if "Gateway-added latency" in w.get("properties", {}).get("title", "")]
    rows = widget["properties"]["metrics"]
    left = [row for row in rows if not (isinstance(row[-1], dict) and row[-1].get("yAxis") == "right")]
    assert {row[1] for row in left} == {"GatewayAddedMs"}
    assert {row[-1]["stat"] for row in left} == {"p50", "p90", "p99"}


def test_lambda_metrics_and_cold_starts(dashboard, synth):
    gateway_id, _ = synth.function("gateway")
    rows = _named(_metric_rows(dashboard), "AWS/Lambda")
    gateway_metrics = {row[1] for row in rows if row[2:4] == ["FunctionName", f"<Ref:{gateway_id}>"]}
    assert {"Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions"} <= gateway_metrics
    # ColdStart is the gateway's own {service} series (emitted on an environment's first request).
    cold = [row for row in _named(_metric_rows(dashboard), "Meterline") if row[1] == "ColdStart"]
    assert cold and all(_dimensions(row) == {"service": "gateway"} for row in cold)
    assert cold[0][-1]["stat"] == "Sum"


def test_alarm_widget_lists_every_alarm(dashboard, synth):
    (widget,) = [w for w in dashboard["widgets"] if w["type"] == "alarm"]
    assert len(widget["properties"]["alarms"]) == len(synth.of_type("AWS::CloudWatch::Alarm"))


def _alarm(synth, metric_names: set[str], dimensions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    for alarm in synth.of_type("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        names = {props.get("MetricName")} | {
            m["MetricStat"]["Metric"]["MetricName"] for m in props.get("Metrics", []) if "MetricStat" in m
        }
        if metric_names <= names and (dimensions is None or props.get("Dimensions") == dimensions):
            return props
    raise AssertionError(f"no alarm over {metric_names}")


def test_gateway_error_rate_alarm(synth):
    gateway_id, _ = synth.function("gateway")
    props = _alarm(synth, {"Errors", "Invocations"})
    (expression,) = [m for m in props["Metrics"] if "Expression" in m]
    assert "errors / invocations" in expression["Expression"]
    stats = [m for m in props["Metrics"] if "MetricStat" in m]
    for stat in stats:
        assert stat["MetricStat"]["Metric"]["Dimensions"] == [
            {"Name": "FunctionName", "Value": {"Ref": gateway_id}}
        ]
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["TreatMissingData"] == "notBreaching"


def test_gateway_throttle_alarm(synth):
    gateway_id, _ = synth.function("gateway")
    props = _alarm(synth, {"Throttles"})
    assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": gateway_id}}]
    assert props["Threshold"] == 1
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_pipeline_alarms(synth):
    assert _alarm(synth, {"UpstreamErrors", "Requests"})["Threshold"] > 0
    dlq_id = synth.queue_id(c.OUT_DLQ_URL)
    dlq = _alarm(synth, {"ApproximateNumberOfMessagesVisible"},
                 [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}])
    assert dlq["Threshold"] == 1
    rollup_id, _ = synth.function("rollup")
    lag = _alarm(synth, {"IteratorAge"})
    assert lag["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": rollup_id}}]


def test_alerts_errors_are_alarmed_and_graphed(dashboard, synth):
    alerts_id, _ = synth.function("alerts")
    rows = _named(_metric_rows(dashboard), "AWS/Lambda")
    assert any(row[1] == "Errors" and row[2:4] == ["FunctionName", f"<Ref:{alerts_id}>"] for row in rows)
    alarms = [
        a["Properties"]
        for a in synth.of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": alerts_id}}]
    ]
    assert len(alarms) == 1 and alarms[0]["MetricName"] == "Errors"
    assert alarms[0]["EvaluationPeriods"] == 3 and alarms[0]["DatapointsToAlarm"] == 2


def test_savings_are_graphed_per_lever(dashboard):
    from meterline.levers import LEVERS

    rows = _named(_metric_rows(dashboard), "Meterline")
    per_lever = {_dimensions(row).get("lever") for row in rows if row[1] == "SavedMicroUsd"} - {None}
    assert per_lever == set(LEVERS)
