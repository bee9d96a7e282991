"""Ledger -> stream -> rollups: spend per scope and period, exactly once under redelivery."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import openai

from meterline.rollup import StreamPoller
from meterline.store.rollups import RollupStore
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


def test_lambda_handler_reports_partial_batch_failures(settings, monkeypatch):
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("rollup_handler", ROOT / "functions/rollup/handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def record(seq: str, request_id: str, good: bool = True) -> dict:
        image = {"request_id": {"S": request_id}, "workspace": {"S": "ws1"}, "day": {"S": "2026-11-22"},
                 "month": {"S": "2026-11"}, "cost_micros": {"N": "7"}, "outcome": {"S": "ok"}}
        if not good:
            del image["workspace"]  # a malformed record cannot be applied
        return {"eventName": "INSERT", "dynamodb": {"SequenceNumber": seq, "NewImage": image}}

    event = {"Records": [record("1", "a"), record("2", "b", good=False), record("3", "c")]}
    assert module.handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "2"}, {"itemIdentifier": "3"}]}
    assert module.handler({"Records": [record("1", "a"), record("3", "c")]}, None) == {"batchItemFailures": []}
    [total] = RollupStore(settings).by_dimension("ws1", "M#2026-11", "total")
    assert total["cost_micros"] == 14 and total["requests"] == 2
