"""Budgets and rate limits under concurrency: real HTTP against the gateway on uvicorn, moto behind.

Invariants (issue 4), each a test:
- final spend <= cap; every accepted request settled; zero reservations left; no request rejected
  while spend + reservations + its worst case <= cap (checked on every rejection's ledger record);
- the same with overlapping budgets; a budget's first concurrent requests are bound (no unprimed
  counter bypass); failure, timeout and disconnect release or settle; alerts exactly once;
  rate limits with OpenAI headers and window reset.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import time
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest

from meterline.budgets.model import Budget, Policy, RateLimit
from meterline.gateway import enforcement
from meterline.store import aws
from meterline.store.budgets import BudgetStore
from meterline.store.workspaces import WorkspaceStore
from tests.conftest import ledger_items, make_tenant, wait_for_ledger

MONTH_CAP = 30_000  # $0.03
BURST_TIMEOUT_S = 660  # past the gateway's store deadline (600 s): a slow store shows as a 503, not a hang
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}


@pytest.fixture
def clock(monkeypatch):
    """The enforcement stage's clock, pinned to the start of a minute window (and of a 10-minute loop
    window), so that window-based limits are tested, not the wall clock's minute boundaries."""
    now = {"t": (time.time() // 600) * 600 + 1}
    # The stage's own clock: patching `time.time` would freeze every clock in the process (the
    # store client's signatures, lease expiries, the fake servers) and hide their bugs.
    monkeypatch.setattr(enforcement, "clock", lambda: now["t"])
    return now


@pytest.fixture
def small_usage(fake_openai):
    """The fake reports usage consistent with the request (10 prompt tokens, 50 output <= max_tokens)."""
    fake, url = fake_openai
    fake.prompt_tokens, fake.cached_tokens, fake.completion_tokens, fake.reasoning_tokens = 10, 0, 50, 0
    return fake, url


def worst_micros(body: dict, input_usd_per_m: str = "2.50", output_usd_per_m: str = "10.00") -> int:
    """An independent worst case: the body's UTF-8 bytes bound its prompt tokens (a BPE token is at least
    a byte); output is max_tokens x n."""
    size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    output = body.get("max_tokens", 0) * body.get("n", 1)
    return math.ceil(size * Decimal(input_usd_per_m) + output * Decimal(output_usd_per_m))


def month_of(settings, ws) -> str:
    """The budget month as the gateway counts it: in the workspace's own time zone."""
    return datetime.now(ZoneInfo(WorkspaceStore(settings).load(ws).timezone)).strftime("%Y-%m")


def fire(gateway, key: str, n: int, body: dict | None = None, headers: dict | None = None,
         ) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        # Generous: on a loaded 2-core machine 200 requests share one embedded store (moto, one call at a
        # time); the gateway's store deadlines are as generous (tests/conftest.py EMBEDDED_STORE_DEADLINES).
        async with httpx.AsyncClient(timeout=BURST_TIMEOUT_S, limits=limits) as client:
            return await asyncio.gather(*(client.post(
                gateway.base_url + "/chat/completions", json=body or BODY,
                headers={"authorization": f"Bearer {key}", **(headers or {})}) for _ in range(n)))
    return asyncio.run(run())


def no_rate_limit(settings, workspace: str) -> None:
    BudgetStore(settings).put_limit(workspace, RateLimit("key", "*", rpm=100_000))


def assert_budget_invariants(settings, ws: str, scope: str, cap: int, responses: list[httpx.Response]) -> dict:
    counter = BudgetStore(settings).counter(ws, scope, month_of(settings, ws))
    records = wait_for_ledger(settings, ws, len(responses), timeout=60)
    assert len(records) == len(responses)  # one record per request, accepted or rejected
    accepted = [r for r in records if r["outcome"] == "ok"]
    rejected = [r for r in records if r["outcome"] == "rejected"]
    assert len(accepted) == sum(1 for r in responses if r.status_code == 200)
    assert int(counter.get("spent", 0)) <= cap
    assert int(counter.get("reserved", 0)) == 0
    assert not [k for k in counter if k.startswith("l_")]  # no lease left behind
    assert int(counter.get("committed", 0)) == int(counter.get("spent", 0))
    for record in rejected:
        if record.get("budget_scope") == scope:
            # Rejected only when what was committed plus its own worst case did not fit.
            assert record["budget_committed"] + record["worst_case_micros"] > record["budget_cap"]
    return {"counter": counter, "accepted": accepted, "rejected": rejected}


def test_200_concurrent_requests_never_overspend_the_cap(gateway, settings, small_usage):
    t = make_tenant(settings, small_usage[1])
    no_rate_limit(settings, t.workspace)
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=MONTH_CAP))
    responses = fire(gateway, t.api_key, 200)
    statuses = {r.status_code for r in responses}
    assert statuses == {200, 429}
    refused = next(r for r in responses if r.status_code == 429).json()["error"]
    assert refused["code"] == "budget_exceeded" and refused["param"] == f"workspace:{t.workspace}"
    result = assert_budget_invariants(settings, t.workspace, f"workspace:{t.workspace}", MONTH_CAP, responses)
    spent = int(result["counter"]["spent"])
    assert spent == sum(r["cost_micros"] for r in result["accepted"])
    # 525 per request (10 x 2.50 + 50 x 10): at most 57 fit. Each reserves its worst case, recomputed here
    # independently (every byte of the body as an input token at $2.50/M + 50 output at $10/M): as many
    # as fit side by side all pass, so the cap is used, not left idle by leaked reservations.
    assert MONTH_CAP // worst_micros(BODY) <= len(result["accepted"]) <= MONTH_CAP // 525


