"""Cost levers on the Anthropic-native API through the official anthropic SDK: compression leaves
everything up to the client's cache breakpoint byte-identical, and rewrites only what follows."""

from __future__ import annotations

import json

import anthropic

from meterline.admin.ops import Ops
from tests.conftest import wait_for_ledger

ROWS = json.dumps([{"id": i, "name": f"row {i}"} for i in range(40)], indent=2)
DOC = "Policy   document:\n\n\n\n" + "Refunds   are   issued   within   30   days.   " * 30


def test_compression_keeps_the_cached_prefix_and_compresses_the_rest(gateway, world, fakes, settings):
    Ops(settings).set_lever(world.workspace, "compression", "workspace:*", {})
    client = anthropic.Anthropic(base_url=gateway.url, api_key=world.api_key, max_retries=0)
    messages = [
        {"role": "user", "content": [{"type": "text", "text": DOC, "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "rows", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": ROWS},
                                     {"type": "text", "text": "Summarize   the   rows.\n\n\n\nThanks."}]},
    ]
    tools = [{"name": "rows", "description": "rows", "input_schema": {"type": "object", "properties": {}}}]
    client.messages.create(model="claude-sonnet-4-6", max_tokens=100, system="You   are   terse.",
                           messages=messages, tools=tools)
    sent = fakes.anthropic.requests[0]
    assert sent["system"] == "You   are   terse." and sent["tools"] == tools
    assert sent["messages"][0] == messages[0]  # the cached prefix, byte for byte
    assert sent["messages"][2]["content"][0]["content"] == json.dumps(json.loads(ROWS), separators=(",", ":"))
    assert sent["messages"][2]["content"][1]["text"] == "Summarize the rows.\n\nThanks."
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["compression_saved_tokens"] > 0 and record["savings"]["compression"] > 0
