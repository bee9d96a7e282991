"""Waste scoring end to end: the planted ledger in DynamoDB (moto) through `meterline waste`, the
scheduled function and the admin API; and real SDK traffic through the gateway."""

from __future__ import annotations

import json

import openai

from meterline.cli.main import main
from meterline.store.ledger import LedgerStore
from meterline.store.waste import WasteStore
from meterline.store.workspaces import WorkspaceStore
from tests.conftest import wait_for_ledger
from tests.functional.test_admin_handler import admin_handler, call, load_handler
from tests.waste_ledger import BASELINE, DAY, EXPECTED_FEATURES, EXPECTED_SIGNALS, TOTAL_SPEND, WORKSPACE, planted


def load_planted(settings, workspace: str = WORKSPACE) -> None:
    WorkspaceStore(settings).create(workspace, "Planted")
    ledger = LedgerStore(settings)
    for record in planted():
        ledger.put({**record, "workspace": workspace})
    # Yesterday's scores hold the p95 baseline the W7 size rule compares with.
    WasteStore(settings).put_day(workspace, "2026-11-09", {}, BASELINE)


def signals_of(scope: dict) -> dict[str, tuple[int, int]]:
    return {code: (s["micros"], s["count"]) for code, s in scope["signals"].items()}


def test_planted_ledger_scores_exactly_through_the_cli_and_is_stored(dev_state, capsys):
    load_planted(dev_state)
    main(["waste", "--period", DAY, "--by", "feature", "--workspace", WORKSPACE, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert signals_of(report["total"]) == EXPECTED_SIGNALS
    assert report["total"]["spend_micros"] == TOTAL_SPEND and report["total"]["grade"] == "D"
    got = {r["value"]: (r["spend_micros"], r["waste_micros"], r["score"], r["grade"], r["rating"])
           for r in report["by"]["feature"]}
    assert got == EXPECTED_FEATURES
    assert list(report["by"]) == ["feature"]

    stored = WasteStore(dev_state).day(WORKSPACE, DAY)
    assert stored["total#all"]["grade"] == "D" and stored["feature#rag"]["grade"] == "B"
    assert stored["member#bob"]["grade"] == "A" and stored["agent#looper"]["signals"]["W3"]["count"] == 3
    assert WasteStore(dev_state).baseline(WORKSPACE, DAY) == {"openai/gpt-4o": 2000,
                                                              "anthropic/claude-sonnet-4-5": 3500}

    # A closed day is read back from the table: same report.
    main(["waste", "--period", DAY, "--by", "feature", "--workspace", WORKSPACE, "--json"])
    assert json.loads(capsys.readouterr().out) == report

    main(["waste", "--period", DAY, "--workspace", WORKSPACE])
    text = capsys.readouterr().out
    assert "Grade D" in text and "Where to look first:" in text
    assert "W5 off-hours bursts: $0.114000 over 38 requests" in text
    assert "By member:" in text and "By feature:" in text


def test_scheduled_function_scores_every_workspace_apart(settings, monkeypatch):
    load_planted(settings)
    WorkspaceStore(settings).create("ws_other", "Other")
    clean = next(r for r in planted() if r["feature"] == "clean" and "savings" not in r)
    other = dict(clean, workspace="ws_other", request_id="req_other", parent_request_id="req_other")
    LedgerStore(settings).put(other)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    handler = load_handler("functions/waste/handler.py", "waste_handler").handler
    summary = handler({"day": DAY}, None)
    assert summary["grades"] == {WORKSPACE: "D", "ws_other": "S"}
    assert summary["records"] == len(planted()) + 1
    assert summary["spend_micros"] == TOTAL_SPEND + 10_000
    # Workspace scoping: the other workspace's scores hold its one record and nothing else.
    theirs = WasteStore(settings).day("ws_other", DAY)
    assert theirs["total#all"]["spend_micros"] == 10_000 and theirs["total#all"]["requests"] == 1
    assert set(theirs) == {"total#all", "member#bob", "agent#-", "feature#clean", "customer#-", "key#key_1"}


def test_admin_api_serves_waste_scores(settings, monkeypatch):
    load_planted(settings)
    admin = admin_handler(settings, monkeypatch, "admin_handler_waste")
    status, body = call(admin, "GET", f"/workspaces/{WORKSPACE}/waste", query=f"period={DAY}&by=member")
    assert status == 200 and signals_of(body["total"]) == EXPECTED_SIGNALS
    assert {r["value"]: r["grade"] for r in body["by"]["member"]}["gina"] == "B"
    assert call(admin, "GET", f"/workspaces/{WORKSPACE}/waste", query="by=planet")[0] == 400
    assert call(admin, "GET", f"/workspaces/{WORKSPACE}/waste", query="period=last-week")[0] == 400
    assert call(admin, "GET", "/workspaces/nope/waste")[0] == 404


def test_duplicate_sdk_calls_through_the_gateway_are_found(gateway, tenant, settings, dev_state, capsys):
    client = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]
    ids = [client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, max_tokens=2000,
                                                             extra_headers={"Meterline-Feature": "greet"})
           .headers["meterline-request-id"] for _ in range(2)]
    records = wait_for_ledger(settings, tenant.workspace, 2)
    assert records[0]["req_fp"] == records[1]["req_fp"] and records[0]["prefix_fp"] == records[1]["prefix_fp"]
    assert records[0]["max_tokens"] == 2000 and records[0]["priced_as"] == "openai/gpt-4o"
    main(["waste", "--period", "today", "--workspace", tenant.workspace, "--json"])
    report = json.loads(capsys.readouterr().out)
    w1 = report["total"]["signals"]["W1"]
    assert (w1["count"], w1["examples"], w1["micros"]) == (1, [ids[1]], records[1]["cost_micros"])
    assert report["by"]["feature"][0]["value"] == "greet"
