"""Cold start guard: heavy libraries stay off the data plane's import path (loaded on first use)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("aws_encryption_sdk", "aws_cryptographic_material_providers", "boto3", "botocore", "openai",
         "anthropic", "moto")


def test_gateway_app_build_imports_no_heavy_library():
    code = ("import sys; from meterline.gateway.app import create_app; create_app(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"})
    assert out.stdout.strip() == "[]"


def test_rollup_handler_imports_no_encryption_sdk():
    code = ("import sys, runpy; runpy.run_path('functions/rollup/handler.py'); "
            "print('aws_encryption_sdk' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
