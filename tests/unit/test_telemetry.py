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
    ctx = RequestContext(endpoint="chat.completions", headers={})
    ctx.usage = Usage(input_uncached=100, cache_read=20, output=7)
    ctx.cost = Cost(123, Rates(1, 1, 1, 1, 1), "src", __import__("datetime").date(2026, 1, 1))
    telemetry.record_request(ctx)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    service_set, endpoint_set = lines
    assert service_set["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert service_set["service"] == "gateway"
    names = {m["Name"] for m in service_set["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {"Requests", "CostMicroUsd", "InputTokens", "OutputTokens", "LatencyMs"}
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
