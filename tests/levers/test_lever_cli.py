"""`meterline cache …` and `meterline savings` as a user runs them next to `meterline dev`."""

from __future__ import annotations

import json

import openai
import pytest

from meterline.admin.app import create_admin_app
from meterline.admin.local import LocalTokens
from meterline.admin.ops import Ops
from meterline.cli.main import main
from meterline.rollup import apply_entries
from meterline.store.rollups import RollupStore, contribution_of
from meterline.store.workspaces import WorkspaceStore
from tests.conftest import wait_for_ledger


def test_cache_rules_from_the_cli(dev_state, capsys):
    main(["cache", "set", "--feature", "support", "--ttl", "1h"])
    assert "cache on for feature:support: ttl 3600 s" in capsys.readouterr().out
    main(["cache", "set", "--key", "key_123", "--off"])
    main(["cache", "set", "--ttl", "15m", "--partition", "customer", "--any-temperature"])
    rules = WorkspaceStore(dev_state).load("demo").cache_rules
    assert rules["feature:support"]["ttl_s"] == 3600 and rules["key:key_123"]["exact"] is False
    assert rules["workspace"] == {**rules["workspace"], "ttl_s": 900, "partition": "customer",
                                  "any_temperature": True}
    capsys.readouterr()
    main(["cache", "list", "--json"])
    assert [r["scope"] for r in json.loads(capsys.readouterr().out)] == ["feature:support", "key:key_123",
                                                                          "workspace"]
    main(["cache", "remove", "--key", "key_123"])
    assert "key:key_123" not in WorkspaceStore(dev_state).load("demo").cache_rules
    with pytest.raises(SystemExit, match="no cache rule"):
        main(["cache", "remove", "--key", "key_123"])
    with pytest.raises(SystemExit, match="invalid TTL"):
        main(["cache", "set", "--ttl", "soon"])


def test_savings_by_lever_and_feature_add_up_exactly(dev_state, start_gateway, capsys, tmp_path):
    main(["cache", "set", "--feature", "support", "--ttl", "1h"])
    gateway = start_gateway()
    api_key = Ops(dev_state).create_key("demo", "alice")["api_key"]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0,
                           default_headers={"meterline-feature": "support"})
    ask = {"model": "sim/gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "Reset my password"}]}
    for _ in range(3):
        client.chat.completions.create(**ask)
    client.chat.completions.create(**ask, extra_headers={"meterline-feature": "search"})  # not cached
    records = wait_for_ledger(dev_state, "demo", 4)
    # what the stream aggregator does with a batch of ledger records
    assert apply_entries([contribution_of(r["request_id"], r) for r in records], RollupStore(dev_state)) == 4
    miss = records[0]
    capsys.readouterr()
    main(["savings", "--by", "lever", "--period", "month", "--json"])
    report = json.loads(capsys.readouterr().out)
    by_lever = {r["value"]: r["saved_micros"] for r in report["rows"]}
    assert by_lever["exact_cache"] == 2 * miss["cost_micros"] > 0
    assert report["saved_micros"] == 2 * miss["cost_micros"]
    assert report["spent_micros"] == sum(r["cost_micros"] for r in records)
    main(["savings", "--by", "feature", "--period", "today"])
    out = capsys.readouterr().out
    assert "support" in out and "exact_cache=" in out and "search" in out
    # the admin API answers the same report
    from fastapi.testclient import TestClient

    tokens = LocalTokens.ensure(tmp_path / "admin")  # as `meterline dev` serves it: the operator's token
    api = TestClient(create_admin_app(dev_state, tokens),
                     headers={"authorization": f"Bearer {tokens.operator_token()}"})
    assert api.get("/workspaces/demo/savings", params={"by": "lever"}).json()["saved_micros"] == report["saved_micros"]
    assert api.get("/workspaces/demo/savings", params={"by": "nonsense"}).status_code == 400
    assert api.put("/workspaces/demo/cache/feature:docs", json={"ttl": "30m"}).json()["ttl_s"] == 1800
    assert [r["scope"] for r in api.get("/workspaces/demo/cache").json()["rules"]] == ["feature:docs",
                                                                                       "feature:support"]
    assert api.delete("/workspaces/demo/cache/feature:docs").status_code == 204
