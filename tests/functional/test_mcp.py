"""The MCP server through the official SDK's own client, over stdio (`meterline mcp`) and streamable
HTTP (uvicorn on loopback, and the Lambda handler through Mangum with function-URL events).

GIVEN two workspaces with ledger records and rollups, and virtual keys with mcp scopes
WHEN an MCP client calls the spend tools
THEN an admin key sees its whole workspace, a key with a slice scope sees only its slice, nobody
     sees another workspace whatever the tool arguments say, and budget changes need admin.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from meterline.admin.ops import Ops
from meterline.budgets.model import Budget
from meterline.mcp.auth import KeyAuthenticator
from meterline.mcp.http import build_app
from meterline.mcp.server import build_server
from meterline.rollup import apply_entries
from meterline.store.budgets import BudgetStore
from meterline.store.ledger import LedgerStore
from meterline.store.rollups import RollupStore, contribution_of
from meterline.store.workspaces import WorkspaceStore
from tests.functional.test_admin_handler import Context, load_handler
from tests.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]


def record(ws: str, key: str, member: str, department: str, model: str, cost: int, **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    rid = "req_" + uuid.uuid4().hex[:24]
    return {"request_id": rid, "parent_request_id": rid, "attempt": 1, "ts": int(now.timestamp() * 1000),
            "day": now.strftime("%Y-%m-%d"), "month": now.strftime("%Y-%m"), "endpoint": "chat.completions",
            "workspace": ws, "key": key, "member": member, "department": department, "provider": "openai",
            "model": model, "input_uncached": 100, "cache_read": 0, "output": 20, "cost_micros": cost,
            "outcome": "ok", "status": 200, "stream": False, "estimated": False, **extra}


class World:
    def __init__(self, settings):
        self.settings = settings
        ops = Ops(settings)
        self.ws, self.other = "mcp_" + uuid.uuid4().hex[:6], "mcp_" + uuid.uuid4().hex[:6]
        for ws in (self.ws, self.other):
            WorkspaceStore(settings).create(ws, ws)
        self.alice = ops.create_key(self.ws, "alice", "research", scopes=("mcp",))
        self.bob_dept = ops.create_key(self.ws, "bob", "sales", scopes=("mcp:department",))
        self.admin = ops.create_key(self.ws, "ops", "platform", scopes=("mcp:admin",))
        self.plain = ops.create_key(self.ws, "carol", "research")
        self.outsider = ops.create_key(self.other, "mallory", "research", scopes=("mcp:admin",))
        self.records = [
            record(self.ws, self.alice["key_id"], "alice", "research", "openai/gpt-4o", 1_500_000, feature="search"),
            record(self.ws, self.alice["key_id"], "alice", "research", "openai/gpt-4o-mini", 250_000, feature="chat",
                   savings={"exact_cache": 40_000}, saved_micros=40_000),
            record(self.ws, self.bob_dept["key_id"], "bob", "sales", "anthropic/claude-sonnet-4-5", 3_000_000,
                   feature="search"),
            record(self.ws, "key_x", "dave", "sales", "openai/gpt-4o", 700_000, feature="chat"),
            record(self.other, self.outsider["key_id"], "mallory", "research", "openai/gpt-5", 9_990_000),
        ]
        ledger = LedgerStore(settings)
        for r in self.records:
            ledger.put(r)
        # What the rollup aggregator does with the ledger's stream records.
        entries = [contribution_of(f"event-{i}", r) for i, r in enumerate(self.records)]
        assert apply_entries(entries, RollupStore(settings)) == len(entries)
        ops.set_budget(self.ws, Budget("key", self.alice["key_id"], monthly_micros=10_000_000))
        ops.set_budget(self.ws, Budget("workspace", self.ws, monthly_micros=100_000_000))


@pytest.fixture
def world(settings) -> World:
    return World(settings)


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        return {"error": " ".join(getattr(c, "text", "") for c in result.content)}
    return result.structured_content or json.loads(result.content[0].text)


def http_client(url: str, key: str | None, transport: Any = None) -> Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    http = httpx2.AsyncClient(headers=headers, transport=transport, timeout=30)
    return Client(streamable_http_client(url, http_client=http))


async def scoped_checks(client_for, world: World) -> None:
    """What every transport must hold: slices, admin, isolation, budget changes."""
    async with client_for(world.alice["api_key"]) as alice:
        tools = {t.name for t in (await alice.list_tools()).tools}
        assert {"get_spend", "drill_down", "compare_periods", "get_budget_status", "forecast_month_end",
                "get_savings", "recent_requests", "explain_request", "set_budget"} <= tools
        assert await call(alice, "whoami") == {"workspace": world.ws, "access": f"key {world.alice['key_id']} only"}
        spend = await call(alice, "get_spend", period="today", group_by="model")
        assert {r["value"]: r["cost_usd"] for r in spend["rows"]} == {"openai/gpt-4o": "1.500000",
                                                                     "openai/gpt-4o-mini": "0.250000"}
        assert spend["total"]["cost_usd"] == "1.750000"
        # Asking for someone else's slice or another workspace changes nothing: the credential decides.
        other = await call(alice, "drill_down", dimension="member", value="bob", group_by="model", period="today")
        assert other["rows"] == [] and other["total"]["cost_usd"] == "0.000000"
        sneaky = await alice.call_tool("get_spend", {"period": "today", "group_by": "workspace",
                                                     "workspace": world.other})
        assert sneaky.is_error or (sneaky.structured_content or {}).get("total", {}).get("cost_usd") == "1.750000"
        budgets = await call(alice, "get_budget_status")
        assert [b["scope"] for b in budgets["budgets"]] == [f"key:{world.alice['key_id']}"]
        # A budget set after spend started counts the month's spend so far (from the rollups).
        assert budgets["budgets"][0]["spent_month_usd"] == spend["total"]["cost_usd"] == "1.750000"
        recent = await call(alice, "recent_requests", limit=10)
        assert {r["member"] for r in recent["requests"]} == {"alice"} and len(recent["requests"]) == 2
        bob_request = world.records[2]["request_id"]
        assert "error" in await call(alice, "explain_request", request_id=bob_request)
        mine = await call(alice, "explain_request", request_id=world.records[0]["request_id"])
        assert mine["records"][0]["cost_usd"] == "1.500000" and mine["records"][0]["model"] == "openai/gpt-4o"
        savings = await call(alice, "get_savings", period="today")
        assert savings["saved_usd"] == "0.040000" and savings["by_lever_usd"] == {"exact_cache": "0.040000"}
        mine_waste = await call(alice, "get_waste_report", period="today")
        assert mine_waste["scope"] == f"key:{world.alice['key_id']}"
        assert mine_waste["report"]["spend_usd"] == "1.750000"
        denied = await call(alice, "set_budget", scope="workspace", monthly_usd="1")
        assert "admin" in denied["error"]

    async with client_for(world.bob_dept["api_key"]) as bob:
        spend = await call(bob, "get_spend", period="today", group_by="member")
        assert {r["value"] for r in spend["rows"]} == {"bob", "dave"}  # his department, not just his key
        assert spend["total"]["cost_usd"] == "3.700000"

    async with client_for(world.admin["api_key"]) as admin:
        spend = await call(admin, "get_spend", period="today", group_by="department")
        assert {r["value"]: r["cost_usd"] for r in spend["rows"]} == {"sales": "3.700000", "research": "1.750000"}
        assert spend["total"]["cost_usd"] == "5.450000"  # never the other workspace's 9.99
        drill = await call(admin, "drill_down", dimension="feature", value="search", group_by="member", period="today")
        assert [(r["value"], r["cost_usd"]) for r in drill["rows"]] == [("bob", "3.000000"), ("alice", "1.500000")]
        compare = await call(admin, "compare_periods", period_a="yesterday", period_b="today", group_by="model")
        assert compare["total_b_usd"] == "5.450000" and compare["rows"][0]["value"] == "anthropic/claude-sonnet-4-5"
        forecast = await call(admin, "forecast_month_end")
        assert forecast["spent_usd"] == "5.450000" and forecast["monthly_cap_usd"] == "100.000000"
        assert "error" in await call(admin, "explain_request", request_id=world.records[4]["request_id"])
        waste = await call(admin, "get_waste_report", period="today")
        assert waste["total"]["spend_usd"] == "5.450000" and waste["total"]["grade"] in ("S", "A", "B", "C", "D")
        assert (await call(admin, "set_budget", scope="feature:search", monthly_usd="25"))["scope"] == "feature:search"
    assert "feature:search" in [b.scope for b in BudgetStore(world.settings).definitions(world.ws).budgets]


def test_streamable_http_on_uvicorn(world, settings):
    app = build_app(build_server(settings), KeyAuthenticator(settings), ["127.0.0.1:*"])
    with ServerThread(app) as server:
        url = server.url + "/mcp"

        async def main() -> None:
            await scoped_checks(lambda key: http_client(url, key), world)
            # No key, a key without an mcp scope, another host: refused before any tool runs.
            async with httpx2.AsyncClient() as raw:
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
                headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
                assert (await raw.post(url, json=body, headers=headers)).status_code == 401
                plain = {**headers, "authorization": f"Bearer {world.plain['api_key']}"}
                assert (await raw.post(url, json=body, headers=plain)).status_code == 403
                admin = {**headers, "authorization": f"Bearer {world.admin['api_key']}", "host": "evil.example"}
                assert (await raw.post(url, json=body, headers=admin)).status_code == 421

        anyio.run(main)


class MangumTransport(httpx2.AsyncBaseTransport):
    """Turns each HTTP request into a Lambda function URL (payload 2.0) event for the handler."""

    def __init__(self, handler: Any, domain: str):
        self.handler, self.domain, self.invocations = handler, domain, 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        headers = {k.lower(): v for k, v in request.headers.items()}
        headers["host"] = self.domain
        event = {
            "version": "2.0", "routeKey": "$default", "rawPath": request.url.path, "rawQueryString": "",
            "headers": headers, "isBase64Encoded": True, "body": base64.b64encode(body).decode(),
            "requestContext": {"accountId": "anonymous", "apiId": "mcpurl", "domainName": self.domain,
                               "domainPrefix": "mcpurl", "http": {"method": request.method, "path": request.url.path,
                                                                   "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                                                                   "userAgent": "mcp"},
                               "requestId": uuid.uuid4().hex, "routeKey": "$default", "stage": "$default",
                               "time": "01/Dec/2026:10:00:00 +0000", "timeEpoch": int(time.time() * 1000)},
        }
        self.invocations += 1
        response = await anyio.to_thread.run_sync(self.handler, event, Context())
        raw = response.get("body") or ""
        content = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
        out_headers = dict(response.get("headers") or {})
        for cookie in response.get("cookies") or []:
            out_headers.setdefault("set-cookie", cookie)
        return httpx2.Response(response["statusCode"], headers=out_headers, content=content, request=request)


def test_streamable_http_through_the_lambda_handler(world, settings, monkeypatch):
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    handler = load_handler("functions/mcp/handler.py", "mcp_handler").handler
    domain = "abcdefghij.lambda-url.us-east-1.on.aws"
    transport = MangumTransport(handler, domain)
    url = f"https://{domain}/mcp"

    async def main() -> None:
        # Warm invocations reuse the execution environment: every one must still work (no LifespanFailure).
        await scoped_checks(lambda key: http_client(url, key, transport), world)

    anyio.run(main)
    assert transport.invocations > 10


def test_stdio_as_operator_and_as_a_key(world, settings, tmp_path):
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": os.pathsep.join([str(ROOT / "layers"), str(ROOT)]),
           "METERLINE_STATE_DIR": str(tmp_path), "ALICE_KEY": world.alice["api_key"]}

    def params(*args: str) -> StdioServerParameters:
        return StdioServerParameters(command=sys.executable, args=["-m", "meterline.cli.main", "mcp", *args],
                                     env=env, cwd=str(ROOT))

    async def main() -> None:
        async with Client(params("--workspace", world.ws)) as operator:
            assert (await call(operator, "whoami"))["access"] == "admin (whole workspace)"
            spend = await call(operator, "get_spend", period="today", group_by="workspace")
            assert spend["total"]["cost_usd"] == "5.450000"
        async with Client(params("--key-env", "ALICE_KEY")) as alice:
            spend = await call(alice, "get_spend", period="today", group_by="member")
            assert [r["value"] for r in spend["rows"]] == ["alice"]

    anyio.run(main)
