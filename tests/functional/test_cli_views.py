"""The CLI views against a gateway serving the simulator: `requests`, `requests show`, `prices
list|show`, `limits list|delete`, `enforcement show`, `--json`, periods and `spend --by session`,
help on everything, validated input, errors for deleting what does not exist, 405 for a wrong method."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from meterline.cli.helptext import missing_help
from meterline.cli.main import build_parser, main
from meterline.rollup import apply_stream_records
from meterline.store.keys import KeyRecord, KeyStore
from meterline.store.rollups import RollupStore
from meterline.vkeys import generate, hash_key
from tests.conftest import wait_for_ledger


@pytest.fixture
def demo_key(dev_state) -> str:
    key, key_id = generate()
    KeyStore(dev_state).create(KeyRecord(key_hash=hash_key(key), key_id=key_id, workspace="demo", member="dana",
                                         department="eng"))
    return key


def call(gateway, key: str, session: str, feature: str = "search", stream: bool = False) -> httpx.Response:
    return httpx.post(gateway.base_url + "/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}", "meterline-session-id": session,
                               "meterline-feature": feature},
                      json={"model": "sim/gpt-4o-mini", "stream": stream,
                            "messages": [{"role": "user", "content": f"hello from {session}"}]})


def test_requests_list_and_show_explain_a_streamed_request(gateway, demo_key, dev_state, capsys):
    first = call(gateway, demo_key, "s1")
    streamed = call(gateway, demo_key, "s2", feature="chat", stream=True)
    request_id = streamed.headers["meterline-request-id"]
    records = wait_for_ledger(dev_state, "demo", 2)

    main(["requests", "--last", "5"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("TIME_UTC") and request_id in table[1]  # newest first
    main(["requests", "--feature", "search", "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert [r["request_id"] for r in listed] == [first.headers["meterline-request-id"]]

    main(["requests", "show", request_id])
    shown = capsys.readouterr().out
    record = next(r for r in records if r["request_id"] == request_id)
    assert f"${record['cost_micros'] / 1e6:.6f}" in shown and "session=s2" in shown and "stream" in shown
    assert "input_uncached" in shown and "priced as openai/gpt-4o-mini" in shown
    main(["requests", "show", request_id, "--json"])
    detail = json.loads(capsys.readouterr().out)
    assert detail["lines"][-1]["cost_micros_exact"] == record["cost_micros"]  # the lines add up to the cost
    with pytest.raises(SystemExit, match="no request"):
        main(["requests", "show", "req_doesnotexist"])


def test_spend_by_session_and_periods(gateway, demo_key, dev_state, capsys):
    for session in ("alpha", "alpha", "beta"):
        assert call(gateway, demo_key, session).status_code == 200
    records = wait_for_ledger(dev_state, "demo", 3)
    main(["spend", "--by", "session", "--json"])
    rows = {r["value"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["alpha"]["requests"] == 2 and rows["beta"]["requests"] == 1
    assert sum(r["cost_micros"] for r in rows.values()) == sum(r["cost_micros"] for r in records)

    # Rollup periods: apply the ledger records (as the stream aggregator does), then read them back
    # over today / month / a day / a range / a month.
    from meterline.store.codec import to_item

    stream = [{"eventName": "INSERT", "eventID": f"e{i}",
               "dynamodb": {"NewImage": to_item(r), "SequenceNumber": str(i)}} for i, r in enumerate(records)]
    assert apply_stream_records(stream, RollupStore(dev_state)) == []
    day = records[0]["day"]
    for period in ("today", "month", day, f"{day}..{day}", day[:7]):
        main(["spend", "--by", "feature", "--period", period, "--json"])
        [row] = json.loads(capsys.readouterr().out)
        assert row["requests"] == 3, period
    main(["spend", "--by", "feature", "--period", "yesterday", "--json"])
    assert json.loads(capsys.readouterr().out) == []
    with pytest.raises(SystemExit, match="unknown period"):
        main(["spend", "--period", "fortnight"])
    with pytest.raises(SystemExit, match="ends before it starts"):
        main(["spend", "--period", "2026-02-10..2026-02-01"])


def test_prices_limits_enforcement_and_deletes(dev_state, capsys):
    main(["prices", "list", "--provider", "anthropic", "--json"])
    models = [r["model"] for r in json.loads(capsys.readouterr().out)]
    assert models and all(m.startswith("anthropic/") for m in models)
    main(["prices", "set", "--model", "sim/gpt-4o-mini", "--input", "0.10", "--output", "0.40"])
    capsys.readouterr()
    main(["prices", "show", "sim/gpt-4o-mini", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["overridden"] and shown["prices"][0]["input"] == "0.100000"
    with pytest.raises(SystemExit, match="names no catalog model"):
        main(["prices", "set", "--model", "sim/not-a-model", "--input", "1", "--output", "1"])

    main(["limits", "set", "--member", "alice", "--rpm", "30"])
    capsys.readouterr()
    main(["limits", "list", "--json"])
    assert [r["subject"] for r in json.loads(capsys.readouterr().out)] == ["member:alice"]
    main(["limits", "delete", "member:alice"])
    with pytest.raises(SystemExit, match="no rate limit"):
        main(["limits", "delete", "member:alice"])
    capsys.readouterr()
    main(["enforcement", "show", "--json"])
    assert json.loads(capsys.readouterr().out)["policy"]["key_rpm_default"] > 0

    for argv, message in ((["budgets", "delete", "--scope", "feature:nope"], "no budget"),
                          (["providers", "remove", "nope"], "no provider"),
                          (["aliases", "remove", "nope"], "no alias"),
                          (["keys", "create", "--member", "x", "--expires-in-days", "-1"], "expires_in_days")):
        with pytest.raises(SystemExit, match=message):
            main(argv)
    for argv in (["keys", "list", "--json"], ["budgets", "list", "--json"], ["workspaces", "list", "--json"],
                 ["providers", "list", "--json"], ["aliases", "list", "--json"]):
        main(argv)
        assert isinstance(json.loads(capsys.readouterr().out), list), argv


def test_every_command_and_option_has_help():
    assert missing_help(build_parser()) == []


def test_a_closed_pipe_ends_quietly(dev_state, tmp_path):
    import os

    env = {**os.environ}
    proc = subprocess.Popen(f"{sys.executable} -m meterline.cli.main prices list | head -1", shell=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert out.startswith("MODEL") and "Traceback" not in err and "BrokenPipe" not in err


def test_wrong_method_is_405(gateway):
    response = httpx.get(gateway.base_url + "/chat/completions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert httpx.get(gateway.base_url + "/nothing-here").status_code == 404
