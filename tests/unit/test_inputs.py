"""Hostile request inputs are bounded (issue 14, item 12): nesting, content type, and the SSE parser's
cost on a huge event (linear, not quadratic: CPU time, not wall time, with a 100x margin)."""

from __future__ import annotations

import time

import pytest

from meterline.errors import InvalidRequestError
from meterline.gateway.validation import MAX_DEPTH, check_content_type, parse_json_object
from meterline.sse import SSEError, SSEParser


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 200_000])
def test_deep_nesting_is_a_400_not_a_recursion_error(depth):
    raw = b'{"model":"m","messages":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidRequestError) as err:
        parse_json_object(raw)
    assert err.value.status == 400


def test_ordinary_nesting_and_many_brackets_pass():
    messages = [{"role": "user", "content": [{"type": "text", "text": "[{" * 50}]} for _ in range(500)]
    import json

    assert parse_json_object(json.dumps({"model": "m", "messages": messages}).encode())["model"] == "m"


@pytest.mark.parametrize("value", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"])
def test_non_json_content_types_are_refused(value):
    with pytest.raises(InvalidRequestError) as err:
        check_content_type(value)
    assert err.value.status == 415


@pytest.mark.parametrize("value", [None, "", "application/json", "application/json; charset=utf-8",
                                   "application/vnd.api+json"])
def test_json_content_types_pass(value):
    check_content_type(value)


def test_sse_parser_is_linear_on_a_16_mb_event_in_small_chunks():
    data = b"data: " + b"x" * 16_000_000 + b"\n\n"
    parser = SSEParser()
    started = time.process_time()
    events = []
    for i in range(0, len(data), 1024):
        events += parser.feed(data[i:i + 1024])
    assert time.process_time() - started < 10  # ~0.1 s linear; the quadratic parser took ~20 s
    assert len(events) == 1 and len(events[0].data) == 16_000_000


def test_sse_separators_split_across_chunks_and_an_oversized_event_is_an_error():
    parser, out = SSEParser(), []
    for piece in (b"data: a\n", b"\ndata: b\r\n\r", b"\n", b"data: c\n\n"):
        out += parser.feed(piece)
    assert [e.data for e in out] == ["a", "b", "c"]
    with pytest.raises(SSEError):
        SSEParser(max_event_bytes=1000).feed(b"data: " + b"y" * 2000)
