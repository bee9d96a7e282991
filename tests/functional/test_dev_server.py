"""`meterline dev` as a newcomer runs it: state survives a restart (same demo key, same spend),
`--fresh` starts clean, a second instance on a taken port fails before printing any key and leaves
the first one's registry entry alone, Ctrl-C exits within 5 seconds (and cleanly at any moment of the
startup), and CLI errors name the server."""

from __future__ import annotations

import os
import signal
import socket
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


def interrupt(proc: subprocess.Popen[str], timeout: float = 30) -> float:
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=timeout)
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


def listening(port: int, deadline_s: float = 90.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise AssertionError(f"nothing listened on port {port} within {deadline_s} s")


def test_ctrl_c_at_any_moment_of_startup_exits_cleanly(tmp_path):
    """A Ctrl-C is a request to stop, never an exception raised wherever the main thread is: one that
    landed inside an import left the import lock held, and the embedded AWS's thread (importing under
    the lock that applies AWS calls) deadlocked the final save. Signals sent across the startup, from
    the moment the port accepts connections (the command's first step) to just after the key lines,
    each end the process with status 0, no traceback and no registry entry left behind."""
    env = {**os.environ, "METERLINE_STATE_DIR": str(tmp_path)}
    port = free_port()
    began = time.monotonic()
    proc, _ = start(env, port)
    span = time.monotonic() - began
    interrupt(proc)
    for fraction in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.1):
        log = tmp_path / f"dev-{fraction}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([*CLI, "dev", "--port", str(port), "--fresh"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, text=True)
            try:
                listening(port)
                time.sleep(span * fraction)
            finally:
                # A stop while starting waits for the startup's next step: bounded by the rest of a
                # startup (a generous multiple of the first one's), never a hang.
                interrupt(proc, timeout=30 + 3 * span)
        output = log.read_text()
        assert proc.returncode == 0 and "Traceback" not in output, (fraction, output)
        assert not (tmp_path / "instances" / f"{port}.json").exists()
