"""Admin API inputs that answered 500 before (found by schemathesis and by probing the classes it
pointed at), through the real Lambda handler: each is now a clear 4xx, validated at the boundary."""

from __future__ import annotations

import json

import pytest

from meterline.store.audit import AuditStore
from tests.functional.test_admin_handler import admin_handler, call


@pytest.fixture
def admin(settings, monkeypatch):
    handler = admin_handler(settings, monkeypatch, "admin_handler_inputs")
    assert call(handler, "POST", "/workspaces", {"id": "acme", "name": "Acme"})[0] == 201
    return handler


@pytest.mark.parametrize(("method", "path", "body", "query", "status"), [
    # names over DynamoDB's key limits (an alias, a provider, a budget scope, a workspace id)
    ("PUT", "/workspaces/acme/aliases/" + "a" * 2000, {"model": "sim/gpt-4o-mini"}, "", 400),
    ("PUT", "/workspaces/acme/providers/" + "p" * 2000, {"base_url": "https://llm.example.com"}, "", 400),
    ("PUT", "/workspaces/acme/budgets/feature:" + "é" * 600, {"monthly_usd": "5"}, "", 400),
    ("GET", "/workspaces/" + "w" * 3000 + "/keys", None, "", 404),
    # an empty actor (an empty key value), a time past year 9999
    ("GET", "/audit", None, "actor=", 422),
    ("GET", "/workspaces/acme/audit", None, "decisions=true&since_ms=1000000000000000000", 422),
    # periods next to year 9999 (date arithmetic overflowed)
    ("GET", "/workspaces/acme/spend", None, "period=9999-12", 400),
    ("GET", "/workspaces/acme/waste", None, "period=9999-12", 400),
    ("GET", "/workspaces/acme/exports/focus", None, "month=9999-12", 400),
    # a policy test sample with a non-number where a number goes
    ("POST", "/workspaces/acme/policies/test", {"model": "sim/gpt-4o-mini", "bytes": "lots"}, "", 400),
    # a value so large that its audit record exceeded DynamoDB's 400 KB item (and the embedded AWS stalled)
    ("PUT", "/workspaces/acme/aliases/big", {"model": "sim/" + "é" * 100_000}, "", 413),
])
def test_inputs_that_were_server_errors_are_clear_4xx(admin, method, path, body, query, status):
    got, out = call(admin, method, path, body, query=query)
    assert got == status, out
    assert "error" in out or "detail" in out


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    # stored whole before (a 60 KB model name, 200 KB of key models), or refused deep inside
    ("PUT", "/workspaces/acme/aliases/big", {"model": "sim/" + "é" * 30_000}, 422),
    ("POST", "/workspaces/acme/keys", {"member": "m", "models": ["x" * 100] * 2000}, 422),
    ("PUT", "/workspaces/acme/limits/key:*", {"rpm": 10**40}, 422),
    ("POST", "/workspaces/acme/policies/test", {"model": "sim/gpt-4o-mini", "key": ["a"]}, 400),
])
def test_sizes_and_types_are_bounded_at_the_boundary(admin, method, path, body, status):
    assert call(admin, method, path, body)[0] == status


def test_bodies_are_capped(admin):
    raw = json.dumps({"kind": "models", "deny": ["x" * 100] * 3000})
    got, out = call(admin, "PUT", "/workspaces/acme/policies/p1", raw_body=raw)
    assert got == 413 and "256 KiB" in out["error"]["message"]
    assert call(admin, "GET", "/workspaces/acme/policies")[1]["policies"] == []


def test_audit_records_stay_within_an_item(settings):
    store = AuditStore(settings)
    store.record("cli:x", "template.put", "acme", target={"blob": "é" * 300_000})
    row = store.query("acme")[-1]
    assert row["target"]["truncated"] is True and row["target"]["bytes"] > 600_000
