"""Lever settings through the CLI (next to `meterline dev`) and the admin API (Mangum handler)."""

from __future__ import annotations

import json

import pytest

from meterline.cli.main import main
from meterline.store.workspaces import WorkspaceStore
from tests.functional.test_admin_handler import admin, call  # noqa: F401  (fixture)


def test_routes_set_list_delete_with_the_cli(dev_state, capsys):
    main(["routes", "set", "--feature", "summarize", "--model", "sim/gpt-4.1-mini"])
    out = capsys.readouterr().out
    assert "route feature:summarize (shadow): sim/gpt-4.1-mini" in out and "--mode on" in out
    main(["routes", "set", "--all", "--cheap", "sim/gpt-4.1-mini", "--strong", "sim/gpt-4.1", "--mode", "on",
          "--threshold", "30"])
    main(["routes", "list", "--json"])
    rows = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert rows == [
        {"scope": "feature:summarize", "models": ["sim/gpt-4.1-mini"], "cheap": None, "strong": None,
         "threshold": 25, "mode": "shadow"},
        {"scope": "workspace:*", "models": [], "cheap": "sim/gpt-4.1-mini", "strong": "sim/gpt-4.1",
         "threshold": 30, "mode": "on"}]
    main(["routes", "delete", "--feature", "summarize"])
    assert list(WorkspaceStore(dev_state).load("demo").routes) == ["workspace:*"]
    with pytest.raises(SystemExit, match="no route"):
        main(["routes", "delete", "--feature", "summarize"])
    with pytest.raises(SystemExit, match="exactly one scope"):
        main(["routes", "set", "--feature", "a", "--agent", "b", "--model", "sim/gpt-4o"])
    with pytest.raises(SystemExit, match="no provider"):
        main(["routes", "set", "--feature", "a", "--model", "nowhere/gpt-4o"])


def test_routes_through_the_admin_api(admin):  # noqa: F811
    assert call(admin, "POST", "/workspaces", {"id": "rt", "name": "Routes"})[0] == 201
    status, body = call(admin, "PUT", "/workspaces/rt/routes/feature:chat",
                        {"cheap": "sim/gpt-4o-mini", "strong": "sim/gpt-4o", "mode": "on"})
    assert status == 200 and body["mode"] == "on" and body["cheap"] == "sim/gpt-4o-mini"
    status, body = call(admin, "GET", "/workspaces/rt/routes")
    assert [r["scope"] for r in body["routes"]] == ["feature:chat"]
    status, body = call(admin, "PUT", "/workspaces/rt/routes/feature:bad", {"models": ["sim/gpt-4o"], "mode": "x"})
    assert status == 400 and "mode" in body["error"]["message"]
    assert call(admin, "DELETE", "/workspaces/rt/routes/feature:chat")[0] == 204
    assert call(admin, "DELETE", "/workspaces/rt/routes/feature:chat")[0] == 404


def test_compression_set_list_delete_with_the_cli(dev_state, capsys):
    main(["compression", "set", "--feature", "agent"])
    assert "compression on for feature:agent (safe transformations only)" in capsys.readouterr().out
    main(["compression", "set", "--all", "--tool-output-max-tokens", "1500", "--history-budget", "20000"])
    out = capsys.readouterr().out
    assert "tool output above 1500 tokens" in out and "history above 20000 tokens" in out
    main(["compression", "list", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"scope": "feature:agent", "tool_output_max_tokens": None, "history_budget_tokens": None},
                    {"scope": "workspace:*", "tool_output_max_tokens": 1500, "history_budget_tokens": 20000}]
    main(["compression", "delete", "--feature", "agent"])
    assert list(WorkspaceStore(dev_state).load("demo").levers["compression"]) == ["workspace:*"]
    with pytest.raises(SystemExit, match="at least 100"):
        main(["compression", "set", "--all", "--tool-output-max-tokens", "5"])


def test_lever_settings_through_the_admin_api(admin):  # noqa: F811
    assert call(admin, "POST", "/workspaces", {"id": "lv", "name": "Levers"})[0] == 201
    status, body = call(admin, "PUT", "/workspaces/lv/levers/compression/feature:chat", {"history_budget_tokens": 900})
    assert status == 200 and body["history_budget_tokens"] == 900
    assert call(admin, "GET", "/workspaces/lv/levers/compression")[1]["settings"][0]["scope"] == "feature:chat"
    assert call(admin, "PUT", "/workspaces/lv/levers/nope/feature:chat", {})[0] == 400
    assert call(admin, "PUT", "/workspaces/lv/levers/compression/color:red", {})[0] == 400
    assert call(admin, "PUT", "/workspaces/lv/levers/compression/feature:chat", {"bogus": 1})[0] == 400
    assert call(admin, "DELETE", "/workspaces/lv/levers/compression/feature:chat")[0] == 204
    assert call(admin, "DELETE", "/workspaces/lv/levers/compression/feature:chat")[0] == 404


def test_semantic_set_list_delete_with_the_cli(dev_state, capsys):
    main(["semantic", "set", "--feature", "faq"])
    assert "semantic dedup detect for feature:faq: near-duplicates are recorded, never served" in \
        capsys.readouterr().out
    main(["semantic", "set", "--all", "--mode", "serve", "--ttl", "3600"])
    out = capsys.readouterr().out
    assert "cosine >= 0.95" in out and "before every covered request" in out
    main(["semantic", "list", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [(r["scope"], r["mode"], r["ttl_s"]) for r in rows] == [("feature:faq", "detect", 86400),
                                                                    ("workspace:*", "serve", 3600)]
    with pytest.raises(SystemExit, match=r"at least 0\.95"):
        main(["semantic", "set", "--all", "--mode", "serve", "--threshold", "0.9"])
    main(["semantic", "delete", "--all"])
    assert list(WorkspaceStore(dev_state).load("demo").levers["semantic"]) == ["feature:faq"]
