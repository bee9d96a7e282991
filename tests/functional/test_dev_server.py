"""`meterline dev` as a newcomer runs it: state survives a restart (same demo key, same spend),
`--fresh` starts clean, a second instance on a taken port fails before printing any key and leaves
the first one's registry entry alone, Ctrl-C exits within 5 seconds, and CLI errors name the server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.functional.test_dev_command import CLI, free_port, start_dev


def start(env: dict[str, str], port: int, *extra: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc, lines = start_dev(env, port, *extra)
    assert "api_key" in lines, lines
    return proc, lines


def chat(lines: dict[str, str]) -> httpx.Response:
    for _ in range(100):
        try:
            return httpx.post(lines["base_url"] + "/chat/completions", timeout=30,
                              headers={"authorization": f"Bearer {lines['api_key']}"},
                              json={"model": "sim/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        except httpx.ConnectError:
            time.sleep(0.1)
    raise AssertionError("dev server never answered")


def interrupt(proc: subprocess.Popen[str]) -> float:
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    return time.monotonic() - began


def test_state_survives_restart_and_second_instance_is_refused(tmp_path):
    env = {**os.environ, "METERLINE_STATE_DIR": str(tmp_path)}
    port = free_port()
    first, lines = start(env, port)
    try:
        assert chat(lines).status_code == 200
        # A second instance on the same port fails before it prints a key, and says who holds the port.
        second = subprocess.run([*CLI, "dev", "--port", str(port)], env=env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode != 0 and "api_key" not in second.stdout
        assert f"port {port}" in second.stderr and f"pid {first.pid}" in second.stderr
        assert (tmp_path / "instances" / f"{port}.json").exists()  # the first one's entry is untouched
        ops = subprocess.run([*CLI, "keys", "list"], env=env, capture_output=True, text=True, timeout=60)
        assert ops.returncode == 0 and "demo" in ops.stdout
    finally:
        took = interrupt(first)
    assert took < 5, f"Ctrl-C took {took:.1f} s"
    assert not (tmp_path / "instances" / f"{port}.json").exists()

    again, relines = start(env, port)
    try:
        assert relines["api_key"] == lines["api_key"]  # the same demo key, still valid
        assert chat(relines).status_code == 200
    finally:
        interrupt(again)

    fresh, freshlines = start(env, port, "--fresh")
    try:
        assert freshlines["api_key"] != lines["api_key"]
    finally:
        interrupt(fresh)


def test_cli_errors_name_the_server_they_looked_for(tmp_path):
    env = {**os.environ, "METERLINE_STATE_DIR": str(tmp_path)}
    for name in ("METERLINE_WORKSPACE", "METERLINE_STACK", "METERLINE_DEV_PORT"):
        env.pop(name, None)
    out = subprocess.run([*CLI, "keys", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "no running `meterline dev`" in out.stderr and str(Path(tmp_path) / "instances") in out.stderr
    env["METERLINE_DEV_PORT"] = "1"
    out = subprocess.run([*CLI, "keys", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "no `meterline dev` is running on port 1" in out.stderr
