"""The simulator's pure parts: tokenizer, schema instances, strict-mode rules, prompt-cache TTLs,
tool choice, embeddings similarity."""

from __future__ import annotations

import jsonschema
import pytest
from pydantic import BaseModel, Field

from meterline.providers.sim import embeddings, schema, text
from meterline.providers.sim.cache import ONE_HOUR, PromptCache, Segment
from meterline.providers.sim.tools import Tool, Turn, choose


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_join_back_and_truncate_exactly():
    sample = "Héllo, world!  The gateway meters 12345 calls;\nnew-line\ttab {\"json\": [1, 2]}"
    assert "".join(text.tokens(sample)) == sample
    cut, n, was_cut = text.truncate(sample, 5)
    assert n == 5 and was_cut and text.count(cut) == 5 and sample.startswith(cut)


class Address(BaseModel):
    street: str
    zip_code: str = Field(pattern=r"^\d{5}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=18, le=99)
    score: float = Field(gt=0, lt=1)
    email: str | None = None
    tags: list[str] = Field(min_length=3, max_length=5)
    kind: str = Field(json_schema_extra={"enum": ["a", "b"]})
    home: Address
    friends: list[Person] = []


SCHEMAS = [
    Person.model_json_schema(),
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"},
                                      "id": {"type": "string", "format": "uuid"},
                                      "n": {"type": "integer", "multipleOf": 5, "minimum": 3},
                                      "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}],
                                               "minItems": 2, "maxItems": 2},
                                      "flag": {"type": ["boolean", "null"]}, "fixed": {"const": 7}},
     "required": ["when", "id", "n", "pair", "flag", "fixed"]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string", "minLength": 12}}, "required": ["a"]},
               {"properties": {"b": {"oneOf": [{"type": "integer", "exclusiveMaximum": 0}, {"type": "string"}]}}}]},
]


@pytest.mark.parametrize("spec", SCHEMAS)
def test_instances_validate_against_their_schema(spec):
    for i in range(20):
        value = schema.instance(spec, text.seed_of(i), ["Paris"])
        jsonschema.validate(value, spec)
    assert schema.instance(spec, text.seed_of(1)) == schema.instance(spec, text.seed_of(1))


def test_strict_rules_are_openais():
    loose = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert "additionalProperties" in schema.strict_problem(loose)
    partial = {**loose, "properties": {"a": {}, "b": {}}, "required": ["a"], "additionalProperties": False}
    assert "Missing 'b'" in schema.strict_problem(partial)
    nested = {"type": "object", "properties": {"inner": loose}, "required": ["inner"], "additionalProperties": False}
    assert "('properties', 'inner')" in schema.strict_problem(nested)
    assert schema.strict_problem({**loose, "required": ["a"], "additionalProperties": False}) is None


def test_openai_cache_reads_the_seen_prefix_in_128_steps_until_it_expires():
    clock = Clock()
    cache = PromptCache(clock)
    prefix = [Segment("system", 1500), Segment("q1", 20)]
    assert cache.openai(("ws", "gpt-4o"), prefix) == 0
    assert cache.openai(("ws", "gpt-4o"), [*prefix[:1], Segment("q2", 30)]) == 1408  # 1500 // 128 * 128
    assert cache.openai(("other", "gpt-4o"), [*prefix[:1], Segment("q3", 30)]) == 0  # per workspace
    clock.now += 301
    assert cache.openai(("ws", "gpt-4o"), [*prefix[:1], Segment("q4", 30)]) == 0
    assert cache.openai(("ws", "gpt-4o"), [Segment("short", 900), Segment("q", 10)]) == 0


def test_anthropic_breakpoints_write_then_read_with_their_ttl():
    clock = Clock()
    cache = PromptCache(clock)
    tools = Segment("tools", 2000, ONE_HOUR)
    system = Segment("system", 1000, 300.0)
    first = cache.anthropic(("ws", "claude"), [tools, system, Segment("q1", 10)], 1024)
    assert (first.read, first.write_1h, first.write_5m) == (0, 2000, 1000)
    clock.now += 200
    second = cache.anthropic(("ws", "claude"), [tools, system, Segment("q2", 10)], 1024)
    assert (second.read, second.write_1h, second.write_5m) == (3000, 0, 0)
    clock.now += 400  # the 5-minute entry (refreshed at 200 s) is gone; the 1-hour one is not
    third = cache.anthropic(("ws", "claude"), [tools, system, Segment("q3", 10)], 1024)
    assert (third.read, third.write_5m) == (2000, 1000)
    below = cache.anthropic(("ws", "claude"), [Segment("tiny", 500, 300.0)], 1024)
    assert below.read == below.write_5m == 0


def test_tool_choice_rules():
    weather = Tool("get_weather", "Current weather for a city", {"type": "object"})
    final = Tool("final_result", "The final response", {"type": "object"})
    ask = Turn(user_text="What's the weather in Paris?")
    assert choose([final, weather], "auto", None, ask) is weather
    assert choose([weather], "auto", None, Turn(user_text="Tell me a joke")) is None
    assert choose([weather], "none", None, ask) is None
    after = Turn(user_text=ask.user_text, after_tool=True, tool_output="sunny", called=["get_weather"])
    assert choose([weather, final], "auto", None, after) is None
    assert choose([weather, final], "required", None, after) is final
    assert choose([weather, final], "named", "get_weather", after) is weather


def test_embeddings_put_paraphrases_close():
    def cos(a, b):
        return sum(x * y for x, y in zip(embeddings.embed(a, 512), embeddings.embed(b, 512), strict=True))

    assert cos("Where is my order?", "where is my order") > 0.95
    assert cos("How do I cancel my subscription?", "How can I cancel the subscription") > 0.7
    assert cos("How do I cancel my subscription?", "The capital of France is Paris") < 0.3
