"""Priming: after the lifespan (before LWA's readiness check, i.e. before the SnapStart snapshot), a
request imports nothing - not boto3, not the encryption SDK, not a transport - even the first one
of an environment with a cold key that needs a KMS decrypt."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = """
import json, signal, sys
import uvicorn
from meterline.gateway.app import create_app
out = sys.argv[2]
def dump(*_):
    with open(out, "a") as f:
        f.write(json.dumps(sorted(sys.modules)) + "\\n")
signal.signal(signal.SIGUSR1, dump)
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _modules(path: Path, count: int, proc: subprocess.Popen) -> list[str]:
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # Complete lines only: the dump (tens of KB) may be read while it is being written.
        lines = path.read_text().split("\n")[:-1] if path.exists() else []
        if len(lines) >= count:
            return json.loads(lines[count - 1])
        time.sleep(0.05)
    raise AssertionError("the gateway did not dump its modules")


def _imported_by_first_requests(settings, tenant, tmp_path: Path, prime: str) -> set[str]:
    port, out = _free_port(), tmp_path / f"modules-{prime}.jsonl"
    env = {**os.environ, **settings.to_env(), "METERLINE_PRIME": prime,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "layers"), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-c", GATEWAY, str(port), str(out)], env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "gateway did not start"
            time.sleep(0.1)
        before = _modules(out, 1, proc)
        sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=tenant.api_key, max_retries=0)
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        for _ in sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                             stream=True, stream_options={"include_usage": True}):
            pass
        after = _modules(out, 2, proc)
        return set(after) - set(before)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.parametrize("prime", ["1", "0"])
def test_a_primed_gateway_imports_nothing_on_its_first_requests(settings, tenant, tmp_path, prime):
    new = _imported_by_first_requests(settings, tenant, tmp_path, prime)
    if prime == "1":
        assert new == set()
    else:  # the control: without priming the first vault key pays for the encryption SDK (and boto3)
        assert {"aws_encryption_sdk", "boto3"} <= new
