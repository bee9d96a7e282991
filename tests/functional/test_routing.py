"""Model routing (lever 3) through the official openai SDK, the gateway on uvicorn and a fake OpenAI.

GIVEN a workspace with routing rules (stored through the control-plane operations)
WHEN the SDK calls chat completions with attribution headers
THEN the provider receives the routed model (mode on) or the requested one (shadow), the response
     says where it went and why, and the ledger keeps the requested and routed model and a saving
     equal to an independent recomputation (requested model's price minus routed model's price, on the
     actual usage).
"""

from __future__ import annotations

import openai
import pytest

from meterline.admin.ops import OpError, Ops
from meterline.levers.routing import RouteRule
from tests.conftest import make_tenant, wait_for_ledger
from tests.oracle import openai_cost_micros

EASY = [{"role": "user", "content": "Say hello"}]
HARD = [{"role": "system", "content": "You are a senior engineer."},
        {"role": "user", "content": "Debug this and explain why it deadlocks, step by step, with the edge cases:\n"
                                    "```python\nimport threading\nlock = threading.Lock()\ndef f():\n"
                                    "    with lock:\n        g()\ndef g():\n    with lock:\n        pass\n```"}]


def client(gateway, tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)


def cost(model: str) -> int:
    return openai_cost_micros(model, prompt=1200, cached=1024, completion=10)  # the fake's usage


def test_rule_on_routes_records_requested_and_routed_model_and_exact_saving(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    Ops(settings).set_route(tenant.workspace, RouteRule("feature", "summarize", ("openai/gpt-4.1-mini",), mode="on"))
    raw = client(gateway, tenant).chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=EASY, extra_headers={"Meterline-Feature": "summarize"})
    raw.parse()
    assert fake.requests[0]["model"] == "gpt-4.1-mini"
    assert raw.headers["meterline-routed-model"] == "openai/gpt-4.1-mini"
    assert raw.headers["meterline-routing-reason"].startswith("rule feature:summarize")
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["requested_model"] == "openai/gpt-4.1"
    assert record["model"] == record["routed_model"] == "openai/gpt-4.1-mini"
    assert record["cost_micros"] == cost("openai/gpt-4.1-mini")
    saving = cost("openai/gpt-4.1") - cost("openai/gpt-4.1-mini")
    assert saving > 0
    assert record["savings"] == {"routing": saving} and record["saved_micros"] == saving
    assert record["routing_counterfactual_micros"] == cost("openai/gpt-4.1")


