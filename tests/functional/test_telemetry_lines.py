"""The gateway's request lines on Lambda, through the real gateway and the official SDK: each request
writes one JSON line that is both its log line and a valid EMF document with exactly the series the
dashboard reads ({service}; {endpoint, service}; {lever, service} when a lever saved)."""

from __future__ import annotations

import openai
import pytest

from meterline import telemetry
from meterline.budgets.model import Budget
from meterline.store.budgets import BudgetStore
from meterline.store.workspaces import WorkspaceStore
from tests import emf
from tests.conftest import make_tenant

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
MS = "Milliseconds"
TIMED = {"LatencyMs": MS, "GatewayAddedMs": MS}
PRICED = {"Requests": "Count", "CostMicroUsd": "Count", "InputTokens": "Count", "OutputTokens": "Count", **TIMED}


def units(series: dict[str, tuple[str, object]]) -> dict[str, str]:
    return {name: unit for name, (unit, _) in series.items()}


def test_streamed_cached_and_rejected_requests_each_write_one_valid_emf_log_line(
        gateway, tenant, fake_openai, settings, lambda_logging, monkeypatch, capsys):
    monkeypatch.setenv("METERLINE_METRICS", "1")
    monkeypatch.setattr(telemetry, "_cold", False)
    fake, upstream = fake_openai
    WorkspaceStore(settings).put_cache_rule(tenant.workspace, "workspace", {})
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    fake.chunks = [" Paris", "."]
    text = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}) if c.choices)
    assert text == " Paris."
    miss = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, temperature=0)
    hit = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, temperature=0)
    assert (miss.headers["meterline-cache"], hit.headers["meterline-cache"]) == ("stored", "hit")
    broke = make_tenant(settings, upstream)
    BudgetStore(settings).put_budget(broke.workspace, Budget("workspace", broke.workspace, monthly_micros=1))
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=gateway.base_url, api_key=broke.api_key, max_retries=0).chat.completions.create(
            model="gpt-4o", messages=MESSAGES)

    out = capsys.readouterr().out
    docs = emf.documents(out)  # every EMF document valid
    requests = [line for line in emf.lines(out) if line.get("message") == "request"]
    assert [r["request"]["outcome"] for r in requests] == ["ok", "ok", "cache_hit", "rejected"]
    assert all("_aws" in r for r in requests) and len(docs) == 4  # one line per request, no other document
    streamed, stored, served, refused = requests
    saved = stored["request"]["cost_micros"]  # what the hit did not pay: the stored answer's cost

    for line in requests:  # the request's log line, as Powertools' logger wrote it
        assert (line["level"], line["service"], line["name"]) == ("INFO", "gateway", "meterline.requests")
        assert line["endpoint"] == line["request"]["endpoint"] == "chat.completions"
    for line in (streamed, stored):
        series = emf.series(line)
        assert set(series) == {("service",), ("endpoint", "service")}
        assert units(series["service",]) == PRICED
        assert series["endpoint", "service"] == {"Requests": ("Count", 1)}
        assert line["CostMicroUsd"] == line["request"]["cost_micros"] > 0
        assert line["InputTokens"] == line["request"]["input_tokens"] > 0
    assert streamed["request"]["request_id"] != stored["request"]["request_id"]

    series = emf.series(served)
    assert set(series) == {("service",), ("endpoint", "service"), ("lever", "service")}
    assert units(series["service",]) == {"Requests": "Count", "CacheHits": "Count", "SavedMicroUsd": "Count", **TIMED}
    assert series["lever", "service"] == {"SavedMicroUsd": ("Count", saved)}
    assert (served["lever"], served["SavedMicroUsd"], served["CacheHits"]) == ("exact_cache", saved, 1)

    series = emf.series(refused)
    assert set(series) == {("service",), ("endpoint", "service")}
    assert units(series["service",]) == {"Requests": "Count", "Rejections": "Count", **TIMED}
    assert refused["request"]["status"] == 429 and refused["Rejections"] == 1
