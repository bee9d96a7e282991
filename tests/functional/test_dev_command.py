"""The README contract: `meterline dev` prints base_url / api_key / workspace, serves the OpenAI SDK,
and `meterline spend` in another shell reads its rollups with no extra flags."""

from __future__ import annotations

import json
import os
import queue
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai

CLI = [sys.executable, "-m", "meterline.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev(env: dict[str, str], port: int, *extra: str,
              timeout: float = 90.0) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start `meterline dev` and return it with the settings it printed (base_url, api_key, ...).

    Its output is read on a thread: a server that hangs before printing fails the test when
    `timeout` runs out instead of blocking the suite on a readline, and the per-request log lines
    it prints later never fill the pipe and stall it."""
    proc = subprocess.Popen([*CLI, "dev", "--port", str(port), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.put(line)
        output.put(None)

    threading.Thread(target=pump, daemon=True).start()
    lines: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while "workspace" not in lines:
        try:
            line = output.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        if ": " in line:
            name, value = line.strip().split(": ", 1)
            lines[name] = value
    return proc, lines


def test_meterline_dev_end_to_end(tmp_path):
    env = {**os.environ, "METERLINE_STATE_DIR": str(tmp_path)}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)  # dev must not need (or use) real credentials
    cli = CLI
    port = free_port()
    proc, lines = start_dev(env, port, timeout=60)
    try:
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

        # The admin API beside the gateway takes only the local token, which the CLI finds on its own.
        admin = f"http://127.0.0.1:{port}/admin"
        assert httpx.get(admin + "/whoami", timeout=30).status_code == 401
        token_file = next(Path(tmp_path).glob("data-*/admin-token"))
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        out = subprocess.run([*cli, "api", "GET", "/workspaces/demo/budgets"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and json.loads(out.stdout) == {"budgets": []}, out.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert not (Path(tmp_path) / "dev.json").exists()
