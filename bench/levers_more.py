"""What routing, compression and semantic dedup save on a mixed workload (levers 3, 4, 6), alone and
with the caching levers (exact-match cache, prompt caching) that are on main too.

One process: embedded AWS (moto), the gateway on uvicorn, and the built-in simulator (`sim/<model>`,
the same as under `meterline dev`): usage from the simulator (its token counts, so a compressed
prompt is billed for fewer tokens; its automatic prompt cache for repeated 1,024+ token prefixes),
embeddings from `sim/text-embedding-3-small`, priced as the real models.

The workload (the same requests in every run, each run in a fresh workspace):
  - assist: the labelled requests of tests/data/routing_requests.json, asking for sim/gpt-4.1;
  - agent: 20 agent turns with pretty-printed JSON tool results and sloppy prose around code;
  - faq: the 25 stored/incoming pairs of tests/data/semantic_pairs.json (stored first), then 10 of
    the stored questions again, byte for byte (exact repeats happen in real traffic).
Runs: no levers, each of the three alone, the three together, and those plus the exact-match cache
and prompt caching. Spend = every ledger record's cost (the embedding calls' records included).

    python bench/levers_more.py [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers"), str(ROOT)]


from meterline.admin.ops import Ops  # noqa: E402
from meterline.devenv import provision, start_moto  # noqa: E402
from meterline.gateway.app import create_app  # noqa: E402
from meterline.gateway.services import Services  # noqa: E402
from meterline.levers import LEVERS  # noqa: E402
from meterline.levers.routing import RouteRule  # noqa: E402
from meterline.money import micros_to_usd  # noqa: E402
from meterline.store.ledger import LedgerStore  # noqa: E402
from tests.conftest import make_tenant  # noqa: E402
from tests.servers import ServerThread  # noqa: E402


def workload() -> list[list[dict[str, Any]]]:
    """Phases of requests (a phase completes before the next starts: stored answers before repeats)."""
    labelled = json.loads((ROOT / "tests/data/routing_requests.json").read_text())["requests"]
    pairs = json.loads((ROOT / "tests/data/semantic_pairs.json").read_text())["pairs"]
    assist = [{"feature": "assist", "label": item["label"], "body": {**item["body"], "model": "sim/gpt-4.1"}}
              for item in labelled]
    rows = json.dumps([{"id": i, "sku": f"SKU-{i:05d}", "name": f"Widget {i}", "price_cents": 1000 + i,
                        "tags": ["a", "b"], "in_stock": i % 3 != 0} for i in range(60)], indent=4)
    code = "```python\ndef total(rows):\n    return  sum(r['price_cents'] for r in rows)\n```"
    agent = []
    for i in range(20):
        agent.append({"feature": "agent", "body": {"model": "sim/gpt-4.1-mini", "messages": [
            {"role": "system", "content": "You are an inventory agent. Answer with facts from the tools."},
            {"role": "user", "content": f"Turn {i}:   please   check   stock   levels.\n\n\n\nUse this:\n{code}"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{i}", "type": "function", "function": {
                "name": "query_inventory", "arguments": "{\"limit\": 60}"}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": rows}],
            "tools": [{"type": "function", "function": {"name": "query_inventory", "parameters": {
                "type": "object", "properties": {"limit": {"type": "integer"}}}}}]}})
    stored = [{"feature": "faq", "pair": n, "role": "stored",
               "body": {"model": "sim/gpt-4o-mini", "messages": [{"role": "user", "content": p["stored"]}]}}
              for n, p in enumerate(pairs)]
    incoming = [{"feature": "faq", "pair": n, "role": "incoming", "same": p["same"],
                 "body": {"model": "sim/gpt-4o-mini", "messages": [{"role": "user", "content": p["incoming"]}]}}
                for n, p in enumerate(pairs)]
    repeats = [{**item, "role": "repeat", "same": True} for item in stored[15:25]]
    return [assist + agent + stored, incoming, repeats]


def configure(ops: Ops, ws: str, levers: set[str]) -> None:
    ops.set_policy(ws, key_rpm_default=100_000)  # the bench is not about rate limits
    if "routing" in levers:
        ops.set_route(ws, RouteRule("feature", "assist", cheap="sim/gpt-4.1-mini", strong="sim/gpt-4.1", mode="on"))
    if "compression" in levers:
        ops.set_lever(ws, "compression", "feature:agent", {})
    if "semantic" in levers:
        ops.set_lever(ws, "semantic", "feature:faq", {"mode": "serve", "embedding_model": "sim/text-embedding-3-small"})
    if "caching" in levers:
        # The exact cache skips temperature > 0 by default; these requests leave the default (1).
        ops.set_cache_rule(ws, "workspace", exact=True, any_temperature=True, prompt_cache=True)


async def drive(url: str, key: str, phases: list[list[dict[str, Any]]], concurrency: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(item: dict[str, Any]) -> None:
            async with gate:
                response = await client.post("/v1/chat/completions", json=item["body"], headers={
                    "authorization": f"Bearer {key}", "meterline-feature": item["feature"]})
                response.raise_for_status()
                results[response.headers["meterline-request-id"]] = {**item, "headers": dict(response.headers)}

        for phase in phases:
            await asyncio.gather(*(one(item) for item in phase))
    return results


def ledger_of(settings: Any, workspace: str) -> list[dict[str, Any]]:
    """The workspace's records of today (UTC), by partition: no table scan."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    return list(LedgerStore(settings).query_day(workspace, day))


