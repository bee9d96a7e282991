"""SSRF guard (meterline.egress): provider URLs and what they resolve to when a request is sent."""

from __future__ import annotations

import asyncio

import pytest

from meterline.egress import EgressError, check_url, filter_resolved, guarded_resolver

REFUSED = [
    "http://169.254.169.254/latest/meta-data/", "https://169.254.169.254/v1", "https://[fd00:ec2::254]/",
    "https://metadata.google.internal/computeMetadata/v1/", "http://127.0.0.1:9001/2018-06-01/runtime/invocation",
    "https://127.0.0.1:9001/", "https://[::1]/v1", "https://localhost/v1", "https://0.0.0.0/",
    "https://[::ffff:169.254.169.254]/", "file:///etc/passwd", "gopher://evil:70/_x", "not a url", "",
    "https://user:pw@api.openai.com/v1", "https://224.0.0.1/", "ftp://api.openai.com/", None, 42,
    "http://api.openai.com/v1", "https://api.openai.com:notaport/v1",
]


@pytest.mark.parametrize("url", REFUSED)
def test_metadata_loopback_and_other_schemes_are_refused(url):
    with pytest.raises(EgressError):
        check_url(url)


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "https://myres.openai.azure.com",
                                 "https://10.0.3.7/v1", "https://bedrock-runtime.eu-west-1.amazonaws.com"])
def test_https_providers_pass(url):
    assert check_url(url) == url


def test_http_and_loopback_only_to_hosts_the_owner_allows():
    assert check_url("http://127.0.0.1:8000/v1", ["127.0.0.1"])
    assert check_url("http://vllm.internal:8000/v1", ["vllm.internal"])
    with pytest.raises(EgressError):
        check_url("http://vllm.internal:8000/v1", ["127.0.0.1"])


def test_an_allowed_answer_is_remembered_only_for_the_same_allow_list():
    url = "http://vllm.internal:8000/v1"
    for _ in range(3):  # the second and third answers come from the memo: the same each time
        assert check_url(url, ("vllm.internal",)) == url
        with pytest.raises(EgressError):
            check_url(url, ())
        with pytest.raises(EgressError):
            check_url(url, ["other.internal"])
        with pytest.raises(EgressError):
            check_url("http://169.254.169.254/latest", ("vllm.internal",))


def test_names_are_checked_on_what_they_resolve_to_when_sent():
    addresses = [{"hostname": "x", "host": "169.254.169.254", "port": 443, "family": 2, "proto": 0, "flags": 0},
                 {"hostname": "x", "host": "93.184.216.34", "port": 443, "family": 2, "proto": 0, "flags": 0}]
    assert [a["host"] for a in filter_resolved("x", addresses, ())] == ["93.184.216.34"]
    with pytest.raises(OSError):
        filter_resolved("x", addresses[:1], ())
    assert filter_resolved("x", addresses[:1], ("x",)) == addresses[:1]

    async def resolve():
        resolver = guarded_resolver(())
        try:
            return await resolver.resolve("localhost", 443)
        finally:
            await resolver.close()

    with pytest.raises(OSError):
        asyncio.run(resolve())  # localhost resolves to loopback only
