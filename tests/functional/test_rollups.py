"""Ledger -> stream -> rollups: spend per scope and period, exactly once under redelivery."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import openai

from meterline.config import Settings
from meterline.rollup import StreamPoller
from meterline.store.rollups import MAX_VALUE_BYTES, RollupStore, bound_value
from tests.conftest import wait_for_ledger
from tests.oracle import openai_cost_micros

ROOT = Path(__file__).resolve().parents[2]


def test_spend_by_every_dimension_matches_the_ledger(gateway, tenant, settings):
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    for feature, customer in [("search", "acme"), ("search", "globex"), ("chat", "acme")]:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"Meterline-Feature": feature, "Meterline-Customer": customer})
    sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    records = wait_for_ledger(settings, tenant.workspace, 4)
    poller = StreamPoller(settings)
    assert poller.poll_once() >= 4

    day, month = f"D#{records[0]['day']}", f"M#{records[0]['month']}"
    store = RollupStore(settings)
    mini = openai_cost_micros("openai/gpt-4o-mini", 1200, 1024, 10)
    full = openai_cost_micros("openai/gpt-4o", 1200, 1024, 10)
    by_feature = {r["value"]: (r["cost_micros"], r["requests"])
                  for r in store.by_dimension(tenant.workspace, day, "feature")}
    assert by_feature == {"search": (2 * mini, 2), "chat": (mini, 1), "-": (full, 1)}
    by_customer = {r["value"]: r["cost_micros"] for r in store.by_dimension(tenant.workspace, month, "customer")}
    assert by_customer == {"acme": 2 * mini, "globex": mini, "-": full}
    [total] = store.by_dimension(tenant.workspace, month, "total")
    assert total["cost_micros"] == sum(r["cost_micros"] for r in records) == 3 * mini + full
    for dim, expected in [("member", {"alice"}), ("department", {"research"}), ("key", {tenant.key_id}),
                          ("model", {"openai/gpt-4o-mini", "openai/gpt-4o"}), ("provider", {"openai"})]:
        assert {r["value"] for r in store.by_dimension(tenant.workspace, day, dim)} == expected

    # A second consumer replaying the whole stream (at-least-once delivery) changes nothing.
    assert StreamPoller(settings).poll_once() >= 4
    [again] = store.by_dimension(tenant.workspace, month, "total")
    assert again["cost_micros"] == total["cost_micros"] and again["requests"] == 4


def load_handler(settings, monkeypatch):
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("rollup_handler", ROOT / "functions/rollup/handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image(request_id: str, cost: int = 7, **fields) -> dict:
    values = {"request_id": request_id, "workspace": "ws1", "day": "2026-11-22", "month": "2026-11",
              "cost_micros": cost, "outcome": "ok", "model": "openai/gpt-4o-mini", "customer": "acme", **fields}
    return {k: ({"N": str(v)} if isinstance(v, int) else {"S": v}) for k, v in values.items() if v is not None}


def record(seq: int, new_image: dict, event_name: str = "INSERT") -> dict:
    return {"eventID": f"ev{seq}", "eventName": event_name,
            "dynamodb": {"SequenceNumber": f"{seq:021d}", "NewImage": new_image}}


def month_total(settings, workspace: str = "ws1") -> dict:
    [total] = RollupStore(settings).by_dimension(workspace, "M#2026-11", "total")
    return total


def test_poison_records_are_isolated_and_long_values_bounded(settings, monkeypatch):
    module = load_handler(settings, monkeypatch)
    huge_model = "m" * 2048  # over DynamoDB's 1,024-byte sort key limit as a raw value
    bad = image("b")
    del bad["workspace"]  # cannot be attributed to anyone
    not_a_number = image("c")
    not_a_number["cost_micros"] = {"N": "1.5"}  # micro-dollars are integers
    event = {"Records": [record(1, image("a")), record(2, bad), record(3, image("d", model=huge_model)),
                         record(4, not_a_number), record(5, image("e", customer="x" * 900 + "ü"))]}
    assert module.handler(event, None) == {"batchItemFailures": []}
    total = month_total(settings)
    assert total["cost_micros"] == 21 and total["requests"] == 3
    store = RollupStore(settings)
    models = {r["value"]: r["cost_micros"] for r in store.by_dimension("ws1", "D#2026-11-22", "model")}
    [long_model] = [v for v in models if v.startswith("mmm")]
    assert len(long_model.encode()) <= MAX_VALUE_BYTES and models[long_model] == 7
    assert long_model == bound_value(huge_model) != bound_value(huge_model + "x")
    customers = {r["value"] for r in store.by_dimension("ws1", "D#2026-11-22", "customer")}
    assert all(len(c.encode()) <= MAX_VALUE_BYTES for c in customers) and len(customers) == 2
    poison = {p["sk"]: p for p in store.poisoned()}
    assert set(poison) == {"ev2", "ev4"}
    assert poison["ev4"]["ledger"]["request_id"] == "c"

    # The same batch again (a redelivery after a crash) changes nothing, poison included.
    assert module.handler(event, None) == {"batchItemFailures": []}
    assert month_total(settings)["cost_micros"] == 21 and len(store.poisoned()) == 2


def test_redelivery_is_exactly_once_whatever_the_batch_length(settings, monkeypatch):
    module = load_handler(settings, monkeypatch)
    records = [record(i, image(f"r{i}", cost=i)) for i in range(1, 21)]
    records.insert(5, record(99, image("modified"), event_name="MODIFY"))  # not spend
    assert module.handler({"Records": records[:10]}, None) == {"batchItemFailures": []}
    assert month_total(settings)["cost_micros"] == sum(range(1, 10))
    # Lambda re-delivers from the batch's first record, now with more records behind it.
    assert module.handler({"Records": records}, None) == {"batchItemFailures": []}
    assert module.handler({"Records": records[10:]}, None) == {"batchItemFailures": []}
    total = month_total(settings)
    assert total["cost_micros"] == sum(range(1, 21)) and total["requests"] == 20


def test_a_batch_wider_than_one_transaction_is_committed_in_runs(settings, monkeypatch):
    module = load_handler(settings, monkeypatch)
    # Transactions of at most 40 items (100 on AWS; smaller here to keep moto fast): 30 customers
    # x 2 periods + the 8 scopes every record shares need 3 runs (11, 11 and 8 records).
    records = [record(i, image(f"r{i}", cost=1000 + i, customer=f"cust{i}")) for i in range(30)]
    store = module._store = RollupStore(Settings.from_env(), max_items=40)
    assert module.handler({"Records": records}, None) == {"batchItemFailures": []}
    assert store.transactions == 3
    # Each run: a marker, its customers and the 8 shared scopes, for 2 periods; 2 units per item.
    assert store.units == 2 * (3 + 2 * (30 + 3 * 8))
    expected = sum(1000 + i for i in range(30))
    assert month_total(settings)["cost_micros"] == expected
    # Redelivered whole, and from the second run on: nothing changes.
    assert module.handler({"Records": records}, None) == {"batchItemFailures": []}
    assert module.handler({"Records": records[11:]}, None) == {"batchItemFailures": []}
    assert store.transactions == 3
    rows = store.by_dimension("ws1", "D#2026-11-22", "customer")
    assert len(rows) == 30 and sum(r["cost_micros"] for r in rows) == expected
    assert month_total(settings)["requests"] == 30


def test_write_units_per_request_at_a_batch_of_100(settings, monkeypatch):
    """The cost target: <= 3 write units per request, amortized, for a realistic batch."""
    module = load_handler(settings, monkeypatch)
    store = module._store = RollupStore(Settings.from_env())
    records = [record(i, image(f"r{i}", cost=5, customer=f"c{i % 10}", feature=f"f{i % 4}",
                               key=f"k{i % 5}", member=f"m{i % 5}", department=f"d{i % 2}",
                               agent=f"a{i % 3}", provider="openai", model=f"model{i % 3}"))
               for i in range(100)]
    assert module.handler({"Records": records}, None) == {"batchItemFailures": []}
    # 1 marker + 2 periods x (1 total + 5 keys + 5 members + 2 depts + 3 agents + 4 features
    # + 10 customers + 1 provider + 3 models) = 69 items, 2 units each (transactional, < 1 KB).
    assert store.units == 2 * 69
    assert store.units / 100 <= 3
    assert month_total(settings)["cost_micros"] == 500


def test_a_failed_commit_is_reported_from_its_first_record_and_retried_once(settings, monkeypatch):
    from dataclasses import replace

    module = load_handler(settings, monkeypatch)
    records = [record(i, image(f"r{i}", cost=10)) for i in range(5)]
    # The rollups table is unreachable (wrong name): nothing is committed, everything is redelivered.
    env = Settings.from_env()
    module._store = RollupStore(replace(env, table_names={**env.table_names, "rollups": "no-such-table"}))
    failed = module.handler({"Records": records}, None)["batchItemFailures"]
    assert [f["itemIdentifier"] for f in failed] == [f"{i:021d}" for i in range(5)]
    module._store = RollupStore(Settings.from_env())
    assert module.handler({"Records": records}, None) == {"batchItemFailures": []}
    assert month_total(settings)["cost_micros"] == 50
