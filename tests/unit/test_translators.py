"""Translators, pure and offline: request mapping, response mapping, stream events, usage.
Recorded provider payloads (shapes from each provider's documentation) drive table-driven cases."""

from __future__ import annotations

import json

import pytest

from meterline.errors import InvalidRequestError
from meterline.eventstream import EventStreamDecoder
from meterline.sse import SSEParser
from meterline.translators import registry
from meterline.translators.anthropic_anthropic import AnthropicToAnthropic, anthropic_url
from meterline.translators.base import Target
from meterline.translators.openai_anthropic import OpenAIChatToAnthropic
from meterline.translators.openai_bedrock import OpenAIChatToBedrock
from meterline.translators.openai_gemini import OpenAIChatToGemini, gemini_url
from meterline.translators.openai_hosts import endpoint
from meterline.translators.responses_openai import ResponsesToOpenAI
from meterline.usage import Usage
from tests.fakes.bedrock_server import event as bedrock_event
from tests.fakes.bedrock_server import exception as bedrock_exception


def target(kind: str, model: str, **options) -> Target:
    return Target(provider=kind, kind=kind, base_url="https://host.example", model=model, api_key="sk-secret-123456",
                  options=options, max_output_tokens=8192)


def feed_sse(translator, raw: bytes) -> list[bytes]:
    out: list[bytes] = []
    for event in SSEParser().feed(raw):
        out.extend(translator.stream_event(event))
    return out


def chunks_of(out: list[bytes]) -> list[dict]:
    return [json.loads(b[6:]) for b in out if b.startswith(b"data: {")]


# -- routing table --------------------------------------------------------------------------------
@pytest.mark.parametrize(("endpoint_name", "kind", "ok"), [
    ("chat.completions", "anthropic", True), ("chat.completions", "bedrock", True), ("chat.completions", "sim", True),
    ("messages", "anthropic", True), ("messages", "openai", False), ("responses", "azure", True),
    ("responses", "gemini", False), ("embeddings", "openai_compatible", True), ("embeddings", "bedrock", False),
])
def test_registry(endpoint_name, kind, ok):
    assert registry.supports(endpoint_name, kind) is ok
    if not ok:
        with pytest.raises(InvalidRequestError):
            registry.translator_for(endpoint_name, kind, {})


@pytest.mark.parametrize(("kind", "options", "url", "header"), [
    ("openai", {}, "https://host.example/chat/completions", ("authorization", "Bearer sk-secret-123456")),
    ("azure", {"api_version": "2025-01-01"},
     "https://host.example/openai/deployments/dep%2F1/chat/completions?api-version=2025-01-01",
     ("api-key", "sk-secret-123456")),
])
def test_openai_hosts(kind, options, url, header):
    got_url, headers = endpoint(target(kind, "dep/1", **options), "chat/completions")
    assert got_url == url and headers == dict([header])


@pytest.mark.parametrize(("base", "url"), [
    ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
    ("https://proxy.example/v1/", "https://proxy.example/v1/messages"),
])
def test_anthropic_url(base, url):
    assert anthropic_url(base, "messages") == url


def test_gemini_url():
    assert gemini_url("https://g.example", "gemini-2.5-flash", True) == (
        "https://g.example/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")


# -- OpenAI -> Anthropic --------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "check"), [
    ({"messages": [{"role": "user", "content": "hi"}]},
     lambda out: out["max_tokens"] == 8192 and out["messages"] == [{"role": "user", "content": [
         {"type": "text", "text": "hi"}]}]),
    ({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                   {"role": "user", "content": "b"}], "max_tokens": 5},
     lambda out: out["system"] == [{"type": "text", "text": "S"}] and len(out["messages"]) == 1
     and out["max_tokens"] == 5),
    ({"messages": [{"role": "user", "content": "a"}], "tool_choice": {"type": "function", "function": {"name": "f"}},
      "tools": [{"type": "function", "function": {"name": "f"}}], "parallel_tool_calls": False, "user": "u1"},
     lambda out: out["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}
     and out["metadata"] == {"user_id": "u1"}),
])
def test_openai_to_anthropic_request(body, check):
    request = OpenAIChatToAnthropic().build_request({"model": "x", **body}, target("anthropic", "claude-x"))
    assert check(json.loads(request.body))
    assert request.headers["x-api-key"] == "sk-secret-123456"


ANTHROPIC_STREAM = b"".join(
    f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {
            "input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "text",
                                                                                             "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta",
                                                                                     "text": "Hi"}}),
        ("ping", {"type": "ping"}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                           "usage": {"output_tokens": 7}}),
        ("message_stop", {"type": "message_stop"}),
    ])


