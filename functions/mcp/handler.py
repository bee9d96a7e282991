"""The MCP server's Lambda entry point: streamable HTTP through Mangum on a BUFFERED function URL.

The MCPServer (tools) and the key authenticator are built once per execution environment; the
Starlette app is rebuilt on every invocation (the SDK's session manager runs once per app, and
Mangum runs the lifespan on every call), with the function URL's own domain as the allowed Host.
"""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from meterline.config import Settings
from meterline.logs import configure as configure_logging
from meterline.mcp.auth import KeyAuthenticator
from meterline.mcp.http import build_app, lambda_hosts
from meterline.mcp.server import build_server

configure_logging("mcp")
_state: dict[str, Any] = {}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if not _state:
        settings = Settings.from_env()
        _state["server"] = build_server(settings)
        _state["auth"] = KeyAuthenticator(settings)
    app = build_app(_state["server"], _state["auth"], lambda_hosts(event))
    return Mangum(app, lifespan="auto")(event, context)
