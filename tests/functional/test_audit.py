"""The audit trail: every admin action (CLI and admin API) and read, with who, before, after and when;
queryable by workspace, actor and time; scoped to one workspace; append only; never a secret."""

from __future__ import annotations

import itertools
import json

import pytest

from meterline.admin.ops import Ops
from meterline.cli.main import main
from meterline.store import aws
from meterline.store.audit import AuditStore
from meterline.store.codec import to_item
from meterline.store.schema import AUDIT
from meterline.store.workspaces import WorkspaceStore
from tests.functional.test_admin_handler import admin_handler, call

ARN = "arn:aws:iam::123456789012:user/finops"


def audit_json(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    main(["audit", "--json", *args])
    return json.loads(capsys.readouterr().out)


def test_cli_actions_are_recorded_with_before_and_after(dev_state, capsys, monkeypatch):
    monkeypatch.setenv("USER", "carol")
    main(["workspaces", "set", "--timezone", "Europe/Paris"])
    main(["budgets", "set", "--scope", "feature:search", "--monthly", "100"])
    main(["budgets", "set", "--scope", "feature:search", "--monthly", "250"])
    main(["keys", "create", "--member", "dan"])
    key_id = next(line.split(": ")[1] for line in capsys.readouterr().out.splitlines() if line.startswith("key_id"))
    main(["keys", "revoke", key_id])
    main(["spend", "--by", "member", "--json"])
    records = audit_json(capsys)
    actions = [r["action"] for r in records]
    assert actions[:6] == ["workspace.update", "budget.set", "budget.set", "key.create", "key.revoke",
                           "read.spend"]
    assert {r["actor"] for r in records} == {"cli:carol"} and {r["workspace"] for r in records} == {"demo"}
    update = records[0]
    assert (update["before"], update["after"]) == ({"timezone": "UTC"}, {"timezone": "Europe/Paris"})
    first, second = records[1], records[2]
    assert first["before"] is None and first["after"]["monthly_micros"] == 100_000_000
    assert second["before"]["monthly_micros"] == 100_000_000 and second["after"]["monthly_micros"] == 250_000_000
    assert records[4]["before"] == {"status": "active"} and records[4]["target"] == {"key_id": key_id}
    assert all(r["ts"] <= s["ts"] for r, s in itertools.pairwise(records))
    # The audit read is itself audited; --since filters by time, --actor by principal.
    assert audit_json(capsys, "--since", "1d", "--actor", "cli:nobody") == []
    assert [r["action"] for r in audit_json(capsys, "--since", "1d")][-2:] == ["read.audit", "read.audit"]
    with pytest.raises(SystemExit, match="--since takes"):
        main(["audit", "--since", "last tuesday"])


def test_admin_api_audit_is_scoped_to_the_workspace_and_keeps_no_secret(settings, monkeypatch):
    admin = admin_handler(settings, monkeypatch, "admin_handler_audit")
    for ws in ("acme", "globex"):
        assert call(admin, "POST", "/workspaces", {"id": ws, "name": ws})[0] == 201
    call(admin, "PUT", "/workspaces/acme/providers/openai", {"api_key": "sk-audit-secret-0123456789"})
    call(admin, "PUT", "/workspaces/globex/aliases/fast", {"model": "sim/gpt-4o-mini"})
    call(admin, "PUT", "/workspaces/globex/aliases/fast", {"model": "sim/gpt-4o"})
    Ops(settings, actor="cli:eve").create_key("acme", "eve")

    status, body = call(admin, "GET", "/workspaces/globex/audit")
    assert status == 200
    records = body["records"]
    assert [r["action"] for r in records] == ["workspace.create", "alias.set", "alias.set"]
    assert {r["workspace"] for r in records} == {"globex"} and {r["actor"] for r in records} == {ARN}
    assert records[2]["before"] == {"model": "sim/gpt-4o-mini", "fallbacks": []}
    assert records[2]["after"]["model"] == "sim/gpt-4o"

    acme = call(admin, "GET", "/workspaces/acme/audit", query="actor=cli:eve")[1]["records"]
    assert [(r["action"], r["actor"]) for r in acme] == [("key.create", "cli:eve")]
    everything = call(admin, "GET", "/audit", query=f"actor={ARN}")[1]["records"]
    assert {r["workspace"] for r in everything} == {"acme", "globex"}
    assert call(admin, "GET", "/workspaces/nope/audit")[0] == 404

    raw = aws.client("dynamodb", settings).scan(TableName=settings.table(AUDIT))["Items"]
    assert raw and "sk-audit-secret" not in json.dumps(raw)


def test_records_are_append_only(settings):
    WorkspaceStore(settings).create("ws_a", "A")
    store = AuditStore(settings)
    first = store.record("cli:x", "workspace.update", "ws_a", before={"a": 1}, after={"a": 2}, now_ms=1_000)
    second = store.record("cli:x", "workspace.update", "ws_a", now_ms=1_000)
    assert first["sk"] != second["sk"]  # same millisecond, two records
    # The store's only write is conditioned on a new key: an existing record is never overwritten.
    ddb = aws.client("dynamodb", settings)
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.put_item(TableName=settings.table(AUDIT), Item=to_item({**first, "after": "tampered"}),
                     ConditionExpression="attribute_not_exists(sk)")
    assert not any(hasattr(store, name) for name in ("update", "delete", "remove"))
    assert sorted(json.dumps(r["after"]) for r in store.query("ws_a")) == ["null", "{\"a\": 2}"]


def test_per_request_policy_decisions_are_queryable_and_scoped(gateway, tenant, fake_openai, settings, monkeypatch):
    """GIVEN a deny policy WHEN one request is denied and one allowed THEN `audit --decisions` (ops,
    admin API) lists both decisions from the ledger, newest first, and another workspace sees none."""
    import openai

    from meterline.admin.ops import decision_query
    from tests.conftest import make_tenant, wait_for_ledger

    Ops(settings).set_request_policy(tenant.workspace, {"id": "no-gpt5", "kind": "models", "deny": ["openai/gpt-5*"]})
    other = make_tenant(settings, fake_openai[1])
    client = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "hi"}])
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    wait_for_ledger(settings, tenant.workspace, 2)

    rows = decision_query(Ops(settings, actor="cli:auditor"), tenant.workspace)
    assert [r["action"] for r in rows] == ["request.decided", "request.policy_denied"]
    allowed, denied = rows
    assert denied["target"]["policy_denied"] == "no-gpt5" and denied["target"]["policies"] == {"no-gpt5": "deny"}
    assert denied["target"]["status"] == 403 and denied["actor"] == f"key:{tenant.key_id}"
    assert allowed["target"]["policies"] == {"no-gpt5": "allow"} and allowed["target"]["outcome"] == "ok"
    assert decision_query(Ops(settings), other.workspace) == []

    admin = admin_handler(settings, monkeypatch, "admin_handler_decisions")
    status, body = call(admin, "GET", f"/workspaces/{tenant.workspace}/audit", query="decisions=true")
    assert status == 200 and [r["target"]["request_id"] for r in body["records"]] == \
        [r["target"]["request_id"] for r in rows]
    # The query itself is an audited read.
    reads = AuditStore(settings).query(tenant.workspace)
    assert [r["action"] for r in reads if r["actor"] == "cli:auditor"] == ["read.audit.decisions"]
