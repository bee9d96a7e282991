"""Every failure gets an OpenAI-format error with the right status, and the ledger gets either one
complete record (authenticated requests) or nothing (unauthenticated ones) - never half a record."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from meterline.store.keys import KeyStore
from tests.conftest import PROVIDER_SECRET, ledger_items, make_tenant, wait_for_ledger

MESSAGES = [{"role": "user", "content": "hi"}]


def sdk(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)


def post(gateway, key: str | None, body: bytes | str, headers: dict | None = None) -> httpx.Response:
    h = {"content-type": "application/json", **(headers or {})}
    if key:
        h["authorization"] = f"Bearer {key}"
    return httpx.post(gateway.base_url + "/chat/completions", content=body, headers=h, timeout=20)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert "Traceback" not in response.text
    assert response.headers["meterline-request-id"].startswith("req_")
    return error


def test_missing_and_unknown_keys_are_401_and_leave_no_record(gateway, tenant, settings):
    assert_openai_error(post(gateway, None, json.dumps({"model": "gpt-4o", "messages": MESSAGES})),
                        401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError) as err:
        sdk(gateway, "mlk_" + "x" * 43).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.code == "invalid_api_key"
    assert ledger_items(settings) == []


def test_revoked_key_stops_within_the_cache_ttl(start_gateway, settings, fake_openai):
    gateway = start_gateway(key_cache_ttl_s=0.5)
    t = make_tenant(settings, fake_openai[1])
    sdk(gateway, t.api_key).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    KeyStore(settings).revoke(t.workspace, t.key_id)
    time.sleep(0.6)
    with pytest.raises(openai.AuthenticationError) as err:
        sdk(gateway, t.api_key).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.code == "key_revoked"


def test_expired_key_is_refused(gateway, settings, fake_openai):
    t = make_tenant(settings, fake_openai[1])
    from meterline.store import aws

    aws.client("dynamodb", settings).update_item(
        TableName=settings.table_names["keys"], Key={"key_hash": {"S": __import__("hashlib").sha256(
            t.api_key.encode()).hexdigest()}},
        UpdateExpression="SET expires_at = :e", ExpressionAttributeValues={":e": {"N": str(int(time.time()) - 1)}})
    with pytest.raises(openai.AuthenticationError) as err:
        sdk(gateway, t.api_key).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.code == "key_expired"


def test_unknown_provider_and_unpriced_model_are_404(gateway, tenant, settings):
    with pytest.raises(openai.NotFoundError) as err:
        sdk(gateway, tenant.api_key).chat.completions.create(model="mistral/large", messages=MESSAGES)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as err:
        sdk(gateway, tenant.api_key).chat.completions.create(model="gpt-9-ultra", messages=MESSAGES)
    assert err.value.code == "model_not_priced"
    records = wait_for_ledger(settings, tenant.workspace, 2)
    assert [(r["outcome"], r["status"], r["error_code"], r["cost_micros"]) for r in records] == [
        ("rejected", 404, "model_not_found", 0), ("rejected", 404, "model_not_priced", 0)]


def test_unpriced_model_is_forwarded_and_flagged_when_the_workspace_says_so(gateway, settings, fake_openai):
    t = make_tenant(settings, fake_openai[1], unpriced="forward")
    raw = sdk(gateway, t.api_key).chat.completions.with_raw_response.create(model="gpt-9-ultra", messages=MESSAGES)
    assert raw.headers["meterline-cost-usd"] == "unpriced"
    [record] = wait_for_ledger(settings, t.workspace, 1)
    assert record["unpriced"] is True and record["cost_micros"] == 0 and record["output"] == 10


def test_model_outside_the_key_allowlist_is_403(gateway, settings, fake_openai):
    t = make_tenant(settings, fake_openai[1], models=("openai/gpt-4o-mini",))
    with pytest.raises(openai.PermissionDeniedError) as err:
        sdk(gateway, t.api_key).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.code == "model_not_allowed"
    sdk(gateway, t.api_key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


@pytest.mark.parametrize(("body", "code", "param"), [
    ("{not json", "invalid_json", None),
    ("[1, 2]", "invalid_json", None),
    (json.dumps({"messages": MESSAGES}), "missing_required_parameter", "model"),
    (json.dumps({"model": "gpt-4o", "messages": []}), "missing_required_parameter", "messages"),
    (json.dumps({"model": "gpt-4o", "messages": [{"content": "x"}]}), "invalid_value", "messages[0].role"),
    (json.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": -5}), "invalid_type", "max_tokens"),
    (json.dumps({"model": "gpt-4o", "messages": MESSAGES, "stream": "yes"}), "invalid_type", "stream"),
])
def test_malformed_requests_are_400(gateway, tenant, settings, body, code, param):
    error = assert_openai_error(post(gateway, tenant.api_key, body), 400, code)
    assert error["param"] == param
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["outcome"] == "rejected" and record["status"] == 400 and record["error_code"] == code


def test_bad_attribution_header_is_400(gateway, tenant):
    response = post(gateway, tenant.api_key, json.dumps({"model": "gpt-4o", "messages": MESSAGES}),
                    {"Meterline-Feature": "a" * 200})
    assert assert_openai_error(response, 400, "invalid_header")["param"] == "meterline-feature"


def test_body_over_the_limit_is_413(start_gateway, settings, fake_openai):
    gateway = start_gateway(max_body_bytes=2048)
    t = make_tenant(settings, fake_openai[1])
    big = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert_openai_error(post(gateway, t.api_key, big), 413, "request_too_large")

    # Chunked upload with no Content-Length is cut off while reading, too.
    def chunks():
        yield big.encode()

    response = httpx.post(gateway.base_url + "/chat/completions", content=chunks(),
                          headers={"authorization": f"Bearer {t.api_key}", "content-type": "application/json"})
    assert_openai_error(response, 413, "request_too_large")
    records = wait_for_ledger(settings, t.workspace, 2)
    assert [r["status"] for r in records] == [413, 413]


@pytest.mark.parametrize(("status", "exc"), [(429, openai.RateLimitError), (500, openai.InternalServerError),
                                             (400, openai.BadRequestError)])
def test_upstream_errors_pass_through_with_the_provider_key_redacted(gateway, tenant, fake_openai, settings,
                                                                      status, exc):
    fake, _ = fake_openai
    fake.error = (status, {"error": {"message": f"Incorrect API key provided: {PROVIDER_SECRET}. Slow down.",
                                     "type": "requests", "param": None, "code": "rate_limit_exceeded"}})
    with pytest.raises(exc) as err:
        sdk(gateway, tenant.api_key).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.status_code == status
    text = err.value.response.text
    assert PROVIDER_SECRET not in text and "sk-test" not in text
    assert "[redacted]" in text and "Slow down." in text
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["outcome"] == "upstream_error" and record["status"] == status and record["cost_micros"] == 0


def test_upstream_timeout_is_504(start_gateway, settings, fake_openai):
    fake, url = fake_openai
    fake.delay_before_headers_s = 2.0
    gateway = start_gateway(upstream_read_timeout_s=0.5)
    t = make_tenant(settings, url)
    response = post(gateway, t.api_key, json.dumps({"model": "gpt-4o", "messages": MESSAGES}))
    assert_openai_error(response, 504, "upstream_timeout")
    [record] = wait_for_ledger(settings, t.workspace, 1)
    assert record["outcome"] == "upstream_timeout" and record["estimated"] is True


def test_unreachable_upstream_is_502(gateway, settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    t = make_tenant(settings, f"http://127.0.0.1:{dead}/v1")
    response = post(gateway, t.api_key, json.dumps({"model": "gpt-4o", "messages": MESSAGES}))
    assert_openai_error(response, 502, "upstream_unavailable")
    [record] = wait_for_ledger(settings, t.workspace, 1)
    assert record["outcome"] == "upstream_unavailable" and record["cost_micros"] == 0


def test_unknown_endpoint_is_404_in_openai_format(gateway, tenant):
    response = httpx.post(gateway.base_url + "/nope", headers={"authorization": f"Bearer {tenant.api_key}"})
    assert_openai_error(response, 404, "unknown_url")
