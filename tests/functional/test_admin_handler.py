"""The control-plane Lambda handler (Mangum) driven with real function-URL v2.0 event payloads."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from meterline.store.keys import KeyStore
from meterline.vkeys import hash_key

ROOT = Path(__file__).resolve().parents[2]


def load_handler(path: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FINOPS = "arn:aws:iam::123456789012:user/finops"


def url_event(method: str, path: str, body: Any = None, query: str = "", caller: str | None = FINOPS,
              raw_body: str | None = None) -> dict[str, Any]:
    """A Lambda function URL (payload format 2.0) event with AWS_IAM auth, as Lambda delivers it
    (`caller`: the authenticated principal's ARN in requestContext.authorizer.iam)."""
    raw = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    account = caller.split(":")[4] if caller else "123456789012"
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"content-type": "application/json", "host": "abcdefg.lambda-url.us-east-1.on.aws",
                    "x-amzn-trace-id": "Root=1-5e6722a7-cc56xmpl46db7ae02d4da47e", "x-forwarded-proto": "https",
                    "x-forwarded-for": "203.0.113.7", "x-forwarded-port": "443", "user-agent": "meterline-test"},
        "queryStringParameters": dict(p.split("=", 1) for p in query.split("&")) if query else None,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abcdefg",
            "authorizer": {"iam": {"accessKey": "AKIAIOSFODNN7EXAMPLE", "accountId": account,
                                   "callerId": "AIDACKCEVSQ6C2EXAMPLE", "cognitoIdentity": None,
                                   "principalOrgId": None, "userArn": caller,
                                   "userId": "AIDACKCEVSQ6C2EXAMPLE"}} if caller else None,
            "domainName": "abcdefg.lambda-url.us-east-1.on.aws", "domainPrefix": "abcdefg",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                     "userAgent": "meterline-test"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "routeKey": "$default", "stage": "$default",
            "time": "22/Nov/2026:10:40:00 +0000", "timeEpoch": 1795344000000,
        },
        "body": raw,
        "isBase64Encoded": False,
    }


class Context:
    function_name = "meterline-admin"
    aws_request_id = "c6af9ac6"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:meterline-admin"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def call(handler: Any, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    response = handler(url_event(*args, **kwargs), Context())
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return response["statusCode"], (json.loads(body) if body else None)


def admin_handler(settings: Any, monkeypatch: Any, name: str, grant: str | None = FINOPS) -> Any:
    """The real admin Lambda handler over this test's tables; `grant` gets the platform role."""
    from meterline.admin.ops import Ops

    for var, value in settings.to_env().items():
        monkeypatch.setenv(var, value)
    if grant:
        Ops(settings).grant_admin(grant, "platform")
    return load_handler("functions/admin/handler.py", name).handler


@pytest.fixture
def admin(settings, monkeypatch):
    return admin_handler(settings, monkeypatch, "admin_handler")


