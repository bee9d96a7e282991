"""`meterline.mcp` must not shadow the `mcp` SDK (absolute imports), and the gateway must not pay for
the SDK: nothing on the data plane's import path imports it."""

from __future__ import annotations

import subprocess
import sys


def test_the_sdk_is_the_sdk_inside_meterline_mcp():
    code = ("import meterline.mcp.server as s, mcp, mcp.server.mcpserver as m; "
            "assert 'meterline' not in mcp.__file__, mcp.__file__; "
            "assert s.MCPServer is m.MCPServer; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_gateway_does_not_import_the_mcp_sdk():
    code = "import sys, meterline.gateway.app, meterline.admin.ops; print('mcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
