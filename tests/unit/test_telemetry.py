"""Metrics are EMF with bounded dimensions that the dashboard reads: {service} and {endpoint, service}."""

from __future__ import annotations

import json

from meterline import telemetry
from meterline.gateway.context import RequestContext
from meterline.pricing.catalog import Rates
from meterline.pricing.cost import Cost
from meterline.usage import Usage


def test_emf_series_match_the_dashboard(monkeypatch, capsys):
    monkeypatch.setenv("METERLINE_METRICS", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Meterline")
    monkeypatch.setattr(telemetry, "_metrics", None)
    monkeypatch.setattr(telemetry, "_cold", False)
    ctx = RequestContext(endpoint="chat.completions", headers={})
    ctx.usage = Usage(input_uncached=100, cache_read=20, output=7)
    ctx.cost = Cost(123, Rates(1, 1, 1, 1, 1), "src", __import__("datetime").date(2026, 1, 1))
    telemetry.record_request(ctx)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    service_set, endpoint_set = lines
    assert service_set["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert service_set["service"] == "gateway"
    names = {m["Name"] for m in service_set["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {"Requests", "CostMicroUsd", "InputTokens", "OutputTokens", "LatencyMs", "GatewayAddedMs"}
    assert service_set["CostMicroUsd"] == [123.0] and service_set["InputTokens"] == [120.0]
    assert sorted(endpoint_set["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == ["endpoint", "service"]
    assert endpoint_set["endpoint"] == "chat.completions"


def test_savings_are_a_series_per_lever(monkeypatch, capsys):
    monkeypatch.setenv("METERLINE_METRICS", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Meterline")
    monkeypatch.setattr(telemetry, "_metrics", None)
    ctx = RequestContext(endpoint="chat.completions", headers={})
    ctx.outcome = "cache_hit"
    ctx.save("exact_cache", 4500)
    telemetry.record_request(ctx)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    service_set = lines[0]
    assert service_set["SavedMicroUsd"] == [4500.0] and service_set["CacheHits"] == [1.0]
    [lever_set] = [line for line in lines if "lever" in line]
    assert sorted(lever_set["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == ["lever", "service"]
    assert lever_set["lever"] == "exact_cache" and lever_set["SavedMicroUsd"] in (4500.0, [4500.0])


def _value(v):  # Powertools writes a metric's values as a list, or a scalar
    return v[0] if isinstance(v, list) else v


def _service_sets(capsys) -> list[dict]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return [line for line in lines if line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]]


def test_cold_start_is_counted_on_the_first_request_of_an_environment_only(monkeypatch, capsys):
    """The dashboard's ColdStart series reads {service}: the first request a process serves emits 1,
    later ones nothing (a SnapStart snapshot is taken before any request, so a restore counts too)."""
    monkeypatch.setenv("METERLINE_METRICS", "1")
    monkeypatch.setattr(telemetry, "_metrics", None)
    monkeypatch.setattr(telemetry, "_cold", True)
    for _ in range(3):
        telemetry.record_request(RequestContext(endpoint="chat.completions", headers={}))
    sets = _service_sets(capsys)
    assert len(sets) == 3
    assert _value(sets[0]["ColdStart"]) == 1.0 and sets[0]["service"] == "gateway"
    assert all("ColdStart" not in s for s in sets[1:])


def test_gateway_added_latency_leaves_out_the_provider_and_client_waits(monkeypatch, capsys):
    monkeypatch.setenv("METERLINE_METRICS", "1")
    monkeypatch.setattr(telemetry, "_metrics", None)
    monkeypatch.setattr(telemetry, "_cold", False)
    ctx = RequestContext(endpoint="chat.completions", headers={})
    ctx.started -= 2.0  # two seconds end to end ...
    ctx.upstream_ms, ctx.client_ms = 1500.0, 300.0  # ... of which 1.8 s waiting on others
    telemetry.record_request(ctx)
    [service_set] = _service_sets(capsys)
    assert _value(service_set["LatencyMs"]) >= 2000.0
    assert 200.0 <= _value(service_set["GatewayAddedMs"]) < 260.0
