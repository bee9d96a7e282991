"""The pure cache core: key, rules, controls, replay <-> collect round trips."""

from __future__ import annotations

import json

import pytest

from meterline.cache import controls, rules
from meterline.cache.collect import Collector
from meterline.cache.key import cache_key
from meterline.cache.replay import replay, slices
from meterline.usage import Usage

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def key(**overrides):
    args = {"workspace": "ws1", "partition": ("workspace", ""), "endpoint": "chat.completions",
            "provider": "openai", "model": "gpt-4o", "body": BODY, "namespace": ""}
    return cache_key(**{**args, **overrides})


def test_key_covers_tenant_partition_route_and_every_generation_parameter():
    base = key()
    assert key(workspace="ws2") != base
    assert key(partition=("key", "k1")) != key(partition=("key", "k2")) != base
    assert key(endpoint="responses") != base
    assert key(provider="azure") != base
    assert key(model="gpt-4o-mini") != base
    assert key(namespace="v2") != base
    assert key(anthropic_beta="prompt-caching-2024-07-31") != base
    for change in ({"temperature": 0.5}, {"max_tokens": 5}, {"seed": 1}, {"tools": []},
                   {"response_format": {"type": "json_object"}}, {"stop": ["x"]},
                   {"messages": [{"role": "user", "content": "hi!"}]}):
        assert key(body={**BODY, **change}) != base, change


def test_key_ignores_stream_user_metadata_and_the_requested_model_name():
    base = key()
    same = {**BODY, "stream": True, "stream_options": {"include_usage": True}, "user": "u1",
            "metadata": {"a": "b"}, "model": "my-alias", "temperature": 0.0}
    assert key(body=same) == base
    assert key(body=dict(reversed(list(BODY.items())))) == base  # key order does not matter


def test_workspace_cannot_be_forged_through_separators():
    # The workspace is a JSON field, never a concatenated prefix: "a#b" + "c" != "a" + "b#c".
    assert key(workspace="a#b", namespace="c") != key(workspace="a", namespace="b#c")


def test_rules_resolve_most_specific_whole():
    stored = {"workspace": {"ttl_s": 60}, "feature:support": {"ttl_s": 3600, "any_temperature": True},
              "key:k1": {"exact": False}}
    assert rules.resolve(stored, "k1", "support").exact is False
    assert rules.resolve(stored, "k2", "support").ttl_s == 3600
    assert rules.resolve(stored, "k2", "other").ttl_s == 60
    assert rules.resolve({}, "k2", None) is None
    assert rules.resolve({"workspace": {"partition": "nonsense"}}, "k", None) is None  # damaged: no rule
    assert rules.parse_ttl("1h") == 3600 and rules.parse_ttl("15m") == 900 and rules.parse_ttl(30) == 30
    with pytest.raises(ValueError):
        rules.parse_ttl("forever")
    with pytest.raises(ValueError):
        rules.make_rule("team:x")


ON = rules.CacheRule()


@pytest.mark.parametrize(("headers", "body", "expected"), [
    ({}, BODY, ("plan", True, True, None)),
    ({"meterline-cache": "off"}, BODY, ("bypass", "off")),
    ({"meterline-cache": "refresh"}, BODY, ("plan", False, True, None)),
    ({"cache-control": "no-store"}, BODY, ("bypass", "no-store")),
    ({"cache-control": "no-cache"}, BODY, ("plan", False, True, None)),
    ({"cache-control": "max-age=30"}, BODY, ("plan", True, True, 30)),
    ({}, {**BODY, "temperature": 0.7}, ("bypass", "temperature")),
    ({}, {"model": "m", "messages": []}, ("bypass", "temperature")),  # absent = provider default 1
    ({}, {**BODY, "n": 2}, ("bypass", "n")),
])
def test_controls(headers, body, expected):
    result = controls.plan(ON, headers, "chat.completions", body)
    if expected[0] == "bypass":
        assert isinstance(result, controls.Bypass) and result.reason == expected[1]
    else:
        assert isinstance(result, controls.Plan)
        assert (result.read, result.write, result.max_age_s) == expected[1:]


def test_controls_off_by_default_and_opt_in_per_request():
    assert controls.plan(None, {}, "chat.completions", BODY) is None
    assert isinstance(controls.plan(None, {"meterline-cache": "on"}, "chat.completions", BODY), controls.Plan)
    assert isinstance(controls.plan(rules.CacheRule(any_temperature=True), {}, "chat.completions",
                                    {**BODY, "temperature": 1}), controls.Plan)
    with pytest.raises(controls.ControlError):
        controls.plan(ON, {"meterline-cache": "yes"}, "chat.completions", BODY)
    with pytest.raises(controls.ControlError):
        controls.plan(ON, {"cache-control": "max-age=soon"}, "chat.completions", BODY)


def test_only_natural_finishes_are_storable():
    chat = {"choices": [{"index": 0, "message": {}, "finish_reason": "stop"}]}
    assert controls.storable("chat.completions", chat)
    assert not controls.storable("chat.completions", {"choices": [{"finish_reason": "length"}]})
    assert not controls.storable("chat.completions", {"choices": [{"finish_reason": "stop"}] * 2})
    assert controls.storable("messages", {"type": "message", "stop_reason": "tool_use"})
    assert not controls.storable("messages", {"type": "message", "stop_reason": "max_tokens"})
    assert controls.storable("responses", {"status": "completed"})
    assert not controls.storable("responses", {"status": "incomplete", "incomplete_details": {"reason": "x"}})


def test_slices_rejoin_exactly_and_are_several():
    text = "The quick brown fox jumps over the lazy dog. " * 20 + "x" * 500
    parts = slices(text)
    assert "".join(parts) == text and len(parts) > 10
    assert slices("") == []


CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024",
        "system_fingerprint": "fp", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": "Let me look that up for you in the weather service.",
            "refusal": None, "reasoning_content": "The user wants weather; call the tool with the city name.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius", "days": 3})}}]},
            "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
           "content": [{"type": "thinking", "thinking": "Think about the weather in Paris first, then call.",
                        "signature": "sig=="},
                       {"type": "text", "text": "Checking the forecast for Paris right now."},
                       {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                        "input": {"city": "Paris", "days": [1, 2, 3]}}],
           "stop_reason": "tool_use", "stop_sequence": None,
           "usage": {"input_tokens": 20, "cache_read_input_tokens": 0, "output_tokens": 30}}
RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-5",
            "output": [{"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text",
                                                                          "text": "Plan the lookup then answer."}]},
                       {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                        "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
                       {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": "It will be sunny in Paris all week long.",
                                     "annotations": []}]}],
            "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}}


@pytest.mark.parametrize(("endpoint", "answer"), [("chat.completions", CHAT), ("messages", MESSAGE),
                                                  ("responses", RESPONSE)])
def test_replay_then_collect_gives_back_the_stored_answer(endpoint, answer):
    events, final = replay(endpoint, answer, include_usage=True)
    assert len(events) > 8  # several chunks, never one blob
    collector = Collector(endpoint)
    for event in [*events, *final]:
        collector.feed(event[: len(event) // 2])  # split mid-event: framing must hold
        collector.feed(event[len(event) // 2:])
    assert collector.result(Usage(input_uncached=10, output=5)) == answer


def test_a_cut_stream_collects_nothing():
    events, _ = replay("messages", MESSAGE)
    collector = Collector("messages")
    for event in events:
        collector.feed(event)
    assert collector.result() is None  # no message_stop
    chat_events, _ = replay("chat.completions", CHAT)
    collector = Collector("chat.completions")
    collector.feed(b"".join(chat_events)[:-40])
    assert collector.result() is None
