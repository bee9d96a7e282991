"""The per-request store calls and write units `meterline cost-estimate` uses, counted through the
real gateway (uvicorn on loopback, the official openai SDK, moto), not assumed."""

from __future__ import annotations

import json
import math

import openai
import pytest

from meterline import costs
from meterline.budgets.model import Budget
from meterline.store.budgets import BudgetStore
from tests.conftest import ledger_items, wait_for_ledger


def _item_bytes(item: dict) -> int:
    """DynamoDB item size: attribute names + values (a close upper bound for the types we store)."""
    def size(value: dict) -> int:
        (kind, v), = value.items()
        if kind == "M":
            return 3 + sum(len(k.encode()) + size(x) for k, x in v.items())
        if kind == "L":
            return 3 + sum(1 + size(x) for x in v)
        return len(str(v).encode()) if kind != "N" else math.ceil(len(str(v)) / 2) + 1
    return sum(len(k.encode()) + size(v) for k, v in item.items())


@pytest.mark.parametrize("budgets", [0, 3])
def test_store_calls_and_write_units_per_request(gateway, tenant, settings, budgets, monkeypatch):
    from meterline.gateway import enforcement

    # A frozen enforcement clock: no process-level traffic rate, so no reservation pool (an on-demand
    # Lambda environment at an SDK's pace; pools only take fewer calls: test_budget_pools.py).
    frozen = enforcement.clock()
    monkeypatch.setattr(enforcement, "clock", lambda: frozen)
    if budgets:
        store = BudgetStore(settings)
        for budget in (Budget("workspace", tenant.workspace, monthly_micros=10**12),
                       Budget("member", "alice", monthly_micros=10**12, daily_micros=10**11),
                       Budget("feature", "search", monthly_micros=10**12)):
            store.put_budget(tenant.workspace, budget)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)

    def call() -> None:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"Meterline-Feature": "search", "Meterline-Customer": "acme"})

    call()  # warm: key, workspace and enforcement caches loaded
    wait_for_ledger(settings, tenant.workspace, 1)
    before = gateway.services.dynamo.calls
    n = 5
    for _ in range(n):
        call()
    wait_for_ledger(settings, tenant.workspace, n + 1)
    calls = (gateway.services.dynamo.calls - before) / n
    assert calls == costs.STORE_CALLS_BASE + budgets * costs.STORE_CALLS_PER_BUDGET

    from meterline.store import aws
    from meterline.store.schema import LEDGER

    raw = aws.client("dynamodb", settings).scan(TableName=settings.table(LEDGER))["Items"]
    ledger_kb = max(_item_bytes(item) for item in raw) / 1024
    assert math.ceil(ledger_kb) <= costs.WRITE_UNITS_LEDGER and ledger_kb <= costs.LEDGER_RECORD_KB
    assert len(ledger_items(settings, tenant.workspace)) == n + 1


def test_cost_estimate_cli(capsys):
    from meterline.cli.main import main

    main(["cost-estimate", "--requests-per-month", "1_000_000", "--stream-seconds", "2", "--memory", "256"])
    out = capsys.readouterr().out
    assert "gateway compute (Lambda GB-s)" in out and "per 1M requests" in out and "5 % fee" in out
    main(["cost-estimate", "--requests-per-month", "100000000", "--compute", "managed-instances", "--budgets", "3",
          "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["compute"] == "managed-instances" and report["budgets"] == 3
    assert report["per_million_usd"] == round(sum(report["lines"].values()) / 100, 2)
    for bad in (["--requests-per-month", "-5"], ["--requests-per-month", "10", "--stream-seconds", "nan"],
                ["--requests-per-month", "10", "--compute", "gpu"]):
        with pytest.raises(SystemExit):
            main(["cost-estimate", *bad])


def test_targets_hold_where_the_docs_claim_them():
    # On-demand, 2 s streams at 256 MB: under $15 per 1M requests (docs/DEPLOY.md table).
    assert costs.estimate(10_000_000, 2.0, memory_mb=256).per_million <= 15
    # Managed instances at sustained load (300M requests/month ~ 116 rps): under $5 per 1M.
    assert costs.estimate(300_000_000, 2.0, compute="managed-instances").per_million <= 5
    # The former per-record rollup transaction alone was 38 units: $23.75 per 1M.
    assert costs.ROLLUP_WRITE_UNITS * costs.PRICES["ddb_write_unit"] * 1e6 < 1.2


def test_budget_writes_per_request_under_sustained_load(gateway, tenant, settings, monkeypatch):
    """Managed instances serve sustained traffic, many requests per process: a budget's reservations come
    from pools and its settlements ride on the ledger record, so what `cost-estimate --compute
    managed-instances` counts per budget is the pools' claims and releases, counted here at a steady 100
    requests a second (the enforcement stage's clock moved 10 ms per request, whatever this machine's speed)."""
    from meterline.budgets.model import RateLimit
    from meterline.gateway import enforcement

    now = {"t": (enforcement.clock() // 600) * 600 + 1}
    monkeypatch.setattr(enforcement, "clock", lambda: now["t"])
    store = BudgetStore(settings)
    store.put_limit(tenant.workspace, RateLimit("key", tenant.key_id, rpm=10**6))
    for budget in (Budget("workspace", tenant.workspace, monthly_micros=10**12),
                   Budget("member", "alice", monthly_micros=10**12, daily_micros=10**11),
                   Budget("feature", "search", monthly_micros=10**12)):
        store.put_budget(tenant.workspace, budget)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    budgets = gateway.services.budgets

    def writes() -> int:
        return budgets.alone_writes + budgets.pool_writes + budgets.settle_writes

    def calls(n: int) -> None:
        for _ in range(n):
            sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                        extra_headers={"Meterline-Feature": "search"})
            now["t"] += 0.01

    calls(150)  # the first second: reservations alone (no steady rate seen yet)
    before = writes()
    n = 300
    calls(n)
    per_budget = (writes() - before) / n / 3
    print(f"budget writes per request per budget under sustained load: {per_budget:.3f}")
    assert 0 < per_budget <= costs.WRITE_UNITS_PER_BUDGET_SUSTAINED