def test_overlapping_budgets_all_hold(gateway, settings, small_usage):
    t = make_tenant(settings, small_usage[1], member="alice")
    no_rate_limit(settings, t.workspace)
    store = BudgetStore(settings)
    store.put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=60_000))
    store.put_budget(t.workspace, Budget("member", "alice", monthly_micros=40_000))
    store.put_budget(t.workspace, Budget("feature", "search", monthly_micros=10_000, daily_micros=8_000))

    async def mixed() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=BURST_TIMEOUT_S, limits=httpx.Limits(max_connections=150)) as client:
            return await asyncio.gather(*(client.post(
                gateway.base_url + "/chat/completions", json=BODY,
                headers={"authorization": f"Bearer {t.api_key}",
                         "meterline-feature": "search" if i % 2 else "chat"}) for i in range(150)))

    responses = asyncio.run(mixed())
    records = wait_for_ledger(settings, t.workspace, 150, timeout=60)
    month = month_of(settings, t.workspace)
    ok = [r for r in records if r["outcome"] == "ok"]
    for scope, cap, members in [(f"workspace:{t.workspace}", 60_000, ok), ("member:alice", 40_000, ok),
                                ("feature:search", 8_000, [r for r in ok if r.get("feature") == "search"])]:
        counter = store.counter(t.workspace, scope, month)
        assert int(counter.get("spent", 0)) == sum(r["cost_micros"] for r in members) <= cap, scope
        assert int(counter.get("reserved", 0)) == 0, scope
    worst = worst_micros(BODY)  # independent of the gateway's own figures
    for record in records:
        if record["outcome"] == "rejected":
            assert record.get("error_code") == "budget_exceeded", record
            assert record["worst_case_micros"] == worst
            assert record["budget_committed"] + worst > record["budget_cap"]
    assert sum(r.status_code == 200 for r in responses) == len(ok) <= 40_000 // 525


def test_first_concurrent_requests_are_bound_by_a_fresh_budget(gateway, settings, small_usage):
    t = make_tenant(settings, small_usage[1])
    no_rate_limit(settings, t.workspace)
    cap = 3 * worst_micros(BODY) + 10  # three worst cases fit side by side, a fourth never does
    BudgetStore(settings).put_budget(t.workspace, Budget("key", t.key_id, monthly_micros=cap))
    responses = fire(gateway, t.api_key, 40)  # the counter item does not exist before this burst
    assert sum(r.status_code == 200 for r in responses) == 3
    assert_budget_invariants(settings, t.workspace, f"key:{t.key_id}", cap, responses)


