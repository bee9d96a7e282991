"""Request telemetry: one JSON line per request that is both the request's log line (as Powertools'
logger wrote it) and an EMF document whose directives give the bounded series the dashboard reads:
{service}, {endpoint, service} for Requests, {lever, service} for SavedMicroUsd per lever."""

from __future__ import annotations

import datetime
import logging
import re

import pytest

from meterline import telemetry
from meterline.errors import GatewayError
from meterline.gateway.context import RequestContext
from meterline.pricing.catalog import Rates
from meterline.pricing.cost import Cost
from meterline.usage import Usage
from tests import emf

MS = "Milliseconds"
POWERTOOLS_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}[+-]\d{4}$")


@pytest.fixture
def metrics_on(monkeypatch):
    monkeypatch.setenv("METERLINE_METRICS", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Meterline")
    monkeypatch.setattr(telemetry, "_cold", False)


def priced(**kw) -> RequestContext:
    ctx = RequestContext(endpoint="chat.completions", headers={})
    ctx.usage = Usage(input_uncached=100, cache_read=20, output=7)
    ctx.cost = Cost(123, Rates(1, 1, 1, 1, 1), "src", datetime.date(2026, 1, 1))
    for name, value in kw.items():
        setattr(ctx, name, value)
    return ctx


def rejected() -> RequestContext:
    ctx = RequestContext(endpoint="messages", headers={})
    ctx.error, ctx.outcome = GatewayError("Budget exceeded.", code="budget_exceeded", status=429), "rejected"
    return ctx


def units(series: dict[str, tuple[str, object]]) -> dict[str, str]:
    return {name: unit for name, (unit, _) in series.items()}


def test_emf_series_match_the_dashboard(metrics_on, capsys):
    telemetry.record_request(priced())
    [doc] = emf.documents(capsys.readouterr().out)
    assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Meterline"
    series = emf.series(doc)
    assert set(series) == {("service",), ("endpoint", "service")}
    assert units(series["service",]) == {"Requests": "Count", "CostMicroUsd": "Count", "InputTokens": "Count",
                                          "OutputTokens": "Count", "LatencyMs": MS, "GatewayAddedMs": MS}
    assert doc["service"] == "gateway" and doc["endpoint"] == "chat.completions"
    assert (doc["Requests"], doc["CostMicroUsd"], doc["InputTokens"], doc["OutputTokens"]) == (1, 123, 120, 7)
    assert series["endpoint", "service"] == {"Requests": ("Count", 1)}


def test_the_namespace_comes_from_the_powertools_setting(metrics_on, monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Acme/Meterline")
    telemetry.record_request(priced())
    [doc] = emf.documents(capsys.readouterr().out)
    assert {d["Namespace"] for d in doc["_aws"]["CloudWatchMetrics"]} == {"Acme/Meterline"}


def test_one_lever_saving_is_its_series_in_the_same_line(metrics_on, capsys):
    ctx = RequestContext(endpoint="chat.completions", headers={})
    ctx.outcome = "cache_hit"
    ctx.save("exact_cache", 4500)
    telemetry.record_request(ctx)
    [doc] = emf.documents(capsys.readouterr().out)
    series = emf.series(doc)
    assert set(series) == {("service",), ("endpoint", "service"), ("lever", "service")}
    assert units(series["service",]) == {"Requests": "Count", "CacheHits": "Count", "SavedMicroUsd": "Count",
                                          "LatencyMs": MS, "GatewayAddedMs": MS}
    assert doc["SavedMicroUsd"] == 4500 and doc["CacheHits"] == 1
    assert series["lever", "service"] == {"SavedMicroUsd": ("Count", 4500)} and doc["lever"] == "exact_cache"


def test_several_levers_each_get_a_line_of_their_own(metrics_on, capsys):
    ctx = priced()
    ctx.save("prompt_cache", 800)
    ctx.save("compression", 310)
    telemetry.record_request(ctx)
    main, *per_lever = emf.documents(capsys.readouterr().out)
    assert set(emf.series(main)) == {("service",), ("endpoint", "service")} and "lever" not in main
    assert main["SavedMicroUsd"] == 1110  # all levers, in the {service} series
    assert [(d["lever"], emf.series(d)) for d in per_lever] == [
        ("compression", {("lever", "service"): {"SavedMicroUsd": ("Count", 310)}}),
        ("prompt_cache", {("lever", "service"): {"SavedMicroUsd": ("Count", 800)}}),
    ]
    assert all(d["service"] == "gateway" and d["_aws"]["Timestamp"] == main["_aws"]["Timestamp"] for d in per_lever)


def test_rejections_and_upstream_errors_are_counted(metrics_on, capsys):
    failed = priced(outcome="upstream_timeout")
    telemetry.record_request(rejected())
    telemetry.record_request(failed)
    refused, timed_out = emf.documents(capsys.readouterr().out)
    assert units(emf.series(refused)["service",]) == {"Requests": "Count", "Rejections": "Count",
                                                      "LatencyMs": MS, "GatewayAddedMs": MS}
    assert refused["Rejections"] == 1 and refused["endpoint"] == "messages"
    assert "UpstreamErrors" in emf.series(timed_out)["service",] and timed_out["UpstreamErrors"] == 1


def test_cold_start_is_counted_on_the_first_request_of_an_environment_only(monkeypatch, capsys):
    """The dashboard's ColdStart series reads {service}: the first request a process serves emits 1,
    later ones nothing (a SnapStart snapshot is taken before any request, so a restore counts too)."""
    monkeypatch.setenv("METERLINE_METRICS", "1")
    monkeypatch.setattr(telemetry, "_cold", True)
    for _ in range(3):
        telemetry.record_request(RequestContext(endpoint="chat.completions", headers={}))
    docs = emf.documents(capsys.readouterr().out)
    assert len(docs) == 3
    assert emf.series(docs[0])["service",]["ColdStart"] == ("Count", 1) and docs[0]["service"] == "gateway"
    assert all("ColdStart" not in d and "ColdStart" not in emf.series(d)["service",] for d in docs[1:])


def test_gateway_added_latency_leaves_out_the_provider_and_client_waits(metrics_on, capsys):
    ctx = RequestContext(endpoint="chat.completions", headers={})
    ctx.started -= 2.0  # two seconds end to end ...
    ctx.upstream_ms, ctx.client_ms = 1500.0, 300.0  # ... of which 1.8 s waiting on others
    telemetry.record_request(ctx)
    [doc] = emf.documents(capsys.readouterr().out)
    assert emf.value(doc["LatencyMs"]) >= 2000.0
    assert 200.0 <= emf.value(doc["GatewayAddedMs"]) < 260.0


@pytest.mark.parametrize("make", [priced, lambda: priced(stream=True, client_ms=0.3), rejected],
                         ids=["buffered", "streamed", "rejected"])
def test_on_lambda_the_request_log_line_is_the_emf_document(lambda_logging, metrics_on, monkeypatch, capsys, make):
    """One line per request: every key Powertools' logger put on the request line (same values), and
    the metrics. The reference line is logged through the logger logs.configure set up on Lambda."""
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8")
    ctx = make()
    capsys.readouterr()
    telemetry.record_request(ctx)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("}\n")
    [doc] = emf.documents(out)
    logging.getLogger("meterline.requests").info("request", extra={"request": doc["request"]})
    [reference] = emf.lines(capsys.readouterr().out)
    assert reference["xray_trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    for key in set(reference) - {"timestamp", "location"}:
        assert doc[key] == reference[key], key
    assert POWERTOOLS_TIME.match(doc["timestamp"]) and POWERTOOLS_TIME.match(reference["timestamp"])
    assert doc["location"].startswith("record_request")
    fields = doc["request"]
    assert fields["request_id"] == ctx.request_id and fields["endpoint"] == ctx.endpoint
    assert fields["status"] == (429 if ctx.error else 200) and fields["outcome"] == ctx.outcome
    assert fields["cost_micros"] == (ctx.cost.micros if ctx.cost else 0)
    if ctx.usage:
        assert (fields["input_tokens"], fields["output_tokens"], fields["cached_tokens"]) == (120, 7, 20)
    assert doc["message"] == "request" and doc["level"] == "INFO" and doc["service"] == "gateway"


def test_on_lambda_with_metrics_off_the_line_is_the_log_line_alone(lambda_logging, monkeypatch, capsys):
    monkeypatch.setenv("METERLINE_METRICS", "0")
    telemetry.record_request(priced())
    [line] = emf.lines(capsys.readouterr().out)
    assert "_aws" not in line and "Requests" not in line and "endpoint" not in line
    assert line["message"] == "request" and line["request"]["cost_micros"] == 123


def test_on_lambda_above_info_level_only_the_metrics_are_written(lambda_logging, metrics_on, capsys):
    logging.getLogger("meterline").setLevel(logging.WARNING)  # what LOG_LEVEL=WARNING gives on Lambda
    telemetry.record_request(priced())
    [doc] = emf.documents(capsys.readouterr().out)
    assert "message" not in doc and "request" not in doc and doc["Requests"] == 1


def test_locally_the_request_line_goes_to_the_requests_logger_and_stdout_stays_quiet(monkeypatch, capsys):
    """`meterline dev` shows request lines from the `meterline.requests` logger's records; without
    METERLINE_METRICS nothing is printed."""
    monkeypatch.delenv("METERLINE_METRICS", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    requests_log = logging.getLogger("meterline.requests")
    handler, level = Collect(), requests_log.level
    requests_log.addHandler(handler)
    requests_log.setLevel(logging.INFO)
    try:
        telemetry.record_request(priced())
    finally:
        requests_log.removeHandler(handler)
        requests_log.setLevel(level)
    [record] = seen
    assert record.getMessage() == "request"
    assert record.request["cost_micros"] == 123 and record.request["input_tokens"] == 120  # type: ignore[attr-defined]
    assert capsys.readouterr().out == ""

