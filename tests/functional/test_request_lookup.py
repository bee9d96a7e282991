"""Looking a request up by its id reads the ledger around the time the id carries, not whole days.

`meterline requests show <id>` used to Query up to 7 day partitions with a filter: on a busy
workspace that reads (and is billed for) every record of those days, and took ~50 s on the dev
server after 10k requests. A request id now carries its start time (store/ledger.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from meterline.admin.ops import Ops
from meterline.store.ledger import REQUEST_WINDOW_MS, LedgerStore, ledger_keys, new_request_id, request_id_ms


def _record(workspace: str, request_id: str, ts: int, *, parent: str | None = None) -> dict:
    day = datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d")
    return {"request_id": request_id, "parent_request_id": parent or request_id, "workspace": workspace,
            "ts": ts, "day": day, "month": day[:7], "outcome": "ok", "cost_micros": 7,
            "provider": "openai", "model": "gpt-4o", "endpoint": "chat.completions"}


def test_a_request_id_carries_its_start_time_and_stays_unique():
    now = int(time.time() * 1000)
    ids = {new_request_id(now) for _ in range(1000)}
    assert len(ids) == 1000
    assert {request_id_ms(i) for i in ids} == {now}
    assert all(i.startswith("req_") and len(i) == 31 for i in ids)
    assert request_id_ms("req_" + "ab" * 12) is None  # an id from before: no time in it
    assert request_id_ms("req_" + "zz" * 13 + "z") is None and request_id_ms("nope") is None


def test_lookup_reads_only_the_window_the_id_carries_across_midnight(settings):
    ops = Ops(settings, actor="cli:test")
    ops.create_workspace("acme", "Acme")
    store = LedgerStore(settings)
    midnight = int(datetime(2026, 11, 30, tzinfo=UTC).timestamp() * 1000)
    started = midnight - 5_000  # 23:59:55: its failed-over attempt lands on the next UTC day
    rid = new_request_id(started)
    store.put(_record("acme", rid + "_a1", started, parent=rid))
    store.put(_record("acme", rid, started + 12_000))
    # The same id stamped outside the window (impossible for a real request): never read, which
    # shows the Query is bounded by the key condition, not by a filter over whole days.
    store.put(_record("acme", rid, started + REQUEST_WINDOW_MS[1] + 1_000))
    store.put(_record("acme", rid, started + REQUEST_WINDOW_MS[0] - 1_000))
    store.put(_record("globex", rid, started))  # another workspace's partition
    found = store.query_request("acme", rid)
    assert sorted((r["request_id"], r["ts"]) for r in found) == [(rid, started + 12_000), (rid + "_a1", started)]
    assert ledger_keys("acme", started, rid)["pk"] != ledger_keys("acme", started + 12_000, rid)["pk"]
    assert store.query_request("acme", "req_" + "ab" * 12) is None  # an older id: the caller searches by day


def test_requests_show_finds_old_and_new_ids(settings):
    ops = Ops(settings, actor="cli:test")
    ops.create_workspace("acme", "Acme")
    store = LedgerStore(settings)
    now = int(time.time() * 1000)
    new_id, old_id = new_request_id(now - 1_000), "req_" + "cd" * 12
    store.put(_record("acme", new_id, now - 500))
    store.put(_record("acme", old_id, now - 400))
    assert [r["request_id"] for r in ops.find_request("acme", new_id)] == [new_id]
    assert [r["request_id"] for r in ops.find_request("acme", old_id)] == [old_id]
    assert ops.find_request("acme", new_request_id(now - 86_400_000)) == []  # a day ago: nothing there
