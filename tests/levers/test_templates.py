"""Prompt templates: published from YAML with the CLI, assembled by the gateway, attributed and cached."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from meterline.admin.ops import Ops
from meterline.cli.main import main
from meterline.levers.templates import TemplateError, assemble, parse
from meterline.rollup import apply_entries
from meterline.store.rollups import RollupStore, contribution_of
from tests.conftest import wait_for_ledger

X = [{"role": "user", "content": "x"}]
POLICY = " ".join(f"Rule {i}: answer questions about topic {i} with the documented procedure." for i in range(150))
YAML = f"""
system: |
  You are the support agent of Acme. {POLICY}
tools:
  - name: lookup_order
    description: Find an order by id.
    parameters: {{type: object, properties: {{id: {{type: string}}}}}}
examples:
  - role: user
    content: Where is order 1?
  - role: assistant
    content: Order 1 shipped yesterday.
prompt: "Customer tier: ${{tier}}. Language: ${{language}}."
variables:
  tier: null
  language: English
"""


def test_assembly_is_stable_parts_first_with_the_breakpoint_at_the_boundary():
    import yaml

    template = parse("support", yaml.safe_load(YAML), 1)
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Where is order 7?"}]}
    out, marked = assemble(template, "messages", body, {"tier": "gold"})
    assert marked and out["system"][0]["text"].startswith("You are the support agent")
    assert out["tools"][0]["input_schema"]["properties"]["id"] == {"type": "string"}
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["user", "assistant", "user", "user"]
    assert out["messages"][1]["content"][-1]["cache_control"] == {"type": "ephemeral"}  # the last example
    assert out["messages"][2]["content"] == "Customer tier: gold. Language: English."
    other, _ = assemble(template, "messages", {**body, "messages": [{"role": "user", "content": "Hi"}]},
                        {"tier": "silver"})
    assert other["system"] == out["system"] and other["messages"][:2] == out["messages"][:2]  # byte-stable prefix
    chat, _ = assemble(template, "chat.completions", {"model": "m", "messages": body["messages"]}, {"tier": "x"})
    assert chat["messages"][0]["role"] == "system" and chat["tools"][0]["type"] == "function"
    with pytest.raises(TemplateError, match="missing template variables: tier"):
        assemble(template, "messages", body, {})
    with pytest.raises(TemplateError, match="unknown template variables"):
        assemble(template, "messages", body, {"tier": "g", "colour": "red"})
    with pytest.raises(TemplateError, match="undeclared"):
        parse("bad", {"prompt": "${nope}"})


def test_templates_end_to_end(dev_state, start_gateway, tmp_path, capsys):
    path = tmp_path / "support.yaml"
    path.write_text(YAML)
    main(["templates", "put", "support", "--file", str(path)])
    assert "published support@1" in capsys.readouterr().out
    main(["templates", "put", "support", "--file", str(path)])
    assert "published support@2" in capsys.readouterr().out
    main(["templates", "list", "--json"])
    assert [(t["name"], t["version"]) for t in json.loads(capsys.readouterr().out)] == [("support", 1),
                                                                                         ("support", 2)]
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: ${nope}\n")
    with pytest.raises(SystemExit, match="undeclared"):
        main(["templates", "put", "bad", "--file", str(bad)])

    gateway = start_gateway()
    key = Ops(dev_state).create_key("demo", "alice")["api_key"]
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    headers = {"meterline-template": "support@2", "meterline-template-variables": json.dumps({"tier": "gold"})}
    for question in ("Where is order 7?", "Where is order 8?", "Where is order 9?"):
        client.messages.create(model="sim/claude-sonnet-4-5", max_tokens=100, extra_headers=headers,
                               messages=[{"role": "user", "content": question}])
    with pytest.raises(anthropic.NotFoundError, match="No template support@9"):
        client.messages.create(model="sim/claude-sonnet-4-5", max_tokens=100, messages=X,
                               extra_headers={"meterline-template": "support@9"})
    with pytest.raises(anthropic.BadRequestError, match="missing template variables"):
        client.messages.create(model="sim/claude-sonnet-4-5", max_tokens=100, messages=X,
                               extra_headers={"meterline-template": "support@2"})
    oa = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="NAME@VERSION"):
        oa.chat.completions.create(model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                   extra_headers={"meterline-template": "support"})
    records = wait_for_ledger(dev_state, "demo", 6)
    served = [r for r in records if r.get("template") == "support@2" and r["outcome"] == "ok"]
    assert len(served) == 3
    assert served[0]["cache_write_5m"] > 1000 and served[1]["cache_read"] > 1000  # the stable prefix is read
    assert served[1]["savings"]["template"] > 0
    apply_entries([contribution_of(r["request_id"], r) for r in records], RollupStore(dev_state))
    report = Ops(dev_state).savings("demo", "template", "today")
    row = next(r for r in report["rows"] if r["value"] == "support@2")
    assert row["saved_template"] == sum(r["savings"]["template"] for r in served)
    assert row["requests"] == 3


def test_responses_assembly_is_stable_first_and_keeps_stored_conversations_whole():
    import yaml

    template = parse("support", yaml.safe_load(YAML), 1)
    out, marked = assemble(template, "responses", {"model": "m", "input": "Where is order 7?",
                                                   "instructions": "Answer in French.",
                                                   "tools": [{"type": "web_search"}]}, {"tier": "gold"})
    assert not marked
    assert out["instructions"].startswith("You are the support agent") and out["instructions"].endswith(
        "\n\nAnswer in French.")
    assert out["tools"] == [{"type": "function", "name": "lookup_order", "description": "Find an order by id.",
                             "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
                             "strict": False}, {"type": "web_search"}]
    assert out["input"] == [{"role": "user", "content": "Where is order 1?"},
                            {"role": "assistant", "content": "Order 1 shipped yesterday."},
                            {"role": "user", "content": "Customer tier: gold. Language: English."},
                            {"role": "user", "content": "Where is order 7?"}]
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]
    other, _ = assemble(template, "responses", {"model": "m", "input": items}, {"tier": "silver"})
    assert other["instructions"] == template.system and other["input"][:2] == out["input"][:2]  # byte-stable
    assert other["input"][-1] == items[0]
    follow_up, _ = assemble(template, "responses", {"model": "m", "input": "And order 8?",
                                                    "previous_response_id": "resp_1"}, {"tier": "gold"})
    assert follow_up["input"] == "And order 8?" and follow_up["instructions"] == template.system
    assert follow_up["tools"][0]["name"] == "lookup_order"  # not carried over by OpenAI: sent again
    with pytest.raises(TemplateError, match="OpenAI `prompt`"):
        assemble(template, "responses", {"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}, {"tier": "g"})


def test_templates_on_the_responses_api_through_the_openai_sdk(dev_state, start_gateway, tmp_path):
    path = tmp_path / "support.yaml"
    path.write_text(YAML)
    main(["templates", "put", "support", "--file", str(path)])
    gateway = start_gateway()
    key = Ops(dev_state).create_key("demo", "alice")["api_key"]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    headers = {"meterline-template": "support@1", "meterline-template-variables": json.dumps({"tier": "gold"})}
    replies = [client.responses.create(model="sim/gpt-5-mini", input=question, extra_headers=headers)
               for question in ("Where is order 7?", "Where is order 8?")]
    calls = [item for r in replies for item in r.output if item.type == "function_call"]
    assert calls and {c.name for c in calls} == {"lookup_order"}  # the template's tool reached the model
    assert replies[0].usage.input_tokens > 1000  # the template's system prompt was sent as instructions
    assert replies[1].usage.input_tokens_details.cached_tokens > 1000  # the stable prefix is cached
    with client.responses.stream(model="sim/gpt-5-mini", input="Where is order 9?", extra_headers=headers) as stream:
        final = stream.get_final_response()
    assert final.usage.input_tokens_details.cached_tokens > 1000
    follow_up = client.responses.create(model="sim/gpt-5-mini", input="And order 10?", extra_headers=headers,
                                        previous_response_id=replies[1].id)
    assert follow_up.status == "completed"
    with pytest.raises(openai.BadRequestError, match="missing template variables"):
        client.responses.create(model="sim/gpt-5-mini", input="x", extra_headers={"meterline-template": "support@1"})
    with pytest.raises(openai.NotFoundError, match="No template support@4"):
        client.responses.create(model="sim/gpt-5-mini", input="x", extra_headers={"meterline-template": "support@4"})
    records = wait_for_ledger(dev_state, "demo", 6)
    served = [r for r in records if r.get("template") == "support@1" and r["outcome"] == "ok"]
    assert len(served) == 4 and sum(1 for r in served if r["cache_read"] > 1000) >= 2
    apply_entries([contribution_of(r["request_id"], r) for r in records], RollupStore(dev_state))
    row = next(r for r in Ops(dev_state).spend("demo", "template", "today")["rows"] if r["value"] == "support@1")
    assert row["requests"] == 4 and row["cost_micros"] == sum(r["cost_micros"] for r in served)
