"""Anthropic behind the meter, from both SDKs.

GIVEN a workspace whose `anthropic` entry points at a fake Anthropic API with its key in the vault
WHEN the OpenAI SDK calls `anthropic/<model>` and the Anthropic SDK calls /v1/messages natively
THEN answers come back in the caller's format, the client's key never reaches Anthropic, and every
     call costs what an independent computation of Anthropic's settlement formula says, streamed or not.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from tests.conftest import ledger_items, wait_for_ledger
from tests.oracle import anthropic_cost_micros
from tests.providers.conftest import ANTHROPIC_SECRET

MODEL = "anthropic/claude-sonnet-4-6"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
PNG = "data:image/png;base64,iVBORw0KGgo="


def oa(gateway, world) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)


def ant(gateway, world) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=world.api_key, max_retries=0)


def expected(fake) -> int:
    return anthropic_cost_micros("anthropic/claude-sonnet-4-6", fake.input_tokens, fake.cache_read,
                                 fake.cache_write_5m, fake.cache_write_1h, fake.output_tokens)


def test_openai_sdk_non_streaming_translates_request_and_response(gateway, world, fakes, settings):
    fakes.anthropic.tool_call = {"id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is in this image, and the weather?"},
                                     {"type": "image_url", "image_url": {"url": PNG}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_00", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_00", "content": "sunny"},
        {"role": "user", "content": "And Paris?"},
    ]
    raw = oa(gateway, world).chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="required", max_tokens=500, stop=["END"],
        temperature=0.2)
    done = raw.parse()
    assert done.object == "chat.completion"
    assert done.choices[0].message.content == "Hello from Claude."
    assert done.choices[0].finish_reason == "tool_calls"
    [call] = done.choices[0].message.tool_calls
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("toolu_01", "get_weather",
                                                                                  {"city": "Paris"})
    f = fakes.anthropic
    assert done.usage.prompt_tokens == f.input_tokens + f.cache_read + f.cache_write_5m + f.cache_write_1h
    assert done.usage.prompt_tokens_details.cached_tokens == f.cache_read

    sent = f.requests[0]
    assert sent["model"] == "claude-sonnet-4-6" and sent["max_tokens"] == 500
    assert sent["system"] == [{"type": "text", "text": "You are terse."}]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][0]["content"][1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert sent["messages"][0]["content"][2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    assert sent["messages"][1]["content"] == [{"type": "tool_use", "id": "toolu_00", "name": "get_weather",
                                               "input": {"city": "Rome"}}]
    assert sent["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_00", "content": "sunny"}
    assert sent["messages"][2]["content"][1] == {"type": "text", "text": "And Paris?"}
    assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    assert sent["tool_choice"] == {"type": "any"} and sent["stop_sequences"] == ["END"]
    headers = f.headers[0]
    assert headers["x-api-key"] == ANTHROPIC_SECRET and "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"

    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["provider"] == "anthropic" and record["model"] == MODEL
    assert (record["input_uncached"], record["cache_read"], record["cache_write_5m"], record["cache_write_1h"],
            record["output"]) == (300, 2000, 500, 1000, 42)
    assert record["cost_micros"] == expected(f)
    assert raw.headers["meterline-cost-usd"] == f"0.{expected(f):06d}"


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_sdk_streaming_costs_the_same_and_streams_tool_call_deltas(gateway, world, fakes, settings,
                                                                          include_usage):
    fakes.anthropic.tool_call = {"id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(oa(gateway, world).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=TOOLS, stream=True, **kwargs))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from Claude."
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "toolu_01" and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    usage_chunks = [c for c in chunks if not c.choices]
    if include_usage:
        [u] = usage_chunks
        assert u.usage.completion_tokens == 42  # the LAST message_delta, not the early one
    else:
        assert usage_chunks == []
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["stream"] is True and record["estimated"] is False and record["outcome"] == "ok"
    assert record["output"] == 42 and record["cost_micros"] == expected(fakes.anthropic)


def test_legacy_cache_creation_counts_as_5m_writes(gateway, world, fakes, settings):
    fakes.anthropic.legacy_cache_fields = True
    oa(gateway, world).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert (record["cache_write_5m"], record["cache_write_1h"]) == (1500, 0)
    assert record["cost_micros"] == anthropic_cost_micros("anthropic/claude-sonnet-4-6", 300, 2000, 1500, 0, 42)


def test_json_mode_is_refused_with_a_clear_400_and_nothing_sent(gateway, world, fakes, settings):
    with pytest.raises(openai.BadRequestError) as err:
        oa(gateway, world).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                   response_format={"type": "json_object"})
    assert "response_format" in err.value.message
    assert fakes.anthropic.requests == []
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["outcome"] == "rejected" and record["cost_micros"] == 0


# -- the Anthropic SDK, natively --------------------------------------------------------------------
NATIVE = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "Long stable prefix", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                               "cache_control": {"type": "ephemeral"}}]}],
    "thinking": {"type": "enabled", "budget_tokens": 512},
    "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {}}}],
}


def test_anthropic_sdk_messages_pass_through_untouched(gateway, world, fakes, settings):
    raw = ant(gateway, world).messages.with_raw_response.create(
        **NATIVE, extra_headers={"anthropic-beta": "extended-cache-ttl-2025-04-11", "Meterline-Feature": "chat"})
    message = raw.parse()
    assert message.content[0].text == "Hello from Claude."
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 1000
    sent = fakes.anthropic.requests[0]
    assert {k: sent[k] for k in NATIVE} == NATIVE  # cache_control, thinking, tools untouched
    headers = fakes.anthropic.headers[0]
    assert headers["x-api-key"] == ANTHROPIC_SECRET and world.api_key not in json.dumps(headers)
    assert headers["anthropic-beta"] == "extended-cache-ttl-2025-04-11"
    assert "authorization" not in headers
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["endpoint"] == "messages" and record["feature"] == "chat"
    assert record["model"] == "anthropic/claude-sonnet-4-6" and record["cost_micros"] == expected(fakes.anthropic)
    assert raw.headers["meterline-cost-usd"] == f"0.{expected(fakes.anthropic):06d}"


def test_anthropic_sdk_streaming_matches_non_streaming_cost(gateway, world, fakes, settings):
    client = ant(gateway, world)
    with client.messages.stream(**NATIVE) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from Claude."
    assert final.usage.output_tokens == 42 and final.stop_reason == "end_turn"
    client.messages.create(**NATIVE)
    records = wait_for_ledger(settings, world.workspace, 2)
    assert [r["stream"] for r in records] == [True, False] or {r["stream"] for r in records} == {True, False}
    assert {r["cost_micros"] for r in records} == {expected(fakes.anthropic)}
    assert all(not r["estimated"] for r in records)


def test_anthropic_sdk_accepts_bearer_auth_too(gateway, world, fakes):
    client = anthropic.Anthropic(base_url=gateway.url, auth_token=world.api_key, max_retries=0)
    assert client.messages.create(**NATIVE).content[0].text == "Hello from Claude."
    assert fakes.anthropic.headers[0]["x-api-key"] == ANTHROPIC_SECRET
    assert "authorization" not in fakes.anthropic.headers[0]


def test_count_tokens_is_forwarded_authenticated_and_not_metered(gateway, world, fakes, settings):
    count = ant(gateway, world).messages.count_tokens(model="claude-sonnet-4-6",
                                                      messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens == 2300
    assert fakes.anthropic.paths == ["/v1/messages/count_tokens"]
    assert fakes.anthropic.headers[0]["x-api-key"] == ANTHROPIC_SECRET
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key="mlk_" + "x" * 43, max_retries=0).messages.count_tokens(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}])
    assert ledger_items(settings, world.workspace) == []


def test_errors_on_messages_are_in_anthropic_format_and_redacted(gateway, world, fakes, settings):
    fakes.anthropic.error = (429, {"type": "error", "error": {
        "type": "rate_limit_error", "message": f"Number of requests exceeded for key {ANTHROPIC_SECRET}"}})
    with pytest.raises(anthropic.RateLimitError) as err:
        ant(gateway, world).messages.create(**NATIVE)
    body = err.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert ANTHROPIC_SECRET not in err.value.response.text and "[redacted]" in body["error"]["message"]
    # Gateway errors too: unknown key, invalid body.
    response = httpx.post(gateway.url + "/v1/messages", headers={"x-api-key": world.api_key},
                          json={"model": "claude-sonnet-4-6", "messages": []})
    assert response.status_code == 400
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError) as err:
        ant(gateway, world).messages.create(**{**NATIVE, "model": "claude-unknown-9"})
    assert err.value.response.json()["error"]["type"] == "not_found_error"


def test_messages_to_a_non_anthropic_provider_is_a_clear_400(gateway, world):
    with pytest.raises(anthropic.BadRequestError) as err:
        ant(gateway, world).messages.create(**{**NATIVE, "model": "gemini/gemini-2.5-flash"})
    assert "/v1/messages cannot reach a `gemini` provider" in err.value.message


def test_stream_cut_after_message_start_is_recorded_as_estimated(gateway, world, fakes, settings):
    fakes.anthropic.cut_after_deltas = 2
    with pytest.raises(anthropic.APIError), ant(gateway, world).messages.stream(**NATIVE) as stream:
        for _ in stream.text_stream:
            pass
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["outcome"] == "upstream_break" and record["estimated"] is True and record["cost_micros"] > 0


def test_count_tokens_counts_against_the_keys_rate_limit(gateway, world, fakes, settings):
    from meterline.budgets.model import RateLimit
    from meterline.store.budgets import BudgetStore

    BudgetStore(settings).put_limit(world.workspace, RateLimit("key", world.key_id, rpm=5))
    client = ant(gateway, world)
    statuses = []
    for _ in range(12):  # two minute windows at most: at least 6 in one of them
        try:
            client.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}])
            statuses.append(200)
        except anthropic.RateLimitError as exc:
            assert exc.response.headers["meterline-request-id"]
            statuses.append(429)
    assert 429 in statuses and statuses.count(200) == len(fakes.anthropic.paths) <= 10
    assert ledger_items(settings, world.workspace) == []  # still not spend