@pytest.mark.parametrize("failure", ["upstream_500", "timeout", "disconnect"])
def test_failures_release_or_settle_and_are_recorded(start_gateway, settings, small_usage, failure):
    fake, url = small_usage
    gateway = start_gateway(upstream_read_timeout_s=0.5)
    t = make_tenant(settings, url)
    scope = f"workspace:{t.workspace}"
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=MONTH_CAP))
    if failure == "upstream_500":
        fake.error = (500, {"error": {"message": "boom", "type": "server_error"}})
        assert fire(gateway, t.api_key, 1)[0].status_code == 500
    elif failure == "timeout":
        fake.delay_before_headers_s = 2
        assert fire(gateway, t.api_key, 1)[0].status_code == 504
    else:
        fake.chunks = [f" w{i}" for i in range(100)]
        fake.chunk_delay_s = 0.02
        with httpx.Client(timeout=10) as http, http.stream(
                "POST", gateway.base_url + "/chat/completions", json={**BODY, "stream": True},
                headers={"authorization": f"Bearer {t.api_key}"}) as response:
            for i, _ in enumerate(response.iter_lines()):
                if i > 5:
                    break
    [record] = wait_for_ledger(settings, t.workspace, 1, timeout=10)
    deadline = time.monotonic() + 5
    while True:
        counter = BudgetStore(settings).counter(t.workspace, scope, month_of(settings, t.workspace))
        if int(counter.get("reserved", -1)) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert int(counter["reserved"]) == 0 and not [k for k in counter if k.startswith("l_")]
    assert int(counter["spent"]) == record["cost_micros"]  # released (0) or settled to what was recorded
    expected = {"upstream_500": ("upstream_error", 500), "timeout": ("upstream_timeout", 504),
                "disconnect": ("client_disconnect", 200)}[failure]
    assert (record["outcome"], record["status"]) == expected
    if failure == "upstream_500":
        assert record["cost_micros"] == 0  # a provider error is not billed
    else:
        assert record["cost_micros"] > 0 and record["estimated"] is True  # the provider may have billed


def test_budget_error_and_rate_limit_headers_drive_the_sdk(gateway, settings, small_usage, clock):
    t = make_tenant(settings, small_usage[1])
    BudgetStore(settings).put_limit(t.workspace, RateLimit("key", t.key_id, rpm=3, tpm=100_000))
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0)
    first = sdk.chat.completions.with_raw_response.create(**BODY)
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert first.headers["x-ratelimit-limit-tokens"] == "100000"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    sdk.chat.completions.create(**BODY)
    sdk.chat.completions.create(**BODY)
    with pytest.raises(openai.RateLimitError) as err:
        sdk.chat.completions.create(**BODY)
    assert err.value.code == "rate_limit_exceeded"
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    # The next minute's window admits requests again.
    clock["t"] += 60
    sdk.chat.completions.create(**BODY)


def test_every_key_has_a_100_rpm_floor_by_default(gateway, settings, small_usage, clock):
    t = make_tenant(settings, small_usage[1])
    first = fire(gateway, t.api_key, 1)[0]
    assert first.headers["x-ratelimit-limit-requests"] == "100"
    statuses = [r.status_code for r in fire(gateway, t.api_key, 105, body={**BODY, "model": "sim/gpt-4o"})]
    assert statuses.count(200) == 99 and statuses.count(429) == 6  # 100 in the minute, the first included


def test_daily_cap_is_a_hard_stop_under_the_monthly_cap(gateway, settings, small_usage):
    t = make_tenant(settings, small_usage[1])
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=1_000_000,
                                                         daily_micros=2 * worst_micros(BODY) + 10))
    statuses = [r.status_code for r in fire(gateway, t.api_key, 5)]
    assert statuses.count(200) == 2
    rejected = [r for r in ledger_items(settings, t.workspace) if r["outcome"] == "rejected"]
    assert {r["budget_period"] for r in rejected} == {"day"}


THROTTLE_CAP = 10_000  # 50 % = 5,000: the tenth request at 525 crosses it (5,250)


