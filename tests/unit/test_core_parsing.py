"""Pure parsing: OpenAI usage (absent vs zero), SSE framing across arbitrary splits, attribution."""

from __future__ import annotations

import pytest

from meterline.attribution import from_headers
from meterline.errors import InvalidRequestError, redact
from meterline.sse import SSEParser
from meterline.usage import Usage, estimate_chat_prompt_tokens, from_openai_chat


def test_openai_usage_splits_cached_and_keeps_reasoning_inside_output():
    usage = from_openai_chat({"prompt_tokens": 1200, "completion_tokens": 50,
                              "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 100},
                              "completion_tokens_details": {"reasoning_tokens": 30}})
    assert usage == Usage(input_uncached=76, cache_read=1024, cache_write_5m=100, output=50, reasoning=30)
    assert usage.prompt_total == 1200


def test_openai_usage_absent_is_none_and_zero_is_zero():
    assert from_openai_chat(None) is None and from_openai_chat({}) is None
    zero = from_openai_chat({"prompt_tokens": 0, "completion_tokens": 0})
    assert zero == Usage() and zero.reasoning is None


def test_openai_usage_never_bills_negative_input():
    usage = from_openai_chat({"prompt_tokens": 10, "completion_tokens": 1,
                              "prompt_tokens_details": {"cached_tokens": 50}})
    assert usage.input_uncached == 0 and usage.cache_read == 10


def test_prompt_estimate_counts_text_and_framing():
    assert estimate_chat_prompt_tokens([{"role": "user", "content": "x" * 400}]) == 100 + 4 + 3
    assert estimate_chat_prompt_tokens([{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]) == 8


@pytest.mark.parametrize("split", [1, 2, 3, 7, 64])
def test_sse_parser_yields_whole_events_whatever_the_chunking(split):
    stream = b'data: {"a":1}\n\nevent: x\ndata: {"b":2}\r\n\r\ndata: [DONE]\n\n'
    parser = SSEParser()
    events = []
    for i in range(0, len(stream), split):
        events += parser.feed(stream[i:i + split])
    assert [(e.event, e.data) for e in events] == [(None, '{"a":1}'), ("x", '{"b":2}'), (None, "[DONE]")]
    assert b"".join(e.raw for e in events) == stream and parser.pending() == b""


def test_attribution_headers_are_bounded_and_charset_checked():
    tags = from_headers({"meterline-feature": "search", "meterline-customer": "acme:eu-1",
                         "meterline-agent": "  "})
    assert tags == {"agent": None, "session": None, "feature": "search", "customer": "acme:eu-1"}
    for bad in ("a" * 129, "drop table;", "naïve", "a b"):
        with pytest.raises(InvalidRequestError):
            from_headers({"meterline-feature": bad})


def test_redact_removes_the_secret_and_key_shaped_strings():
    text = "bad key sk-live-ABCDEF0123456789 and Bearer abc.def.ghi123 and mine"
    out = redact(text, "mine")
    assert "sk-live" not in out and "abc.def" not in out and "mine" not in out


def test_periods_roll_over_in_the_workspace_time_zone():
    from datetime import UTC, datetime

    from meterline.gateway.metering import periods

    # 2026-11-30 23:30 UTC is already December 1st in Paris, still November 30th in New York.
    ts = int(datetime(2026, 11, 30, 23, 30, tzinfo=UTC).timestamp() * 1000)
    assert periods(ts, "UTC") == ("2026-11-30", "2026-11")
    assert periods(ts, "Europe/Paris") == ("2026-12-01", "2026-12")
    assert periods(ts, "America/New_York") == ("2026-11-30", "2026-11")
