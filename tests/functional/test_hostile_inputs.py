"""Hostile inputs at the gateway's edge get clear client errors with a request id, never a 500 or a
traceback (issue 14, item 12)."""

from __future__ import annotations

import socket

import httpx

from tests.conftest import wait_for_ledger


def test_deep_nesting_and_wrong_content_type_are_client_errors(gateway, tenant):
    auth = {"authorization": f"Bearer {tenant.api_key}"}
    with httpx.Client(timeout=30) as http:
        nested = b"[" * 100_000 + b"]" * 100_000
        deep = b'{"model":"gpt-4o","messages":[{"role":"user","content":"x","x":' + nested + b"}]}"
        response = http.post(gateway.base_url + "/chat/completions", content=deep,
                             headers={**auth, "content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
        assert response.headers["meterline-request-id"]
        response = http.post(gateway.base_url + "/chat/completions", headers={**auth, "content-type": "text/plain"},
                             content=b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}')
        assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_content_type"


def test_a_body_cut_by_the_client_is_recorded_not_a_500(gateway, settings, tenant, caplog):
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + tenant.api_key.encode() + b"\r\ncontent-length: 5000\r\n\r\n"
                     b'{"model":"gpt-4o","messages":[')
    [record] = wait_for_ledger(settings, tenant.workspace, 1, timeout=10)
    assert record["error_code"] == "client_disconnect" and record["cost_micros"] == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR" and "Traceback" in (r.exc_text or "")]
    assert not [r for r in caplog.records if r.getMessage() in ("stage_failed", "unhandled_error")]
