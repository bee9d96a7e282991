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