def throttled_budget(settings, workspace: str, strategy: str = "throttle", rpm: int = 2) -> Budget:
    budget = Budget("workspace", workspace, monthly_micros=THROTTLE_CAP, throttle_at=50, throttle_rpm=rpm,
                    on_exhaust=strategy)
    BudgetStore(settings).put_budget(workspace, budget)
    return budget


@pytest.mark.parametrize("strategy", ["throttle", "reject"])
def test_throttle_stage_starts_at_its_threshold_and_holds_the_minute_to_its_rpm(gateway, settings, small_usage,
                                                                                  clock, strategy):
    """`--throttle-at 50 --throttle-rpm 2`: the first request after spend reached 50 % is throttled, even
    in the minute that crossed it (which had already passed ten), and each later minute passes two.
    (Before: a flag set after the crossing request settled, then two more per minute on top of the
    minute's own: throttled from 63 %.)"""
    t = make_tenant(settings, small_usage[1])
    no_rate_limit(settings, t.workspace)
    throttled_budget(settings, t.workspace, strategy)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0)
    counter = lambda: BudgetStore(settings).counter(t.workspace, f"workspace:{t.workspace}",  # noqa: E731
                                                   month_of(settings, t.workspace))
    passed = 0
    while True:
        try:
            sdk.chat.completions.create(**BODY)
        except openai.RateLimitError as err:
            assert err.code == "budget_throttled"
            break
        passed += 1
        assert passed <= 20, "never throttled"
    spent = int(counter()["spent"])
    assert passed == 10 and spent == 5_250  # throttled at the first request past 50 % (52.5 %)
    clock["t"] += 60  # the next minute: exactly throttle_rpm pass, then 429 again
    for _ in range(2):
        sdk.chat.completions.create(**BODY)
    with pytest.raises(openai.RateLimitError) as err:
        sdk.chat.completions.create(**BODY)
    assert err.value.code == "budget_throttled"
    assert int(err.value.response.headers["retry-after"]) <= 60
    assert int(counter()["spent"]) == 5_250 + 2 * 525


def test_a_burst_cannot_run_past_the_throttle_threshold(gateway, settings, small_usage, clock):
    """40 concurrent requests on a fresh throttled budget: the stage is judged on spend plus in-flight
    reservations, so the burst stops at the threshold (+ the crossing request + the minute's rpm).
    Before: every one of the 40 passed (210 % of the cap), since none had settled when the others were
    checked."""
    t = make_tenant(settings, small_usage[1])
    no_rate_limit(settings, t.workspace)
    throttled_budget(settings, t.workspace)
    responses = fire(gateway, t.api_key, 40)
    ok = [r for r in responses if r.status_code == 200]
    throttled = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(throttled) == 40 and ok and throttled
    assert {r.json()["error"]["code"] for r in throttled} == {"budget_throttled"}
    counter = BudgetStore(settings).counter(t.workspace, f"workspace:{t.workspace}", month_of(settings, t.workspace))
    # Independent bound: requests admitted outside the minute's 2 each saw < 5,000 committed before them,
    # and each committed at least its own cost (525).
    assert len(ok) <= 5_000 // 525 + 1 + 2
    assert int(counter["spent"]) == 525 * len(ok) <= 5_000 + 525 * (1 + 2)
    assert int(counter["reserved"]) == 0


def test_a_budget_created_past_its_throttle_threshold_throttles_at_once(gateway, settings, small_usage, clock):
    """A budget created mid-month starts from the month's spend so far; already past 50 %, it is in the
    throttle stage from its first request (before: only after a request settled and set a flag)."""
    t = make_tenant(settings, small_usage[1])
    no_rate_limit(settings, t.workspace)
    budget = throttled_budget(settings, t.workspace)
    now = datetime.now(ZoneInfo(WorkspaceStore(settings).load(t.workspace).timezone))
    month, day = now.strftime("%Y-%m"), now.strftime("%Y-%m-%d")
    assert BudgetStore(settings).seed_counter(t.workspace, budget.scope, month, day, 6_000, 6_000)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0)
    for _ in range(2):
        sdk.chat.completions.create(**BODY)
    with pytest.raises(openai.RateLimitError) as err:
        sdk.chat.completions.create(**BODY)
    assert err.value.code == "budget_throttled"


