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
