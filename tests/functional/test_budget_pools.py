"""Budget reservation pools (budgets/pool.py) on the real store: a process with steady traffic for a
budget reserves a pool of several requests' worst cases in one write and carves the next requests'
reservations from it without a store call. Checked here, with times passed in: a lone process is
exact to the cap (every request that fits is admitted, the first that does not is refused, nothing
stays held); processes sharing a budget never exceed it and leave nothing held; concurrent requests
share one claim; no pool forms near a threshold, so throttle decisions stay exact; every pooled
settlement is applied exactly once (retried, replayed, after the sweeper); an idle pool is
released after its window; a process without steady traffic reserves one request at a time."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from meterline.budgets import policy
from meterline.budgets import pool as pools
from meterline.budgets.alerts import sweep_expired_leases
from meterline.budgets.model import Budget, RateLimit
from meterline.replay import budget_settler
from meterline.store.budgets import BudgetStore, Refused, Reservation
from meterline.store.ddb_http import DynamoHttp

WS = "ws_pool"
MONTH, DAY = "2026-12", "2026-12-02"
LEASE_S = 900
W = 1_000  # every request's worst case
T0 = 1_796_000_000 - 1_796_000_000 % 60 + 1  # a minute's first second


def scope_value() -> str:
    return f"b{time.time_ns()}"


def counter(settings, budget: Budget) -> dict[str, int]:
    item = BudgetStore(settings).counter(WS, budget.scope, MONTH)
    return {k: int(v) for k, v in item.items() if isinstance(v, int | float) or str(v).lstrip("-").isdigit()}


async def request(store: BudgetStore, client: DynamoHttp, budget: Budget, now: float, actual: int = W,
                  worst: int = W, count_minute: bool = False) -> Reservation | Refused:
    """One request: reserve, then settle to `actual` (as the gateway does around the upstream call)."""
    rid = f"r{time.time_ns()}{random.random():.6f}"[2:].replace(".", "")
    result = await store.reserve(client, WS, budget, MONTH, DAY, rid, worst, LEASE_S, now, count_minute=count_minute)
    if isinstance(result, Reservation):
        await store.settle(client, WS, result, rid, actual, now=now)
    return result


async def steady(store: BudgetStore, client: DynamoHttp, budget: Budget) -> None:
    """A steady 200 requests a second through the second from T0: the process's next reservation of
    the budget claims a pool."""
    for i in range(200):
        await request(store, client, budget, T0 + i / 200)


def run(settings, body):
    """Run `body(client)` on a fresh store client; returns (its result, store calls made)."""

    async def go():
        client = DynamoHttp(settings)
        try:
            return await body(client), client.calls
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_steady_process_pools_and_stays_exact_to_the_cap(settings):
    cap = 600 * W
    budget = Budget("workspace", scope_value(), monthly_micros=cap)
    store = BudgetStore(settings)

    async def body(client):
        results = []
        for i in range(620):  # 200 a second: 600 fit, then 20 do not
            results.append(await request(store, client, budget, T0 + i / 200))
        await store.release_pools(client)
        return results

    results, calls = run(settings, body)
    admitted = [r for r in results if isinstance(r, Reservation)]
    assert len(admitted) == 600 and all(isinstance(r, Refused) for r in results[600:])
    assert results[600].committed == cap  # refused only once the cap was spent, not held by a pool
    pooled = [r for r in admitted if r.pool]
    # The first second reserves one at a time (no steady rate yet); then pools of up to 32 requests,
    # shrinking to 1/8 of what is left, and the last few requests alone again.
    assert len(pooled) > 300 and len({r.pool for r in pooled}) < 40
    assert store.pool_writes <= 2 * len({r.pool for r in pooled}) + 2
    # 600 settlements + 20 refusals + the reservations made alone + pool claims and releases.
    assert calls == 600 + 20 + (len(admitted) - len(pooled)) + store.pool_writes
    state = counter(settings, budget)
    assert state["spent"] == state["committed"] == cap and state["reserved"] == 0 and state["requests"] == 600
    assert not any(k.startswith(("l_", "s_")) for k in BudgetStore(settings).counter(WS, budget.scope, MONTH))


def test_processes_sharing_a_budget_never_exceed_it_and_leave_nothing_held(settings):
    cap = 500 * W
    budget = Budget("workspace", scope_value(), monthly_micros=cap)
    a, b = BudgetStore(settings), BudgetStore(settings)
    rng = random.Random(11)

    async def body(client):
        admitted = {id(a): 0, id(b): 0}
        for i in range(700):  # 2 x 200 a second, interleaved at random: 500 fit
            store = a if rng.random() < 0.5 else b
            if isinstance(await request(store, client, budget, T0 + i / 400), Reservation):
                admitted[id(store)] += 1
        held = counter(settings, budget)["reserved"]
        await a.release_pools(client)
        await b.release_pools(client)
        # What was held for the other process's pool is free again: a process without pools takes it.
        late = 0
        for i in range(600):
            if not isinstance(await request(BudgetStore(settings), client, budget, T0 + 10 + i), Reservation):
                break
            late += 1
        return admitted, held, late

    (admitted, held, late), _ = run(settings, body)
    total = sum(admitted.values())
    assert total + late == 500  # never more than the cap; and after release, every unit is usable again
    assert held <= cap // pools.SHARE and late * W <= held + W  # the only loss: what a pool held
    assert min(admitted.values()) > 150 and a.pool_writes and b.pool_writes
    state = counter(settings, budget)
    assert state["spent"] == state["committed"] == cap and state["reserved"] == 0


def test_concurrent_requests_share_one_claim(settings):
    budget = Budget("member", scope_value(), monthly_micros=10**9, daily_micros=10**8)
    store = BudgetStore(settings)

    async def body(client):
        await steady(store, client, budget)
        await store.release_pools(client)
        before, writes = client.calls, store.pool_writes
        rids = [f"c{i}x{time.time_ns()}" for i in range(30)]
        now = T0 + 1.0
        reservations = await asyncio.gather(*(store.reserve(client, WS, budget, MONTH, DAY, rid, W, LEASE_S, now)
                                              for rid in rids))
        claims = client.calls - before
        await asyncio.gather(*(store.settle(client, WS, r, rid, 700, now=now)
                               for r, rid in zip(reservations, rids, strict=True)))
        mid = counter(settings, budget)
        # Settlements are fenced by the pool's count, not by a marker each: the item does not grow.
        assert not [k for k in BudgetStore(settings).counter(WS, budget.scope, MONTH) if k.startswith("s_")]
        await store.release_pools(client)
        return reservations, claims, store.pool_writes - writes, mid

    (reservations, claims, writes, mid), _ = run(settings, body)
    assert all(isinstance(r, Reservation) and r.pool for r in reservations)
    assert claims == 1 and len({r.pool for r in reservations}) == 1 and writes == 2  # one claim, one release
    assert mid["reserved"] == pools.MAX_CARVES * W  # the pool holds W x 32 until it is released
    state = counter(settings, budget)
    assert state["spent"] == state["committed"] == 200 * W + 30 * 700 and state["reserved"] == 0
    assert state[f"ds_{DAY}"] == state[f"dc_{DAY}"] == state["spent"]


def test_no_pool_forms_near_a_threshold_so_throttle_decisions_stay_exact(settings):
    cap = 1_000 * W
    budget = Budget("feature", scope_value(), monthly_micros=cap, throttle_at=50, throttle_rpm=10**6,
                    on_exhaust="throttle")
    store = BudgetStore(settings)

    async def body(client):
        out = []
        for i in range(700):
            out.append(await request(store, client, budget, T0 + i / 200, count_minute=True))
        await store.release_pools(client)
        return out

    results, _ = run(settings, body)
    assert all(isinstance(r, Reservation) for r in results)
    due = [policy.throttle_due(budget, r.state, W, DAY) for r in results]
    # Each request settles before the next: the one that finds 50 % spent is the first in the stage.
    assert due.index(True) == 500 and all(due[500:]) and not any(due[:500])
    assert any(r.pool for r in results[:500]) and not any(r.pool for r in results[500:])
    # Every pooled request's view is below the threshold by the pool's own condition.
    assert all(int(r.state["committed"]) * 100 < 50 * cap for r in results if r.pool)
    # The minute's count holds every request of the minute (a pool claims its requests' places).
    tn = {int(r.state["tn"]) for r in results}
    assert len(tn) == 700 and max(tn) >= 700
    assert counter(settings, budget)["tn"] >= 700


def test_pooled_settlements_apply_exactly_once(settings, monkeypatch):
    budget = Budget("workspace", scope_value(), monthly_micros=10**9)
    store = BudgetStore(settings)
    settle = budget_settler(settings)

    async def warm_and_carve(client):
        await steady(store, client, budget)
        got = []
        for n in range(3):
            rid = f"once{n}x{time.time_ns()}"
            got.append((rid, await store.reserve(client, WS, budget, MONTH, DAY, rid, W, LEASE_S, T0 + 1.0)))
        return got

    carved, _ = run(settings, warm_and_carve)
    assert all(r.pool for _, r in carved) and len({r.pool for _, r in carved}) == 1
    spent0 = counter(settings, budget)["spent"]
    (rid0, r0), (rid1, r1), (rid2, r2) = carved

    async def settle_twice(client):
        together = await asyncio.gather(store.settle(client, WS, r0, rid0, 300, now=T0 + 1),
                                        store.settle(client, WS, r0, rid0, 300, now=T0 + 1))  # a repeated call
        again = await store.settle(client, WS, r0, rid0, 300, now=T0 + 1)  # and once more, after
        return together, again

    (together, again), _ = run(settings, settle_twice)
    # The process knows the request's settlement began: one write, the other calls write nothing.
    assert sorted(int(s.get("spent", 0)) for s in together) == [0, spent0 + 300] and again == {}
    assert counter(settings, budget)["spent"] == spent0 + 300

    # A settlement that failed in the gateway is replayed from its log line (the pool named): once.
    line = {"workspace": WS, "scope": budget.scope, "month": MONTH, "day": DAY, "request_id": rid1, "worst": W,
            "actual": 400, "lease_expires": r1.lease_expires, "pool": r1.pool}
    assert settle(line) is True and settle(line) is False
    assert counter(settings, budget)["spent"] == spent0 + 700
    # The pool's lease expires (its process froze): the sweeper releases all it held, the markers stay,
    # so a replay after that still adds nothing twice, and a request never settled is added once.
    assert sweep_expired_leases(settings, now=r1.lease_expires + 1) == 1
    assert settle(line) is False
    assert r2.pool == r1.pool and settle({**line, "request_id": rid2, "actual": 250}) is True
    assert settle({**line, "request_id": rid2, "actual": 250}) is False
    state = counter(settings, budget)
    assert state["spent"] == spent0 + 950 and state["reserved"] == 0 and state["committed"] == state["spent"]


def test_a_zero_cost_request_writes_nothing_and_an_idle_pool_is_released_after_its_window(settings):
    budget = Budget("workspace", scope_value(), monthly_micros=10**9)
    store = BudgetStore(settings)

    async def body(client):
        await steady(store, client, budget)
        calls = client.calls
        refused_elsewhere = await request(store, client, budget, T0 + 1.0, actual=0)  # carve, settle 0
        zero_cost_calls = client.calls - calls
        held = counter(settings, budget)["reserved"]
        # No more traffic: the pool's window ends and its timer releases it (awaited generously: a loaded
        # machine may take a while to answer the release).
        deadline = time.monotonic() + 60
        await asyncio.sleep(pools.WINDOW_S)
        while counter(settings, budget)["reserved"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return refused_elsewhere, zero_cost_calls, held

    (result, zero_cost_calls, held), _ = run(settings, body)
    assert result.pool and zero_cost_calls == 1  # the claim; the zero-cost settlement wrote nothing
    assert held == pools.MAX_CARVES * W
    state = counter(settings, budget)
    assert state["reserved"] == 0 and state["committed"] == state["spent"] == 200 * W


def test_without_steady_traffic_every_request_reserves_alone(settings):
    budget = Budget("workspace", scope_value(), monthly_micros=10**9)
    store = BudgetStore(settings)

    async def body(client):
        frozen = [await request(store, client, budget, T0) for _ in range(300)]  # a test's frozen clock
        slow = [await request(store, client, budget, T0 + 5 + i) for i in range(5)]  # one a second
        return frozen + slow

    results, calls = run(settings, body)
    assert not any(r.pool for r in results) and store.pool_writes == 0 and calls == 2 * 305


def test_a_process_with_a_stale_view_claims_only_what_fits(settings):
    cap = 400 * W
    budget = Budget("workspace", scope_value(), monthly_micros=cap)
    a, b = BudgetStore(settings), BudgetStore(settings)

    async def body(client):
        await steady(a, client, budget)  # a holds a steady rate, and last saw the budget nearly empty
        await a.release_pools(client)
        for _ in range(190):  # b (no steady rate: its clock stands still) spends most of what was left
            await request(b, client, budget, T0 + 1)
        # a's next pool would be 32 x W on its stale view: only 10 x W is left. Nothing over the cap.
        return [await request(a, client, budget, T0 + 1 + i / 200) for i in range(20)]

    results, _ = run(settings, body)
    assert [isinstance(r, Reservation) for r in results] == [True] * 10 + [False] * 10
    state = counter(settings, budget)
    assert state["spent"] == state["committed"] == cap and state["reserved"] == 0


def test_carves_never_exceed_what_the_pool_holds(settings):
    budget = Budget("workspace", scope_value(), monthly_micros=10**9)
    store = BudgetStore(settings)

    async def body(client):
        await steady(store, client, budget)
        assert (await request(store, client, budget, T0 + 1.0)).pool  # claims a pool of 32 x W
        rids = [f"big{i}x{time.time_ns()}" for i in range(20)]
        # Requests four times as dear as the one that claimed the pool, in flight together: 8 fit in it.
        reservations = await asyncio.gather(*(store.reserve(client, WS, budget, MONTH, DAY, rid, 4 * W, LEASE_S,
                                                            T0 + 1.0) for rid in rids))
        held = counter(settings, budget)
        await asyncio.gather(*(store.settle(client, WS, r, rid, 4 * W, now=T0 + 1)
                               for r, rid in zip(reservations, rids, strict=True)))
        await store.release_pools(client)
        return reservations, held

    (reservations, held), _ = run(settings, body)
    assert all(isinstance(r, Reservation) for r in reservations)
    # Every in-flight request's worst case is reserved on the counter (in a pool or under its own lease).
    assert held["committed"] - held["spent"] >= 20 * 4 * W
    state = counter(settings, budget)
    assert state["spent"] == state["committed"] == 201 * W + 80 * W and state["reserved"] == 0


def test_through_the_gateway_pools_keep_every_budget_exact(gateway, settings, fake_openai, monkeypatch):
    """The official SDK, one request at a time through uvicorn, the enforcement stage's clock moved 10 ms
    per request (a steady 100 a second, whatever this machine's speed), 3 budgets (one with a daily cap,
    one with a throttle stage): after the first second the reservations are carved from pools, far
    fewer writes than requests; every budget's spend equals its requests' ledger costs; and once the
    pools' window is over, nothing stays reserved or marked on any counter."""
    import openai

    from meterline.gateway import enforcement
    from meterline.store.workspaces import WorkspaceStore
    from tests.conftest import ledger_items, make_tenant, wait_for_ledger

    now = {"t": (time.time() // 600) * 600 + 1}
    monkeypatch.setattr(enforcement, "clock", lambda: now["t"])
    t = make_tenant(settings, fake_openai[1], member="alice")
    store = BudgetStore(settings)
    store.put_limit(t.workspace, RateLimit("key", t.key_id, rpm=10**6))
    budgets = [Budget("workspace", t.workspace, monthly_micros=10**9),
               Budget("member", "alice", monthly_micros=10**9, daily_micros=10**8),
               Budget("feature", "chat", monthly_micros=10**9, throttle_at=95, throttle_rpm=10**6,
                      on_exhaust="throttle")]
    for budget in budgets:
        store.put_budget(t.workspace, budget)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0,
                        default_headers={"meterline-feature": "chat"})
    n = 300
    for _ in range(n):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
        now["t"] += 0.01
    wait_for_ledger(settings, t.workspace, n, timeout=60)
    spent = sum(int(r["cost_micros"]) for r in ledger_items(settings, t.workspace))
    writes = gateway.services.budgets.alone_writes + gateway.services.budgets.pool_writes
    # 3 x 100 reservations alone in the first second, then pools of up to 32: far fewer than 3 a request.
    assert gateway.services.budgets.pool_writes > 0 and writes < 3 * n // 2
    month = datetime.now(ZoneInfo(WorkspaceStore(settings).load(t.workspace).timezone)).strftime("%Y-%m")
    deadline = time.monotonic() + 60  # the last pools' window ends: their timers release them
    while any(int(store.counter(t.workspace, b.scope, month).get("reserved", 0)) for b in budgets):
        assert time.monotonic() < deadline, "a pool was never released"
        time.sleep(0.1)
    for budget in budgets:
        item = store.counter(t.workspace, budget.scope, month)
        assert int(item["spent"]) == int(item["committed"]) == spent and int(item["reserved"]) == 0, budget.scope
        assert int(item["requests"]) == n and not [k for k in item if k.startswith(("l_", "s_"))], budget.scope


def test_concurrent_settlements_of_a_budget_go_out_together_exactly_once(settings):
    budget = Budget("workspace", scope_value(), monthly_micros=10**9)
    store = BudgetStore(settings)

    async def body(client):
        await steady(store, client, budget)
        base = counter(settings, budget)["spent"]
        rids = [f"tog{i}x{time.time_ns()}" for i in range(30)]
        reservations = await asyncio.gather(*(store.reserve(client, WS, budget, MONTH, DAY, rid, W, LEASE_S, T0 + 1)
                                              for rid in rids))
        actuals = [100 + i for i in range(30)]
        calls = client.calls
        states = await asyncio.gather(*(store.settle(client, WS, r, rid, a, now=T0 + 1)
                                        for r, rid, a in zip(reservations, rids, actuals, strict=True)))
        settle_calls = client.calls - calls
        # Settled again, all at once (retries, or a replay racing the gateway): nothing is added twice.
        again = await asyncio.gather(*(store.settle(client, WS, r, rid, a, now=T0 + 1)
                                       for r, rid, a in zip(reservations, rids, actuals, strict=True)))
        await store.release_pools(client)
        return base, actuals, states, settle_calls, again

    (base, actuals, states, settle_calls, again), _ = run(settings, body)
    assert settle_calls <= 5  # the first alone, then the rest in a batch or two (never one write each)
    total = base + sum(actuals)
    state = counter(settings, budget)
    assert state["spent"] == state["committed"] == total and state["reserved"] == 0 and state["requests"] == 230
    # Each settlement sees the counter as its own left it: spent values split the batch's total exactly,
    # so an alert threshold crossed inside a batch is found by exactly one request.
    seen = sorted(int(s["spent"]) for s in states)
    assert seen[-1] == total and len(set(seen)) == 30
    ordered = sorted(zip([int(s["spent"]) for s in states], actuals, strict=True))
    assert all(prev + a == cur for (prev, _), (cur, a) in itertools.pairwise(ordered))
    assert again == [{}] * 30  # each request's settlement had begun: the repeated calls wrote nothing


def test_through_the_gateway_a_throttle_stage_starts_exactly_at_its_threshold_after_pools(
        gateway, settings, fake_openai, monkeypatch):
    """A budget with `--throttle-at 50 --throttle-rpm 3`, the openai SDK one request at a time, the clock
    moved 10 ms per request: pools carry the first part of the ramp, none forms near the threshold, so
    the first request throttled is exactly the first that finds 50 % spent (200 requests of 525), and
    the next minute passes exactly 3."""
    import openai

    from meterline.gateway import enforcement
    from meterline.store.workspaces import WorkspaceStore
    from tests.conftest import make_tenant

    fake, url = fake_openai
    fake.prompt_tokens, fake.cached_tokens, fake.completion_tokens, fake.reasoning_tokens = 10, 0, 50, 0
    now = {"t": (time.time() // 600) * 600 + 1}
    monkeypatch.setattr(enforcement, "clock", lambda: now["t"])
    t = make_tenant(settings, url)
    store = BudgetStore(settings)
    store.put_limit(t.workspace, RateLimit("key", t.key_id, rpm=10**6))
    budget = Budget("workspace", t.workspace, monthly_micros=400 * 525, throttle_at=50, throttle_rpm=3,
                    on_exhaust="throttle")
    store.put_budget(t.workspace, budget)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}
    passed = 0
    while True:
        try:
            sdk.chat.completions.create(**body)
        except openai.RateLimitError as err:
            assert err.code == "budget_throttled"
            break
        passed += 1
        now["t"] += 0.01
        assert passed <= 260, "never throttled"
    month = datetime.now(ZoneInfo(WorkspaceStore(settings).load(t.workspace).timezone)).strftime("%Y-%m")
    assert passed == 200 and int(store.counter(t.workspace, budget.scope, month)["spent"]) == 200 * 525
    assert gateway.services.budgets.pool_writes > 0
    now["t"] += 60  # the next minute: exactly throttle_rpm pass
    for _ in range(3):
        sdk.chat.completions.create(**body)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(**body)
