"""Prompt caching for OpenAI-format chat bound for Claude: breakpoints carried into Anthropic
`cache_control` and Bedrock Converse `cachePoint` blocks.

GIVEN a workspace with the prompt-caching lever on, fake Anthropic and Bedrock upstreams (the fake
Bedrock validates cachePoints as Bedrock does and, with `cache_model`, bills reads and writes from
the points it is sent)
WHEN the official openai SDK calls `anthropic/<claude>` or `bedrock/<claude or nova>` on
/v1/chat/completions, streamed and not
THEN breakpoints land at the end of the stable prefix only once reuse pays, never over a client's
own, never more than 4, never on a model or field that rejects them; each call costs what the
provider's formula says and the lever's saving is the read discount minus the write premium,
recomputed here from the catalog.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import openai

from meterline.store.workspaces import WorkspaceStore
from tests.conftest import wait_for_ledger
from tests.oracle import anthropic_cost_micros, bedrock_cost_micros, price

SYSTEM = "You are the support agent of a large company. " + " ".join(f"Policy {i}: be exact." for i in range(900))
TOOLS = [{"type": "function", "function": {"name": "lookup_order", "description": "Find an order by id.",
                                           "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}]
CLAUDE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
POINT = {"cachePoint": {"type": "default"}}


def sdk(gateway, world) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)


def prompt_cache_on(settings, world, ttl: str = "5m") -> None:
    WorkspaceStore(settings).put_cache_rule(world.workspace, "workspace",
                                            {"exact": False, "prompt_cache": True, "prompt_cache_ttl": ttl})


def expected_saving(model_id: str, read: int, write: int) -> int:
    """read x (input - cache read) - write x (5m write - input), per 1M tokens, rounded once."""
    value = (read * (price(model_id, "input") - price(model_id, "cache_read"))
             - write * (price(model_id, "cache_write_5m") - price(model_id, "input")))
    rounded = int(abs(value).quantize(Decimal(1), ROUND_HALF_UP))  # tokens x $/1M tokens = micro-dollars
    return rounded if value >= 0 else -rounded


def points_in(blocks: list[dict]) -> list[int]:
    return [i for i, b in enumerate(blocks) if "cachePoint" in b]


def test_bedrock_claude_gets_a_cache_point_after_reuse_and_the_saving_is_exact(gateway, world, fakes, settings):
    prompt_cache_on(settings, world)
    fakes.bedrock.cache_model = True
    client = sdk(gateway, world)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Where is order 7?"}]
    client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=messages, tools=TOOLS)
    client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=messages, tools=TOOLS)
    chunks = list(client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=messages, tools=TOOLS,
                                                 stream=True, stream_options={"include_usage": True}))
    first, second, third = fakes.bedrock.requests
    assert points_in(first["system"]) == [] and points_in(first["toolConfig"]["tools"]) == []  # first sight
    assert second["system"] == [{"text": SYSTEM}, POINT]  # the end of the stable prefix
    assert points_in(second["toolConfig"]["tools"]) == [] and all(points_in(m["content"]) == []
                                                                  for m in second["messages"])
    assert third["system"] == second["system"]
    assert fakes.bedrock.paths[2].endswith("/converse-stream")
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 1000  # streamed, read from the cache

    records = sorted(wait_for_ledger(settings, world.workspace, 3), key=lambda r: r["ts"])
    assert "prompt_cache_breakpoints" not in records[0] and "prompt_cache" not in records[0].get("savings", {})
    assert records[1]["prompt_cache_breakpoints"] == ["prefix"] and records[1]["cache_write_5m"] > 1000
    assert records[2]["cache_read"] == records[1]["cache_write_5m"] and records[2]["cache_write_5m"] == 0
    model_id = f"bedrock/{CLAUDE}"
    for record in records:
        assert record["cost_micros"] == bedrock_cost_micros(model_id, record["input_uncached"], record["cache_read"],
                                                            record["cache_write_5m"], record["output"])
    for record in records[1:]:
        assert record["savings"]["prompt_cache"] == expected_saving(model_id, record["cache_read"],
                                                                    record["cache_write_5m"])
    assert records[1]["savings"]["prompt_cache"] < 0 < records[2]["savings"]["prompt_cache"]  # write, then reads
    assert records[1]["savings"]["prompt_cache"] + records[2]["savings"]["prompt_cache"] > 0


def test_bedrock_agent_loop_rolls_conversation_points_within_four(gateway, world, fakes, settings):
    prompt_cache_on(settings, world)
    fakes.bedrock.cache_model = True
    fakes.bedrock.tool_use = {"toolUseId": "tu_1", "name": "lookup_order", "input": {"id": "7"}}
    client = sdk(gateway, world)
    messages: list[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Where is order 7?"}]
    for turn in range(4):
        reply = client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=messages, tools=TOOLS)
        call = reply.choices[0].message.tool_calls[0]
        messages = [*messages, reply.choices[0].message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": call.id, "content": f"order {turn} shipped"}]
    sent = fakes.bedrock.requests
    for body in sent:
        total = sum(len(points_in(blocks)) for blocks in [body["system"], body["toolConfig"]["tools"],
                                                           *(m["content"] for m in body["messages"])])
        assert total <= 4
    last = sent[-1]["messages"]
    assert "cachePoint" in last[-1]["content"][-1]  # this turn's write
    assert "cachePoint" in last[-3]["content"][-1]  # where the previous turn's write ended
    records = sorted(wait_for_ledger(settings, world.workspace, 4), key=lambda r: r["ts"])
    assert records[-1]["prompt_cache_breakpoints"] == ["prefix", "conversation_read", "conversation_write"]
    assert records[-1]["cache_read"] > records[1]["cache_write_5m"]  # the conversation is read too
    for record in records:
        assert record["cost_micros"] == bedrock_cost_micros(f"bedrock/{CLAUDE}", record["input_uncached"],
                                                            record["cache_read"], record["cache_write_5m"],
                                                            record["output"])


def test_bedrock_models_without_cache_points_or_tool_points_are_left_alone(gateway, world, fakes, settings):
    prompt_cache_on(settings, world)
    client = sdk(gateway, world)
    long_tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": SYSTEM[:2000],
                                                    "parameters": {"type": "object", "properties": {}}}}
                  for i in range(4)]
    for _ in range(3):  # Llama on Bedrock has no prompt caching: a cachePoint would be a 400
        client.chat.completions.create(model="bedrock/meta.llama3-3-70b-instruct-v1:0",
                                       messages=[{"role": "system", "content": SYSTEM},
                                                 {"role": "user", "content": "hi"}])
    for _ in range(3):  # Nova caches system and messages but not tools
        client.chat.completions.create(model="bedrock/amazon.nova-pro-v1:0", tools=long_tools,
                                       messages=[{"role": "user", "content": "hi"}])
    for body in fakes.bedrock.requests:
        assert "cachePoint" not in str(body)
    client.chat.completions.create(model="bedrock/amazon.nova-pro-v1:0", tools=long_tools,
                                   messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}])
    client.chat.completions.create(model="bedrock/amazon.nova-pro-v1:0", tools=long_tools,
                                   messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}])
    nova = fakes.bedrock.requests[-1]
    assert nova["system"][-1] == POINT and points_in(nova["toolConfig"]["tools"]) == []


def test_a_clients_own_cache_control_is_carried_and_never_added_to(gateway, world, fakes, settings):
    prompt_cache_on(settings, world, "1h")
    client = sdk(gateway, world)
    messages = [{"role": "system", "content": [{"type": "text", "text": SYSTEM,
                                                "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
                {"role": "user", "content": "Where is order 7?"}, {"role": "assistant", "content": "Shipped."},
                {"role": "user", "content": [{"type": "text", "text": "And order 8?",
                                              "cache_control": {"type": "ephemeral"}}]}]
    tools = [{**TOOLS[0], "cache_control": {"type": "ephemeral"}}]
    for _ in range(3):
        client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=messages, tools=tools)
        client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=messages, tools=tools)
    bedrock = fakes.bedrock.requests[-1]
    assert bedrock["system"] == [{"text": SYSTEM}, {"cachePoint": {"type": "default", "ttl": "1h"}}]
    assert bedrock["toolConfig"]["tools"][1] == POINT
    assert bedrock["messages"][-1]["content"] == [{"text": "And order 8?"}, POINT]
    assert points_in(bedrock["messages"][0]["content"]) == []  # nothing of ours added
    anthropic_body = fakes.anthropic.requests[-1]
    assert anthropic_body["system"] == [{"type": "text", "text": SYSTEM,
                                         "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    assert anthropic_body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert anthropic_body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in str(anthropic_body["messages"][0])
    records = wait_for_ledger(settings, world.workspace, 6)
    assert all("prompt_cache_breakpoints" not in r for r in records)


def test_chat_to_anthropic_carries_the_lever_breakpoints_and_records_the_value(gateway, world, fakes, settings):
    prompt_cache_on(settings, world)
    client = sdk(gateway, world)
    messages = [{"role": "developer", "content": SYSTEM}, {"role": "user", "content": "Where is order 7?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function", "function": {
                    "name": "lookup_order", "arguments": '{"id":"7"}'}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "shipped"}]
    for _ in range(2):
        client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=messages, tools=TOOLS)
    list(client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=messages, tools=TOOLS,
                                        stream=True))
    first, second, third = fakes.anthropic.requests
    assert "cache_control" not in str(first["system"]) and "cache_control" not in str(first["tools"])
    control = {"type": "ephemeral", "ttl": "5m"}
    assert second["system"] == [{"type": "text", "text": SYSTEM, "cache_control": control}]
    assert second["messages"][0]["content"][-1]["cache_control"] == control  # before the latest assistant turn
    assert second["messages"][-1]["content"][-1] == {"type": "tool_result", "tool_use_id": "t1", "content": "shipped",
                                                     "cache_control": control}  # the last block
    assert "cache_control" not in str(second["tools"])
    assert third["system"] == second["system"] and third["stream"] is True
    records = sorted(wait_for_ledger(settings, world.workspace, 3), key=lambda r: r["ts"])
    f = fakes.anthropic
    model_id = "anthropic/claude-sonnet-4-5"
    cost = anthropic_cost_micros(model_id, f.input_tokens, f.cache_read, f.cache_write_5m, f.cache_write_1h, 42)
    assert {r["cost_micros"] for r in records} == {cost}
    expected = (f.cache_read * (price(model_id, "input") - price(model_id, "cache_read"))
                - f.cache_write_5m * (price(model_id, "cache_write_5m") - price(model_id, "input"))
                - f.cache_write_1h * (price(model_id, "cache_write_1h") - price(model_id, "input")))
    for record in records[1:]:
        assert record["prompt_cache_breakpoints"] == ["prefix", "conversation_read", "conversation_write"]
        assert record["savings"]["prompt_cache"] == int(expected.quantize(Decimal(1), ROUND_HALF_UP))


def test_a_one_hour_rule_writes_one_hour_cache_points_on_claude_4_5_and_prices_them(gateway, world, fakes,
                                                                                    settings):
    prompt_cache_on(settings, world, "1h")
    fakes.bedrock.cache_model = True
    client = sdk(gateway, world)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Where is order 7?"}]
    for _ in range(4):  # 1-hour entries pay from the 3rd use within the hour
        client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=messages)
    sent = fakes.bedrock.requests
    assert points_in(sent[1]["system"]) == [] and sent[2]["system"][-1] == {"cachePoint": {"type": "default",
                                                                                            "ttl": "1h"}}
    records = sorted(wait_for_ledger(settings, world.workspace, 4), key=lambda r: r["ts"])
    write, read = records[2], records[3]
    assert write["cache_write_1h"] > 1000 and write["cache_write_5m"] == 0 and read["cache_read"] > 1000
    model_id = f"bedrock/{CLAUDE}"
    for record in (write, read):
        cost = (record["input_uncached"] * price(model_id, "input")
                + record["cache_read"] * price(model_id, "cache_read")
                + record["cache_write_1h"] * price(model_id, "cache_write_1h")
                + record["output"] * price(model_id, "output"))
        assert record["cost_micros"] == int(cost.quantize(Decimal(1), ROUND_HALF_UP))
    premium = write["cache_write_1h"] * (price(model_id, "cache_write_1h") - price(model_id, "input"))
    assert write["savings"]["prompt_cache"] == -int(premium.quantize(Decimal(1), ROUND_HALF_UP))
    assert read["savings"]["prompt_cache"] == expected_saving(model_id, read["cache_read"], 0)
    # Claude Sonnet 4 on Bedrock has no 1-hour TTL: the same rule writes 5-minute points there.
    for _ in range(2):
        client.chat.completions.create(model="bedrock/us.anthropic.claude-sonnet-4-20250514-v1:0", messages=messages)
    assert fakes.bedrock.requests[-1]["system"][-1] == POINT


def test_a_template_on_chat_marks_its_boundary_only_where_claude_serves_it(gateway, world, fakes, settings):
    from meterline.admin.ops import Ops

    Ops(settings).put_template(world.workspace, "support", {
        "system": SYSTEM, "examples": [{"role": "user", "content": "Where is order 1?"},
                                       {"role": "assistant", "content": "Order 1 shipped yesterday."}]})
    client = sdk(gateway, world)
    headers = {"meterline-template": "support@1"}
    question = [{"role": "user", "content": "Where is order 7?"}]
    client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=question, extra_headers=headers)
    client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=question, extra_headers=headers)
    client.chat.completions.create(model="bedrock/meta.llama3-3-70b-instruct-v1:0", messages=question,
                                   extra_headers=headers)
    client.chat.completions.create(model="openai/gpt-4o", messages=question, extra_headers=headers)
    anthropic_body = fakes.anthropic.requests[0]
    assert anthropic_body["system"] == [{"type": "text", "text": SYSTEM}]
    assert anthropic_body["messages"][1]["content"] == [{"type": "text", "text": "Order 1 shipped yesterday.",
                                                         "cache_control": {"type": "ephemeral"}}]  # the boundary
    claude, llama = fakes.bedrock.requests
    assert claude["messages"][1]["content"] == [{"text": "Order 1 shipped yesterday."}, POINT]
    assert "cachePoint" not in str(llama)
    assert "cache_control" not in str(fakes.openai.chat.requests[0])  # OpenAI caches the prefix by itself
    records = sorted(wait_for_ledger(settings, world.workspace, 4), key=lambda r: r["ts"])
    f = fakes.anthropic
    model_id = "anthropic/claude-sonnet-4-5"
    expected = (f.cache_read * (price(model_id, "input") - price(model_id, "cache_read"))
                - f.cache_write_5m * (price(model_id, "cache_write_5m") - price(model_id, "input"))
                - f.cache_write_1h * (price(model_id, "cache_write_1h") - price(model_id, "input")))
    assert records[0]["template"] == "support@1"
    assert records[0]["savings"]["template"] == int(expected.quantize(Decimal(1), ROUND_HALF_UP))
    b = fakes.bedrock
    assert records[1]["savings"]["template"] == expected_saving(f"bedrock/{CLAUDE}", b.cache_read, b.cache_write)
    assert "template" not in records[2].get("savings", {}) and "template" not in records[3].get("savings", {})
