"""Gemini and Bedrock behind the meter, from the OpenAI SDK.

GIVEN fake Gemini (generateContent / streamGenerateContent?alt=sse) and Bedrock (Converse JSON /
ConverseStream event-stream, SigV4) upstreams
WHEN the OpenAI SDK calls `gemini/<model>` and `bedrock/<inference profile>`, streaming and not
THEN responses and chunks are OpenAI's, and each call costs what the provider's own settlement
     formula says (computed independently from catalog.json), streamed or not.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import wait_for_ledger
from tests.oracle import bedrock_cost_micros, gemini_cost_micros
from tests.providers.conftest import GEMINI_SECRET

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look up an order",
                                           "parameters": {"type": "object", "properties": {"id": {"type": "string"}},
                                                          "additionalProperties": False}}}]
PNG = "data:image/png;base64,iVBORw0KGgo="
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def oa(gateway, world) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)


def stream_all(sdk: openai.OpenAI, **kwargs) -> list:
    return list(sdk.chat.completions.create(stream=True, **kwargs))


# -- Gemini ---------------------------------------------------------------------------------------
def test_gemini_non_streaming_request_mapping_and_cost(gateway, world, fakes, settings):
    fakes.gemini.function_call = {"name": "lookup", "args": {"id": "A1"}}
    messages = [
        {"role": "developer", "content": "Answer in JSON."},
        {"role": "user", "content": [{"type": "text", "text": "Order?"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": '{"id":"Z"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": '{"status": "shipped"}'},
    ]
    done = oa(gateway, world).chat.completions.create(
        model="gemini/gemini-2.5-flash", messages=messages, tools=TOOLS, max_tokens=300,
        response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}})
    assert done.choices[0].message.content == "Hello from Gemini."
    assert done.choices[0].finish_reason == "tool_calls"
    assert json.loads(done.choices[0].message.tool_calls[0].function.arguments) == {"id": "A1"}
    f = fakes.gemini
    assert done.usage.prompt_tokens == f.prompt_tokens and done.usage.completion_tokens == 42

    sent = f.requests[0]
    assert f.urls[0].endswith("/v1beta/models/gemini-2.5-flash:generateContent")
    assert f.headers[0]["x-goog-api-key"] == GEMINI_SECRET and GEMINI_SECRET not in f.urls[0]
    assert sent["systemInstruction"] == {"parts": [{"text": "Answer in JSON."}]}
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    assert sent["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    assert sent["contents"][1]["parts"] == [{"functionCall": {"name": "lookup", "args": {"id": "Z"}}}]
    assert sent["contents"][2]["parts"] == [{"functionResponse": {"name": "lookup", "response": {"status": "shipped"}}}]
    assert sent["generationConfig"] == {"maxOutputTokens": 300, "responseMimeType": "application/json",
                                        "responseJsonSchema": {"type": "object"}}
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "lookup"

    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert (record["input_uncached"], record["cache_read"], record["output"], record["reasoning"]) == (
        476, 1024, 42, 12)
    assert record["cost_micros"] == gemini_cost_micros("gemini/gemini-2.5-flash", 1500, 1024, 30, 12)


@pytest.mark.parametrize("include_usage", [False, True])
def test_gemini_streaming_costs_the_same(gateway, world, fakes, settings, include_usage):
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = stream_all(oa(gateway, world), model="gemini/gemini-2.5-flash",
                        messages=[{"role": "user", "content": "hi"}], **kwargs)
    assert fakes.gemini.urls[0].endswith(":streamGenerateContent?alt=sse")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Gemini."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert bool([c for c in chunks if not c.choices]) is include_usage
    oa(gateway, world).chat.completions.create(model="gemini/gemini-2.5-flash",
                                               messages=[{"role": "user", "content": "hi"}])
    records = wait_for_ledger(settings, world.workspace, 2)
    assert {r["cost_micros"] for r in records} == {gemini_cost_micros("gemini/gemini-2.5-flash", 1500, 1024, 30, 12)}
    assert all(r["estimated"] is False for r in records)


def test_gemini_long_context_tier_prices_the_whole_request(gateway, world, fakes, settings):
    fakes.gemini.prompt_tokens, fakes.gemini.cached_tokens = 250_000, 0
    # A prompt that can be 250k tokens (usage beyond what the request can hold is capped as implausible).
    oa(gateway, world).chat.completions.create(model="gemini/gemini-2.5-pro",
                                               messages=[{"role": "user", "content": "long " * 50_000}])
    [record] = wait_for_ledger(settings, world.workspace, 1)
    cost = gemini_cost_micros("gemini/gemini-2.5-pro", 250_000, 0, 30, 12)
    assert record["cost_micros"] == cost == (250_000 * 250 + 42 * 1500) // 100  # $2.50 / $15.00 per 1M


def test_gemini_error_is_openai_shaped_and_keyless(gateway, world, fakes):
    fakes.gemini.error = (400, {"error": {"code": 400, "message": f"API key not valid: {GEMINI_SECRET}",
                                          "status": "INVALID_ARGUMENT"}})
    with pytest.raises(openai.BadRequestError) as err:
        oa(gateway, world).chat.completions.create(model="gemini/gemini-2.5-flash",
                                                   messages=[{"role": "user", "content": "hi"}])
    assert GEMINI_SECRET not in err.value.response.text and "API key not valid" in err.value.message


# -- Bedrock --------------------------------------------------------------------------------------
def test_bedrock_non_streaming_is_signed_mapped_and_priced_at_the_regional_profile(gateway, world, fakes, settings):
    fakes.bedrock.tool_use = {"toolUseId": "tu_1", "name": "lookup", "input": {"id": "B2"}}
    done = oa(gateway, world).chat.completions.create(
        model=f"bedrock/{BEDROCK_MODEL}", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "lookup"}},
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "hi"},
                                               {"type": "image_url", "image_url": {"url": PNG}}]}],
        max_completion_tokens=200, top_p=0.9)
    assert done.choices[0].message.content == "Hello from Bedrock."
    assert done.choices[0].message.tool_calls[0].id == "tu_1" and done.choices[0].finish_reason == "tool_calls"
    f = fakes.bedrock
    assert f.paths[0] == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse"
    auth = f.headers[0]["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=") and "/us-west-2/bedrock/aws4_request" in auth
    sent = f.requests[0]
    assert sent["system"] == [{"text": "Be brief."}]
    assert sent["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
    assert sent["inferenceConfig"] == {"maxTokens": 200, "topP": 0.9}
    assert sent["toolConfig"]["toolChoice"] == {"tool": {"name": "lookup"}}
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"] == {"id": {"type": "string"}}
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert (record["input_uncached"], record["cache_read"], record["cache_write_5m"], record["output"]) == (
        800, 1200, 400, 25)
    assert record["cost_micros"] == bedrock_cost_micros(f"bedrock/{BEDROCK_MODEL}", 800, 1200, 400, 25)
    global_cost = bedrock_cost_micros("bedrock/global.anthropic.claude-sonnet-4-5-20250929-v1:0", 800, 1200, 400, 25)
    assert record["cost_micros"] > global_cost  # the us. profile's +10 %


@pytest.mark.parametrize("include_usage", [False, True])
def test_bedrock_converse_stream_event_stream_costs_the_same(gateway, world, fakes, settings, include_usage):
    fakes.bedrock.tool_use = {"toolUseId": "tu_1", "name": "lookup", "input": {"id": "B2"}}
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = stream_all(oa(gateway, world), model=f"bedrock/{BEDROCK_MODEL}", tools=TOOLS,
                        messages=[{"role": "user", "content": "hi"}], **kwargs)
    assert fakes.bedrock.paths[0].endswith("/converse-stream")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Bedrock."
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "tu_1" and json.loads("".join(t.function.arguments or "" for t in calls)) == {"id": "B2"}
    assert bool([c for c in chunks if not c.choices]) is include_usage
    oa(gateway, world).chat.completions.create(model=f"bedrock/{BEDROCK_MODEL}",
                                               messages=[{"role": "user", "content": "hi"}])
    records = wait_for_ledger(settings, world.workspace, 2)
    assert {r["cost_micros"] for r in records} == {bedrock_cost_micros(f"bedrock/{BEDROCK_MODEL}", 800, 1200, 400, 25)}
    assert all(r["estimated"] is False and r["outcome"] == "ok" for r in records)


def test_bedrock_anomaly_where_input_included_cache_writes_is_not_double_billed(gateway, world, fakes, settings):
    fakes.bedrock.writes_inside_input = True
    oa(gateway, world).chat.completions.create(model="bedrock/amazon.nova-pro-v1:0",
                                               messages=[{"role": "user", "content": "hi"}])
    stream_all(oa(gateway, world), model="bedrock/amazon.nova-pro-v1:0", messages=[{"role": "user", "content": "hi"}])
    records = wait_for_ledger(settings, world.workspace, 2)
    for record in records:
        assert (record["input_uncached"], record["cache_write_5m"]) == (800, 400)
        assert record["cost_micros"] == bedrock_cost_micros("bedrock/amazon.nova-pro-v1:0", 800, 1200, 400, 25)


def test_bedrock_mid_stream_exception_reaches_the_sdk_and_is_recorded(gateway, world, fakes, settings):
    fakes.bedrock.stream_exception = "throttlingException"
    with pytest.raises(openai.APIError) as err:
        stream_all(oa(gateway, world), model=f"bedrock/{BEDROCK_MODEL}", messages=[{"role": "user", "content": "hi"}])
    assert not isinstance(err.value, openai.APIConnectionError)  # the gateway's error event, not a broken socket
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["outcome"] == "upstream_break" and record["estimated"] is True


def test_bedrock_web_image_urls_are_refused_with_a_clear_400(gateway, world, fakes):
    with pytest.raises(openai.BadRequestError) as err:
        oa(gateway, world).chat.completions.create(
            model=f"bedrock/{BEDROCK_MODEL}",
            messages=[{"role": "user", "content": [{"type": "image_url",
                                                    "image_url": {"url": "https://example.com/a.png"}}]}])
    assert "data URL" in err.value.message and fakes.bedrock.requests == []


def test_bedrock_provider_error_passes_through_with_status(gateway, world, fakes, settings):
    fakes.bedrock.error = (400, "ValidationException", "The provided model identifier is invalid.")
    with pytest.raises(openai.BadRequestError) as err:
        oa(gateway, world).chat.completions.create(model=f"bedrock/{BEDROCK_MODEL}",
                                                   messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 400
    assert err.value.body["message"] == "The provided model identifier is invalid."
