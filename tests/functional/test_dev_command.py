"""The README contract: `meterline dev` prints base_url / api_key / workspace, serves the OpenAI SDK,
and `meterline spend` in another shell reads its rollups with no extra flags."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_meterline_dev_end_to_end(tmp_path):
    env = {**os.environ, "METERLINE_STATE_DIR": str(tmp_path)}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)  # dev must not need (or use) real credentials
    cli = [sys.executable, "-m", "meterline.cli.main"]
    port = free_port()
    proc = subprocess.Popen([*cli, "dev", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while "workspace" not in lines and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if ": " in line:
                name, value = line.strip().split(": ", 1)
                lines[name] = value
        assert lines["base_url"] == f"http://127.0.0.1:{port}/v1"
        assert lines["api_key"].startswith("mlk_") and lines["workspace"] == "demo"

        sdk = openai.OpenAI(base_url=lines["base_url"], api_key=lines["api_key"], max_retries=2)
        for _ in range(50):
            try:
                sdk.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.1)
        reply = sdk.chat.completions.with_raw_response.create(
            model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "hello"}],
            extra_headers={"Meterline-Feature": "onboarding"})
        cost = reply.headers["meterline-cost-usd"]
        chunks = list(sdk.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                  messages=[{"role": "user", "content": "hello"}],
                                                  extra_headers={"Meterline-Feature": "onboarding"}))
        assert chunks and cost != "0.000000"

        deadline = time.monotonic() + 15
        while True:
            out = subprocess.run([*cli, "spend", "--by", "feature"], env=env, capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == 0, out.stderr
            row = next((line for line in out.stdout.splitlines() if line.startswith("onboarding")), "")
            if row.split()[2:3] == ["2"] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert row.split()[2] == "2", out.stdout  # both calls, within seconds
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert not (Path(tmp_path) / "dev.json").exists()