def summarize(records: list[dict[str, Any]], sent: dict[str, dict]) -> dict[str, Any]:
    spend = sum(int(r.get("cost_micros", 0)) for r in records)
    saved = {lever: sum(int((r.get("savings") or {}).get(lever, 0)) for r in records) for lever in LEVERS}
    embedding = sum(int(r.get("cost_micros", 0)) for r in records if r.get("purpose") == "semantic_embedding")
    hits = [sent[r["request_id"]] for r in records if r.get("outcome") == "cache_hit"
            and r.get("semantic_served_from") and sent[r["request_id"]]["role"] == "incoming"]
    exact_hits = sum(1 for r in records if r.get("outcome") == "cache_hit" and not r.get("semantic_served_from"))
    routed = [(sent[r["request_id"]]["label"], r["model"]) for r in records
              if r["request_id"] in sent and sent[r["request_id"]]["feature"] == "assist"]
    return {"spend": spend, "saved": saved, "embedding": embedding, "exact_hits": exact_hits,
            "hits": sum(1 for h in hits if h.get("same")), "false_hits": sum(1 for h in hits if not h.get("same")),
            "routed": routed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    embedded = start_moto()
    settings = provision(embedded.endpoint, prefix="bench" + uuid.uuid4().hex[:6])
    runs = [("no levers", set()), ("routing", {"routing"}), ("compression", {"compression"}),
            ("semantic", {"semantic"}), ("all three", {"routing", "compression", "semantic"}),
            ("three+cache", {"routing", "compression", "semantic", "caching"})]
    phases = workload()
    rows = []
    try:
        with ServerThread(create_app(settings, Services.build(settings))) as gateway:
            ops = Ops(settings)
            for name, levers in runs:
                tenant = make_tenant(settings, None)
                configure(ops, tenant.workspace, levers)
                started = time.monotonic()
                sent = asyncio.run(drive(gateway.url, tenant.api_key, phases, args.concurrency))
                elapsed = time.monotonic() - started
                expected = len(sent) + (sum(1 for v in sent.values() if v["feature"] == "faq")
                                        if "semantic" in levers else 0)
                deadline = time.monotonic() + 60
                while True:
                    records = ledger_of(settings, tenant.workspace)
                    if len(records) >= expected or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                rows.append((name, len(sent), elapsed, summarize(records, sent)))
    finally:
        embedded.stop()

    base = rows[0][3]["spend"]
    print(f"\nMixed workload on the simulator: {rows[0][1]} requests per run "
          f"({sum(1 for p in phases for i in p if i['feature'] == 'assist')} assist, 20 agent, 60 faq), "
          f"concurrency {args.concurrency}; spend from the ledger (embedding calls included), USD\n")
    print(f"{'run':12} {'spend':>9} {'vs none':>8} {'routing':>9} {'compress':>9} {'semantic':>9} {'exact':>9} "
          f"{'prompt$':>9} {'embed':>9} {'sem ok':>6} {'false':>5} {'exact':>5} {'time s':>6}")
    for name, _, elapsed, s in rows:
        saved = s["saved"]
        print(f"{name:12} {micros_to_usd(s['spend']):>9} {100 * (s['spend'] - base) / base:>+7.1f}% "
              f"{micros_to_usd(saved['routing']):>9} {micros_to_usd(saved['compression']):>9} "
              f"{micros_to_usd(saved['semantic_cache']):>9} {micros_to_usd(saved['exact_cache']):>9} "
              f"{micros_to_usd(saved['prompt_cache']):>9} {micros_to_usd(s['embedding']):>9} "
              f"{s['hits']:>6} {s['false_hits']:>5} {s['exact_hits']:>5} {elapsed:>6.1f}")
    routed = rows[1][3]["routed"]
    print("\nRouting (auto tiers, threshold 25) on the labelled assist requests:")
    for label in ("easy", "hard"):
        models = [m for lab, m in routed if lab == label]
        print(f"  {label:4}: {sum(m.endswith('gpt-4.1-mini') for m in models):2} -> sim/gpt-4.1-mini, "
              f"{sum(m.endswith('/gpt-4.1') for m in models):2} -> sim/gpt-4.1")
    print("  Quality was not measured: the labels are the author's (held-out classifier numbers:"
          " bench/routing_classifier.py).")
    comp = rows[2][3]
    print(f"\nCompression: recorded saving ${micros_to_usd(comp['saved']['compression'])} (tokens removed, counted "
          f"with o200k, x the effective input price); billed difference on the simulator "
          f"${micros_to_usd(base - comp['spend'])}. The simulator's tokenizer ignores most whitespace, o200k does "
          f"not: on OpenAI models o200k is the provider's own tokenizer, elsewhere the saving is an estimate.")
    sem = rows[3][3]
    print(f"\nSemantic serve on the 25 pairs: {sem['hits']} right hits, {sem['false_hits']} false hits "
          f"(10 pairs are paraphrases, 15 contrasts); the 10 exact repeats are served too (semantic run) or by "
          f"the exact cache first (three+cache run).")


if __name__ == "__main__":
    main()
