"""The anthropic SDK, unmodified, against `sim/claude-*` through the gateway: create, stream, tools,
thinking, count_tokens, and prompt caching with real write/read usage, TTLs and workspace scoping."""

from __future__ import annotations

import anthropic
import jsonschema
import pytest

from tests.clients.conftest import new_sim_tenant
from tests.conftest import wait_for_ledger

TOOL = {"name": "get_stock_price", "description": "Get the latest stock price for a ticker symbol",
        "input_schema": {"type": "object", "properties": {"ticker": {"type": "string"},
                                                          "currency": {"type": "string", "enum": ["USD", "EUR"]}},
                         "required": ["ticker"]}}
LONG_SYSTEM = "You are a careful analyst. " * 400  # ~2,400 tokens: above Sonnet's 1,024 minimum


@pytest.fixture
def claude(gateway, sim_tenant) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=sim_tenant.api_key, max_retries=0)


def test_create_and_stream_agree(claude, settings, sim_tenant):
    ask = [{"role": "user", "content": "Summarise the budget policy"}]
    message = claude.messages.create(model="sim/claude-sonnet-4-5", max_tokens=200, messages=ask)
    assert message.stop_reason == "end_turn" and message.content[0].text
    with claude.messages.stream(model="sim/claude-sonnet-4-5", max_tokens=200, messages=ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == message.content[0].text and final.usage.output_tokens == message.usage.output_tokens
    records = wait_for_ledger(settings, sim_tenant.workspace, 2)
    assert {r["cost_micros"] for r in records} == {records[0]["cost_micros"]} and records[0]["cost_micros"] > 0


def test_max_tokens_is_exact(claude):
    message = claude.messages.create(model="sim/claude-haiku-4-5", max_tokens=3,
                                     messages=[{"role": "user", "content": "Write a long essay"}])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_tool_use_round_trip(claude):
    ask = {"role": "user", "content": "What is the stock price of ACME?"}
    first = claude.messages.create(model="sim/claude-sonnet-4-5", max_tokens=500, tools=[TOOL], messages=[ask])
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    jsonschema.validate(use.input, TOOL["input_schema"])
    assert use.input["ticker"] == "ACME"
    second = claude.messages.create(model="sim/claude-sonnet-4-5", max_tokens=500, tools=[TOOL], messages=[
        ask, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42.10 USD"}]}])
    assert second.stop_reason == "end_turn" and "42.10 USD" in second.content[0].text
    forced = claude.messages.create(model="sim/claude-sonnet-4-5", max_tokens=500, tools=[TOOL],
                                    tool_choice={"type": "tool", "name": "get_stock_price"},
                                    messages=[{"role": "user", "content": "hi"}])
    assert forced.content[-1].type == "tool_use"


def test_streamed_tool_use_and_thinking(claude):
    with claude.messages.stream(model="sim/claude-sonnet-4-5", max_tokens=4000, tools=[TOOL],
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "Price of ACME stock?"}]) as stream:
        final = stream.get_final_message()
    kinds = [b.type for b in final.content]
    assert kinds[0] == "thinking" and kinds[-1] == "tool_use"
    assert final.content[-1].input["ticker"] == "ACME"
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="sim/claude-sonnet-4-5", max_tokens=1000,
                               thinking={"type": "enabled", "budget_tokens": 2000},
                               messages=[{"role": "user", "content": "hi"}])


def test_count_tokens_matches_the_billed_input(claude):
    ask = [{"role": "user", "content": "How many tokens is this?"}]
    counted = claude.messages.count_tokens(model="sim/claude-sonnet-4-5", messages=ask, system="Be brief.")
    billed = claude.messages.create(model="sim/claude-sonnet-4-5", max_tokens=10, messages=ask, system="Be brief.")
    assert counted.input_tokens == billed.usage.input_tokens > 0


def test_prompt_caching_writes_then_reads_per_workspace(claude, gateway, settings):
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]

    def ask(client, question):
        return client.messages.create(model="sim/claude-sonnet-4-5", max_tokens=50, system=system,
                                      messages=[{"role": "user", "content": question}]).usage

    first, second = ask(claude, "first question"), ask(claude, "second question")
    assert first.cache_creation_input_tokens > 1024 and first.cache_read_input_tokens == 0
    assert first.cache_creation.ephemeral_1h_input_tokens == first.cache_creation_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0

    # Another workspace never reads this workspace's cache.
    other = new_sim_tenant(settings)
    stranger = anthropic.Anthropic(base_url=gateway.url, api_key=other.api_key, max_retries=0)
    assert ask(stranger, "third question").cache_read_input_tokens == 0

    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="sim/claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]}])
    assert "maximum of 4 blocks" in str(err.value)