def test_anthropic_stream_to_openai_chunks():
    translator = OpenAIChatToAnthropic()
    translator.build_request({"model": "x", "stream": True, "stream_options": {"include_usage": True},
                              "messages": [{"role": "user", "content": "hi"}]}, target("anthropic", "claude-x"))
    chunks = chunks_of(feed_sse(translator, ANTHROPIC_STREAM))
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {"content": "Hi"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert translator.stream_complete
    assert translator.stream_usage == Usage(input_uncached=5, cache_read=10, output=7)
    final = translator.stream_final()
    assert json.loads(final[0][6:])["usage"]["prompt_tokens"] == 15 and final[-1] == b"data: [DONE]\n\n"


def test_anthropic_passthrough_holds_back_message_stop_and_reads_usage():
    translator = AnthropicToAnthropic({"anthropic-version": "2023-06-01", "x-api-key": "mlk_client"})
    request = translator.build_request({"model": "anthropic/claude-x", "max_tokens": 5, "stream": True,
                                        "messages": []}, target("anthropic", "claude-x"))
    assert json.loads(request.body)["model"] == "claude-x"
    assert request.headers["x-api-key"] == "sk-secret-123456"
    out = feed_sse(translator, ANTHROPIC_STREAM)
    assert b"message_stop" not in b"".join(out) and len(out) == 7
    # The provider's own final event, byte for byte (not one the gateway writes).
    assert translator.stream_final() == [b'event: message_stop\ndata: {"type": "message_stop"}\n\n']
    assert translator.stream_usage == Usage(input_uncached=5, cache_read=10, output=7)


# -- OpenAI -> Gemini -----------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "check"), [
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}, "n": 2},
     lambda out: out["generationConfig"] == {"responseMimeType": "application/json", "candidateCount": 2}),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.webp"}}]}]},
     lambda out: out["contents"][0]["parts"] == [{"fileData": {"mimeType": "image/webp", "fileUri": "https://x/a.webp"}}]),
    ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "none",
      "tools": [{"type": "function", "function": {"name": "f"}}]},
     lambda out: out["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}),
])
def test_openai_to_gemini_request(body, check):
    request = OpenAIChatToGemini().build_request({"model": "x", **body}, target("gemini", "gemini-2.5-flash"))
    assert check(json.loads(request.body))
    assert request.headers["x-goog-api-key"] == "sk-secret-123456" and "key=" not in request.url


def test_gemini_stream_without_finish_reason_is_incomplete():
    translator = OpenAIChatToGemini()
    translator.build_request({"model": "x", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                             target("gemini", "gemini-2.5-flash"))
    chunk = {"candidates": [{"content": {"parts": [{"text": "a"}, {"text": "t", "thought": True}]}}],
             "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}}
    out = chunks_of(feed_sse(translator, f"data: {json.dumps(chunk)}\n\n".encode()))
    assert [c["choices"][0]["delta"] for c in out] == [{"role": "assistant", "content": ""}, {"content": "a"}]
    assert translator.stream_usage is None and not translator.stream_complete  # cut: estimated upstream


# -- OpenAI -> Bedrock ----------------------------------------------------------------------------
def test_openai_to_bedrock_request_is_marked_for_signing():
    request = OpenAIChatToBedrock().build_request(
        {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stop": "END", "stream": True},
        target("bedrock", "us.anthropic.claude-x-v1:0", region="eu-west-1"))
    assert request.url == "https://host.example/model/us.anthropic.claude-x-v1%3A0/converse-stream"
    assert request.signing == ("bedrock", "eu-west-1") and "authorization" not in request.headers
    assert json.loads(request.body)["inferenceConfig"] == {"stopSequences": ["END"]}


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
])
def test_openai_to_bedrock_refuses_what_converse_cannot_express(body):
    with pytest.raises(InvalidRequestError):
        OpenAIChatToBedrock().build_request({"model": "x", **body}, target("bedrock", "m"))


def test_bedrock_event_stream_decoding_and_translation():
    raw = b"".join([
        bedrock_event("messageStart", {"role": "assistant"}),
        bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Yo"}}),
        bedrock_event("messageStop", {"stopReason": "end_turn"}),
        bedrock_event("metadata", {"usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}),
    ])
    decoder, translator = EventStreamDecoder(), OpenAIChatToBedrock()
    out: list[bytes] = []
    for i in range(0, len(raw), 7):  # split mid-frame: decoding is incremental
        for event in decoder.feed(raw[i:i + 7]):
            out.extend(translator.stream_event(event))
    deltas = [c["choices"][0] for c in chunks_of(out)]
    assert [d["delta"] for d in deltas] == [{"role": "assistant", "content": ""}, {"content": "Yo"}, {}]
    assert deltas[-1]["finish_reason"] == "stop"
    assert translator.stream_complete and translator.stream_usage == Usage(input_uncached=3, output=1)


def test_bedrock_exception_message_becomes_an_openai_error_event():
    [event] = EventStreamDecoder().feed(bedrock_exception("throttlingException", "slow down"))
    assert event.event == "exception:throttlingException"
    out = OpenAIChatToBedrock().stream_event(event)
    assert json.loads(out[-1][6:])["error"]["message"] == "slow down"


# -- Responses ------------------------------------------------------------------------------------
def test_responses_stream_holds_back_the_terminal_event():
    translator = ResponsesToOpenAI()
    done = {"type": "response.completed", "response": {"model": "gpt-5", "usage": {
        "input_tokens": 10, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 4}}}}
    raw = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"a"}\n\n'
           + f"event: response.completed\ndata: {json.dumps(done)}\n\n".encode())
    out = feed_sse(translator, raw)
    assert len(out) == 1 and translator.stream_complete
    assert translator.stream_usage == Usage(input_uncached=6, cache_read=4, output=2)
    assert b"response.completed" in translator.stream_final()[0]
