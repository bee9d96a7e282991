"""Behind the CloudFront + WAF edge, the gateway refuses requests that skipped it (no origin header)."""

from __future__ import annotations

import openai
import pytest

from meterline.config import ORIGIN_VERIFY_HEADER
from tests.conftest import ledger_items

MESSAGES = [{"role": "user", "content": "hello"}]


def test_requests_around_the_edge_are_refused_before_any_key_lookup(start_gateway, tenant, settings):
    gateway = start_gateway(origin_secret="edge-secret-0123456789")
    direct = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as err:
        direct.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.status_code == 403 and "CloudFront" in err.value.message
    wrong = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0,
                          default_headers={ORIGIN_VERIFY_HEADER: "edge-secret-012345678X"})
    with pytest.raises(openai.PermissionDeniedError):
        wrong.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert ledger_items(settings, tenant.workspace) == []  # nothing reached a provider
    via_edge = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0,
                             default_headers={ORIGIN_VERIFY_HEADER: "edge-secret-0123456789"})
    text = "".join(c.choices[0].delta.content or "" for c in via_edge.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True) if c.choices)
    assert text


def test_without_an_edge_nothing_is_checked(gateway, tenant):
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    assert sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
