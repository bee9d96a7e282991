"""Semantic dedup (lever 6) through the official openai SDK, the gateway on uvicorn, moto, and a fake
OpenAI that serves chat completions and deterministic embeddings (tests/fakes/embeddings.py).

GIVEN a workspace that turned semantic dedup on (detect or serve)
WHEN near-duplicate requests arrive
THEN detect mode records the duplicate and never serves; serve mode answers a paraphrase from the
     stored answer at $0 with its saving, never answers "turn off dark mode" with "turn on dark
     mode"'s answer, never crosses workspaces, and every embedding call is metered in the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from meterline.admin.ops import Ops
from tests.conftest import make_tenant, wait_for_ledger
from tests.fakes.embeddings import build_app_with_embeddings
from tests.fakes.openai_server import FakeOpenAI
from tests.oracle import openai_cost_micros, price
from tests.servers import ServerThread


@pytest.fixture
def upstream() -> Iterator[tuple[FakeOpenAI, list[dict], str]]:
    fake, calls = FakeOpenAI(), []
    with ServerThread(build_app_with_embeddings(fake, calls)) as server:
        yield fake, calls, server.url + "/v1"


def ask(gateway, tenant, text: str, **kwargs):
    c = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    return c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kwargs)


def by_id(records: list[dict]) -> dict[str, dict]:
    return {r["request_id"]: r for r in records}


def test_detect_mode_records_near_duplicates_and_meters_the_embeddings(gateway, settings, upstream):
    fake, calls, url = upstream
    tenant = make_tenant(settings, url)
    Ops(settings).set_lever(tenant.workspace, "semantic", "workspace:*", {})
    first = ask(gateway, tenant, "How do I reset my password?")
    second = ask(gateway, tenant, "How do I reset my password")
    assert len(fake.requests) == 2  # detect never serves
    assert "meterline-cache" not in second.headers
    records = by_id(wait_for_ledger(settings, tenant.workspace, 4))
    one, two = first.headers["meterline-request-id"], second.headers["meterline-request-id"]
    assert records[two]["semantic_duplicate_of"] == one and records[two]["semantic_similarity"] >= 9500
    assert "semantic_duplicate_of" not in records[one]
    for rid in (one, two):
        emb = records[f"{rid}.emb"]
        assert emb["endpoint"] == "embeddings" and emb["purpose"] == "semantic_embedding"
        assert emb["parent_request_id"] == rid and emb["model"] == "openai/text-embedding-3-small"
        tokens = 7  # "user: How do I reset my password?" in words, as the fake counts
        assert emb["input_uncached"] == tokens
        assert emb["cost_micros"] == round(tokens * price("openai/text-embedding-3-small", "input"))
    assert [c["dimensions"] for c in calls] == [256, 256]


def test_serve_mode_answers_a_paraphrase_at_zero_cost_and_records_the_saving(gateway, settings, upstream):
    fake, _, url = upstream
    tenant = make_tenant(settings, url)
    Ops(settings).set_lever(tenant.workspace, "semantic", "feature:faq", {"mode": "serve"})
    headers = {"Meterline-Feature": "faq"}
    first = ask(gateway, tenant, "What is the capital of France?", extra_headers=headers)
    second = ask(gateway, tenant, "what is the capital of France?", extra_headers=headers)
    assert len(fake.requests) == 1
    assert second.headers["meterline-cache"] == "semantic" and second.headers["meterline-cost-usd"] == "0.000000"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    records = by_id(wait_for_ledger(settings, tenant.workspace, 4))
    hit = records[second.headers["meterline-request-id"]]
    original_cost = openai_cost_micros("openai/gpt-4o-mini", prompt=1200, cached=1024, completion=10)
    assert hit["outcome"] == "cache_hit" and hit["cost_micros"] == 0
    assert hit["savings"] == {"semantic_cache": original_cost}
    assert hit["semantic_served_from"] == first.headers["meterline-request-id"]


def test_turn_off_is_never_served_turn_on(gateway, settings, upstream):
    fake, _, url = upstream
    tenant = make_tenant(settings, url)
    Ops(settings).set_lever(tenant.workspace, "semantic", "workspace:*", {"mode": "serve"})
    ask(gateway, tenant, "Please turn on dark mode in the settings app for my account")
    off = ask(gateway, tenant, "Please turn off dark mode in the settings app for my account")
    ask(gateway, tenant, "Set the retry limit to 3 attempts for the payment webhook")
    five = ask(gateway, tenant, "Set the retry limit to 5 attempts for the payment webhook")
    assert len(fake.requests) == 4 and "meterline-cache" not in off.headers
    records = by_id(wait_for_ledger(settings, tenant.workspace, 8))
    assert records[five.headers["meterline-request-id"]]["semantic_blocked"] == "numbers differ"


def test_entries_never_cross_workspaces_and_streams_are_not_served(gateway, settings, upstream):
    fake, _, url = upstream
    a, b = make_tenant(settings, url), make_tenant(settings, url)
    for tenant in (a, b):
        Ops(settings).set_lever(tenant.workspace, "semantic", "workspace:*", {"mode": "serve"})
    ask(gateway, a, "Explain what a vector database is in simple terms")
    ask(gateway, b, "Explain what a vector database is in simple terms")
    assert len(fake.requests) == 2
    c = openai.OpenAI(base_url=gateway.base_url, api_key=a.api_key, max_retries=0)
    stream = c.chat.completions.create(model="gpt-4o-mini", stream=True, messages=[
        {"role": "user", "content": "Explain what a vector database is in simple terms"}])
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert len(fake.requests) == 3
    ask(gateway, a, "Explain in simple terms what a vector database is")  # served from a's entry
    assert len(fake.requests) == 3


def test_lever_off_means_no_embedding_call(gateway, settings, upstream):
    fake, calls, url = upstream
    tenant = make_tenant(settings, url)
    Ops(settings).set_lever(tenant.workspace, "semantic", "feature:faq", {"mode": "serve"})
    ask(gateway, tenant, "How do I reset my password?")  # no feature header: not covered
    ask(gateway, tenant, "How do I reset my password?", extra_headers={"Meterline-Feature": "faq",
                                                                     "Meterline-Semantic": "off"})
    assert calls == [] and len(fake.requests) == 2


def test_a_missing_embedding_provider_never_fails_the_request(gateway, settings, upstream):
    _, _, url = upstream
    tenant = make_tenant(settings, url)
    Ops(settings).set_lever(tenant.workspace, "semantic", "workspace:*",
                            {"mode": "serve", "embedding_model": "nowhere/embed"})
    response = ask(gateway, tenant, "hello there")
    assert response.parse().choices[0].message.content
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert "nowhere" in record["semantic_error"] and record["outcome"] == "ok"


def test_against_the_simulator_as_under_meterline_dev(gateway, settings):
    """sim/ chat and sim/ embeddings (no provider key): what a newcomer gets with `meterline dev`."""
    tenant = make_tenant(settings, None)
    Ops(settings).set_lever(tenant.workspace, "semantic", "workspace:*",
                            {"mode": "serve", "embedding_model": "sim/text-embedding-3-small"})
    c = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    first = c.chat.completions.with_raw_response.create(
        model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "How do I reset my password?"}])
    hit = c.chat.completions.with_raw_response.create(
        model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "How do I reset my password"}])
    miss = c.chat.completions.with_raw_response.create(
        model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "How do I not reset my password?"}])
    assert hit.headers["meterline-cache"] == "semantic" and "meterline-cache" not in miss.headers
    assert hit.parse().choices[0].message.content == first.parse().choices[0].message.content
    records = by_id(wait_for_ledger(settings, tenant.workspace, 6))
    assert records[hit.headers["meterline-request-id"]]["savings"]["semantic_cache"] == \
        records[first.headers["meterline-request-id"]]["cost_micros"] > 0
    emb = records[first.headers["meterline-request-id"] + ".emb"]
    assert emb["model"] == "sim/text-embedding-3-small" and emb["input_uncached"] > 0


# -- the embedding call goes through the request's budgets (reserve before, settle after) ----------

LONG = ("Our warehouse team needs a short checklist for receiving pallets from new suppliers: what to "
        "inspect, which documents to compare against the purchase order, how to log damaged goods, "
        "who signs off on exceptions, and how long we keep the paperwork before archiving it")


def _counter(settings, ws: str, scope: str) -> dict:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from meterline.store.budgets import BudgetStore
    from meterline.store.workspaces import WorkspaceStore

    month = datetime.now(ZoneInfo(WorkspaceStore(settings).load(ws).timezone)).strftime("%Y-%m")
    return BudgetStore(settings).counter(ws, scope, month)


def test_embedding_calls_are_reserved_and_settled_on_the_requests_budgets(gateway, settings, upstream):
    from meterline.budgets.model import Budget
    from meterline.store.budgets import BudgetStore

    _, calls, url = upstream
    tenant = make_tenant(settings, url)
    store = BudgetStore(settings)
    store.put_budget(tenant.workspace, Budget("workspace", tenant.workspace, monthly_micros=1_000_000))
    store.put_budget(tenant.workspace, Budget("feature", "faq", monthly_micros=1_000_000))
    Ops(settings).set_lever(tenant.workspace, "semantic", "workspace:*",
                            {"embedding_model": "openai/text-embedding-3-large"})
    response = ask(gateway, tenant, LONG, extra_headers={"Meterline-Feature": "faq"})
    other = ask(gateway, tenant, LONG + " today")  # no feature: only the workspace budget covers it
    assert len(calls) == 2
    records = by_id(wait_for_ledger(settings, tenant.workspace, 4))
    rid, rid2 = response.headers["meterline-request-id"], other.headers["meterline-request-id"]
    emb, emb2 = records[f"{rid}.emb"], records[f"{rid2}.emb"]
    tokens = len(("user: " + LONG).split())
    assert emb["cost_micros"] == round(tokens * price("openai/text-embedding-3-large", "input")) > 0
    feature, workspace = _counter(settings, tenant.workspace, "feature:faq"), \
        _counter(settings, tenant.workspace, f"workspace:{tenant.workspace}")
    # Every call (two requests, two embeddings) was reserved and settled: nothing left reserved, and
    # what each budget counts as spent is exactly the ledger's cost of the calls in its scope.
    assert int(workspace["requests"]) == 4 and int(feature["requests"]) == 2
    assert int(workspace["spent"]) == sum(int(r["cost_micros"]) for r in records.values())
    assert int(feature["spent"]) == int(records[rid]["cost_micros"]) + int(emb["cost_micros"])
    for counter in (workspace, feature):
        assert int(counter["reserved"]) == 0 and int(counter["committed"]) == int(counter["spent"])
        assert not [k for k in counter if k.startswith("l_")]
    assert emb2["cost_micros"] > 0


def test_a_budget_that_cannot_pay_for_the_embedding_skips_the_lever_not_the_request(gateway, settings, upstream):
    """The request's own reservation is clamped to fill the budget; the embedding then does not fit:
    no embedding call, the lever is skipped and noted, the request is answered under its own
    reservation, and the budget counts only what was called."""
    from meterline.budgets.model import Budget
    from meterline.store.budgets import BudgetStore

    fake, calls, url = upstream
    tenant = make_tenant(settings, url)
    cap = 3_000
    BudgetStore(settings).put_budget(tenant.workspace, Budget("workspace", tenant.workspace, monthly_micros=cap,
                                                              clamp=True))
    Ops(settings).set_lever(tenant.workspace, "semantic", "workspace:*",
                            {"mode": "serve", "embedding_model": "openai/text-embedding-3-large"})
    response = ask(gateway, tenant, LONG)
    assert response.http_response.status_code == 200 and "meterline-max-tokens-clamped" in response.headers
    assert calls == [] and len(fake.requests) == 1
    rid = response.headers["meterline-request-id"]
    records = by_id(wait_for_ledger(settings, tenant.workspace, 1))
    assert list(records) == [rid]
    assert records[rid]["semantic_error"].startswith("embedding call not made: budget workspace:")
    counter = _counter(settings, tenant.workspace, f"workspace:{tenant.workspace}")
    assert int(counter["spent"]) == int(records[rid]["cost_micros"]) and int(counter["reserved"]) == 0
    assert int(counter["requests"]) == 1
    assert not [k for k in counter if k.startswith("l_")]
