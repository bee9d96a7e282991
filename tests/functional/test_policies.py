"""Request policies through the official SDKs (gateway on uvicorn, fake providers on loopback).

GIVEN a workspace with request policies (models, IPs, schedules, max_tokens caps, size limits)
WHEN the openai and anthropic SDKs call the gateway, streaming and not
THEN a denied request never reaches the provider, the caller gets its dialect's error with
     `code: policy_denied` and the policy's id, the ledger record carries every decision, and an
     allowed request reaches the provider changed only as the policies say.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import anthropic
import openai
import pytest

from meterline.admin.ops import Ops
from meterline.cli.main import main
from meterline.store.workspaces import Alias, WorkspaceStore
from tests.conftest import wait_for_ledger
from tests.functional.test_admin_handler import admin_handler, call

MESSAGES = [{"role": "user", "content": "Say hello"}]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def sdk(gateway, tenant, **headers) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0,
                         default_headers=headers or None)


def policy(settings, tenant, **spec) -> None:
    Ops(settings).set_request_policy(tenant.workspace, spec)


def test_denied_model_never_reaches_the_provider_streamed_or_not(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    policy(settings, tenant, id="no-gpt5", kind="models", deny=["openai/gpt-5*"])
    WorkspaceStore(settings).put_alias(tenant.workspace, Alias("big", "openai/gpt-5.1"))
    client = sdk(gateway, tenant)
    for model, stream in (("gpt-5.1", False), ("openai/gpt-5-mini", True), ("big", False)):
        with pytest.raises(openai.PermissionDeniedError) as err:
            result = client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
            list(result)
        assert err.value.status_code == 403
        assert err.value.body["code"] == "policy_denied" and err.value.body["policy"] == "no-gpt5"
        assert "no-gpt5" in err.value.body["message"] and err.value.body["param"] == "model"
    assert fake.requests == []
    # An allowed model goes through, and its record shows the decision too.
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    records = wait_for_ledger(settings, tenant.workspace, 4)
    denied = [r for r in records if r["outcome"] == "rejected"]
    assert len(denied) == 3
    assert all(r["policy_denied"] == "no-gpt5" and r["policies"] == {"no-gpt5": "deny"} for r in denied)
    assert all(r["cost_micros"] == 0 and r["error_code"] == "policy_denied" for r in denied)
    [ok] = [r for r in records if r["outcome"] == "ok"]
    assert ok["policies"] == {"no-gpt5": "allow"} and "policy_denied" not in ok


def test_a_fallback_the_policy_denies_is_skipped(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    fake.error = (429, {"error": {"message": "slow down", "type": "rate_limit_error", "code": None}})
    WorkspaceStore(settings).put_alias(tenant.workspace, Alias("smart", "openai/gpt-4o",
                                                               ("openai/gpt-5", "openai/gpt-4o-mini")))
    policy(settings, tenant, id="no-gpt5", kind="models", deny=["openai/gpt-5*"])
    with pytest.raises(openai.RateLimitError):
        sdk(gateway, tenant).chat.completions.create(model="smart", messages=MESSAGES)
    assert [r["model"] for r in fake.requests] == ["gpt-4o", "gpt-4o-mini"]


def test_max_tokens_cap_clamps_what_the_provider_gets(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    policy(settings, tenant, id="cap", kind="max_tokens", max_tokens=64)
    client = sdk(gateway, tenant)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)
    assert raw.headers["meterline-max-tokens-capped"] == "64"
    list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_completion_tokens=10)
    assert fake.requests[0]["max_tokens"] == 64
    assert fake.requests[1]["max_completion_tokens"] == 64  # no cap asked: the policy's applies
    assert fake.requests[2]["max_completion_tokens"] == 10  # under the cap: untouched
    policy(settings, tenant, id="strict", kind="max_tokens", max_tokens=64, on_exceed="reject",
           attach=f"key:{tenant.key_id}")
    gateway.services.workspace_cache.invalidate()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=65)
    assert err.value.body["policy"] == "strict" and err.value.body["param"] == "max_tokens"
    assert len(fake.requests) == 3


def test_size_and_message_limits(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    policy(settings, tenant, id="small", kind="size", max_bytes=2000, max_messages=3)
    client = sdk(gateway, tenant)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x" * 3000}])
    assert err.value.status_code == 413 and err.value.body["code"] == "policy_denied"
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES * 4)
    assert err.value.status_code == 413 and "4 messages" in err.value.body["message"]
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES * 3)
    assert len(fake.requests) == 1


def test_schedule_in_the_workspace_time_zone(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    local = datetime.now(ZoneInfo("Pacific/Auckland"))
    WorkspaceStore(settings).update_settings(tenant.workspace, timezone="Pacific/Auckland")
    other_day = DAYS[(local.weekday() + 3) % 7]
    policy(settings, tenant, id="dev-hours", kind="schedule", windows=[f"{other_day} 00:00-24:00"],
           attach="department:research")
    client = sdk(gateway, tenant)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.body["policy"] == "dev-hours" and "Pacific/Auckland" in err.value.body["message"]
    today = DAYS[local.weekday()]
    policy(settings, tenant, id="dev-hours", kind="schedule", windows=[f"{today} 00:00-24:00"],
           attach="department:research")
    gateway.services.workspace_cache.invalidate()
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(fake.requests) == 1


def lambda_context(ip: str) -> str:
    return json.dumps({"http": {"method": "POST", "path": "/v1/chat/completions", "sourceIp": ip}})


def test_ip_allowlist_from_the_function_url_request_context(start_gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    policy(settings, tenant, id="office", kind="ip", cidrs=["203.0.113.0/24"])
    behind_lwa = start_gateway(behind_lambda_adapter=True)
    sdk(behind_lwa, tenant, **{"x-amzn-request-context": lambda_context("203.0.113.7")}).chat.completions.create(
        model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError) as err:
        sdk(behind_lwa, tenant, **{"x-amzn-request-context": lambda_context("198.51.100.1")}).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True)
    assert err.value.body["policy"] == "office"
    # Not behind the adapter, the same header is a client's forgery: the socket peer (loopback) counts.
    direct = start_gateway()
    with pytest.raises(openai.PermissionDeniedError):
        sdk(direct, tenant, **{"x-amzn-request-context": lambda_context("203.0.113.7"),
                               "x-forwarded-for": "203.0.113.7"}).chat.completions.create(
            model="gpt-4o", messages=MESSAGES)
    assert len(fake.requests) == 1
    records = wait_for_ledger(settings, tenant.workspace, 3)
    assert not any("203.0.113" in json.dumps(r) or "198.51.100" in json.dumps(r) for r in records)


def test_forwarded_for_only_behind_a_trusted_proxy(start_gateway, tenant, fake_openai, settings, dev_state):
    fake, _ = fake_openai
    policy(settings, tenant, id="office", kind="ip", cidrs=["203.0.113.0/24"])
    main(["workspaces", "set", "--workspace", tenant.workspace, "--trusted-proxies", "127.0.0.1/32"])
    gateway = start_gateway()
    sdk(gateway, tenant, **{"x-forwarded-for": "10.0.0.1, 203.0.113.7"}).chat.completions.create(
        model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError):  # the client is the rightmost untrusted hop
        sdk(gateway, tenant, **{"x-forwarded-for": "203.0.113.7, 10.0.0.1"}).chat.completions.create(
            model="gpt-4o", messages=MESSAGES)
    assert len(fake.requests) == 1


def test_monitor_mode_records_without_denying(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    policy(settings, tenant, id="watch", kind="models", deny=["openai/*"], mode="monitor")
    sdk(gateway, tenant).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["outcome"] == "ok" and record["policies"] == {"watch": "monitor:deny"}
    assert len(fake.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_gets_its_dialect(gateway, tenant, settings, stream):
    policy(settings, tenant, id="no-opus", kind="models", deny=["anthropic/claude-opus-*"])
    client = anthropic.Anthropic(base_url=gateway.url, api_key=tenant.api_key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        if stream:
            with client.messages.stream(model="claude-opus-4-1", max_tokens=100, messages=MESSAGES) as events:
                list(events)
        else:
            client.messages.create(model="claude-opus-4-1", max_tokens=100, messages=MESSAGES)
    assert err.value.status_code == 403
    assert err.value.body["type"] == "error"
    assert err.value.body["error"] == {
        "type": "permission_error", "code": "policy_denied", "policy": "no-opus",
        "message": "Request denied by policy `no-opus` (models): the model `anthropic/claude-opus-4-1` is denied."}


def test_cli_set_and_list_in_evaluation_order(dev_state, capsys):
    main(["policies", "set", "dev-hours", "--kind", "schedule", "--window", "mon-fri 08:00-20:00",
          "--attach", "department:dev", "--timezone", "Europe/Berlin"])
    main(["policies", "set", "no-gpt5", "--kind", "models", "--deny", "openai/gpt-5*,openai/o3*"])
    main(["policies", "set", "cap", "--spec", json.dumps({"kind": "max_tokens", "max_tokens": 500})])
    capsys.readouterr()
    main(["policies", "list"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["cap", "no-gpt5", "dev-hours"]  # evaluation order
    assert "deny=openai/gpt-5*,openai/o3*" in out and "windows=mon-fri 08:00-20:00" in out
    main(["policies", "list", "--json"])
    assert json.loads(capsys.readouterr().out)[1] == {"id": "no-gpt5", "kind": "models", "attach": "workspace",
                                                      "mode": "enforce", "deny": ["openai/gpt-5*", "openai/o3*"]}


def test_cli_test_reports_decisions(dev_state, capsys):
    main(["policies", "set", "dev-hours", "--kind", "schedule", "--window", "mon-fri 08:00-20:00",
          "--attach", "department:dev", "--timezone", "Europe/Berlin"])
    main(["policies", "set", "cap", "--kind", "max_tokens", "--max-tokens", "500"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["policies", "test", "--model", "openai/gpt-4o", "--department", "dev",
              "--at", "2026-12-05T10:00:00+01:00"])  # a Saturday
    out = capsys.readouterr().out
    assert exit_.value.code == 1 and "DENIED by dev-hours" in out and "Europe/Berlin" in out
    main(["policies", "test", "--model", "openai/gpt-4o", "--department", "dev", "--max-tokens", "4000",
          "--at", "2026-12-02T10:00:00+01:00", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["allowed"] and result["max_tokens"] == 500
    assert [(d["policy"], d["result"]) for d in result["decisions"]] == [("cap", "clamp"), ("dev-hours", "allow")]
    main(["policies", "delete", "cap"])
    with pytest.raises(SystemExit) as exit_:
        main(["policies", "delete", "cap"])
    assert "no policy 'cap'" in str(exit_.value.code)
    with pytest.raises(SystemExit) as exit_:
        main(["policies", "set", "bad", "--kind", "models"])
    assert "allow and/or deny" in str(exit_.value.code)


def test_admin_api_policies(settings, monkeypatch, caplog):
    import logging

    admin = admin_handler(settings, monkeypatch, "admin_handler_policies")
    caplog.set_level(logging.INFO, logger="meterline.audit")
    assert call(admin, "POST", "/workspaces", {"id": "acme", "name": "Acme"})[0] == 201
    status, body = call(admin, "PUT", "/workspaces/acme/policies/office", {"kind": "ip", "cidrs": ["10.0.0.0/8"]})
    assert status == 200 and body == {"id": "office", "kind": "ip", "attach": "workspace", "mode": "enforce",
                                      "cidrs": ["10.0.0.0/8"]}
    status, body = call(admin, "PUT", "/workspaces/acme/policies/bad", {"kind": "ip", "cidrs": ["nope"]})
    assert status == 400 and "nope" in body["error"]["message"]
    assert call(admin, "GET", "/workspaces/acme/policies")[1]["policies"][0]["id"] == "office"
    status, body = call(admin, "POST", "/workspaces/acme/policies/test", {"model": "openai/gpt-4o", "ip": "10.1.1.1"})
    assert status == 200 and body["allowed"] is True
    status, body = call(admin, "POST", "/workspaces/acme/policies/test", {"model": "openai/gpt-4o", "ip": "8.8.8.8"})
    assert body["allowed"] is False and body["denied_by"] == "office"
    assert call(admin, "DELETE", "/workspaces/acme/policies/office")[0] == 204
    assert call(admin, "DELETE", "/workspaces/acme/policies/office")[0] == 404
    actions = [r.audit["action"] for r in caplog.records if hasattr(r, "audit")]
    assert actions == ["workspace.create", "request_policy.set", "request_policy.delete"]


def test_policies_apply_within_the_cache_ttl(start_gateway, tenant, fake_openai, settings):
    gateway = start_gateway(key_cache_ttl_s=0.5)
    client = sdk(gateway, tenant)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    policy(settings, tenant, id="no-4o", kind="models", deny=["openai/gpt-4o"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        except openai.PermissionDeniedError as exc:
            assert exc.body["policy"] == "no-4o"
            break
        time.sleep(0.1)
    else:
        pytest.fail("the new policy never applied")


def test_model_list_hides_what_the_policies_deny(gateway, tenant, settings):
    policy(settings, tenant, id="no-gpt5", kind="models", deny=["openai/gpt-5*", "sim/*"])
    WorkspaceStore(settings).put_alias(tenant.workspace, Alias("big", "openai/gpt-5.1"))
    WorkspaceStore(settings).put_alias(tenant.workspace, Alias("small", "openai/gpt-4o-mini"))
    ids = {m.id for m in sdk(gateway, tenant).models.list()}
    assert "openai/gpt-4o" in ids and "small" in ids
    assert not any(i.startswith(("openai/gpt-5", "sim/")) for i in ids) and "big" not in ids
