"""A provider entry pointing somewhere the gateway must not go is refused at send time (an entry
stored before the check existed, or written around the admin API), and by the admin operations."""

from __future__ import annotations

import httpx
import pytest

from meterline.admin.ops import OpError, Ops
from tests.conftest import make_tenant, wait_for_ledger


def test_http_or_loopback_provider_is_refused_at_send_time(start_gateway, settings, fake_openai):
    fake, url = fake_openai  # http://127.0.0.1:<port>/v1
    gateway = start_gateway(egress_allow_hosts=())  # as on AWS: nothing local allowed
    for base in (url, url.replace("http://", "https://")):
        t = make_tenant(settings, base)
        with httpx.Client(timeout=30) as http:
            response = http.post(gateway.base_url + "/chat/completions",
                                 headers={"authorization": f"Bearer {t.api_key}"},
                                 json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 502 and response.json()["error"]["code"] == "egress_refused"
        [record] = wait_for_ledger(settings, t.workspace, 1)
        assert record["outcome"] == "upstream_unavailable" and record["cost_micros"] == 0
    assert fake.requests == []


@pytest.mark.parametrize("base_url", ["http://169.254.169.254/latest", "https://[fd00:ec2::254]/",
                                      "https://metadata.google.internal/", "file:///etc/passwd", "not a url"])
def test_admin_refuses_provider_urls_it_must_not_send_to(settings, base_url):
    ops = Ops(settings)
    ops.create_workspace("ws_egress", "Egress")
    with pytest.raises(OpError):
        ops.put_provider("ws_egress", "custom", secret="sk-test-abcdefgh", kind="openai_compatible", base_url=base_url)
