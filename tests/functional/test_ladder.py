"""The enforcement ladder as real clients meet it (issue 14, item 4): clamping on every request, the
refusal message's figures, Retry-After from the window that refused, SDKs told not to retry a budget
refusal, and a budget created mid-month starting from the month's spend so far."""

from __future__ import annotations

import openai
import pytest

from meterline.admin.ops import Ops
from meterline.budgets.model import Budget, RateLimit
from meterline.gateway import enforcement
from meterline.money import micros_to_usd
from meterline.rollup import StreamPoller
from meterline.store.budgets import BudgetStore
from tests import oracle
from tests.conftest import ledger_items, make_tenant, wait_for_ledger

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}


@pytest.fixture
def small(fake_openai):
    fake, url = fake_openai
    fake.prompt_tokens, fake.cached_tokens, fake.completion_tokens, fake.reasoning_tokens = 10, 0, 50, 0
    return fake, url


@pytest.fixture
def clock(monkeypatch):
    """The enforcement stage's own clock (not the process's time.time), at the start of a minute."""
    import time

    now = {"t": (time.time() // 600) * 600 + 1.2}
    monkeypatch.setattr(enforcement, "clock", lambda: now["t"])
    return now


def sdk(gateway, key, retries=0):
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=retries)


def test_clamp_applies_to_every_request_until_nothing_useful_is_left(gateway, settings, small):
    fake, url = small
    t = make_tenant(settings, url)
    BudgetStore(settings).put_limit(t.workspace, RateLimit("key", "*", rpm=10_000))
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=5_000, clamp=True))
    client = sdk(gateway, t.api_key)
    clamps = []
    for _ in range(6):
        raw = client.chat.completions.with_raw_response.create(**{**BODY, "max_tokens": 4000})
        clamps.append(int(raw.headers["meterline-max-tokens-clamped"]))
    assert clamps == sorted(clamps, reverse=True) and clamps[-1] < clamps[0]  # shrinks as the budget is spent
    assert [r["max_tokens"] for r in fake.requests] == clamps
    spent = BudgetStore(settings).counter(t.workspace, f"workspace:{t.workspace}", _month())["spent"]
    assert int(spent) == 6 * oracle.openai_cost_micros("openai/gpt-4o", 10, 0, 50) <= 5_000


def test_a_refusal_states_what_is_committed_and_is_not_retried(gateway, settings, small):
    fake, url = small
    t = make_tenant(settings, url)
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=1_000))
    client = sdk(gateway, t.api_key, retries=2)
    client.chat.completions.create(**BODY)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**{**BODY, "max_tokens": 1000})  # can never fit: worst > cap
    cost = oracle.openai_cost_micros("openai/gpt-4o", 10, 0, 50)
    assert f"${micros_to_usd(cost)} is spent or reserved" in err.value.message
    assert err.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in err.value.response.headers
    assert len(wait_for_ledger(settings, t.workspace, 2)) == 2 and len(ledger_items(settings, t.workspace)) == 2
    assert len(fake.requests) == 1  # the SDK did not retry (2 retries allowed)


def test_retry_after_comes_from_the_window_that_refused(gateway, settings, small, clock):
    t = make_tenant(settings, small[1])
    BudgetStore(settings).put_limit(t.workspace, RateLimit("key", t.key_id, rpm=5, burst=3))
    client = sdk(gateway, t.api_key)
    for _ in range(3):
        client.chat.completions.create(**BODY)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**BODY)
    assert err.value.response.headers["retry-after"] == "1"  # the second's burst, not the minute
    clock["t"] += 1
    client.chat.completions.create(**BODY)
    client.chat.completions.create(**BODY)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**BODY)
    assert int(err.value.response.headers["retry-after"]) == 58  # now the minute's 5 are used


def test_a_budget_created_mid_month_counts_the_months_spend_so_far(gateway, settings, small):
    t = make_tenant(settings, small[1])
    client = sdk(gateway, t.api_key)
    for _ in range(3):
        client.chat.completions.create(**BODY)
    wait_for_ledger(settings, t.workspace, 3)
    assert StreamPoller(settings).poll_once() >= 3
    cost = oracle.openai_cost_micros("openai/gpt-4o", 10, 0, 50)
    Ops(settings).set_budget(t.workspace, Budget("member", "alice", monthly_micros=3 * cost + 100))
    counter = BudgetStore(settings).counter(t.workspace, "member:alice", _month())
    assert int(counter["spent"]) == int(counter["committed"]) == 3 * cost
    gateway.services.enforcement_cache.invalidate()  # instead of waiting out the 30 s definition cache
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**BODY)  # the month's 3 requests already used the cap
    assert err.value.code == "budget_exceeded"


def _month() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m")
