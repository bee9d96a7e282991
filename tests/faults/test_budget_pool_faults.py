"""A budget pool's claim that the store applies after the client gave up is cancelled like a
reservation: the request fails without being forwarded, and the late claim is refused by its
tombstone, so nothing stays held for a pool nobody carves from."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from meterline.budgets.model import Budget
from meterline.store.budgets import BudgetStore, Reservation
from meterline.store.ddb_http import DynamoError, DynamoHttp
from tests.fakes.slow_store import is_reserve

WS, MONTH, DAY, W = "ws_poolf", "2026-12", "2026-12-02", 1_000
T0 = 1_796_000_000 - 1_796_000_000 % 60 + 1


def world(settings, slow_store, attempt_s: float, deadline_s: float):
    """(the store proxy, settings through it with these deadlines, a fresh budget, a store)."""
    proxy, url = slow_store
    faulty = replace(settings, aws_endpoint=url, store_attempt_timeout_s=attempt_s, store_deadline_s=deadline_s)
    return proxy, faulty, Budget("workspace", f"b{time.time_ns()}", monthly_micros=10**9), BudgetStore(faulty)


def is_counted_settle(target: str, body: bytes) -> bool:
    """A pooled settlement fenced by its pool's count (BudgetStore._add_together)."""
    return target.endswith("UpdateItem") and b".n = :r0" in body


def _warm_and_carve(store: BudgetStore, client: DynamoHttp, budget: Budget, n: int) -> list:
    async def go():
        for i in range(200):
            rid = f"w{i}x{time.time_ns()}"
            r = await store.reserve(client, WS, budget, MONTH, DAY, rid, W, 900, T0 + i / 200)
            assert isinstance(r, Reservation) and not r.pool  # no steady rate yet: alone
            await store.settle(client, WS, r, rid, W, now=T0 + i / 200)
        out = []
        for i in range(n):
            rid = f"c{i}x{time.time_ns()}"
            out.append((rid, await store.reserve(client, WS, budget, MONTH, DAY, rid, W, 900, T0 + 1)))
        return out
    return go()


def test_a_pool_claim_applied_after_the_client_gave_up_is_cancelled(settings, slow_store):
    proxy, faulty, budget, store = world(settings, slow_store, 1.0, 1.5)

    async def body():
        client = DynamoHttp(faulty)
        try:
            assert await _warm_and_carve(store, client, budget, 0) == []  # the next reservation claims a pool
            proxy.rules.append((is_reserve, "apply"))  # the store holds the claim past the client's deadline
            with pytest.raises(DynamoError) as failed:
                await store.reserve(client, WS, budget, MONTH, DAY, f"late{time.time_ns()}", W, 900, T0 + 1)
            return failed.value
        finally:
            await client.aclose()

    error = asyncio.run(body())
    assert not error.maybe_applied  # the request's own reservation was never sent: nothing for it to cancel
    proxy.release.set()
    deadline = time.monotonic() + 30
    while proxy.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.pending == 0 and proxy.held >= 1  # the held claim has reached the store by now
    counter = BudgetStore(settings).counter(WS, budget.scope, MONTH)
    assert int(counter["reserved"]) == 0 and not [k for k in counter if k.startswith("l_")]
    assert int(counter["committed"]) == int(counter["spent"]) == 200 * W


def test_a_counted_settlement_whose_answer_was_lost_is_applied_once(settings, slow_store):
    proxy, faulty, budget, store = world(settings, slow_store, 1.0, 8.0)
    first = {"held": False}

    def first_counted(target: str, body: bytes) -> bool:  # hold the answer of one counted write only
        if is_counted_settle(target, body) and not first["held"]:
            first["held"] = True
            return True
        return False

    async def body():
        client = DynamoHttp(faulty)
        try:
            carved = await _warm_and_carve(store, client, budget, 2)
            (rid0, r0), (rid1, r1) = carved
            assert r0.pool and r1.pool == r0.pool
            proxy.rules.append((first_counted, "answer"))  # applied, its answer lost: the client retries
            state = await store.settle(client, WS, r0, rid0, 300, now=T0 + 1)
            later = await store.settle(client, WS, r1, rid1, 200, now=T0 + 1)  # the count goes on from there
            await store.release_pools(client)
            return state, later
        finally:
            proxy.release.set()
            await client.aclose()

    state, later = asyncio.run(body())
    assert first["held"] and int(later["spent"]) == int(state["spent"]) + 200
    counter = BudgetStore(settings).counter(WS, budget.scope, MONTH)
    assert int(counter["spent"]) == int(counter["committed"]) == 200 * W + 500 and int(counter["reserved"]) == 0


@pytest.mark.parametrize("mode", ["refuse", "answer"])
def test_a_failed_counted_settlement_is_replayed_once_whether_or_not_it_landed(settings, slow_store, mode):
    """`refuse`: the store never applied it; `answer`: it applied, and every answer was lost. Either way
    the gateway logs the settlement with the pool's count its write was fenced by, and the replay adds
    the cost only if that write did not land."""
    from meterline.replay import budget_settler

    proxy, faulty, budget, store = world(settings, slow_store, 0.5, 1.5)

    async def body():
        client = DynamoHttp(faulty)
        try:
            (rid, r), = await _warm_and_carve(store, client, budget, 1)
            proxy.rules.append((is_counted_settle, mode))
            with pytest.raises(DynamoError) as failed:
                await store.settle(client, WS, r, rid, 300, now=T0 + 1)
            return rid, r, failed.value
        finally:
            proxy.release.set()
            await client.aclose()

    rid, r, error = asyncio.run(body())
    deadline = time.monotonic() + 30
    while proxy.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    seq = error.pool_seqs[r.pool]
    line = {"workspace": WS, "scope": budget.scope, "month": MONTH, "day": DAY, "request_id": rid, "worst": W,
            "actual": 300, "lease_expires": r.lease_expires, "pool": r.pool, "pool_seq": seq}
    settle = budget_settler(settings)
    assert settle(line) is (mode == "refuse") and settle(line) is False
    assert int(BudgetStore(settings).counter(WS, budget.scope, MONTH)["spent"]) == 200 * W + 300
