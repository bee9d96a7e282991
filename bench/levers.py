"""What the caching levers save on a realistic workload: exact-match response cache and native
prompt caching (levers 1 and 2), alone and together, against no lever.

One process: embedded AWS (moto) and the gateway on uvicorn over loopback, answering from the
built-in simulator, which models the providers' prompt caches with real TTLs, write premiums and
read discounts (providers/sim/cache.py): Anthropic caches only at `cache_control` breakpoints,
OpenAI caches >= 1,024-token prefixes automatically (partitioned by `prompt_cache_key`).

The workload (the same requests in every run, each run in a fresh workspace so no cache carries over):
  - agent: 6 agent loops x 8 turns on /v1/messages as Claude Sonnet 4.5, a ~5k-token system prompt
    and 4 tools, tool results fed back each turn (the official anthropic SDK)
  - chat: 6 multi-turn chats x 6 turns on /v1/chat/completions as GPT-5, a ~1.5k-token system prompt
    (the official openai SDK)
  - batch: 120 classification requests with repeats (60 distinct), half Sonnet, half GPT-5,
    sent with Meterline-Feature: batch
Runs: none, exact cache alone, prompt caching alone, both. A second workload measures prompt caching
for OpenAI-format requests bound for Claude (the chat translators carry the breakpoints): 6 agent
loops x 8 turns through the openai SDK on /v1/chat/completions to `anthropic/claude-sonnet-4-5` (an
Anthropic provider over HTTP answered by the simulator's Messages dialect and prompt cache) and 6 to
Claude Sonnet 4.5 on Bedrock (tests/fakes/bedrock_server.py: Converse with cachePoint validation and
billing), none vs prompt caching. Spend and savings are the ledger's exact
integers. "Eligible input" for prompt caching is, per conversation turn after the first, the
previous turn's whole prompt (a prefix of this one, which a perfect prefix cache would serve);
the hit rate is the cache reads of those turns over it.

    python bench/levers.py
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers"), str(ROOT)]

import anthropic  # noqa: E402
import openai  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from meterline.admin.ops import Ops  # noqa: E402
from meterline.devenv import provision, start_moto  # noqa: E402
from meterline.gateway.app import create_app  # noqa: E402
from meterline.gateway.services import Services  # noqa: E402
from meterline.money import micros_to_usd  # noqa: E402
from meterline.providers.sim import anthropic as sim_anthropic  # noqa: E402
from meterline.providers.sim.cache import PromptCache  # noqa: E402
from meterline.store.ledger import LedgerStore  # noqa: E402
from meterline.store.workspaces import ProviderEntry, WorkspaceStore  # noqa: E402
from meterline.vault import Vault  # noqa: E402
from tests.conftest import make_tenant  # noqa: E402
from tests.fakes import bedrock_server  # noqa: E402
from tests.servers import ServerThread  # noqa: E402

SONNET, GPT5 = "sim/claude-sonnet-4-5", "sim/gpt-5"
RUNS = {
    "none": {},
    "exact cache": {"workspace": {"exact": True, "any_temperature": True, "prompt_cache": False}},
    "prompt caching": {"workspace": {"exact": False, "prompt_cache": True}},
    "both": {"workspace": {"exact": True, "any_temperature": True, "prompt_cache": True}},
}
POLICY = " ".join(f"Rule {i}: when a customer asks about topic {i}, answer with the documented procedure "
                  f"number {i}, cite the policy page, and never promise refunds beyond {i % 30} days."
                  for i in range(190))
AGENT_SYSTEM = "You are the operations agent of an online shop. Follow every rule exactly.\n" + POLICY
CHAT_SYSTEM = "You are a patient tutor. " + " ".join(f"Guideline {i}: explain step {i} plainly with an example."
                                                     for i in range(110))
TOOLS = [{"name": name, "description": f"{name.replace('_', ' ')} in the shop's back office",
          "input_schema": {"type": "object", "properties": {"id": {"type": "string", "description": "the id"}},
                           "required": ["id"]}}
         for name in ("lookup_order", "refund_order", "find_customer", "ship_replacement")]


def agent_loop(client: anthropic.Anthropic, session: int, turns: int) -> list[str]:
    ids = []
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"Customer {session} says order {session}00 "
                                                                   "never arrived. Investigate and fix it."}]
    for turn in range(turns):
        raw = client.messages.with_raw_response.create(model=SONNET, max_tokens=300, system=AGENT_SYSTEM, tools=TOOLS,
                                                       messages=messages)
        ids.append(raw.headers["meterline-request-id"])
        reply = raw.parse()
        content = [b.model_dump(exclude_none=True) for b in reply.content]
        messages.append({"role": "assistant", "content": content})
        calls = [b for b in content if b.get("type") == "tool_use"]
        if calls:
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": c["id"], "content": f"result of step {turn}: order "
                                                                            f"{session}00 is in state {turn}"}
                for c in calls]})
        else:
            messages.append({"role": "user", "content": f"Now check step {turn + 1} for order {session}00."})
    return ids


def chat(client: openai.OpenAI, session: int, turns: int) -> list[str]:
    ids = []
    messages: list[dict[str, Any]] = [{"role": "system", "content": CHAT_SYSTEM}]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Student {session}, question {turn}: why does step {turn} "
                                                    "follow from the previous one?"})
        raw = client.chat.completions.with_raw_response.create(model=GPT5, messages=messages)
        ids.append(raw.headers["meterline-request-id"])
        messages.append({"role": "assistant", "content": raw.parse().choices[0].message.content or ""})
    return ids


def batch(oa: openai.OpenAI, an: anthropic.Anthropic) -> None:
    headers = {"meterline-feature": "batch"}
    for i in range(120):
        item = i % 60  # every item twice
        text = f"Ticket {item}: my parcel {item} arrived damaged, what now? Classify as refund, replace or info."
        if i % 2 == 0:
            an.messages.create(model=SONNET, max_tokens=400, messages=[{"role": "user", "content": text}],
                               extra_headers=headers)
        else:
            oa.chat.completions.create(model=GPT5, messages=[{"role": "user", "content": text}],
                                       extra_headers=headers)


CLAUDE_CHAT = {"anthropic": "anthropic/claude-sonnet-4-5",
               "bedrock": "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"}
OPENAI_TOOLS = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                  "parameters": t["input_schema"]}} for t in TOOLS]


def sim_anthropic_app() -> Starlette:
    """The simulator's Messages dialect behind HTTP, so an `anthropic`-kind provider (and its
    chat translator) can reach it; the provider key partitions the simulated cache."""
    cache = PromptCache()

    async def messages(request: Request) -> Response:
        reply = sim_anthropic.build(await request.json(), cache, request.headers.get("x-api-key", ""), 0.0)
        return Response(await reply.aread(), reply.status_code, media_type="application/json")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def chat_agent_loop(client: openai.OpenAI, model: str, session: int, turns: int) -> list[str]:
    """An agent loop in the OpenAI format: tool calls answered by tool messages."""
    ids = []
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": AGENT_SYSTEM},
        {"role": "user", "content": f"Customer {session} says order {session}00 never arrived. "
                                    "Investigate and fix it."}]
    for turn in range(turns):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=OPENAI_TOOLS,
                                                               max_tokens=300)
        ids.append(raw.headers["meterline-request-id"])
        message = raw.parse().choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls or []:
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": f"result of step {turn}: order {session}00 is in state {turn}"})
        if not message.tool_calls:
            messages.append({"role": "user", "content": f"Now check step {turn + 1} for order {session}00."})
    return ids


def eligible_read(records: list[dict[str, Any]], conversations: list[list[str]]) -> tuple[int, int]:
    """(previous turns' whole prompts, cache reads of the turns after them) over the conversations."""
    by_id = {r["request_id"]: r for r in records}
    eligible = read = 0
    for ids in conversations:
        turns = [by_id[i] for i in ids]
        for previous, current in itertools.pairwise(turns):
            eligible += (previous["input_uncached"] + previous["cache_read"] + previous["cache_write_5m"]
                         + previous["cache_write_1h"])
            read += current["cache_read"]
    return eligible, read


def run_claude_chat(settings: Any, url: str, urls: dict[str, str], name: str, prompt_cache: bool) -> dict[str, Any]:
    tenant = make_tenant(settings, None, workspace="bench_" + uuid.uuid4().hex[:8])
    Ops(settings).set_policy(tenant.workspace, key_rpm_default=100_000)
    store = WorkspaceStore(settings)
    secret = "sk-ant-bench-" + uuid.uuid4().hex
    store.put_provider(tenant.workspace, ProviderEntry("anthropic", "anthropic", urls["anthropic"],
                                                       Vault(settings).encrypt(secret, tenant.workspace, "anthropic"),
                                                       "anthropic"))
    store.put_provider(tenant.workspace, ProviderEntry("bedrock", "bedrock", urls["bedrock"], None, "bedrock",
                                                       {"region": "us-east-1"}))
    if prompt_cache:
        store.put_cache_rule(tenant.workspace, "workspace", {"exact": False, "prompt_cache": True})
    started = time.time()
    oa = openai.OpenAI(base_url=url + "/v1", api_key=tenant.api_key, max_retries=0, timeout=60)
    conversations = {provider: [chat_agent_loop(oa, model, s, 8) for s in range(6)]
                     for provider, model in CLAUDE_CHAT.items()}
    days = sorted({time.strftime("%Y-%m-%d", time.gmtime(t)) for t in (started, time.time())})
    records = [r for day in days for r in LedgerStore(settings).query_day(tenant.workspace, day)]
    out: dict[str, Any] = {"name": name}
    for provider, loops in conversations.items():
        ids = {i for loop in loops for i in loop}
        mine = [r for r in records if r["request_id"] in ids]
        eligible, read = eligible_read(mine, loops)
        out[provider] = {"requests": len(mine), "spend": sum(r["cost_micros"] for r in mine),
                         "saved": sum((r.get("savings") or {}).get("prompt_cache", 0) for r in mine),
                         "eligible": eligible, "eligible_read": read}
    return out


def run(settings: Any, url: str, name: str, rules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tenant = make_tenant(settings, None, workspace="bench_" + uuid.uuid4().hex[:8])
    Ops(settings).set_policy(tenant.workspace, key_rpm_default=100_000)  # a bench, not a rate-limit test
    for scope, rule in rules.items():
        WorkspaceStore(settings).put_cache_rule(tenant.workspace, scope, rule)
    started = time.time()
    an = anthropic.Anthropic(base_url=url, api_key=tenant.api_key, max_retries=0, timeout=60)
    oa = openai.OpenAI(base_url=url + "/v1", api_key=tenant.api_key, max_retries=0, timeout=60)
    conversations = [agent_loop(an, s, 8) for s in range(6)] + [chat(oa, s, 6) for s in range(6)]
    batch(oa, an)
    # Every ledger record is durable before its response ends: read the run's days once.
    days = sorted({time.strftime("%Y-%m-%d", time.gmtime(t)) for t in (started, time.time())})
    records = [r for day in days for r in LedgerStore(settings).query_day(tenant.workspace, day)]
    eligible, read = eligible_read(records, conversations)
    saved: dict[str, int] = {}
    for r in records:
        for lever, micros in (r.get("savings") or {}).items():
            saved[lever] = saved.get(lever, 0) + micros
    batch_records = [r for r in records if r.get("feature") == "batch"]
    return {
        "name": name, "requests": len(records), "spend": sum(r["cost_micros"] for r in records), "saved": saved,
        "input": sum(r["input_uncached"] + r["cache_read"] + r["cache_write_5m"] + r["cache_write_1h"]
                     for r in records),
        "cache_read": sum(r["cache_read"] for r in records),
        "cache_write": sum(r["cache_write_5m"] + r["cache_write_1h"] for r in records),
        "eligible": eligible, "eligible_read": read,
        "exact_hits": sum(1 for r in batch_records if r["outcome"] == "cache_hit"), "batch": len(batch_records),
        "not_stored": sorted({f"{r['model']}:{r['cache_not_stored']}" for r in batch_records
                              if r.get("cache_not_stored")}),
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    embedded = start_moto()
    try:
        settings = provision(embedded.endpoint, prefix="bench" + uuid.uuid4().hex[:6])
        fake_bedrock = bedrock_server.FakeBedrock(cache_model=True, output_tokens=60, tool_use={
            "toolUseId": "tu_1", "name": "lookup_order", "input": {"id": "100"}})
        with ServerThread(create_app(settings, Services.build(settings))) as gateway, \
                ServerThread(sim_anthropic_app()) as sim_http, \
                ServerThread(bedrock_server.build_app(fake_bedrock)) as bedrock:
            results = [run(settings, gateway.url, name, rules) for name, rules in RUNS.items()]
            urls = {"anthropic": sim_http.url, "bedrock": bedrock.url}
            claude = [run_claude_chat(settings, gateway.url, urls, "none", False),
                      run_claude_chat(settings, gateway.url, urls, "prompt caching", True)]
    finally:
        embedded.stop()
    base = results[0]["spend"]
    print(f"{results[0]['requests']} requests per run: 48 agent turns (Claude Sonnet 4.5, ~5k-token system + tools),"
          " 36 chat turns (GPT-5), 120 batch requests (60 distinct)\n")
    header = (f"{'run':<16}{'spend $':>11}{'vs none':>9}{'exact_cache $':>15}{'prompt_cache $':>16}"
              f"{'cache read tok':>16}{'cache write tok':>17}{'eligible read':>15}{'exact hits':>12}")
    print(header)
    print("-" * len(header))
    for r in results:
        change = f"{(r['spend'] - base) * 100 / base:+.1f}%" if base else "-"
        eligible = f"{r['eligible_read'] * 100 / r['eligible']:.1f}%" if r["eligible"] else "-"
        print(f"{r['name']:<16}{micros_to_usd(r['spend']):>11}{change:>9}"
              f"{micros_to_usd(r['saved'].get('exact_cache', 0)):>15}"
              f"{micros_to_usd(r['saved'].get('prompt_cache', 0)):>16}{r['cache_read']:>16}{r['cache_write']:>17}"
              f"{eligible:>15}{r['exact_hits']:>7}/{r['batch']:<4}")
        if r["not_stored"]:
            print(f"{'':<16}not stored: {', '.join(r['not_stored'])}")
    print("\nspend: every ledger record's cost; exact_cache $: what the hits would have cost; prompt_cache $: "
          "read discount minus write premium where Meterline placed breakpoints or a cache key; eligible read: "
          "cache reads of conversation turns 2+ over the previous turn's whole prompt (OpenAI's automatic "
          "caching reads some even with no lever).")
    print("\nOpenAI-format agent loops to Claude (/v1/chat/completions, openai SDK): 6 loops x 8 turns per "
          "provider, ~5k-token system + 4 tools\n")
    header = f"{'provider':<11}{'run':<16}{'spend $':>11}{'vs none':>9}{'prompt_cache $':>16}{'eligible read':>15}"
    print(header)
    print("-" * len(header))
    for provider in CLAUDE_CHAT:
        base = claude[0][provider]["spend"]
        for r in claude:
            row = r[provider]
            change = f"{(row['spend'] - base) * 100 / base:+.1f}%" if base else "-"
            eligible = f"{row['eligible_read'] * 100 / row['eligible']:.1f}%" if row["eligible"] else "-"
            print(f"{provider:<11}{r['name']:<16}{micros_to_usd(row['spend']):>11}{change:>9}"
                  f"{micros_to_usd(row['saved']):>16}{eligible:>15}")
    print("\nanthropic: the simulator's Messages dialect over HTTP (its prompt cache with TTLs); bedrock: the test "
          "fake's Converse cache (reads the longest prefix ending at a cachePoint it has seen, writes to the last).")


if __name__ == "__main__":
    main()