def test_streamed_routed_call_saves_the_same_as_non_streamed(gateway, tenant, settings):
    Ops(settings).set_route(tenant.workspace, RouteRule("workspace", "*", ("openai/gpt-4o-mini",), mode="on"))
    stream = client(gateway, tenant).chat.completions.create(model="gpt-4o", messages=EASY, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    client(gateway, tenant).chat.completions.create(model="gpt-4o", messages=EASY)
    records = wait_for_ledger(settings, tenant.workspace, 2)
    assert [r["model"] for r in records] == ["openai/gpt-4o-mini"] * 2
    assert {r["stream"] for r in records} == {True, False}
    saving = cost("openai/gpt-4o") - cost("openai/gpt-4o-mini")
    assert [r["savings"]["routing"] for r in records] == [saving, saving]


def test_shadow_mode_records_the_would_be_model_and_projected_saving_without_switching(
        gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    Ops(settings).set_route(tenant.workspace, RouteRule("feature", "summarize", ("openai/gpt-4.1-mini",)))
    raw = client(gateway, tenant).chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=EASY, extra_headers={"Meterline-Feature": "summarize"})
    raw.parse()
    assert fake.requests[0]["model"] == "gpt-4.1"
    assert "meterline-routed-model" not in raw.headers
    assert raw.headers["meterline-routing-reason"].startswith("shadow: would route to openai/gpt-4.1-mini")
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["model"] == "openai/gpt-4.1" and record["routing_mode"] == "shadow"
    assert record["routing_shadow_model"] == "openai/gpt-4.1-mini"
    assert record["routing_projected_saving_micros"] == cost("openai/gpt-4.1") - cost("openai/gpt-4.1-mini")
    assert "savings" not in record  # projected, not saved


def test_auto_tiers_send_easy_to_cheap_and_hard_to_strong(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    Ops(settings).set_route(tenant.workspace, RouteRule("feature", "chat", cheap="openai/gpt-4.1-mini",
                                                        strong="openai/gpt-4.1", mode="on"))
    c = client(gateway, tenant)
    headers = {"Meterline-Feature": "chat"}
    easy = c.chat.completions.with_raw_response.create(model="gpt-4.1", messages=EASY, extra_headers=headers)
    hard = c.chat.completions.with_raw_response.create(model="gpt-4.1", messages=HARD, extra_headers=headers)
    assert [r["model"] for r in fake.requests] == ["gpt-4.1-mini", "gpt-4.1"]
    assert easy.headers["meterline-routing-reason"].startswith("auto cheap: score")
    assert "code" in hard.headers["meterline-routing-reason"]
    records = wait_for_ledger(settings, tenant.workspace, 2)
    assert [(r["routing_tier"], r["model"]) for r in records] == [("cheap", "openai/gpt-4.1-mini"),
                                                                   ("strong", "openai/gpt-4.1")]
    assert records[0]["routing_score"] < 25 <= records[1]["routing_score"]
    assert "savings" not in records[1]  # stayed on what it asked for


def test_a_conversation_never_switches_model(gateway, tenant, fake_openai, settings):
    """Session affinity: the first turn is easy (cheap), a later hard turn of the same session stays
    cheap; and without a session id, the conversation's opening ties the turns together."""
    fake, _ = fake_openai
    Ops(settings).set_route(tenant.workspace, RouteRule("workspace", "*", cheap="openai/gpt-4.1-mini",
                                                        strong="openai/gpt-4.1", mode="on"))
    c = client(gateway, tenant)
    session = {"Meterline-Session-Id": "conv-1"}
    c.chat.completions.create(model="gpt-4.1", messages=EASY, extra_headers=session)
    c.chat.completions.create(model="gpt-4.1", messages=HARD, extra_headers=session)
    # No session header: turn 2 repeats turn 1's opening.
    turn1 = [{"role": "user", "content": "hi"}]
    c.chat.completions.create(model="gpt-4.1", messages=turn1)
    c.chat.completions.create(model="gpt-4.1", messages=[*turn1, {"role": "assistant", "content": "Hello!"},
                                                         *HARD[1:]])
    assert [r["model"] for r in fake.requests] == ["gpt-4.1-mini"] * 4
    records = wait_for_ledger(settings, tenant.workspace, 4)
    assert "session affinity" in records[1]["routing_reason"] and "session affinity" in records[3]["routing_reason"]
    # A fresh conversation with the same hard turn goes strong.
    c.chat.completions.create(model="gpt-4.1", messages=HARD)
    assert fake.requests[-1]["model"] == "gpt-4.1"


def test_hard_constraints_keep_the_requested_model(gateway, settings, fake_openai):
    fake, url = fake_openai
    tenant = make_tenant(settings, url, models=("openai/gpt-4.1", "openai/gpt-4o"))
    ops = Ops(settings)
    ops.set_route(tenant.workspace, RouteRule("feature", "allow", ("openai/gpt-4.1-mini",), mode="on"))
    ops.set_route(tenant.workspace, RouteRule("feature", "ctx", ("openai/gpt-4o",), mode="on"))
    c = client(gateway, tenant)
    # The key may not use gpt-4.1-mini.
    raw = c.chat.completions.with_raw_response.create(model="gpt-4.1", messages=EASY,
                                                      extra_headers={"Meterline-Feature": "allow"})
    assert "not allowed" in raw.headers["meterline-routing-reason"]
    # gpt-4o's context window (128k) cannot hold this request's output.
    raw = c.chat.completions.with_raw_response.create(model="gpt-4.1", messages=EASY, max_tokens=200_000,
                                                      extra_headers={"Meterline-Feature": "ctx"})
    assert "context window" in raw.headers["meterline-routing-reason"]
    assert [r["model"] for r in fake.requests] == ["gpt-4.1", "gpt-4.1"]
    records = wait_for_ledger(settings, tenant.workspace, 2)
    assert all("savings" not in r and r["model"] == "openai/gpt-4.1" for r in records)


def test_image_tools_and_json_requests_skip_models_that_cannot_take_them(gateway, settings, fake_openai):
    fake, url = fake_openai
    tenant = make_tenant(settings, url)
    # A workspace-priced OpenAI-compatible model with no known capabilities.
    Ops(settings).set_price(tenant.workspace, "openai/tiny-local", {"input": "0.01", "output": "0.02"})
    Ops(settings).set_route(tenant.workspace, RouteRule("workspace", "*", ("openai/tiny-local",
                                                                           "openai/gpt-4o-mini"), mode="on"))
    c = client(gateway, tenant)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    c.chat.completions.create(model="gpt-4.1", messages=EASY, tools=tools)
    c.chat.completions.create(model="gpt-4.1", messages=EASY, response_format={"type": "json_object"})
    c.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    # (A different opening: the same one would be the same conversation, pinned to gpt-4o-mini.)
    c.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Say goodbye"}])
    assert [r["model"] for r in fake.requests] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", "tiny-local"]


def test_routing_is_per_workspace(gateway, tenant, settings, fake_openai):
    fake, url = fake_openai
    other = make_tenant(settings, url)
    Ops(settings).set_route(tenant.workspace, RouteRule("feature", "summarize", ("openai/gpt-4.1-mini",), mode="on"))
    raw = client(gateway, other).chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=EASY, extra_headers={"Meterline-Feature": "summarize"})
    assert "meterline-routing-reason" not in raw.headers
    assert fake.requests[-1]["model"] == "gpt-4.1"
    [record] = wait_for_ledger(settings, other.workspace, 1)
    assert "routing_mode" not in record and record["model"] == "openai/gpt-4.1"


def test_opt_out_header_and_fallback_to_the_requested_model(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    Ops(settings).set_route(tenant.workspace, RouteRule("workspace", "*", ("openai/gpt-4o-mini",), mode="on"))
    c = client(gateway, tenant)
    c.chat.completions.create(model="gpt-4o", messages=EASY, extra_headers={"Meterline-Routing": "off"})
    assert fake.requests[-1]["model"] == "gpt-4o"
    # The routed model is rate limited: the plan falls back to what the caller asked for.
    fake.error = (429, {"error": {"message": "Rate limit", "type": "requests", "code": "rate_limit_exceeded"}})
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "another"}])
    assert [r["model"] for r in fake.requests[-2:]] == ["gpt-4o-mini", "gpt-4o"]


