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
Runs: none, exact cache alone, prompt caching alone, both. Spend and savings are the ledger's exact
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

from meterline.admin.ops import Ops  # noqa: E402
from meterline.devenv import provision, start_moto  # noqa: E402
from meterline.gateway.app import create_app  # noqa: E402
from meterline.gateway.services import Services  # noqa: E402
from meterline.money import micros_to_usd  # noqa: E402
from meterline.store.ledger import LedgerStore  # noqa: E402
from meterline.store.workspaces import WorkspaceStore  # noqa: E402
from tests.conftest import make_tenant  # noqa: E402
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
    by_id = {r["request_id"]: r for r in records}
    eligible = read = 0
    for ids in conversations:
        turns = [by_id[i] for i in ids]
        for previous, current in itertools.pairwise(turns):
            eligible += (previous["input_uncached"] + previous["cache_read"] + previous["cache_write_5m"]
                         + previous["cache_write_1h"])
            read += current["cache_read"]
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
        with ServerThread(create_app(settings, Services.build(settings))) as gateway:
            results = [run(settings, gateway.url, name, rules) for name, rules in RUNS.items()]
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


if __name__ == "__main__":
    main()
