"""Prompt compression (lever 4) through the official openai SDK and the gateway on uvicorn.

GIVEN a workspace that turned compression on for a feature
WHEN an agent sends a pretty-printed JSON tool result and sloppy prose around a code block
THEN the provider receives compact JSON and tidy prose with the code byte-identical, and the
     ledger records tokens before/after (o200k) and a saving equal to an independent recomputation:
     removed tokens x the request's effective input price.
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal

import openai

from meterline.admin.ops import Ops
from meterline.levers import tokens
from tests.conftest import make_tenant, wait_for_ledger
from tests.oracle import price

CODE = "```python\nx  =  1   # keep   me\n\n\n\nprint( x )\n```"
ROWS = json.dumps([{"id": i, "name": f"row {i}", "ok": True} for i in range(30)], indent=4)
MESSAGES = [
    {"role": "system", "content": "You   are   an   agent."},
    {"role": "user", "content": f"Look   at   this:\n\n\n\n{CODE}\nand   query   the   table."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "sql", "arguments": "{\"q\": \"select\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": ROWS},
]
TOOLS = [{"type": "function", "function": {"name": "sql", "parameters": {"type": "object", "properties": {}}}}]


def client(gateway, tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)


def effective_saving(model: str, removed: int, prompt: int = 1200, cached: int = 1024) -> int:
    usd_per_m = (prompt - cached) * price(model, "input") + cached * price(model, "cache_read")
    micros = Decimal(removed) * usd_per_m / Decimal(prompt)
    return int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_compression_rewrites_the_suffix_keeps_code_and_records_the_saving(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    Ops(settings).set_lever(tenant.workspace, "compression", "feature:agent", {})
    client(gateway, tenant).chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS,
                                                    extra_headers={"Meterline-Feature": "agent"})
    sent = fake.requests[0]["messages"]
    assert sent[0] == MESSAGES[0]
    assert CODE in sent[1]["content"] and "Look at this:\n\n```python" in sent[1]["content"]
    assert sent[3]["content"] == json.dumps(json.loads(ROWS), separators=(",", ":"))
    assert sent[2] == MESSAGES[2]

    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    before = tokens.count(MESSAGES[1]["content"]) + tokens.count(ROWS)
    after = tokens.count(sent[1]["content"]) + tokens.count(sent[3]["content"])
    assert (record["compression_tokens_before"], record["compression_tokens_after"]) == (before, after)
    assert record["compression_saved_tokens"] == before - after > 100
    assert set(record["compression_by_transform"]) == {"json", "whitespace"}
    assert record["compression_tokenizer"] == "o200k_base"
    assert record["savings"] == {"compression": effective_saving("openai/gpt-4o", before - after)}


def test_compression_is_opt_in_per_scope_and_per_workspace_and_per_request(gateway, tenant, fake_openai, settings):
    fake, url = fake_openai
    other = make_tenant(settings, url)
    Ops(settings).set_lever(tenant.workspace, "compression", "feature:agent", {})
    c = client(gateway, tenant)
    c.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS)  # no feature: not covered
    c.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS,
                              extra_headers={"Meterline-Feature": "agent", "Meterline-Compression": "off"})
    client(gateway, other).chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS,
                                                   extra_headers={"Meterline-Feature": "agent"})
    assert [r["messages"][3]["content"] for r in fake.requests] == [ROWS] * 3
    for ws in (tenant.workspace, other.workspace):
        assert all("compression_tokens_before" not in r and "savings" not in r
                   for r in wait_for_ledger(settings, ws, 1))


def test_streamed_compressed_call_saves_the_same(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    Ops(settings).set_lever(tenant.workspace, "compression", "workspace:*", {})
    c = client(gateway, tenant)
    stream = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    c.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS)
    records = wait_for_ledger(settings, tenant.workspace, 2)
    assert records[0]["savings"] == records[1]["savings"] and records[0]["savings"]["compression"] > 0
    assert fake.requests[0]["messages"] == fake.requests[1]["messages"]