def test_route_targets_are_validated(settings, fake_openai):
    tenant = make_tenant(settings, fake_openai[1])
    ops = Ops(settings)
    with pytest.raises(OpError, match="no provider"):
        ops.set_route(tenant.workspace, RouteRule("feature", "x", ("groq/llama",)))
    with pytest.raises(OpError, match="either --model"):
        ops.set_route(tenant.workspace, RouteRule("feature", "x", ("openai/gpt-4o",), cheap="openai/gpt-4o-mini",
                                                  strong="openai/gpt-4o"))
    with pytest.raises(OpError, match="mode"):
        ops.set_route(tenant.workspace, RouteRule("feature", "x", ("openai/gpt-4o",), mode="maybe"))
    ops.set_route(tenant.workspace, RouteRule("feature", "x", ("sim/gpt-4o-mini",)))
    assert ops.list_routes(tenant.workspace) == [{"scope": "feature:x", "models": ["sim/gpt-4o-mini"], "cheap": None,
                                                  "strong": None, "threshold": 25, "mode": "shadow"}]
    ops.delete_route(tenant.workspace, "feature:x")
    assert ops.list_routes(tenant.workspace) == []
    with pytest.raises(OpError, match="no route"):
        ops.delete_route(tenant.workspace, "feature:x")