def test_workspace_key_provider_lifecycle(admin, settings, caplog):
    caplog.set_level(logging.INFO, logger="meterline.audit")
    status, body = call(admin, "POST", "/workspaces", {"id": "acme", "name": "Acme", "timezone": "Europe/Paris"})
    assert status == 201 and body["workspace"] == "acme"

    status, key = call(admin, "POST", "/workspaces/acme/keys", {"member": "bob", "department": "sales",
                                                                 "models": ["sim/*"]})
    assert status == 201 and key["api_key"].startswith("mlk_")
    stored = KeyStore(settings).get(hash_key(key["api_key"]))
    assert stored.member == "bob" and stored.models == ("sim/*",)

    status, body = call(admin, "PUT", "/workspaces/acme/providers/openai", {"api_key": "sk-admin-secret-123456"})
    assert status == 200 and body["key_stored"] is True and "sk-admin" not in json.dumps(body)

    status, body = call(admin, "GET", "/workspaces/acme/providers")
    assert body["providers"][0]["name"] == "openai" and "sk-admin" not in json.dumps(body)

    status, body = call(admin, "GET", "/workspaces/acme/keys")
    assert [k["status"] for k in body["keys"]] == ["active"]
    assert call(admin, "DELETE", f"/workspaces/acme/keys/{key['key_id']}")[0] == 204
    assert call(admin, "GET", "/workspaces/acme/keys")[1]["keys"][0]["status"] == "revoked"

    status, body = call(admin, "GET", "/workspaces/acme/spend", query="by=member&period=month")
    assert status == 200 and body["rows"] == [] and body["timezone"] == "Europe/Paris"

    # Every action is audited with the IAM caller, never with a secret.
    actions = [r.audit for r in caplog.records if hasattr(r, "audit")]
    assert [a["action"] for a in actions] == ["workspace.create", "key.create", "provider.put", "key.revoke"]
    assert {a["actor"] for a in actions} == {"arn:aws:iam::123456789012:user/finops"}
    assert "sk-admin-secret" not in caplog.text and key["api_key"] not in caplog.text


def test_bad_admin_input_is_a_clear_4xx(admin):
    assert call(admin, "POST", "/workspaces", {"id": "bad id!", "name": "x"})[0] == 422
    status, body = call(admin, "POST", "/workspaces/nope/keys", {"member": "x"})
    assert status == 404 and "nope" in body["error"]["message"]
    status, body = call(admin, "GET", "/workspaces/nope/spend", query="by=session")
    assert status == 400


def test_azure_provider_and_aliases_through_the_admin_api(admin, settings):
    from meterline.store.workspaces import WorkspaceStore

    assert call(admin, "POST", "/workspaces", {"id": "corp", "name": "Corp"})[0] == 201
    status, body = call(admin, "PUT", "/workspaces/corp/providers/azure", {
        "api_key": "az-secret-0123456789", "base_url": "https://corp.openai.azure.com",
        "deployments": {"prod-4o": "gpt-4o"}})
    assert status == 200 and body["kind"] == "azure" and body["priced_as"] == "openai"
    assert body["options"] == {"api_version": "2024-10-21", "deployments": {"prod-4o": "gpt-4o"}}
    status, body = call(admin, "PUT", "/workspaces/corp/providers/azure2", {"kind": "azure",
                                                                            "base_url": "https://x.openai.azure.com"})
    assert status == 400 and "deployment" in body["error"]["message"]
    status, body = call(admin, "PUT", "/workspaces/corp/providers/bedrock", {"api_key": "nope-0123456789"})
    assert status == 400 and "IAM role" in body["error"]["message"]

    status, body = call(admin, "PUT", "/workspaces/corp/aliases/fast",
                        {"model": "azure/prod-4o", "fallbacks": ["sim/gpt-4o-mini"]})
    assert status == 200 and body["fallbacks"] == ["sim/gpt-4o-mini"]
    assert WorkspaceStore(settings).load("corp").aliases["fast"].model == "azure/prod-4o"
    assert call(admin, "GET", "/workspaces/corp/aliases")[1]["aliases"][0]["alias"] == "fast"
    status, body = call(admin, "PUT", "/workspaces/corp/aliases/slow", {"model": "gpt-4o"})
    assert status == 400 and "provider/model" in body["error"]["message"]
    assert call(admin, "DELETE", "/workspaces/corp/aliases/fast")[0] == 204


def test_a_bare_workspace_budget_scope_is_the_workspace(admin):
    assert call(admin, "POST", "/workspaces", {"id": "bare", "name": "Bare"})[0] == 201
    status, body = call(admin, "PUT", "/workspaces/bare/budgets/workspace", {"monthly_usd": "10"})
    assert status == 200 and body["scope"] == "workspace:bare"
    status, body = call(admin, "GET", "/workspaces/bare/budgets")
    assert [b["scope"] for b in body["budgets"]] == ["workspace:bare"]
