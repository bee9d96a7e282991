"""The openai SDK, unmodified, against the simulator through the gateway: structured output parsed
into a pydantic model, a tool round trip (stream and not), n, exact max tokens, context overflow,
the Responses API (tools, structured output, streaming events) and embeddings."""

from __future__ import annotations

import json
import math

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import wait_for_ledger


class Weather(BaseModel):
    city: str
    temperature_c: float
    conditions: list[str]


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "unit", "days"], "additionalProperties": False},
    "strict": True}}


@pytest.fixture
def sdk(gateway, sim_tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=sim_tenant.api_key, max_retries=0)


def test_parse_into_a_pydantic_model(sdk):
    completion = sdk.chat.completions.parse(model="sim/gpt-4o-mini", response_format=Weather,
                                            messages=[{"role": "user", "content": "Weather in Paris?"}])
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Weather) and parsed.city
    assert completion.usage.completion_tokens > 0


def test_strict_schema_that_breaks_the_rules_is_refused_like_openai(sdk):
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(
            model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "Loose", "strict": True, "schema": {
                "type": "object", "properties": {"a": {"type": "string"}}}}})
    assert "additionalProperties" in str(err.value)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(sdk, stream):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        with sdk.chat.completions.stream(model="sim/gpt-4o", messages=messages, tools=[WEATHER_TOOL]) as s:
            final = s.get_final_completion()
        message = final.choices[0].message
    else:
        final = sdk.chat.completions.create(model="sim/gpt-4o", messages=messages, tools=[WEATHER_TOOL])
        message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    [call] = message.tool_calls
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER_TOOL["function"]["parameters"])
    assert args["city"] == "Paris"  # the simulated model takes arguments from the question
    messages += [message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}]
    answer = sdk.chat.completions.create(model="sim/gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert answer.choices[0].finish_reason == "stop"
    assert "18 C and sunny" in answer.choices[0].message.content


def test_tool_choice_none_required_and_named(sdk):
    ask = [{"role": "user", "content": "Tell me a joke"}]
    tools = [WEATHER_TOOL, {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    assert sdk.chat.completions.create(model="sim/gpt-4o", messages=ask, tools=tools).choices[0].message.tool_calls \
        is None  # auto: nothing relates to the question
    assert sdk.chat.completions.create(model="sim/gpt-4o", messages=ask, tools=tools,
                                       tool_choice="none").choices[0].message.tool_calls is None
    required = sdk.chat.completions.create(model="sim/gpt-4o", messages=ask, tools=tools, tool_choice="required")
    assert required.choices[0].message.tool_calls
    named = sdk.chat.completions.create(model="sim/gpt-4o", messages=ask, tools=tools,
                                        tool_choice={"type": "function", "function": {"name": "lookup"}})
    assert named.choices[0].message.tool_calls[0].function.name == "lookup"


def test_n_and_exact_max_tokens(sdk, gateway, sim_tenant, settings):
    reply = sdk.chat.completions.create(model="sim/gpt-4o-mini", n=3, max_completion_tokens=5,
                                        messages=[{"role": "user", "content": "Write a long essay on budgets"}])
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in reply.choices)
    assert reply.usage.completion_tokens == 15
    reasoning = sdk.chat.completions.create(model="sim/o4-mini", max_completion_tokens=5,
                                            messages=[{"role": "user", "content": "Think hard"}])
    assert reasoning.usage.completion_tokens == 5 and reasoning.choices[0].finish_reason == "length"


def test_context_overflow_is_the_providers_error(sdk):
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="sim/gpt-4o-mini",
                                    messages=[{"role": "user", "content": "word " * 262_144}])
    assert "maximum context length is 128000 tokens" in str(err.value)


def test_streamed_cost_equals_the_ledger(sdk, sim_tenant, settings):
    stream = sdk.chat.completions.create(model="sim/gpt-4o-mini", stream=True,
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "hello"}])
    chunks = list(stream)
    usage = chunks[-1].usage
    [record] = wait_for_ledger(settings, sim_tenant.workspace, 1)
    assert record["output"] == usage.completion_tokens and record["input_uncached"] == usage.prompt_tokens
    assert record["model"] == "sim/gpt-4o-mini" and record["cost_micros"] > 0


def test_responses_with_a_function_tool_structured_output_and_streaming(sdk):
    tool = {"type": "function", "name": "get_weather", "description": "Get the weather for a city",
            "parameters": WEATHER_TOOL["function"]["parameters"], "strict": True}
    first = sdk.responses.create(model="sim/gpt-4.1", input="What is the weather in Oslo?", tools=[tool])
    [call] = [item for item in first.output if item.type == "function_call"]
    jsonschema.validate(json.loads(call.arguments), tool["parameters"])
    second = sdk.responses.create(model="sim/gpt-4.1", tools=[tool], input=[
        {"role": "user", "content": "What is the weather in Oslo?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "-3 C, snow"}])
    assert "-3 C, snow" in second.output_text

    parsed = sdk.responses.parse(model="sim/gpt-4.1", input="Weather in Rome as JSON", text_format=Weather)
    assert isinstance(parsed.output_parsed, Weather)

    with sdk.responses.stream(model="sim/gpt-4.1", input="Say something") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and final.output_text and final.usage.output_tokens > 0


def test_embeddings_are_deterministic_sized_and_similar_for_paraphrases(sdk):
    texts = ["How do I reset my password?", "How can I reset my password", "Quarterly revenue grew 12 percent"]
    first = sdk.embeddings.create(model="sim/text-embedding-3-small", input=texts)
    again = sdk.embeddings.create(model="sim/text-embedding-3-small", input=texts)
    vectors = [d.embedding for d in first.data]
    assert vectors == [d.embedding for d in again.data]
    assert all(len(v) == 1536 and math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > 0.8 > 0.3 > cos(vectors[0], vectors[2])
    small = sdk.embeddings.create(model="sim/text-embedding-3-large", input="hello", dimensions=256)
    assert len(small.data[0].embedding) == 256 and first.usage.prompt_tokens > 0
