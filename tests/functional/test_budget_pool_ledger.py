"""A request carved from a budget pool settles through its ledger record (store/budgets.py `defer`):
the record names the pool and the request's cost, and the pool adds what its requests owe in its
release write - or, when its process crashed or froze, the sweeper adds it from the ledger. Checked
on the real store with times passed in: either way each cost is added exactly once (a request whose
record's write failed is added on its own, and the sweeper skips it even when the failed write did
land), the alert thresholds crossed are recorded once, and a request that could not be found in the
range the sweeper reads (or that ends too close to its pool's expiry) settles with its own write."""

from __future__ import annotations

import json
import time

import pytest

from meterline.budgets import pool as pools
from meterline.budgets.alerts import sweep_expired_leases
from meterline.budgets.model import Budget
from meterline.replay import MESSAGE, record_of
from meterline.store.budgets import BudgetStore, Reservation
from meterline.store.ddb_http import DynamoHttp
from meterline.store.ledger import POOLS_FIELD, LedgerStore
from tests.functional.test_budget_pools import DAY, LEASE_S, MONTH, T0, WS, W, counter, run, scope_value, steady


def leases_and_markers(settings, budget: Budget) -> tuple[list[str], list[str]]:
    item = BudgetStore(settings).counter(WS, budget.scope, MONTH)
    return [k for k in item if k.startswith("l_")], [k for k in item if k.startswith("s_")]


def alerts_of(settings, budget: Budget) -> list[dict]:
    return [a for a in BudgetStore(settings).pending_alerts() if a["sk"].startswith(f"{WS}#{budget.scope}#")]


async def carve(store: BudgetStore, client: DynamoHttp, budget: Budget, n: int) -> list[tuple[str, Reservation]]:
    out = []
    for i in range(n):
        rid = f"d{i}x{time.time_ns()}"
        r = await store.reserve(client, WS, budget, MONTH, DAY, rid, W, LEASE_S, T0 + 1)
        assert isinstance(r, Reservation) and r.pool
        out.append((rid, r))
    return out


@pytest.mark.parametrize("end", ["released", "crashed"])
def test_costs_owed_through_the_ledger_are_added_once_by_the_release_or_the_sweeper(settings, end):
    # 200 requests of W spent: 50 % is crossed only by the costs the pool owes.
    budget = Budget("workspace", scope_value(), monthly_micros=410_000, alerts=(50, 90))
    store = BudgetStore(settings)
    store.put_budget(WS, budget)  # the sweeper finds its alert thresholds
    ledger = LedgerStore(settings)
    costs = [500 + 10 * i for i in range(10)] + [0]
    failed = 3  # this request's ledger write fails (although it landed): it is added on its own

    async def body(client):
        await steady(store, client, budget)
        carved = await carve(store, client, budget, len(costs))
        assert len({r.pool for _, r in carved}) == 1
        for i, ((rid, r), cost) in enumerate(zip(carved, costs, strict=True)):
            ts = int(time.time() * 1000)
            assert store.defer(r, rid, cost, ts, T0 + 1)
            if cost:  # the record the gateway writes: it names the pool and the cost
                ledger.put({"workspace": WS, "ts": ts, "request_id": rid, "cost_micros": cost,
                            POOLS_FIELD: {r.pool: cost}})
                await store.ledgered(client, WS, r, rid, i != failed)
        before = counter(settings, budget)
        if end == "released":
            stale = BudgetStore(settings).counter(WS, budget.scope, MONTH)  # a sweeper's view of the pool
            await store.release_pools(client)
            # The sweeper folding the pool after its process released it (a race): its write is
            # conditional on the lease, so it adds nothing.
            lease = "l_" + carved[0][1].pool
            assert await BudgetStore(settings).fold_pool(client, ledger, WS, budget.scope, MONTH, lease, stale[lease],
                                                         stale, budget) == 0
        return carved[0][1], before  # crashed: the process ends holding its pool

    (reservation, before), _ = run(settings, body)
    assert before["spent"] == 200 * W + costs[failed]  # only the failed one was written before the end
    assert before["reserved"] == pools.MAX_CARVES * W and before["committed"] == before["spent"] + before["reserved"]
    if end == "crashed":
        assert leases_and_markers(settings, budget)[0] == ["l_" + reservation.pool]
        assert sweep_expired_leases(settings, now=reservation.lease_expires - 1) == 0  # not expired yet
        assert sweep_expired_leases(settings, now=reservation.lease_expires + 1) == 1
    total = 200 * W + sum(costs)
    state = counter(settings, budget)
    assert state["spent"] == state["committed"] == total and state["reserved"] == 0
    assert state["requests"] == 200 + 10 and state[f"ds_{DAY}"] == state[f"dc_{DAY}"] == total
    leases, markers = leases_and_markers(settings, budget)
    # The release removes the failed request's marker with the lease; the sweeper leaves it.
    assert leases == [] and len(markers) == (1 if end == "crashed" else 0)
    [alert] = alerts_of(settings, budget)  # 50 % crossed by the fold, once; 90 % not reached
    assert alert["sk"].endswith(f"#M#{MONTH}#50") and int(alert["spent"]) == total
    # Swept again later: nothing more is added.
    sweep_expired_leases(settings, now=reservation.lease_expires + 3600)
    assert counter(settings, budget) == state


