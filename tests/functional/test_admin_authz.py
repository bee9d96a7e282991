"""Per-workspace admin authorization (issue 14 item 9), through the real admin Lambda handler with
function-URL events (the caller's ARN in requestContext.authorizer.iam, as Lambda sets it) and
through the local admin app that `meterline dev` serves on loopback (bearer tokens).

Alice (an IAM user) is admin of acme; the Auditors role is read on globex (bob is one of its
sessions); mallory holds no grant; finops has the platform role."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest

from meterline.admin.app import create_admin_app
from meterline.admin.local import LocalTokens
from meterline.admin.ops import Ops
from meterline.cli.dev import with_admin
from meterline.cli.main import main
from meterline.gateway.app import create_app
from meterline.store.audit import AuditStore
from meterline.store.budgets import BudgetStore
from meterline.store.keys import KeyStore
from tests.functional.test_admin_handler import FINOPS, admin_handler, call
from tests.servers import ServerThread

ALICE = "arn:aws:iam::111122223333:user/alice"
AUDITORS = "arn:aws:iam::111122223333:role/Auditors"
BOB = "arn:aws:sts::111122223333:assumed-role/Auditors/bob@example.com"
MALLORY = "arn:aws:iam::111122223333:user/mallory"


def world(settings) -> None:
    ops = Ops(settings, actor="cli:setup")
    for ws in ("acme", "globex"):
        ops.create_workspace(ws, ws.title())
        ops.create_key(ws, f"{ws}-dev")
    ops.grant_admin(ALICE, "admin", "acme")
    ops.grant_admin("arn:aws:iam::111122223333:role/team/Auditors", "read", "globex")  # a role's path is dropped


@pytest.fixture
def admin(settings, monkeypatch):
    handler = admin_handler(settings, monkeypatch, "admin_handler_authz")
    world(settings)
    return handler


def test_a_workspace_admin_cannot_read_or_write_another_workspace(admin, settings):
    assert call(admin, "GET", "/workspaces/acme/keys", caller=ALICE)[0] == 200
    assert call(admin, "PUT", "/workspaces/acme/budgets/workspace", {"monthly_usd": "10"}, caller=ALICE)[0] == 200
    # Every globex route, read or write, is refused, and the refusal says nothing of globex's contents.
    for method, path, body in [
        ("GET", "/workspaces/globex/keys", None), ("GET", "/workspaces/globex/providers", None),
        ("GET", "/workspaces/globex/spend", None), ("GET", "/workspaces/globex/audit", None),
        ("GET", "/workspaces/globex/budgets", None), ("GET", "/workspaces/globex/templates/x", None),
        ("GET", "/workspaces/globex/exports/focus?month=2026-11", None),
        ("POST", "/workspaces/globex/keys", {"member": "alice"}),
        ("PUT", "/workspaces/globex/budgets/workspace", {"monthly_usd": "0.01"}),
        ("PUT", "/workspaces/globex/providers/openai", {"api_key": "sk-evil-0123456789abcdef"}),
        ("PUT", "/workspaces/globex/prices/openai/gpt-4o", {"input": "0", "output": "0"}),
        ("DELETE", "/workspaces/globex/keys/anything", None),
        ("PUT", "/workspaces/globex/enforcement", {"fail_open": True}),
    ]:
        path, _, query = path.partition("?")
        status, out = call(admin, method, path, body, query=query, caller=ALICE)
        assert status == 403, (method, path, status, out)
        assert "globex" in out["error"]["message"] and "key" not in json.dumps(out).replace("keys", "")
    # A workspace that does not exist is a 403 too: its existence is not revealed.
    assert call(admin, "GET", "/workspaces/nope/keys", caller=ALICE)[0] == 403
    # Nothing changed in globex.
    assert BudgetStore(settings).definitions("globex").budgets == ()
    assert [k.member for k in KeyStore(settings).list("globex")] == ["globex-dev"]


def test_workspace_ids_in_query_body_and_path_tricks_do_not_cross_tenants(admin, settings):
    # A workspace named in the query or the body is not the one acted on: the path's is, and it is checked.
    status, body = call(admin, "GET", "/workspaces/acme/keys", query="workspace=globex", caller=ALICE)
    assert status == 200 and [k["member"] for k in body["keys"]] == ["acme-dev"]
    status, key = call(admin, "POST", "/workspaces/acme/keys", {"member": "eve", "workspace": "globex"},
                       caller=ALICE)
    assert status == 201 and key["key_id"] in {k.key_id for k in KeyStore(settings).list("acme")}
    assert [k.member for k in KeyStore(settings).list("globex")] == ["globex-dev"]
    status, _ = call(admin, "POST", "/workspaces/acme/policies/test",
                     {"model": "sim/gpt-4o-mini", "workspace": "globex", "key": "x"}, caller=ALICE)
    assert status == 404  # the key id is looked up in acme, never in globex
    # Path tricks reach no globex route.
    for path in ("/workspaces/acme/../globex/keys", "/workspaces/globex%2Fkeys", "/workspaces/GLOBEX/keys",
                 "/workspaces/globex /keys", "/workspaces/acme%2F..%2Fglobex/keys", "//workspaces/globex/keys"):
        assert call(admin, "GET", path, caller=ALICE)[0] in (403, 404), path
    # Creating a workspace (named in the body), granting oneself more, the price catalog: platform only.
    assert call(admin, "POST", "/workspaces", {"id": "alice-own", "name": "x"}, caller=ALICE)[0] == 403
    assert call(admin, "PUT", "/admins", {"principal": ALICE, "role": "platform"}, caller=ALICE)[0] == 403
    assert call(admin, "PUT", "/admins", {"principal": ALICE, "role": "admin", "workspace": "globex"},
                caller=ALICE)[0] == 403
    assert call(admin, "GET", "/admins", caller=ALICE)[0] == 403
    assert call(admin, "POST", "/prices/sync", {"accept": True}, caller=ALICE)[0] == 403
    # Across workspaces (the audit trail by actor), only what the caller may read comes back.
    call(admin, "PUT", "/workspaces/globex/aliases/fast", {"model": "sim/gpt-4o-mini"})  # finops, in globex
    call(admin, "PUT", "/workspaces/acme/aliases/fast", {"model": "sim/gpt-4o-mini"})  # finops, in acme
    rows = call(admin, "GET", "/audit", query=f"actor={FINOPS}", caller=ALICE)[1]["records"]
    assert rows and {r["workspace"] for r in rows} == {"acme"}
    # workspaces list: only the readable ones.
    assert call(admin, "GET", "/whoami", caller=ALICE)[1] == {"principal": ALICE, "platform": False,
                                                              "workspaces": {"acme": "admin"}}


def test_the_read_role_reads_and_cannot_write(admin, settings):
    # bob is a session of the Auditors role, which is read on globex.
    assert call(admin, "GET", "/whoami", caller=BOB)[1]["workspaces"] == {"globex": "read"}
    for path in ("/workspaces/globex/keys", "/workspaces/globex/budgets", "/workspaces/globex/spend",
                 "/workspaces/globex/audit", "/workspaces/globex/policies", "/workspaces/globex/aliases"):
        assert call(admin, "GET", path, caller=BOB)[0] == 200, path
    for method, path, body in [
        ("POST", "/workspaces/globex/keys", {"member": "bob"}),
        ("DELETE", f"/workspaces/globex/keys/{KeyStore(settings).list('globex')[0].key_id}", None),
        ("PUT", "/workspaces/globex/budgets/workspace", {"monthly_usd": "1"}),
        ("PUT", "/workspaces/globex/aliases/x", {"model": "sim/gpt-4o-mini"}),
        ("PUT", "/workspaces/globex/policies/p1", {"kind": "models", "deny": ["*"]}),
        ("PUT", "/workspaces/globex/templates/t", {"system": "hi"}),
        ("PUT", "/workspaces/globex/cache/workspace", {"ttl": "1h"}),
    ]:
        status, out = call(admin, method, path, body, caller=BOB)
        assert status == 403 and "may not change" in out["error"]["message"], (method, path)
    assert KeyStore(settings).list("globex")[0].revoked is False
    assert call(admin, "GET", "/workspaces/acme/keys", caller=BOB)[0] == 403
    # The role's grant is what counts: another role's session of the same name in another account is nobody.
    other = "arn:aws:sts::999999999999:assumed-role/Auditors/bob"
    assert call(admin, "GET", "/workspaces/globex/keys", caller=other)[0] == 403


def test_an_unknown_principal_gets_403_everywhere(admin):
    for method, path in [("GET", "/whoami"), ("GET", "/workspaces/acme/keys"), ("POST", "/workspaces"),
                         ("GET", "/admins"), ("GET", "/audit?actor=x")]:
        path, _, query = path.partition("?")
        status, out = call(admin, method, path, {"id": "m", "name": "m"} if method == "POST" else None,
                           query=query, caller=MALLORY)
        assert status == 403 and MALLORY in out["error"]["message"], path
    # No IAM context at all (the URL's auth type changed to NONE by mistake): refused, not anonymous admin.
    assert call(admin, "GET", "/workspaces/acme/keys", caller=None)[0] == 403


def test_grants_through_the_admin_api_and_cli_are_audited(admin, settings, dev_state, capsys, monkeypatch):
    status, grant = call(admin, "PUT", "/admins", {"principal": MALLORY, "role": "read", "workspace": "acme"})
    assert status == 200 and grant["granted_by"] == FINOPS
    assert call(admin, "GET", "/workspaces/acme/keys", caller=MALLORY)[0] == 200
    assert call(admin, "PUT", "/admins", {"principal": "mallory", "role": "read", "workspace": "acme"})[0] == 400
    assert call(admin, "PUT", "/admins", {"principal": BOB, "role": "read", "workspace": "acme"})[0] == 400
    assert call(admin, "PUT", "/admins", {"principal": MALLORY, "role": "read"})[0] == 400
    assert call(admin, "PUT", "/admins", {"principal": MALLORY, "role": "read", "workspace": "nope"})[0] == 404
    listed = call(admin, "GET", "/admins", query="workspace=acme")[1]["grants"]
    assert {(g["principal"], g["role"]) for g in listed} >= {(ALICE, "admin"), (MALLORY, "read"), (FINOPS, "platform")}
    assert call(admin, "DELETE", "/admins", query=f"principal={MALLORY}&workspace=acme")[0] == 204
    assert call(admin, "DELETE", "/admins", query=f"principal={MALLORY}&workspace=acme")[0] == 404
    assert call(admin, "GET", "/workspaces/acme/keys", caller=MALLORY)[0] == 403
    records = AuditStore(settings).query("acme")
    changes = [(r["action"], r["actor"], r["target"]["principal"]) for r in records if r["action"].startswith("admin.")]
    assert changes == [("admin.grant", "cli:setup", ALICE), ("admin.grant", FINOPS, MALLORY),
                       ("admin.revoke", FINOPS, MALLORY)]
    # Denials are audited too (who tried what on which workspace).
    call(admin, "GET", "/workspaces/globex/keys", caller=ALICE)
    assert [r["actor"] for r in AuditStore(settings).query("globex") if r["action"] == "denied.list_keys"] == [ALICE]

    # The CLI: grant, list, revoke (dev_state's tables are the same moto; its own workspace is demo).
    monkeypatch.setenv("USER", "carol")
    main(["admins", "grant", "--principal", AUDITORS, "--role", "admin"])
    main(["admins", "list", "--workspace", "demo", "--json"])
    out = capsys.readouterr().out
    rows = {(g["principal"], g["workspace"], g["role"]) for g in json.loads(out[out.index("["):])}
    assert (AUDITORS, "demo", "admin") in rows and (FINOPS, "*", "platform") in rows
    main(["admins", "revoke", "--principal", AUDITORS])
    with pytest.raises(SystemExit, match="no grant"):
        main(["admins", "revoke", "--principal", AUDITORS])
    with pytest.raises(SystemExit, match="a principal is"):
        main(["admins", "grant", "--principal", "*", "--role", "platform"])
    demo = [(r["action"], r["actor"]) for r in AuditStore(dev_state).query("demo")]
    assert [a for a in demo if a[0].startswith("admin.")] == [("admin.grant", "cli:carol"),
                                                              ("admin.revoke", "cli:carol")]


def test_cli_reads_are_audited(dev_state, monkeypatch, capsys):
    """Every read the CLI makes through the operations is in the audit table (not only spend and keys)."""
    monkeypatch.setenv("USER", "dora")
    for argv in (["aliases", "list"], ["budgets", "list"], ["policies", "list"], ["workspaces", "list"],
                 ["cache", "list"]):
        main(argv)
    reads = [r["action"] for r in AuditStore(dev_state).query("demo") if r["actor"] == "cli:dora"]
    assert reads == ["read.list_aliases", "read.list_budgets", "read.list_request_policies", "read.list_cache_rules"]
    everywhere = AuditStore(dev_state).by_actor("cli:dora")
    assert [r["action"] for r in everywhere if r["workspace"] == "-"] == ["read.list_workspaces"]


# -- the local admin app (meterline dev) ----------------------------------------------------------------
@pytest.fixture
def local(settings, tmp_path, monkeypatch):
    """The gateway and the admin API on one uvicorn port, as `meterline dev` serves them."""
    from meterline.cli import target

    world(settings)
    tokens = LocalTokens.ensure(tmp_path / "data-1")
    with ServerThread(with_admin(create_app(settings), create_admin_app(settings, tokens))) as server:
        monkeypatch.setenv("METERLINE_STATE_DIR", str(tmp_path))
        target.write_dev_state(settings, {"workspace": "acme", "admin_url": server.url + "/admin",
                                          "admin_dir": str(tmp_path / "data-1")})
        yield server.url + "/admin", tokens


def test_the_local_admin_app_accepts_only_its_tokens(local, tmp_path):
    url, tokens = local
    operator = tokens.operator_token()
    # Owner-only files; the token itself is stored only as a hash in the accepted set.
    for name in ("admin-token", "admin-tokens.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "data-1" / name).st_mode) == 0o600
    assert operator not in (tmp_path / "data-1" / "admin-tokens.json").read_text()
    with httpx.Client(base_url=url, timeout=30) as http:
        for headers in ({}, {"authorization": "Bearer mla_wrong"}, {"authorization": operator},
                        {"authorization": f"Basic {operator}"}, {"authorization": f"Bearer {operator}x"}):
            response = http.get("/workspaces/acme/keys", headers=headers)
            assert response.status_code == 401, headers
        ok = http.get("/workspaces/acme/keys", headers={"authorization": f"Bearer {operator}"})
        assert ok.status_code == 200 and ok.json()["keys"][0]["member"] == "acme-dev"
        # The gateway beside it is untouched by the admin prefix.
        assert http.get(url.removesuffix("/admin") + "/v1/models").status_code == 401

        # Local principals act with their grants, exactly as IAM principals do deployed.
        alice, nobody = tokens.mint("local:alice"), tokens.mint("local:nobody")
        as_operator = {"authorization": f"Bearer {operator}"}
        assert http.put("/admins", json={"principal": "local:alice", "role": "admin", "workspace": "acme"},
                        headers=as_operator).status_code == 200
        assert http.put("/admins", json={"principal": "local:alice", "role": "read", "workspace": "globex"},
                        headers=as_operator).status_code == 200
        as_alice, as_nobody = {"authorization": f"Bearer {alice}"}, {"authorization": f"Bearer {nobody}"}
        assert http.post("/workspaces/acme/keys", json={"member": "a"}, headers=as_alice).status_code == 201
        assert http.get("/workspaces/globex/keys", headers=as_alice).status_code == 200
        assert http.post("/workspaces/globex/keys", json={"member": "a"}, headers=as_alice).status_code == 403
        assert http.put("/workspaces/globex/budgets/workspace", json={"monthly_usd": "1"},
                        headers=as_alice).status_code == 403
        assert {k["member"] for k in http.get("/workspaces/acme/keys", params={"workspace": "globex"},
                                              headers=as_alice).json()["keys"]} == {"acme-dev", "a"}
        assert http.post("/workspaces", json={"id": "x1", "name": "x"}, headers=as_alice).status_code == 403
        assert http.get("/whoami", headers=as_nobody).status_code == 403


def test_the_cli_calls_the_local_admin_api_with_its_token(local, capsys):
    main(["api", "GET", "/whoami"])
    assert json.loads(capsys.readouterr().out) == {"principal": "local:operator", "platform": True, "workspaces": {}}
    main(["api", "POST", "/workspaces/acme/keys", "--data", '{"member": "zed"}'])
    assert json.loads(capsys.readouterr().out)["member"] == "zed"
    with pytest.raises(SystemExit, match="HTTP 404"):
        main(["api", "GET", "/workspaces/nope/providers"])
    assert "no workspace 'nope'" in capsys.readouterr().out
    main(["admins", "token"])
    assert capsys.readouterr().out.strip() == local[1].operator_token()


def test_the_ops_layer_enforces_the_mcp_credentials_workspace_and_role(settings):
    """The MCP server's tools run the same operations with an Access built from the virtual key: a
    read key (mcp:key/member/department) reads its workspace only, and cannot change a budget even if a
    tool passed the call through."""
    from meterline.admin.access import Access
    from meterline.admin.ops import OpError
    from meterline.budgets.model import Budget

    world(settings)
    reader = Ops(settings, actor="mcp:key:k1", access=Access("mcp:key:k1", roles={"acme": "read"}))
    assert reader.breakdown("acme", "month", "model")["rows"] == []
    for call_it in (lambda: reader.breakdown("globex", "month", "model"),
                    lambda: reader.set_budget("acme", Budget("workspace", "acme", monthly_micros=1)),
                    lambda: reader.list_keys("globex")):
        with pytest.raises(OpError) as refused:
            call_it()
        assert refused.value.status == 403
    assert BudgetStore(settings).definitions("acme").budgets == ()
