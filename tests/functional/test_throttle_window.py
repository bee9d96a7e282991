"""A throttled budget's minute window lives on its counter and is counted by the reservation's own
write (BudgetStore.reserve count_minute): no write of its own, exact ordinals across processes,
minutes and clocks that disagree, and cap refusals that stay refusals."""

from __future__ import annotations

import asyncio
import time

from meterline.budgets.model import Budget
from meterline.store.budgets import BudgetStore, Refused, Reservation
from meterline.store.ddb_http import DynamoHttp

MONTH, DAY = "2026-12", "2026-12-02"
T0 = 1_796_000_000 - 1_796_000_000 % 60  # the start of a minute


def run(settings, *steps):
    """Each step: (store, budget, request id, worst, now) -> the reservation's outcome, in order."""

    async def go():
        client = DynamoHttp(settings)
        try:
            return [await store.reserve(client, "ws_tw", budget, MONTH, DAY, rid, worst, 900, now, count_minute=True)
                    for store, budget, rid, worst, now in steps]
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_ordinals_count_every_reservation_of_the_minute_across_processes_and_restart_each_minute(settings):
    budget = Budget("feature", f"tw-{time.time_ns()}", monthly_micros=10**9, throttle_at=50, throttle_rpm=5)
    a, b = BudgetStore(settings), BudgetStore(settings)  # two gateway processes, each with its own guesses
    steps = [(s, budget, f"req_{i}", 100, T0 + i) for i, s in enumerate([a, b, a, a, b, b])]
    steps += [(s, budget, f"req_n{i}", 100, T0 + 60 + i) for i, s in enumerate([b, a, a])]  # the next minute
    steps += [(a, budget, "req_later", 100, T0 + 600)]  # minutes with no request in between
    outcomes = run(settings, *steps)
    assert all(isinstance(o, Reservation) for o in outcomes)
    assert [int(o.state["tn"]) for o in outcomes] == [1, 2, 3, 4, 5, 6, 1, 2, 3, 1]
    counter = a.counter("ws_tw", budget.scope, MONTH)
    assert (int(counter["tm"]), int(counter["tn"])) == ((T0 + 600) // 60, 1)
    assert int(counter["requests"]) == len(steps) and int(counter["reserved"]) == 100 * len(steps)


def test_a_clock_behind_the_counters_window_counts_into_that_window(settings):
    budget = Budget("feature", f"tw-{time.time_ns()}", monthly_micros=10**9, throttle_at=50, throttle_rpm=5)
    ahead, behind = BudgetStore(settings), BudgetStore(settings)
    outcomes = run(settings, (ahead, budget, "req_1", 10, T0 + 60), (behind, budget, "req_2", 10, T0 + 59.9),
                   (behind, budget, "req_3", 10, T0 + 59.95))
    assert [int(o.state["tn"]) for o in outcomes] == [1, 2, 3]  # never a reset back to the older minute


def test_a_cap_refusal_is_a_refusal_whatever_the_window_and_uncounted(settings):
    budget = Budget("feature", f"tw-{time.time_ns()}", monthly_micros=1_000, throttle_at=50, throttle_rpm=5)
    store = BudgetStore(settings)
    first, refused, next_minute = run(settings, (store, budget, "req_1", 900, T0), (store, budget, "req_2", 900, T0),
                                      (store, budget, "req_3", 900, T0 + 60))
    assert isinstance(first, Reservation) and int(first.state["tn"]) == 1
    assert isinstance(refused, Refused) and refused.committed == 900  # refused by the cap, in the same minute
    assert isinstance(next_minute, Refused)  # and with a stale window guess: still the cap, not a loop
    counter = store.counter("ws_tw", budget.scope, MONTH)
    assert (int(counter["tm"]), int(counter["tn"])) == (T0 // 60, 1)


def test_through_the_gateway_the_window_is_on_the_counter_and_nowhere_else(gateway, settings, fake_openai):
    """Two budgets, one with a throttle stage: 6 requests count 6 in its counter's window, the other
    counter keeps no window, and no per-minute item of its own is written."""
    from tests.conftest import make_tenant
    from tests.functional.test_budgets import fire, month_of, no_rate_limit

    t = make_tenant(settings, fake_openai[1])
    no_rate_limit(settings, t.workspace)
    store = BudgetStore(settings)
    store.put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=10**9))
    store.put_budget(t.workspace, Budget("key", t.key_id, monthly_micros=10**9, throttle_at=90, throttle_rpm=100))
    minute = int(time.time() // 60)
    assert [r.status_code for r in fire(gateway, t.api_key, 6)] == [200] * 6
    month = month_of(settings, t.workspace)
    deadline = time.monotonic() + 10
    while int(store.counter(t.workspace, f"key:{t.key_id}", month).get("reserved", 1)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the last settlements land with the ledger writes
    throttled = store.counter(t.workspace, f"key:{t.key_id}", month)
    # All six in the window, unless the burst straddled a minute (then the later minute holds the rest).
    assert int(throttled["tn"]) == 6 if int(throttled["tm"]) == minute else 1 <= int(throttled["tn"]) < 6
    assert "tm" not in store.counter(t.workspace, f"workspace:{t.workspace}", month)
    for scope in (f"key:{t.key_id}", f"workspace:{t.workspace}"):
        items = store._ddb.query(TableName=store.table, KeyConditionExpression="pk = :pk",
                                 ExpressionAttributeValues={":pk": {"S": f"{t.workspace}#budget#{scope}"}})["Items"]
        assert [i["sk"]["S"] for i in items] == [f"M#{month}"]