def test_a_request_outside_what_the_sweeper_reads_settles_with_its_own_write(settings):
    budget = Budget("workspace", scope_value(), monthly_micros=10**9)
    store = BudgetStore(settings)

    async def body(client):
        await steady(store, client, budget)
        (late, r1), (early, r2), (ok, r3) = await carve(store, client, budget, 3)
        pool = store._pools[r1.pool]
        now_ms = int(time.time() * 1000)
        # Too close to its pool's expiry (the sweeper may fold the pool before its record lands), or its
        # record's time outside the range the sweeper reads: settled with a write of its own.
        assert not store.defer(r1, late, 700, now_ms, pool.expires - pools.DEFER_MARGIN_S)
        assert not store.defer(r2, early, 800, pool.claimed_ms - pools.LEDGER_BEFORE_MS - 1, T0 + 1)
        assert store.defer(r3, ok, 900, pool.claimed_ms - pools.LEDGER_BEFORE_MS, T0 + 1)
        writes = store.settle_writes
        await store.settle(client, WS, r1, late, 700, now=T0 + 1)
        await store.settle(client, WS, r2, early, 800, now=T0 + 1)
        assert store.settle_writes == writes + 2
        await store.ledgered(client, WS, r3, ok, True)
        await store.release_pools(client)

    run(settings, body)
    state = counter(settings, budget)
    assert state["spent"] == state["committed"] == 200 * W + 700 + 800 + 900 and state["reserved"] == 0
    assert leases_and_markers(settings, budget) == ([], [])


def test_a_replayed_record_never_names_a_budget_pool():
    """The gateway logs a failed record without the pools it names and adds their costs itself; a line
    that still carries them (an older gateway, a hand-made line) is replayed without them, so a pool's
    sweeper fold never counts a cost the gateway added."""
    record = {"request_id": "r1", "workspace": "ws_a", "ts": 1_796_000_000_000, "cost_micros": 5,
              POOLS_FIELD: {"pabc": 5}}
    replayed = record_of(json.dumps({"message": MESSAGE, "ledger_record": record}))
    assert replayed == {k: v for k, v in record.items() if k != POOLS_FIELD}


def test_a_month_of_traffic_keeps_the_counter_within_one_write_unit(settings):
    """Every reservation and pool claim removes the day figures of 2 and 3 days before: a month of daily
    traffic leaves at most the last 2 days' on the counter (it used to keep all of them, and passed 1 KB,
    two write units a write, by the month's second half)."""
    budget = Budget("member", scope_value(), monthly_micros=10**12, daily_micros=10**10)
    store = BudgetStore(settings)

    async def body(client):
        for d in range(1, 31):
            day = f"2026-11-{d:02d}"
            for i in range(3):  # a few requests a day, alone (no steady rate)
                rid = f"m{d}x{i}x{time.time_ns()}"
                r = await store.reserve(client, WS, budget, "2026-11", day, rid, W, LEASE_S, T0 + d * 86400 + i * 60)
                assert isinstance(r, Reservation)
                await store.settle(client, WS, r, rid, W // 2, now=T0 + d * 86400 + i * 60)

    run(settings, body)
    item = BudgetStore(settings).counter(WS, budget.scope, "2026-11")
    days = sorted(k for k in item if k.startswith(("dc_", "ds_")))
    assert days == ["dc_2026-11-29", "dc_2026-11-30", "ds_2026-11-29", "ds_2026-11-30"]
    assert int(item["spent"]) == 30 * 3 * (W // 2) and int(item["ds_2026-11-30"]) == 3 * (W // 2)
    assert int(item["committed"]) == int(item["spent"]) and int(item["reserved"]) == 0
