"""Unit economics in `meterline spend --units --chart`: $ per request, customer, session and feature,
the month-end projection with the day the cap is reached, and daily bars, from real gateway traffic."""

from __future__ import annotations

import json
from datetime import date

import httpx

from meterline.admin.ops import cap_reached_on
from meterline.cli.main import bars, main
from meterline.rollup import apply_stream_records
from meterline.store.codec import to_item
from meterline.store.keys import KeyRecord, KeyStore
from meterline.store.rollups import RollupStore
from meterline.vkeys import generate, hash_key
from tests.conftest import wait_for_ledger


def test_unit_costs_from_gateway_traffic(gateway, dev_state, capsys):
    key, key_id = generate()
    KeyStore(dev_state).create(KeyRecord(key_hash=hash_key(key), key_id=key_id, workspace="demo", member="dana",
                                         department="eng"))
    calls = [("s1", "acme", "search"), ("s1", "acme", "search"), ("s2", "globex", "chat"), ("s3", "", "chat")]
    for i, (session, customer, feature) in enumerate(calls):
        headers = {"authorization": f"Bearer {key}", "meterline-session-id": session, "meterline-feature": feature}
        if customer:
            headers["meterline-customer"] = customer
        response = httpx.post(gateway.base_url + "/chat/completions", timeout=30, headers=headers,
                              json={"model": "sim/gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]})
        assert response.status_code == 200
    records = wait_for_ledger(dev_state, "demo", 4)
    stream = [{"eventName": "INSERT", "eventID": f"e{i}",
               "dynamodb": {"NewImage": to_item(r), "SequenceNumber": str(i)}} for i, r in enumerate(records)]
    assert apply_stream_records(stream, RollupStore(dev_state)) == []
    main(["budgets", "set", "--scope", "workspace:demo", "--monthly", "1000"])
    capsys.readouterr()

    main(["spend", "--units", "--period", "month", "--json"])
    units = json.loads(capsys.readouterr().out)
    cost = {r["request_id"]: r["cost_micros"] for r in records}
    total = sum(cost.values())
    by_customer = {"acme": cost[records[0]["request_id"]] + cost[records[1]["request_id"]],
                   "globex": cost[records[2]["request_id"]]}
    assert (units["cost_micros"], units["requests"]) == (total, 4)
    assert units["per_request_micros"] == total // 4
    assert (units["customers"], units["per_customer_micros"]) == (2, sum(by_customer.values()) // 2)
    assert (units["sessions"], units["per_session_micros"]) == (3, total // 3)
    features = {f["feature"]: f for f in units["per_request_by_feature"]}
    assert features["search"]["per_request_micros"] == by_customer["acme"] // 2
    assert [d["cost_micros"] for d in units["daily"]][-1] == total and sum(d["cost_micros"] for d in units["daily"]) \
        == total
    projection = units["projection"]
    assert projection["spent_micros"] == total and projection["monthly_cap_micros"] == 1_000_000_000
    assert projection["cap_reached_on"] is None  # a few micro-dollars a day never reach $1,000 this month

    main(["spend", "--units", "--chart", "--period", "month"])
    text = capsys.readouterr().out
    assert "per request" in text and "per customer (2 customers)" in text and "per session (3 sessions)" in text
    assert "On track for $" in text and "not reached this month" in text
    assert "█" * 40 in text  # today is the largest day of the month


def test_cap_day_and_bars():
    today = date(2026, 11, 10)
    assert cap_reached_on(900, 100, 1000, today) == "2026-11-10"  # today's spend reaches it
    assert cap_reached_on(800, 100, 1000, today) == "2026-11-11"
    assert cap_reached_on(0, 100, 2100, today) == "2026-11-30"
    assert cap_reached_on(0, 100, 2200, today) is None  # next month
    assert cap_reached_on(1000, 0, 1000, today) == "2026-11-10" and cap_reached_on(5, 0, 1000, today) is None
    assert cap_reached_on(5, 10, None, today) is None
    lines = bars([{"day": "2026-11-01", "cost_micros": 0}, {"day": "2026-11-02", "cost_micros": 1},
                  {"day": "2026-11-03", "cost_micros": 2_000_000}], width=10)
    assert lines == ["2026-11-01              $0.000000", "2026-11-02  █           $0.000001",
                     "2026-11-03  ██████████  $2.000000"]
