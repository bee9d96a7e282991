"""A slow or paused store never leaves a reservation behind nor double-counts a rate window.

Each scenario ends with the invariants of the issue: one ledger record per request, no lease (and no
reservation) survives its request, spend <= cap."""

from __future__ import annotations

import time

import httpx

from meterline.budgets.model import Budget, RateLimit
from meterline.store.budgets import BudgetStore
from tests.conftest import make_tenant, wait_for_ledger
from tests.fakes.slow_store import is_reserve

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}


def _month() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m")


def _settled(settings, store, ws: str, scope: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        counter = BudgetStore(settings).counter(ws, scope, _month())
        if (store.pending == 0 and int(counter.get("reserved", 0)) == 0) or time.monotonic() > deadline:
            return counter
        time.sleep(0.05)


def _post(gateway, key: str) -> httpx.Response:
    with httpx.Client(timeout=30) as http:
        return http.post(gateway.base_url + "/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"})


def test_a_reserve_the_store_applies_after_the_client_gave_up_is_cancelled(start_gateway, settings, slow_store,
                                                                           fake_openai):
    store, url = slow_store
    gateway = start_gateway(aws_endpoint=url, store_attempt_timeout_s=5.0, store_deadline_s=6.0)
    t = make_tenant(settings, fake_openai[1])
    scope = f"workspace:{t.workspace}"
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=30_000))
    assert _post(gateway, t.api_key).status_code == 200  # warm the caches through the healthy store
    # The store holds every reservation: the client gives up after 6 s; then the store applies them.
    store.rules.append((is_reserve, "apply"))
    response = _post(gateway, t.api_key)
    store.release.set()
    assert response.status_code == 503 and response.json()["error"]["code"] == "budget_store_unavailable"
    assert response.headers["meterline-request-id"]
    counter = _settled(settings, store, t.workspace, scope)
    assert store.pending == 0  # every late reservation has reached the store by now
    assert int(counter["reserved"]) == 0 and not [k for k in counter if k.startswith("l_")]
    assert int(counter["committed"]) == int(counter["spent"])
    records = wait_for_ledger(settings, t.workspace, 2)
    assert [r["outcome"] for r in records] == ["ok", "rejected"]
    assert records[1]["enforcement"] == "unavailable" and records[1].get("cost_micros", 0) == 0


def test_a_reserve_applied_but_unanswered_is_released(start_gateway, settings, slow_store, fake_openai):
    store, url = slow_store
    gateway = start_gateway(aws_endpoint=url, store_attempt_timeout_s=5.0, store_deadline_s=6.0)
    t = make_tenant(settings, fake_openai[1])
    scope = f"workspace:{t.workspace}"
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=30_000))
    assert _post(gateway, t.api_key).status_code == 200
    store.rules.append((is_reserve, "answer"))  # applied at once, the answer held past the deadline
    assert _post(gateway, t.api_key).status_code == 503
    store.release.set()
    counter = _settled(settings, store, t.workspace, scope)
    assert int(counter["reserved"]) == 0 and not [k for k in counter if k.startswith("l_")]


def test_a_rate_window_is_counted_once_when_its_answer_is_late(start_gateway, settings, slow_store, fake_openai):
    store, url = slow_store
    gateway = start_gateway(aws_endpoint=url, store_attempt_timeout_s=5.0, store_deadline_s=6.0)
    t = make_tenant(settings, fake_openai[1])
    BudgetStore(settings).put_limit(t.workspace, RateLimit("key", t.key_id, rpm=1000))
    assert _post(gateway, t.api_key).status_code == 200
    store.rules.append((lambda target, body: b"#rl#" in body, "answer"))
    assert _post(gateway, t.api_key).status_code == 503
    store.rules.clear()
    store.release.set()
    time.sleep(0.1)
    deadline = time.monotonic() + 5
    while store.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    # Two requests counted, not 2 + retries of the late one.
    from meterline.store import aws
    from meterline.store.codec import from_item
    from meterline.store.schema import BUDGETS

    items = aws.client("dynamodb", settings).query(
        TableName=settings.table(BUDGETS), KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": f"{t.workspace}#rl#key:{t.key_id}"}})["Items"]
    assert sum(int(from_item(i)["n"]) for i in items if from_item(i)["sk"].startswith("m#")) == 2


def test_the_request_deadline_cuts_a_stream_after_writing_its_record(start_gateway, settings, fake_openai):
    fake, url = fake_openai
    gateway = start_gateway(request_deadline_s=1.5)
    fake.chunks, fake.chunk_delay_s = [f" w{i}" for i in range(200)], 0.05  # ~10 s of stream
    t = make_tenant(settings, url)
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=1_000_000))
    started = time.monotonic()
    with httpx.Client(timeout=30) as http, http.stream(
            "POST", gateway.base_url + "/chat/completions", headers={"authorization": f"Bearer {t.api_key}"},
            json={**BODY, "stream": True}) as response:
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if "request_deadline_exceeded" in line:
                # The record is durable before the client sees the end of the stream.
                from tests.conftest import ledger_items

                [record] = ledger_items(settings, t.workspace)
                break
    assert time.monotonic() - started < 8
    assert record["outcome"] == "upstream_timeout" and record["estimated"] is True and record["cost_micros"] > 0
    counter = BudgetStore(settings).counter(t.workspace, f"workspace:{t.workspace}", _month())
    assert int(counter["spent"]) == record["cost_micros"] and int(counter["reserved"]) == 0


def test_the_request_deadline_bounds_a_buffered_call(start_gateway, settings, fake_openai):
    fake, url = fake_openai
    gateway = start_gateway(request_deadline_s=1.0)
    fake.delay_before_headers_s = 5
    t = make_tenant(settings, url)
    started = time.monotonic()
    response = _post(gateway, t.api_key)
    assert response.status_code == 504 and response.json()["error"]["code"] == "request_deadline_exceeded"
    assert time.monotonic() - started < 4.5
    [record] = wait_for_ledger(settings, t.workspace, 1)
    assert record["outcome"] == "upstream_timeout"


def test_the_scheduled_handler_sweeps_expired_leases_and_tombstones(settings, monkeypatch):
    """The alerts Lambda handler itself (functions/alerts/handler.py), as EventBridge runs it."""
    import asyncio

    from meterline.store.ddb_http import DynamoHttp
    from tests.functional.test_admin_handler import load_handler

    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("METERLINE_ALERT_SENDER", "alerts@example.com")
    store = BudgetStore(settings)
    budget = Budget("workspace", "ws_sweep", monthly_micros=10_000)
    month, day = _month(), time.strftime("%Y-%m-%d", time.gmtime())

    async def crashed_and_cancelled() -> None:
        client = DynamoHttp(settings)
        try:
            await store.reserve(client, "ws_sweep", budget, month, day, "req_crashed", 900, 1, time.time() - 3600)
            assert await store.cancel(client, "ws_sweep", budget, month, day, "req_lost", 700, 1,
                                      time.time() - 3600) == "blocked"
        finally:
            await client.aclose()

    asyncio.run(crashed_and_cancelled())
    before = store.counter("ws_sweep", budget.scope, month)
    assert int(before["reserved"]) == 900 and "x_req_lost" in before
    result = load_handler("functions/alerts/handler.py", "alerts_handler_sweep").handler({}, None)
    assert result["leases_released"] >= 1
    after = store.counter("ws_sweep", budget.scope, month)
    assert int(after["reserved"]) == 0 and int(after["committed"]) == 0
    assert not [k for k in after if k.startswith(("l_", "x_"))] and int(after["tombstones"]) == 0
