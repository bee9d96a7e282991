"""GatewayApp's direct dispatch of the data plane's POST routes (ahead of FastAPI's middleware):
what FastAPI's server-error middleware did for them is done there too."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meterline.gateway.app import GatewayApp


def app_with(handler) -> GatewayApp:
    app = GatewayApp()
    app.data_plane = {"/v1/chat/completions": handler, "/v1/messages": handler}

    @app.get("/v1/other")
    async def other() -> dict[str, str]:
        return {"via": "router"}

    return app


def call(app: GatewayApp, method: str, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                     base_url="http://gw") as client:
            return await client.request(method, path, json={})

    return asyncio.run(go())


@pytest.mark.parametrize(("path", "dialect"), [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")])
def test_an_unhandled_error_is_a_500_in_the_endpoint_dialect_and_leaks_nothing(path, dialect, caplog):
    async def broken(request: Request) -> Response:
        raise RuntimeError("sk-live-secret-in-a-message")

    with caplog.at_level(logging.ERROR, logger="meterline.gateway"):
        response = call(app_with(broken), "POST", path)
    assert response.status_code == 500
    body = response.json()
    assert "sk-live-secret" not in response.text
    if dialect == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
    else:
        assert body["error"]["message"] == "Internal error."
    assert [r for r in caplog.records if r.getMessage() == "unhandled_error"]


def test_an_error_after_the_response_started_sends_nothing_more():
    sent: list[dict] = []

    async def half(request: Request) -> Response:
        class Breaks(Response):
            async def __call__(self, scope, receive, send) -> None:
                await send({"type": "http.response.start", "status": 200, "headers": []})
                raise RuntimeError("broke mid-response")

        return Breaks()

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b"",
             "root_path": "", "scheme": "http", "server": ("gw", 80), "http_version": "1.1"}
    asyncio.run(app_with(half)(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start"]  # no second start: the server closes it


def test_only_exact_data_plane_posts_take_the_direct_path():
    async def handler(request: Request) -> Response:
        return JSONResponse({"via": "direct"})

    app = app_with(handler)
    assert (call(app, "POST", "/v1/chat/completions")).json() == {"via": "direct"}
    assert (call(app, "GET", "/v1/other")).json() == {"via": "router"}
    # Not an exact data-plane path (or not a POST): FastAPI's own routing answers (no such route here).
    for method, path in (("POST", "/v1/chat/completions/"), ("GET", "/v1/chat/completions"),
                         ("PUT", "/v1/messages")):
        response = call(app, method, path)
        assert response.status_code in (307, 404, 405) and "direct" not in response.text, (method, path)
