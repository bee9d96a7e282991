"""What the six cost levers save on one mixed workload, each alone and all six together: routing,
compression and semantic dedup (levers 3, 4, 6), the exact-match cache and prompt caching (levers 1,
2) and prompt templates (lever 5).

One process: embedded AWS (moto), the gateway on uvicorn, and the built-in simulator (`sim/<model>`,
the same as under `meterline dev`): usage from the simulator (its token counts, so a compressed
prompt is billed for fewer tokens; its prompt caches: OpenAI's automatic one for repeated 1,024+
token prefixes, Anthropic's only at `cache_control` breakpoints, with write premiums and read
discounts), embeddings from `sim/text-embedding-3-small`, priced as the real models.

The workload (the same requests in every run, each run in a fresh workspace):
  - assist: the labelled requests of tests/data/routing_requests.json, asking for sim/gpt-4.1;
  - agent: 20 agent turns with pretty-printed JSON tool results and sloppy prose around code;
  - faq: the 25 stored/incoming pairs of tests/data/semantic_pairs.json (stored first), then 10 of
    the stored questions again, byte for byte (exact repeats happen in real traffic);
  - support: 30 questions on /v1/messages to sim/claude-sonnet-4-5 under one ~2.5k-token support
    prompt (system, 2 tools, 2 examples, a per-customer line). With the templates lever the client
    sends `Meterline-Template: support@1` and its variables, and the gateway assembles the prompt
    (placing a breakpoint at the template boundary); without it the client sends the same assembled
    prompt itself, byte for byte except that breakpoint.
Runs: no levers, each lever alone, all six together. Spend = every ledger record's cost (the
embedding calls' records included).

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
from meterline.levers.templates import assemble, parse  # noqa: E402
from meterline.money import micros_to_usd  # noqa: E402
from meterline.store.codec import paginate  # noqa: E402
from meterline.store.schema import LEDGER  # noqa: E402
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
    support = support_requests()
    return [assist + agent + stored + support[:1], incoming + support[1:15], repeats + support[15:]]


SUPPORT_TEMPLATE = {
    "system": "You are the support agent of Acme Cloud. Follow every rule exactly.\n" + " ".join(
        f"Rule {i}: when a customer asks about topic {i}, answer with documented procedure {i}, cite policy "
        f"page {i}, and never promise credits beyond {i % 30} days." for i in range(110)),
    "tools": [{"name": "lookup_account", "description": "Find a customer account by id.",
               "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}},
              {"name": "open_ticket", "description": "Open a support ticket.",
               "parameters": {"type": "object", "properties": {"summary": {"type": "string"}}}}],
    "examples": [{"role": "user", "content": "How do I rotate my API key?"},
                 {"role": "assistant",
                  "content": "Go to Settings > API keys, create a new key, then revoke the old one."}],
    "prompt": "Customer plan: ${plan}. Region: ${region}.",
    "variables": {"plan": None, "region": "eu-west-1"},
}
QUESTIONS = ("Why was I charged twice this month?", "How do I add a teammate?",
             "Can I move my bucket to another region?",
             "My deploy is stuck in pending, what should I check?", "How do I download my invoices?",
             "What is the rate limit on the free plan?", "Can I get a refund for unused credits?",
             "How do I enable two-factor authentication?", "Why is my dashboard empty?",
             "How do I export my data before closing the account?")


def _strip_breakpoints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_breakpoints(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_breakpoints(v) for v in value]
    return value


def support_requests() -> list[dict[str, Any]]:
    """Each request in its two forms: templated (header + variables) and plain (the same prompt,
    assembled by the client, without the template's breakpoint)."""
    template = parse("support", SUPPORT_TEMPLATE, 1)
    items = []
    for i in range(30):
        plan = ("free", "pro", "team")[i % 3]
        body = {"model": "sim/claude-sonnet-4-5", "max_tokens": 200,
                "messages": [{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (account {1000 + i})"}]}
        assembled, _ = assemble(template, "messages", body, {"plan": plan})
        items.append({"feature": "support", "path": "/v1/messages", "body": _strip_breakpoints(assembled),
                      "templated": {"body": body, "headers": {
                          "meterline-template": "support@1",
                          "meterline-template-variables": json.dumps({"plan": plan})}}})
    return items


def configure(ops: Ops, ws: str, levers: set[str]) -> None:
    ops.set_policy(ws, key_rpm_default=100_000)  # the bench is not about rate limits
    if "routing" in levers:
        ops.set_route(ws, RouteRule("feature", "assist", cheap="sim/gpt-4.1-mini", strong="sim/gpt-4.1", mode="on"))
    if "compression" in levers:
        ops.set_lever(ws, "compression", "feature:agent", {})
    if "semantic" in levers:
        ops.set_lever(ws, "semantic", "feature:faq", {"mode": "serve", "embedding_model": "sim/text-embedding-3-small"})
    if "exact" in levers or "prompt" in levers:
        # The exact cache skips temperature > 0 by default; these requests leave the default (1).
        ops.set_cache_rule(ws, "workspace", exact="exact" in levers, any_temperature=True,
                           prompt_cache="prompt" in levers)
    if "templates" in levers:
        ops.put_template(ws, "support", SUPPORT_TEMPLATE)


async def drive(url: str, key: str, phases: list[list[dict[str, Any]]], concurrency: int,
                templates: bool) -> dict[str, dict]:
    results: dict[str, dict] = {}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(item: dict[str, Any]) -> None:
            async with gate:
                body, extra = item["body"], {}
                if templates and "templated" in item:
                    body, extra = item["templated"]["body"], item["templated"]["headers"]
                response = await client.post(item.get("path", "/v1/chat/completions"), json=body, headers={
                    "authorization": f"Bearer {key}", "meterline-feature": item["feature"], **extra})
                response.raise_for_status()
                results[response.headers["meterline-request-id"]] = {**item, "headers": dict(response.headers)}

        for phase in phases:
            await asyncio.gather(*(one(item) for item in phase))
    return results


_FIELDS = ("request_id", "cost_micros", "savings", "purpose", "outcome", "semantic_served_from", "model")


def _ledger_client(settings: Any) -> Any:
    """The embedded store answers big queries slowly on a loaded machine: a client that waits for
    the answer (the data plane's client gives up after 5 s and retries, which queues more work)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("dynamodb", region_name=settings.region, endpoint_url=settings.aws_endpoint,
                                          config=Config(read_timeout=900, retries={"max_attempts": 1}))


def ledger_count(client: Any, settings: Any, workspace: str) -> int:
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    kwargs: dict[str, Any] = {"TableName": settings.table(LEDGER), "KeyConditionExpression": "pk = :pk",
                              "ExpressionAttributeValues": {":pk": {"S": f"{workspace}#{day}"}}, "Select": "COUNT"}
    total = 0
    while True:
        page = client.query(**kwargs)
        total += page["Count"]
        if "LastEvaluatedKey" not in page:
            return total
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def ledger_of(client: Any, settings: Any, workspace: str) -> list[dict[str, Any]]:
    """The fields the report needs of the workspace's records of today (UTC), by partition: no scan."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    return list(paginate(client.query, TableName=settings.table(LEDGER), KeyConditionExpression="pk = :pk",
                         ExpressionAttributeValues={":pk": {"S": f"{workspace}#{day}"}},
                         ProjectionExpression=", ".join(f"#f{i}" for i in range(len(_FIELDS))),
                         ExpressionAttributeNames={f"#f{i}": name for i, name in enumerate(_FIELDS)}))


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
    six = {"exact", "prompt", "templates", "routing", "compression", "semantic"}
    runs = [("no levers", set()), ("exact cache", {"exact"}), ("prompt cache", {"prompt"}),
            ("templates", {"templates"}), ("routing", {"routing"}), ("compression", {"compression"}),
            ("semantic", {"semantic"}), ("all six", six)]
    phases = workload()
    rows = []
    try:
        with ServerThread(create_app(settings, Services.build(settings))) as gateway:
            ops, reader = Ops(settings), _ledger_client(settings)
            for name, levers in runs:
                tenant = make_tenant(settings, None)
                configure(ops, tenant.workspace, levers)
                started = time.monotonic()
                sent = asyncio.run(drive(gateway.url, tenant.api_key, phases, args.concurrency, "templates" in levers))
                elapsed = time.monotonic() - started
                expected = len(sent) + (sum(1 for v in sent.values() if v["feature"] == "faq")
                                        if "semantic" in levers else 0)
                deadline = time.monotonic() + 180
                while ledger_count(reader, settings, tenant.workspace) < expected and time.monotonic() < deadline:
                    time.sleep(0.5)
                records = ledger_of(reader, settings, tenant.workspace)
                rows.append((name, len(sent), elapsed, summarize(records, sent)))
                print(f"  {name}: {len(sent)} requests in {elapsed:.0f} s, {len(records)} ledger records",
                      file=sys.stderr)
    finally:
        embedded.stop()

    by_name = {name: (n, elapsed, summary) for name, n, elapsed, summary in rows}
    base = rows[0][3]["spend"]
    count = {f: sum(1 for p in phases for i in p if i["feature"] == f) for f in ("assist", "agent", "faq", "support")}
    print(f"\nMixed workload on the simulator: {rows[0][1]} requests per run ({count['assist']} assist, "
          f"{count['agent']} agent, {count['faq']} faq, {count['support']} support), concurrency {args.concurrency}; "
          f"spend and savings from the ledger (embedding calls included), USD\n")
    columns = ("exact_cache", "prompt_cache", "template", "routing", "compression", "semantic_cache")
    print(f"{'run':13} {'spend':>9} {'vs none':>8} " + " ".join(f"{c[:10]:>10}" for c in columns)
          + f" {'embed':>9} {'sem ok':>6} {'false':>5} {'exact':>5} {'time s':>6}")
    for name, _, elapsed, s in rows:
        saved = s["saved"]
        print(f"{name:13} {micros_to_usd(s['spend']):>9} {100 * (s['spend'] - base) / base:>+7.1f}% "
              + " ".join(f"{micros_to_usd(saved[c]):>10}" for c in columns)
              + f" {micros_to_usd(s['embedding']):>9} {s['hits']:>6} {s['false_hits']:>5} {s['exact_hits']:>5} "
                f"{elapsed:>6.1f}")
    alone = sum(base - by_name[name][2]["spend"] for name, _ in runs[1:-1])
    print(f"\nSum of the six levers' reductions alone: ${micros_to_usd(alone)}; all six together: "
          f"${micros_to_usd(base - rows[-1][3]['spend'])} (levers overlap: a request answered from a cache is "
          f"neither routed nor compressed, and templates and prompt caching mark the same prefix).")
    routed = by_name["routing"][2]["routed"]
    print("\nRouting (auto tiers, threshold 25) on the labelled assist requests:")
    for label in ("easy", "hard"):
        models = [m for lab, m in routed if lab == label]
        print(f"  {label:4}: {sum(m.endswith('gpt-4.1-mini') for m in models):2} -> sim/gpt-4.1-mini, "
              f"{sum(m.endswith('/gpt-4.1') for m in models):2} -> sim/gpt-4.1")
    print("  Quality was not measured: the labels are the author's (held-out classifier numbers:"
          " bench/routing_classifier.py).")
    comp = by_name["compression"][2]
    print(f"\nCompression: recorded saving ${micros_to_usd(comp['saved']['compression'])} (tokens removed, counted "
          f"with o200k, x the effective input price); billed difference on the simulator "
          f"${micros_to_usd(base - comp['spend'])}. The simulator's tokenizer ignores most whitespace, o200k does "
          f"not: on OpenAI models o200k is the provider's own tokenizer, elsewhere the saving is an estimate.")
    sem = by_name["semantic"][2]
    print(f"\nSemantic serve on the 25 pairs: {sem['hits']} right hits, {sem['false_hits']} false hits "
          f"(10 pairs are paraphrases, 15 contrasts); the 10 exact repeats are served too (semantic run) or by "
          f"the exact cache first (all six).")
    tpl, pc = by_name["templates"][2], by_name["prompt cache"][2]
    print(f"\nTemplates: the support prompt assembled by the gateway with a breakpoint at its boundary saved "
          f"${micros_to_usd(tpl['saved']['template'])} (cache reads minus write premiums; spend "
          f"${micros_to_usd(base - tpl['spend'])} lower than no levers). Prompt caching alone finds the same "
          f"prefix after seeing it reused: ${micros_to_usd(pc['saved']['prompt_cache'])}.")

if __name__ == "__main__":
    main()