def test_clamp_lowers_max_tokens_to_what_the_budget_pays_for(gateway, settings, small_usage):
    fake, _ = small_usage
    t = make_tenant(settings, small_usage[1])
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=2_000, clamp=True))
    raw = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0).chat.completions \
        .with_raw_response.create(**{**BODY, "max_tokens": 4000})
    clamped = int(raw.headers["meterline-max-tokens-clamped"])
    assert 16 <= clamped < 4000 and fake.requests[-1]["max_tokens"] == clamped
    assert clamped * 10 <= 2_000  # output at $10/1M fits the $0.002 budget
    [record] = wait_for_ledger(settings, t.workspace, 1)
    assert record["clamped_max_tokens"] == clamped


def test_agent_loop_is_throttled_then_stopped(gateway, settings, small_usage, clock):
    t = make_tenant(settings, small_usage[1])
    BudgetStore(settings).put_policy(t.workspace, Policy(loop_throttle_after=2, loop_reject_after=4,
                                                         loop_throttle_interval_s=60))
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0,
                        default_headers={"Meterline-Session-Id": "agent-run-7"})
    codes = []
    for i in range(6):
        try:  # near-identical: only a number changes
            sdk.chat.completions.create(model="gpt-4o", max_tokens=50,
                                        messages=[{"role": "user", "content": f"retry step {i}"}])
            codes.append("ok")
        except openai.RateLimitError as exc:
            codes.append(exc.code)
    assert codes == ["ok", "ok", "ok", "agent_loop_throttled", "agent_loop_detected", "agent_loop_detected"]
    records = wait_for_ledger(settings, t.workspace, 6)
    recorded = sorted(r.get("error_code") or "ok" for r in records)  # same-millisecond records: compare as sets
    assert recorded == sorted(codes)
    # Another session is not affected.
    openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0).chat.completions.create(**BODY)


def test_store_unavailable_fails_closed_by_default_and_open_when_chosen(start_gateway, settings, small_usage):
    closed = make_tenant(settings, small_usage[1])
    opened = make_tenant(settings, small_usage[1])
    gateway = start_gateway()
    BudgetStore(settings).put_policy(closed.workspace, Policy(fail_open=False))
    BudgetStore(settings).put_policy(opened.workspace, Policy(fail_open=True))  # the stored choice is what acts
    for t in (closed, opened):
        assert fire(gateway, t.api_key, 1)[0].status_code == 200  # caches each workspace's definitions
    aws.client("dynamodb", settings).delete_table(TableName=settings.table_names["budgets"])
    response = fire(gateway, closed.api_key, 1)[0]
    assert response.status_code == 503 and response.json()["error"]["code"] == "budget_store_unavailable"
    assert fire(gateway, opened.api_key, 1)[0].status_code == 200
    assert [r.get("enforcement") for r in wait_for_ledger(settings, closed.workspace, 2)] == [None, "unavailable"]
    assert [r.get("enforcement") for r in wait_for_ledger(settings, opened.workspace, 2)] == [None, "unchecked"]


def test_a_crashed_call_lease_is_swept_and_stops_blocking(gateway, settings, small_usage):
    t = make_tenant(settings, small_usage[1])
    store = BudgetStore(settings)
    budget = Budget("workspace", t.workspace, monthly_micros=1_000)
    store.put_budget(t.workspace, budget)
    month = month_of(settings, t.workspace)
    from datetime import UTC, datetime

    from meterline.store.ddb_http import DynamoHttp

    async def crash() -> None:  # a reservation whose call died: never settled, lease ran out
        client = DynamoHttp(settings)
        await store.reserve(client, t.workspace, budget, month, datetime.now(UTC).strftime("%Y-%m-%d"),
                            "req_crashed", 900, lease_s=1, now=time.time() - 3600)
        await client.aclose()

    asyncio.run(crash())
    assert int(store.counter(t.workspace, budget.scope, month)["reserved"]) == 900
    assert fire(gateway, t.api_key, 1)[0].status_code == 200  # the expired lease was released on the way
    counter = store.counter(t.workspace, budget.scope, month)
    assert int(counter["reserved"]) == 0 and "l_req_crashed" not in counter


