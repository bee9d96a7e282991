"""Usage parsers per provider: absent apart from zero, cache classes normalised once."""

from __future__ import annotations

import pytest

from meterline.usage import (
    Usage,
    from_anthropic,
    from_bedrock,
    from_gemini,
    from_openai_embeddings,
    from_openai_responses,
    merge_anthropic_stream,
)


@pytest.mark.parametrize(("payload", "expected"), [
    (None, None),
    ({}, None),
    ({"input_tokens": 0, "output_tokens": 0}, Usage()),
    ({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 30,
      "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}},
     Usage(input_uncached=10, cache_read=100, cache_write_5m=10, cache_write_1h=20, output=5)),
    ({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 30},  # no split: all 5m
     Usage(input_uncached=10, cache_write_5m=30, output=5)),
    ({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 50,  # split short of the total
      "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 20}},
     Usage(input_uncached=10, cache_write_5m=30, cache_write_1h=20, output=5)),
])
def test_anthropic(payload, expected):
    assert from_anthropic(payload) == expected


def test_anthropic_stream_uses_start_plus_last_cumulative_delta():
    start = {"input_tokens": 7, "cache_read_input_tokens": 50, "output_tokens": 1}
    assert merge_anthropic_stream(start, None) is None  # no message_delta yet: output unknown
    usage = merge_anthropic_stream(start, {"output_tokens": 99, "input_tokens": None})
    assert usage == Usage(input_uncached=7, cache_read=50, output=99)


@pytest.mark.parametrize(("payload", "expected"), [
    (None, None),
    ({"totalTokenCount": 3}, None),
    ({"promptTokenCount": 100, "candidatesTokenCount": 10}, Usage(input_uncached=100, output=10)),
    ({"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 10, "thoughtsTokenCount": 5},
     Usage(input_uncached=40, cache_read=60, output=15, reasoning=5)),
    ({"promptTokenCount": 10, "cachedContentTokenCount": 60, "candidatesTokenCount": 1},  # cached > prompt: capped
     Usage(input_uncached=0, cache_read=10, output=1)),
    ({"promptTokenCount": 10, "toolUsePromptTokenCount": 4, "candidatesTokenCount": 1},
     Usage(input_uncached=14, output=1)),
])
def test_gemini(payload, expected):
    assert from_gemini(payload) == expected


@pytest.mark.parametrize(("payload", "expected"), [
    (None, None),
    ({"inputTokens": 10, "outputTokens": 2, "totalTokens": 12}, Usage(input_uncached=10, output=2)),
    ({"inputTokens": 10, "outputTokens": 2, "cacheReadInputTokens": 30, "cacheWriteInputTokens": 5,
      "totalTokens": 47}, Usage(input_uncached=10, cache_read=30, cache_write_5m=5, output=2)),
    # anomaly: writes inside inputTokens (total omits them)
    ({"inputTokens": 15, "outputTokens": 2, "cacheReadInputTokens": 30, "cacheWriteInputTokens": 5,
      "totalTokens": 47}, Usage(input_uncached=10, cache_read=30, cache_write_5m=5, output=2)),
    # anomaly: all cache tokens inside inputTokens
    ({"inputTokens": 45, "outputTokens": 2, "cacheReadInputTokens": 30, "cacheWriteInputTokens": 5,
      "totalTokens": 47}, Usage(input_uncached=10, cache_read=30, cache_write_5m=5, output=2)),
    ({"inputTokens": 10, "outputTokens": 2, "cacheWriteInputTokens": 8, "totalTokens": 20,
      "cacheDetails": [{"ttl": "1h", "inputTokens": 6}, {"ttl": "5m", "inputTokens": 2}]},
     Usage(input_uncached=10, cache_write_5m=2, cache_write_1h=6, output=2)),
])
def test_bedrock(payload, expected):
    assert from_bedrock(payload) == expected


def test_openai_responses_and_embeddings():
    assert from_openai_responses({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40},
                                  "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 3}}) == Usage(
        input_uncached=60, cache_read=40, output=9, reasoning=3)
    assert from_openai_responses(None) is None
    assert from_openai_embeddings({"prompt_tokens": 8, "total_tokens": 8}) == Usage(input_uncached=8)
    assert from_openai_embeddings({}) is None


# -- billed classes beyond the five token classes (#8) ------------------------------------------------
def test_anthropic_stream_keeps_message_start_iterations_when_the_delta_omits_them():
    from meterline.usage import merge_anthropic_stream

    compaction = {"type": "compaction", "input_tokens": 180_000, "output_tokens": 3_500}
    message = {"type": "message", "input_tokens": 300, "output_tokens": 42}
    start = {"input_tokens": 300, "output_tokens": 1, "iterations": [compaction]}
    delta = {"output_tokens": 42, "iterations": [message]}  # cumulative counts, but not start's list
    merged = merge_anthropic_stream(start, delta)
    assert [i.kind for i in merged.iterations] == ["compaction"]
    assert merged.iterations[0].usage.input_uncached == 180_000 and merged.output == 42
    # A delta that repeats start's entries counts them once.
    again = merge_anthropic_stream(start, {"output_tokens": 42, "iterations": [compaction, message]})
    assert len(again.iterations) == 1


def test_anthropic_server_tools_speed_and_region():
    from meterline.usage import from_anthropic

    u = from_anthropic({"input_tokens": 10, "output_tokens": 5, "speed": "fast", "inference_geo": "us",
                        "server_tool_use": {"web_search_requests": 4, "web_fetch_requests": 9},
                        "iterations": [{"type": "advisor_message", "model": "claude-haiku-4-5",
                                        "input_tokens": 7, "output_tokens": 3}]})
    assert u.tool_calls == (("web_search", 4),) and u.speed == "fast" and u.inference_geo == "us"
    assert u.iterations[0].model == "claude-haiku-4-5" and u.iterations[0].usage.output == 3


def test_openai_audio_and_rejected_prediction_tokens():
    from meterline.usage import from_openai_chat

    u = from_openai_chat({"prompt_tokens": 1000, "completion_tokens": 300,
                          "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 500},
                          "completion_tokens_details": {"rejected_prediction_tokens": 120}})
    assert (u.input_uncached, u.input_audio, u.cache_read) == (300, 500, 200)
    assert u.rejected_prediction == 120 and u.output == 300  # rejected tokens are inside completion_tokens
    assert u.prompt_total == 1000


def test_gemini_audio_modality_is_split_from_text():
    from meterline.usage import from_gemini

    u = from_gemini({"promptTokenCount": 1500, "cachedContentTokenCount": 1024, "candidatesTokenCount": 30,
                     "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 900},
                                             {"modality": "AUDIO", "tokenCount": 600}],
                     "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 200}]})
    assert (u.input_uncached, u.cache_read, u.input_audio, u.cache_read_audio) == (76, 824, 400, 200)
    assert u.prompt_total == 1500


def test_rollup_counters_carry_the_new_classes():
    from meterline.store.rollups import counters_of

    counters = counters_of({"input_audio": 400, "cache_read_audio": 200, "tool_calls": {"web_search": 3},
                            "iteration_tokens": 1234, "cost_micros": 5})
    assert (counters["billed_audio_tokens"], counters["billed_tool_calls"],
            counters["billed_iteration_tokens"]) == (600, 3, 1234)
