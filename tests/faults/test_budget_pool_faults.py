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


def test_a_pool_claim_applied_after_the_client_gave_up_is_cancelled(settings, slow_store):
    proxy, url = slow_store
    faulty = replace(settings, aws_endpoint=url, store_attempt_timeout_s=1.0, store_deadline_s=1.5)
    budget = Budget("workspace", f"b{time.time_ns()}", monthly_micros=10**9)
    store = BudgetStore(faulty)

    async def body():
        client = DynamoHttp(faulty)
        try:
            for i in range(200):  # a steady 200 a second: the next reservation claims a pool
                rid = f"w{i}x{time.time_ns()}"
                r = await store.reserve(client, WS, budget, MONTH, DAY, rid, W, 900, T0 + i / 200)
                assert isinstance(r, Reservation) and not r.pool
                await store.settle(client, WS, r, rid, W, now=T0 + i / 200)
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