def test_alert_emails_exactly_once_per_threshold_under_repeated_and_concurrent_runs(gateway, settings, small_usage):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from meterline.budgets.alerts import send_pending_alerts, sweep_expired_leases

    t = make_tenant(settings, small_usage[1])
    WorkspaceStore(settings).update_settings(t.workspace, alert_recipients=["finance@example.com"])
    BudgetStore(settings).put_budget(t.workspace, Budget("feature", "search", monthly_micros=2_100,
                                                         alerts=(50, 75, 90, 100)))
    ses = aws.client("sesv2", settings)
    ses.create_email_identity(EmailIdentity="alerts@example.com")
    backend = ses_backends[DEFAULT_ACCOUNT_ID][settings.region]
    before = len(backend.sent_messages)
    fire(gateway, t.api_key, 2, headers={"meterline-feature": "search"})  # 1,050 of 2,100: 50 % crossed
    time.sleep(0.2)
    fire(gateway, t.api_key, 1, headers={"meterline-feature": "search"})  # 1,575: 75 % crossed

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: send_pending_alerts(settings, ses, "alerts@example.com", []), range(4)))
    runs.append(send_pending_alerts(settings, ses, "alerts@example.com", []))
    assert sum(runs) == 2
    sent = backend.sent_messages[before:]
    assert len(sent) == 2
    subjects = sorted(m.subject for m in sent)
    assert "feature:search reached 50%" in subjects[0] and "feature:search reached 75%" in subjects[1]
    body = sent[0].body
    assert "Top contributors" in body and "by member: alice" in body and "Projection" in body
    assert sent[0].destinations["ToAddresses"] == ["finance@example.com"]
    assert sweep_expired_leases(settings) == 0


def test_retried_reserve_and_settle_apply_once(settings):
    """The lean client retries a write whose response was lost; the write may already have applied."""
    from datetime import UTC, datetime

    from meterline.store.budgets import Reservation
    from meterline.store.ddb_http import DynamoHttp

    store = BudgetStore(settings)
    budget = Budget("workspace", "ws_retry", monthly_micros=10_000)
    month, day = datetime.now(UTC).strftime("%Y-%m"), datetime.now(UTC).strftime("%Y-%m-%d")

    async def run() -> None:
        client = DynamoHttp(settings)
        now = time.time()
        first = await store.reserve(client, "ws_retry", budget, month, day, "req_a", 700, 900, now)
        again = await store.reserve(client, "ws_retry", budget, month, day, "req_a", 700, 900, now)  # the retry
        assert isinstance(first, Reservation) and isinstance(again, Reservation)
        assert int(store.counter("ws_retry", budget.scope, month)["reserved"]) == 700
        await store.settle(client, "ws_retry", first, "req_a", 400)
        await store.settle(client, "ws_retry", first, "req_a", 400)  # the retry
        counter = store.counter("ws_retry", budget.scope, month)
        assert (int(counter["spent"]), int(counter["reserved"]), int(counter["committed"])) == (400, 0, 400)
        # A call that outlived its lease (swept meanwhile) still adds what it spent, once.
        late = await store.reserve(client, "ws_retry", budget, month, day, "req_b", 500, 1, now - 10)
        # 9,500 fits only because the expired 500 is released on the way (400 spent + 9,500 <= 10,000).
        big = await store.reserve(client, "ws_retry", budget, month, day, "req_c", 9_500, 900, now)
        assert isinstance(big, Reservation)
        counter = store.counter("ws_retry", budget.scope, month)
        assert "l_req_b" not in counter  # the expired lease was swept to make room for req_c
        await store.settle(client, "ws_retry", late, "req_b", 300, now=now)
        counter = store.counter("ws_retry", budget.scope, month)
        assert int(counter["spent"]) == 700 and int(counter["reserved"]) == 9_500
        await client.aclose()

    asyncio.run(run())