def test_budget_ladder_downgrades_before_it_throttles(gateway, tenant, fake_openai, settings):
    """alert -> downgrade -> throttle -> kill: past 1% of a $0.10 budget the feature goes to gpt-4o-mini."""
    from meterline.budgets.model import Budget

    fake, _ = fake_openai
    ops = Ops(settings)
    ops.set_budget(tenant.workspace, Budget("feature", "chat", monthly_micros=100_000, downgrade_at=1,
                                            downgrade_to="openai/gpt-4o-mini", throttle_at=90, throttle_rpm=1))
    c = client(gateway, tenant)
    headers = {"Meterline-Feature": "chat"}
    first = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=EASY, max_tokens=10,
                                                        extra_headers=headers)
    assert "meterline-routed-model" not in first.headers  # 0% spent: no downgrade yet
    second = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=EASY, max_tokens=10,
                                                         extra_headers=headers)
    assert [r["model"] for r in fake.requests] == ["gpt-4o", "gpt-4o-mini"]
    assert second.headers["meterline-routed-model"] == "openai/gpt-4o-mini"
    assert second.headers["meterline-routing-reason"].startswith("budget feature:chat at 1% >= 1%")
    records = wait_for_ledger(settings, tenant.workspace, 2)
    assert records[1]["budget_downgrade"] == "feature:chat" and records[1]["requested_model"] == "openai/gpt-4o"
    assert records[1]["savings"] == {"routing": cost("openai/gpt-4o") - cost("openai/gpt-4o-mini")}
    [row] = ops.list_budgets(tenant.workspace)
    assert row["stage"] == "downgraded to openai/gpt-4o-mini"
    # Another feature is not covered by the budget.
    c.chat.completions.create(model="gpt-4o", messages=EASY, max_tokens=10, extra_headers={"Meterline-Feature": "x"})
    assert fake.requests[-1]["model"] == "gpt-4o"


def test_a_downgrade_never_breaks_hard_constraints(gateway, tenant, fake_openai, settings):
    from meterline.budgets.model import Budget

    fake, _ = fake_openai
    Ops(settings).set_budget(tenant.workspace, Budget("workspace", tenant.workspace, monthly_micros=50_000,
                                                      on_exhaust="alert-only", downgrade_at=1,
                                                      downgrade_to="openai/gpt-4o-mini"))
    c = client(gateway, tenant)
    c.chat.completions.create(model="gpt-4.1", messages=EASY, max_tokens=10)
    big = [{"role": "user", "content": "word " * 120_000}]  # beyond gpt-4o-mini's 128k context
    c.chat.completions.create(model="gpt-4.1", messages=big, max_tokens=10)
    assert [r["model"] for r in fake.requests] == ["gpt-4.1", "gpt-4.1"]
    records = wait_for_ledger(settings, tenant.workspace, 2)
    assert "context window" in records[1]["budget_downgrade_skipped"]


def test_a_daily_only_budget_downgrades_on_the_days_spend(gateway, tenant, fake_openai, settings):
    """The rung reads the day's spent for a daily-only budget (the reservation returns the whole counter
    then; otherwise only what it changed)."""
    from meterline.budgets.model import Budget

    fake, _ = fake_openai
    Ops(settings).set_budget(tenant.workspace, Budget("feature", "chat", daily_micros=100_000, downgrade_at=1,
                                                      downgrade_to="openai/gpt-4o-mini"))
    c = client(gateway, tenant)
    for _ in range(2):
        c.chat.completions.create(model="gpt-4o", messages=EASY, max_tokens=10,
                                  extra_headers={"Meterline-Feature": "chat"})
    assert [r["model"] for r in fake.requests] == ["gpt-4o", "gpt-4o-mini"]
