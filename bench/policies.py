"""CPU the policies stage adds to a warm request (budget: ≤ 50 µs with all of a workspace's policies).

Builds a workspace with a realistic policy set (model allow and deny lists, an IP allowlist, a
usage schedule, max_tokens caps, a size limit; attached to the workspace, a department, a member,
a key and a feature), then runs the gateway's PolicyStage.before on a warm request context many
times and prints CPU µs per request (process time, so a loaded machine does not inflate it). No
I/O happens in the stage: the policies come compiled with the cached workspace config.

    python bench/policies.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

from meterline.config import Settings
from meterline.gateway.context import RequestContext
from meterline.gateway.policy_stage import PolicyStage
from meterline.policies.engine import PolicySet
from meterline.store.keys import KeyRecord
from meterline.store.workspaces import Alias, WorkspaceConfig

POLICIES = [
    {"id": "allowed-models", "kind": "models", "allow": ["openai/gpt-4o*", "openai/gpt-5*", "anthropic/claude-*"]},
    {"id": "no-expensive", "kind": "models", "deny": ["openai/gpt-5-pro*", "anthropic/claude-opus-*", "openai/o1*"]},
    {"id": "office", "kind": "ip", "cidrs": ["10.0.0.0/8", "172.16.0.0/12", "203.0.113.0/24", "2001:db8::/32"]},
    {"id": "dev-hours", "kind": "schedule", "attach": "department:research",
     "windows": ["mon-sun 00:00-24:00"], "timezone": "Europe/Berlin"},
    {"id": "cap", "kind": "max_tokens", "max_tokens": 4096},
    {"id": "alice-cap", "kind": "max_tokens", "attach": "member:alice", "max_tokens": 2048},
    {"id": "size", "kind": "size", "max_bytes": 1_000_000, "max_messages": 200},
    {"id": "key-models", "kind": "models", "attach": "key:key_bench", "deny": ["gemini/*"]},
    {"id": "search-cap", "kind": "max_tokens", "attach": "feature:search", "max_tokens": 1024, "mode": "monitor"},
]
BODY = {"model": "fast", "messages": [{"role": "system", "content": "You are terse."},
                                      {"role": "user", "content": "Say hello " * 20}], "max_tokens": 8000}


def context(config: WorkspaceConfig, key: KeyRecord) -> RequestContext:
    ctx = RequestContext(endpoint="chat.completions", headers={"x-amzn-request-context": json.dumps(
        {"http": {"sourceIp": "203.0.113.7", "method": "POST"}})}, client_ip="127.0.0.1")
    ctx.workspace, ctx.key = config, key
    ctx.tags = {"feature": "search", "agent": None, "session": None, "customer": None}
    ctx.body = copy.copy(BODY)
    ctx.requested_model = "fast"
    ctx.extra["body_bytes"] = 420
    return ctx


def run_stage(stage: PolicyStage, ctx: RequestContext) -> None:
    # The stage never awaits (no I/O): drive the coroutine directly, without an event loop's overhead.
    coro = stage.before(ctx)
    try:
        coro.send(None)
    except StopIteration as done:
        assert done.value is None, done.value.error.message
    else:  # pragma: no cover
        raise AssertionError("the policies stage awaited something")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    policies = PolicySet.build(POLICIES, "UTC", ("127.0.0.1/32",))
    config = WorkspaceConfig(workspace="ws", name="bench", default_provider="openai",
                             aliases={"fast": Alias("fast", "openai/gpt-4o-mini")}, policies=policies)
    key = KeyRecord(key_hash="h", key_id="key_bench", workspace="ws", member="alice", department="research")
    stage = PolicyStage.__new__(PolicyStage)
    stage.behind_lambda_adapter = True
    contexts = [context(config, key) for _ in range(args.requests)]
    empty = WorkspaceConfig(workspace="ws", name="bench")
    baseline = [context(empty, key) for _ in range(args.requests)]
    for _ in range(200):
        run_stage(stage, context(config, key))  # warm: regex, zoneinfo and attribute caches
    results = {}
    for label, batch in (("no policies", baseline), (f"{policies.count} policies", contexts)):
        start = time.process_time()
        for ctx in batch:
            run_stage(stage, ctx)
        results[label] = (time.process_time() - start) / len(batch) * 1e6
    probe = contexts[-1]
    print(f"policies stage, {args.requests} warm requests (CPU µs per request, process time):")
    for label, micros in results.items():
        print(f"  {label:<14} {micros:6.1f} µs")
    print(f"  decisions per request: {len(probe.extra['ledger_extra']['policies'])} "
          f"({', '.join(f'{k}={v}' for k, v in probe.extra['ledger_extra']['policies'].items())})")
    print(f"  max_tokens sent upstream: {probe.body['max_tokens']} (asked 8000)")
    # PII redaction (opt-in) scans the text: its cost grows with the prompt, so it is reported apart.
    from meterline.policies.model import PII_ENTITIES
    from meterline.policies.pii import Redactor

    text = ("Customer jane.doe@example.com (+1 415-555-0132) asked about invoice 2026-0042 and card "
            "4111 1111 1111 1111. ") + "The quick brown fox jumps over the lazy dog. " * 40
    messages = [{"role": "system", "content": "You are a support agent."}, {"role": "user", "content": text}]
    n = max(200, args.requests // 20)
    start = time.process_time()
    for _ in range(n):
        Redactor(PII_ENTITIES).body({"messages": [dict(m) for m in messages]})
    pii = (time.process_time() - start) / n * 1e6
    print(f"  PII redaction of a {len(text)}-character prompt (all entity kinds): {pii:6.1f} µs")
    budget = 50.0
    verdict = "within" if results[f"{policies.count} policies"] <= budget else "OVER"
    print(f"  budget ≤ {budget:.0f} µs: {verdict}")


if __name__ == "__main__":
    Settings()  # importable without AWS
    main()
