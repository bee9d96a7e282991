"""Workspace aliases and ordered fallbacks on 429, 5xx and timeouts.

GIVEN an alias (or a key) with fallbacks across providers
WHEN the primary provider is rate limited, failing or too slow
THEN the next one answers, every attempt has its own ledger record (own provider, outcome and cost;
     one parent request id; an attempt number) and the pipeline's after-hooks run once per request.
"""

from __future__ import annotations

import openai
import pytest

from meterline.gateway.pipeline import Pipeline
from meterline.store.workspaces import Alias
from tests.conftest import wait_for_ledger
from tests.oracle import anthropic_cost_micros, openai_cost_micros
from tests.providers.conftest import make_world

MESSAGES = [{"role": "user", "content": "hi"}]
FAST = Alias("fast", "anthropic/claude-haiku-4-5", ("gemini/gemini-2.5-flash", "openai/gpt-4o-mini"))


def oa(gateway, world) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)


@pytest.fixture
def unwinds(monkeypatch) -> list[str]:
    seen: list[str] = []
    original = Pipeline.unwind

    async def counting(self, ctx, ran):
        if ran:
            seen.append(ctx.request_id)
        await original(self, ctx, ran)

    monkeypatch.setattr(Pipeline, "unwind", counting)
    return seen


def test_alias_routes_to_its_model(gateway, settings, fakes):
    world = make_world(settings, fakes, aliases=(FAST,))
    oa(gateway, world).chat.completions.create(model="fast", messages=MESSAGES)
    assert fakes.anthropic.requests[0]["model"] == "claude-haiku-4-5"
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["model"] == "anthropic/claude-haiku-4-5" and record["attempt"] == 1
    assert record["cost_micros"] == anthropic_cost_micros("anthropic/claude-haiku-4-5", 300, 2000, 500, 1000, 42)


@pytest.mark.parametrize("stream", [False, True])
def test_fallbacks_on_5xx_and_429_record_every_attempt(gateway, settings, fakes, unwinds, stream):
    world = make_world(settings, fakes, aliases=(FAST,))
    fakes.anthropic.error = (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    fakes.gemini.error = (429, {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}})
    sdk = oa(gateway, world)
    if stream:
        raw = sdk.chat.completions.with_raw_response.create(model="fast", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        raw = sdk.chat.completions.with_raw_response.create(model="fast", messages=MESSAGES)
        text = raw.parse().choices[0].message.content
    assert text == "Hello there! How can I help you today?"
    request_id = raw.headers["meterline-request-id"]
    records = sorted(wait_for_ledger(settings, world.workspace, 3), key=lambda r: r["attempt"])
    assert [(r["attempt"], r["provider"], r["outcome"], r.get("status")) for r in records] == [
        (1, "anthropic", "upstream_error", 529), (2, "gemini", "upstream_error", 429), (3, "openai", "ok", 200)]
    assert [r["request_id"] for r in records] == [f"{request_id}.1", f"{request_id}.2", request_id]
    assert {r["parent_request_id"] for r in records} == {request_id}
    assert [r["cost_micros"] for r in records] == [0, 0, openai_cost_micros("openai/gpt-4o-mini", 1200, 1024, 10)]
    assert all(r["member"] == "bob" and r["key"] == world.key_id for r in records)
    assert unwinds.count(request_id) == 1  # after-hooks once per request, not per attempt


def test_key_fallbacks_apply_to_any_model_and_on_timeouts(start_gateway, settings, fakes):
    gateway = start_gateway(upstream_read_timeout_s=0.5)
    world = make_world(settings, fakes, key_fallbacks=("anthropic/claude-haiku-4-5",))
    fakes.openai.chat.delay_before_headers_s = 2.0
    done = oa(gateway, world).chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    assert done.choices[0].message.content == "Hello from Claude."
    records = sorted(wait_for_ledger(settings, world.workspace, 2), key=lambda r: r["attempt"])
    assert [(r["provider"], r["outcome"]) for r in records] == [("openai", "upstream_timeout"), ("anthropic", "ok")]
    assert records[0]["estimated"] is True  # a timed-out attempt may still be billed: estimated, never free


def test_client_errors_do_not_fall_back(gateway, settings, fakes):
    world = make_world(settings, fakes, aliases=(FAST,))
    fakes.anthropic.error = (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}})
    with pytest.raises(openai.BadRequestError):
        oa(gateway, world).chat.completions.create(model="fast", messages=MESSAGES)
    assert fakes.gemini.requests == [] and fakes.openai.chat.requests == []
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["attempt"] == 1 and record["status"] == 400


def test_all_attempts_failing_returns_the_last_error(gateway, settings, fakes):
    world = make_world(settings, fakes, aliases=(Alias("fast", "anthropic/claude-haiku-4-5",
                                                      ("gemini/gemini-2.5-flash",)),))
    fakes.anthropic.error = (500, {"type": "error", "error": {"type": "api_error", "message": "boom"}})
    fakes.gemini.error = (503, {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    with pytest.raises(openai.InternalServerError) as err:
        oa(gateway, world).chat.completions.create(model="fast", messages=MESSAGES)
    assert err.value.status_code == 503 and "overloaded" in err.value.message
    assert len(wait_for_ledger(settings, world.workspace, 2)) == 2


def test_fallbacks_the_key_may_not_use_are_skipped(gateway, settings, fakes):
    world = make_world(settings, fakes, aliases=(FAST,), models=("anthropic/*", "openai/*"))
    fakes.anthropic.error = (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    oa(gateway, world).chat.completions.create(model="fast", messages=MESSAGES)
    assert fakes.gemini.requests == []  # not allowed for this key
    records = wait_for_ledger(settings, world.workspace, 2)
    assert sorted(r["provider"] for r in records) == ["anthropic", "openai"]
