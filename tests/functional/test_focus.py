"""FOCUS 1.2 export end to end: ledger in DynamoDB (moto) -> `meterline export focus` CSV, the admin API
and the daily S3 export; every file validates and reconciles with the ledger to the micro-dollar."""

from __future__ import annotations

import csv
import io

import pytest

from meterline.cli.main import main
from meterline.focus.columns import COLUMNS
from meterline.focus.validate import reconcile, totals, validate
from meterline.store import aws
from meterline.store.ledger import LedgerStore
from tests.conftest import ledger_items
from tests.functional.test_admin_handler import Context, admin_handler, load_handler, url_event
from tests.functional.test_waste import load_planted
from tests.waste_ledger import DAY, TOTAL_SPEND, WORKSPACE, planted


def parse(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def test_month_export_validates_and_reconciles(dev_state, tmp_path, capsys):
    load_planted(dev_state)
    # Another November day and a December record: the month holds the first, not the second.
    ledger = LedgerStore(dev_state)
    clean = next(r for r in planted() if r["feature"] == "clean" and "savings" not in r)
    for rid, days in (("req_nov30", 20), ("req_dec01", 21)):
        ledger.put({**clean, "request_id": rid, "parent_request_id": rid, "ts": clean["ts"] + days * 86_400_000})
    out = tmp_path / "focus.csv"
    main(["export", "focus", "--month", "2026-11", "--workspace", WORKSPACE, "--out", str(out)])
    assert "billed $0.507500 (= the ledger" in capsys.readouterr().err
    columns, rows = parse(out.read_text())
    assert columns == list(COLUMNS)
    assert validate(columns, rows) == []
    november = [r for r in ledger_items(dev_state, WORKSPACE) if r["request_id"] != "req_dec01"]
    assert reconcile(rows, november) == []
    assert totals(rows)["billed_micros"] == TOTAL_SPEND + 10_000
    assert {r["ChargePeriodStart"] for r in rows} == {f"{DAY}T00:00:00Z", "2026-11-30T00:00:00Z"}

    main(["export", "focus", "--month", "2026-11", "--by", "customer", "--workspace", WORKSPACE, "--out", "-"])
    columns, rows = parse(capsys.readouterr().out)
    assert validate(columns, rows) == [] and reconcile(rows, november) == []
    assert {r["x_Member"] for r in rows} == {""}

    with pytest.raises(SystemExit, match="month must be YYYY-MM"):
        main(["export", "focus", "--month", "November", "--workspace", WORKSPACE, "--out", str(out)])


def test_admin_api_and_daily_s3_export(settings, monkeypatch):
    load_planted(settings)
    admin = admin_handler(settings, monkeypatch, "admin_handler_focus")
    response = admin(url_event("GET", f"/workspaces/{WORKSPACE}/exports/focus", query="month=2026-11"), Context())
    assert response["statusCode"] == 200 and response["headers"]["content-type"].startswith("text/csv")
    columns, rows = parse(response["body"])
    assert validate(columns, rows) == [] and reconcile(rows, planted()) == []
    bad = admin(url_event("GET", f"/workspaces/{WORKSPACE}/exports/focus", query="month=2026-11&by=planet"),
                Context())
    assert bad["statusCode"] == 400

    s3 = aws.client("s3", settings)
    s3.create_bucket(Bucket="focus-exports")
    monkeypatch.setenv("METERLINE_FOCUS_BUCKET", "focus-exports")
    handler = load_handler("functions/focus/handler.py", "focus_handler").handler
    summary = handler({"day": DAY}, None)
    key = f"focus/workspace={WORKSPACE}/billing_period=2026-11/{DAY}.csv"
    assert key in summary["objects"] and summary["billed_micros"] == TOTAL_SPEND
    columns, rows = parse(s3.get_object(Bucket="focus-exports", Key=key)["Body"].read().decode())
    assert validate(columns, rows) == [] and reconcile(rows, planted()) == []
