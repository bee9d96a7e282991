"""Savings plumbing: what a lever saved reaches the ledger record and the rollup counters exactly."""

from __future__ import annotations

from meterline.gateway.context import RequestContext
from meterline.gateway.metering import ledger_record
from meterline.levers import EXACT_CACHE, LEVERS, ROUTING
from meterline.store.keys import KeyRecord
from meterline.store.rollups import counters_of
from meterline.store.workspaces import WorkspaceConfig


def _ctx() -> RequestContext:
    ctx = RequestContext(endpoint="chat.completions", headers={})
    ctx.key = KeyRecord(key_hash="h", key_id="key_1", workspace="ws", member="m", department="d")
    ctx.workspace = WorkspaceConfig(workspace="ws", name="ws")
    return ctx


def test_savings_add_up_per_lever_and_in_total():
    ctx = _ctx()
    ctx.save(ROUTING, 1200)
    ctx.save(EXACT_CACHE, 7)
    ctx.save(ROUTING, 3)
    ctx.save(EXACT_CACHE, 0)
    record = ledger_record(ctx)
    assert record["savings"] == {ROUTING: 1203, EXACT_CACHE: 7}
    assert record["saved_micros"] == 1210
    counters = counters_of(record)
    assert counters["saved_micros"] == 1210
    assert counters[f"saved_{ROUTING}"] == 1203 and counters[f"saved_{EXACT_CACHE}"] == 7
    assert all(counters[f"saved_{lever}"] == 0 for lever in LEVERS if lever not in (ROUTING, EXACT_CACHE))


def test_no_saving_leaves_no_fields_and_notes_merge():
    ctx = _ctx()
    ctx.note(budget_scope="workspace")
    ctx.note(loop_count=3)
    record = ledger_record(ctx)
    assert "savings" not in record and "saved_micros" not in record
    assert record["budget_scope"] == "workspace" and record["loop_count"] == 3
    assert counters_of(record)["saved_micros"] == 0
