"""Native prompt caching: breakpoints and cache keys placed for the provider's own cache."""

from __future__ import annotations

import anthropic
import openai

from meterline.levers import prompt_cache as lever
from meterline.pricing.catalog import Rates
from meterline.store.workspaces import WorkspaceStore
from meterline.usage import Usage
from tests.conftest import make_tenant, wait_for_ledger

SYSTEM = "You are the support agent of a large company. " + " ".join(f"Policy {i}: be exact." for i in range(900))
TOOLS = [{"name": "lookup_order", "description": "Find an order by id.",
          "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}}}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breakpoints_only_after_enough_reuse_and_never_over_a_clients_own():
    tracker = lever.ReuseTracker(clock=Clock())
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "system": SYSTEM, "tools": TOOLS,
            "messages": [{"role": "user", "content": "Where is order 7?"}]}
    assert lever.anthropic_breakpoints(body, "claude-sonnet-4-5", "ws", "5m", tracker) is None  # first use
    second = lever.anthropic_breakpoints(body, "claude-sonnet-4-5", "ws", "5m", tracker)
    assert second.breakpoints == ("prefix",)
    assert second.body["system"] == [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral",
                                                                                          "ttl": "5m"}}]
    assert body["system"] == SYSTEM  # the client's body is not mutated
    # 1-hour entries need a third use within the hour
    one_hour = lever.ReuseTracker(clock=Clock())
    assert lever.anthropic_breakpoints(body, "claude-sonnet-4-5", "ws", "1h", one_hour) is None
    assert lever.anthropic_breakpoints(body, "claude-sonnet-4-5", "ws", "1h", one_hour) is None
    assert lever.anthropic_breakpoints(body, "claude-sonnet-4-5", "ws", "1h", one_hour) is not None
    # another workspace's traffic is not this one's reuse
    assert lever.anthropic_breakpoints(body, "claude-sonnet-4-5", "other", "5m", tracker) is None
    # a client's own breakpoint (or the top-level automatic one): untouched
    assert lever.anthropic_breakpoints({**body, "cache_control": {"type": "ephemeral"}}, "claude-sonnet-4-5",
                                       "ws", "5m", tracker) is None
    # below the model's minimum: nothing
    short = {**body, "system": "Be brief.", "tools": []}
    for _ in range(3):
        assert lever.anthropic_breakpoints(short, "claude-sonnet-4-5", "ws", "5m", tracker) is None


def test_rolling_breakpoints_stay_within_four_and_read_the_previous_write():
    tracker = lever.ReuseTracker(clock=Clock())
    turns = [{"role": "user", "content": "Where is order 7?"},
             {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup_order",
                                                "input": {"id": "7"}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "shipped"}]}]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "system": SYSTEM, "tools": TOOLS, "messages": turns}
    lever.anthropic_breakpoints(body, "claude-sonnet-4-5", "ws", "5m", tracker)
    injected = lever.anthropic_breakpoints(body, "claude-sonnet-4-5", "ws", "5m", tracker)
    assert injected.breakpoints == ("prefix", "conversation_read", "conversation_write")
    assert lever.client_breakpoints(injected.body) == 3 <= lever.MAX_BREAKPOINTS
    messages = injected.body["messages"]
    assert messages[0]["content"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}  # before the assistant
    assert messages[2]["content"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}  # the last block


def test_value_is_exact_and_can_be_negative():
    rates = Rates(input=3_000_000, cache_read=300_000, cache_write_5m=3_750_000, cache_write_1h=6_000_000,
                  output=15_000_000)
    read = lever.value(Usage(input_uncached=10, cache_read=10_000, output=5), rates)
    assert (read.read_saved, read.write_premium, read.net) == (27_000, 0, 27_000)
    write = lever.value(Usage(input_uncached=10, cache_write_5m=10_000, cache_write_1h=1_000), rates)
    assert (write.read_saved, write.write_premium, write.net) == (0, 7_500 + 3_000, -10_500)
    odd = lever.value(Usage(cache_read=1, cache_write_5m=1), rates)  # sub-micro parts: one rounding
    assert odd.net == round((2_700_000 - 750_000) / 1e6)


def test_openai_cache_key_is_added_only_when_absent():
    body = {"model": "gpt-5", "messages": []}
    keyed = lever.openai_cache_key(body, "ws", "support", None, "gpt-5")
    assert keyed["prompt_cache_key"].startswith("ml_") and "prompt_cache_retention" not in keyed
    other = lever.openai_cache_key(body, "ws2", "support", None, "gpt-5")
    assert keyed["prompt_cache_key"] != other["prompt_cache_key"]
    assert lever.openai_cache_key({**body, "prompt_cache_key": "mine"}, "ws", None, None, "gpt-5") is None


