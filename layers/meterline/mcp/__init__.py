"""Meterline's MCP server: spend questions answered for AI clients, over the control-plane
operations (admin/ops.py) — never a second implementation of them.

    auth     who is asking: a virtual key with an `mcp:*` scope (its own key, member or department
             slice; `mcp:admin` for the whole workspace) or, on stdio, the local operator. The
             workspace always comes from the credential, never from a tool argument.
    server   the tools (read-only unless said), on the official `mcp` SDK (v2: MCPServer)
    http     streamable HTTP: an ASGI app per Lambda invocation (Mangum) with bearer-key auth

This package is `meterline.mcp`; with absolute imports `import mcp` inside it is still the SDK
(tests/unit/test_mcp_import.py holds that).
"""
