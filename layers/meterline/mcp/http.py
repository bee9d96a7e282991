"""Streamable HTTP for the MCP server: locally on uvicorn, on Lambda through Mangum.

Two pitfalls of the SDK behind Mangum are handled here (research notes, LEVERS.md §F):
- Mangum runs the app's lifespan on every invocation, and the SDK's session manager can run only
  once, so a global app fails every warm call (`LifespanFailure`). The MCPServer and its tools are
  global; the Starlette app is rebuilt per invocation, stateless with JSON responses.
- DNS-rebinding protection answers 421 unless the Host is allowed: the allowed host is the function
  URL's own domain, from the invocation's request context (set by AWS, not by the client), plus
  any custom domains in METERLINE_MCP_ALLOWED_HOSTS.

Every HTTP request is authenticated before the MCP layer sees it: `Authorization: Bearer <virtual
key with an mcp scope>`; 401/403 otherwise. The principal is set for the request's tools.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from meterline.mcp.auth import CURRENT, AuthError, KeyAuthenticator, bearer

log = logging.getLogger("meterline.mcp")


class Authenticated:
    """ASGI middleware: bearer key -> principal (in `auth.CURRENT`) or a JSON 401/403."""

    def __init__(self, app: ASGIApp, authenticator: KeyAuthenticator):
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            principal = await anyio.to_thread.run_sync(self.authenticator.authenticate,
                                                       bearer(headers.get("authorization")))
        except AuthError as exc:
            await _json(send, exc.status, {"error": {"message": str(exc), "code": "unauthorized"}},
                        {"www-authenticate": 'Bearer realm="meterline"'} if exc.status == 401 else {})
            return
        except Exception:
            log.exception("mcp_auth_failed")
            await _json(send, 503, {"error": {"message": "The key store is unavailable; try again shortly."}}, {})
            return
        token = CURRENT.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT.reset(token)


async def _json(send: Send, status: int, body: dict[str, Any], extra: dict[str, str]) -> None:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


def build_app(server: MCPServer, authenticator: KeyAuthenticator, allowed_hosts: list[str]) -> ASGIApp:
    """A fresh stateless, JSON-response streamable HTTP app (build one per Lambda invocation)."""
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=allowed_hosts,
                                         allowed_origins=[f"https://{h}" for h in allowed_hosts])
    app = server.streamable_http_app(stateless_http=True, json_response=True, transport_security=security)
    return Authenticated(app, authenticator)


def configured_hosts() -> list[str]:
    return [h.strip() for h in os.environ.get("METERLINE_MCP_ALLOWED_HOSTS", "").split(",") if h.strip()]


def lambda_hosts(event: dict[str, Any]) -> list[str]:
    """The function URL's own domain (AWS sets requestContext.domainName) plus configured ones."""
    domain = (event.get("requestContext") or {}).get("domainName")
    return [*([domain] if domain else []), *configured_hosts()]