def test_agent_loop_through_the_anthropic_sdk_reads_the_prefix_and_records_the_net_value(gateway, settings):
    tenant = make_tenant(settings, None)
    WorkspaceStore(settings).put_cache_rule(tenant.workspace, "workspace", {"exact": False, "prompt_cache": True})
    client = anthropic.Anthropic(base_url=gateway.url, api_key=tenant.api_key, max_retries=0)
    messages = [{"role": "user", "content": "Where is order 7?"}]
    for turn in range(4):
        reply = client.messages.create(model="sim/claude-sonnet-4-5", max_tokens=200, system=SYSTEM, tools=TOOLS,
                                       messages=messages)
        answer = [b.model_dump(exclude_none=True) for b in reply.content]
        messages = [*messages, {"role": "assistant", "content": answer},
                    {"role": "user", "content": f"And order {turn + 8}?"}]
    records = wait_for_ledger(settings, tenant.workspace, 4)
    assert "prompt_cache_breakpoints" not in records[0]  # first sight of the prefix: no write premium
    assert records[1]["prompt_cache_breakpoints"][0] == "prefix"
    assert records[1]["cache_write_5m"] > 0
    assert records[2]["cache_read"] > 0 and records[3]["cache_read"] > records[2]["cache_read"] // 2
    for record in records[1:]:
        value = record["prompt_cache_read_saved"] - record["prompt_cache_write_premium"]
        assert abs(record["savings"]["prompt_cache"] - value) <= 1  # one rounding on the exact sum
    assert sum(r["savings"]["prompt_cache"] for r in records[1:]) > 0


def test_openai_requests_get_a_cache_key(gateway, settings):
    tenant = make_tenant(settings, None)
    WorkspaceStore(settings).put_cache_rule(tenant.workspace, "feature:support", {"exact": False,
                                                                                   "prompt_cache": True})
    client = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0,
                           default_headers={"meterline-feature": "support"})
    client.chat.completions.create(model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["prompt_cache_key"] is True


def test_bedrock_cache_point_table_and_caps_every_route_can_take():
    from meterline.pricing.cache_rules import bedrock_caching

    assert bedrock_caching("us.anthropic.claude-sonnet-4-5-20250929-v1:0").ttl_1h
    assert not bedrock_caching("anthropic.claude-sonnet-4-20250514-v1:0").ttl_1h
    assert not bedrock_caching("amazon.nova-pro-v1:0").tools
    for model in ("meta.llama3-3-70b-instruct-v1:0", "anthropic.claude-3-haiku-20240307-v1:0",
                  "amazon.nova-sonic-v1:0"):
        assert bedrock_caching(model) is None
    assert lever.caps_for("bedrock", "meta.llama3-3-70b-instruct-v1:0") is None
    assert lever.caps_for("openai", "gpt-5") is None
    merged = lever.merge_caps([lever.caps_for("anthropic", "claude-sonnet-4-5"),
                               lever.caps_for("bedrock", "us.amazon.nova-pro-v1:0")])
    assert (merged.minimum, merged.tools, merged.ttl_1h, merged.max_tokens) == (1024, False, False, 32_000)

    # A fallback on Nova: tools get no breakpoint, a 1h rule falls back to 5 minutes.
    tools = [{"type": "function", "function": {"name": "t", "description": SYSTEM, "parameters": {}}}]
    body = {"model": "x", "tools": tools, "messages": [{"role": "user", "content": "hi"}]}
    tracker = lever.ReuseTracker(clock=Clock())
    for _ in range(3):
        assert lever.chat_breakpoints(body, merged, "claude-sonnet-4-5", "ws", "1h", tracker) is None
    with_system = {**body, "messages": [{"role": "system", "content": "Be exact. " * 400}, *body["messages"]]}
    lever.chat_breakpoints(with_system, merged, "claude-sonnet-4-5", "ws", "1h", tracker)
    injected = lever.chat_breakpoints(with_system, merged, "claude-sonnet-4-5", "ws", "1h", tracker)
    assert injected.breakpoints == ("prefix",)
    assert injected.body["messages"][0]["content"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    assert with_system["messages"][0]["content"].startswith("Be exact.")  # the client's body is not mutated
    # a client's own marker anywhere (part, message, tool) stops the lever
    for marked in ({**with_system, "tools": [{**tools[0], "cache_control": {"type": "ephemeral"}}]},
                   {**with_system, "messages": [{**with_system["messages"][0], "cache_control": {"type": "ephemeral"}},
                                                *body["messages"]]}):
        assert lever.chat_client_breakpoints(marked) == 1
        assert lever.chat_breakpoints(marked, merged, "claude-sonnet-4-5", "ws", "5m", tracker) is None
