"""The official openai SDK against the gateway (uvicorn, loopback) against a fake OpenAI server.

GIVEN a workspace whose `openai` provider points at the fake upstream
WHEN the SDK calls chat completions, sync and async, streaming and not, with attribution headers
THEN it gets exactly what OpenAI would send, and each call is in the ledger, attributed and priced
     to the micro-dollar as an independent recomputation from the catalog says.
"""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import wait_for_ledger
from tests.oracle import openai_cost_micros

HEADERS = {"Meterline-Feature": "search", "Meterline-Agent": "planner", "Meterline-Session-Id": "sess-42",
           "Meterline-Customer": "acme"}
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]


def client(gateway, tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)


def test_non_streaming_call_is_priced_and_attributed(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    raw = client(gateway, tenant).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers=HEADERS)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there! How can I help you today?"
    assert completion.usage.prompt_tokens_details.cached_tokens == 1024
    assert completion.usage.completion_tokens_details.reasoning_tokens == 4

    expected = openai_cost_micros("openai/gpt-4o", prompt=1200, cached=1024, completion=10)
    assert expected == 176 * 2.5 + 1024 * 1.25 + 10 * 10  # 440 + 1280 + 100 micro-dollars
    assert raw.headers["meterline-cost-usd"] == f"0.{expected:06d}"
    assert raw.headers["meterline-request-id"].startswith("req_")
    assert raw.headers["x-request-id"] == "req_upstream_fake"

    # The provider got the bare model name and the workspace's own key.
    assert fake.requests[0]["model"] == "gpt-4o"
    assert fake.headers[0]["authorization"].startswith("Bearer sk-test-")

    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["request_id"] == raw.headers["meterline-request-id"]
    assert record["cost_micros"] == expected
    assert (record["input_uncached"], record["cache_read"], record["output"], record["reasoning"]) == (176, 1024, 10, 4)
    assert record["feature"] == "search" and record["agent"] == "planner"
    assert record["session"] == "sess-42" and record["customer"] == "acme"
    assert record["member"] == "alice" and record["department"] == "research"
    assert record["key"] == tenant.key_id and record["model"] == "openai/gpt-4o"
    assert record["upstream_model"] == "gpt-4o-2024-08-06"
    assert record["outcome"] == "ok" and record["estimated"] is False


def test_streaming_costs_the_same_and_hides_the_injected_usage_chunk(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    sdk = client(gateway, tenant)
    chunks = list(sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=HEADERS))
    # The gateway asked the provider for usage...
    assert fake.requests[0]["stream_options"] == {"include_usage": True}
    # ...but the client did not, so it sees no usage-only chunk, exactly as without the gateway.
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello there! How can I help you today?"

    non_streamed = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    records = wait_for_ledger(settings, tenant.workspace, 2)
    streamed_record = next(r for r in records if r["stream"])
    plain_record = next(r for r in records if not r["stream"])
    assert streamed_record["cost_micros"] == plain_record["cost_micros"] == openai_cost_micros(
        "openai/gpt-4o", 1200, 1024, 10)
    assert non_streamed.headers["meterline-cost-usd"] == f"0.{plain_record['cost_micros']:06d}"
    assert streamed_record["estimated"] is False and streamed_record["outcome"] == "ok"


def test_client_that_asks_for_usage_gets_the_usage_chunk(gateway, tenant):
    chunks = list(client(gateway, tenant).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 1200


def test_usage_on_a_chunk_with_choices_is_metered(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    fake.usage_on_choice_chunk = True
    chunks = list(client(gateway, tenant).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert chunks  # delivered unchanged
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["cost_micros"] == openai_cost_micros("openai/gpt-4o-mini", 1200, 1024, 10)
    assert record["estimated"] is False


def test_service_tier_actually_used_decides_the_price(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    fake.service_tier = "flex"
    client(gateway, tenant).chat.completions.create(model="gpt-5", messages=MESSAGES, service_tier="flex")
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["service_tier"] == "flex"
    assert record["cost_micros"] == openai_cost_micros("openai/gpt-5", 1200, 1024, 10, tier="flex")


def test_async_client_streaming_and_not(gateway, tenant, settings):
    async def run() -> None:
        sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
        done = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert done.usage.total_tokens == 1210
        stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert text.startswith("Hello")
        await sdk.close()

    asyncio.run(run())
    records = wait_for_ledger(settings, tenant.workspace, 2)
    assert len(records) == 2
    assert {r["cost_micros"] for r in records} == {openai_cost_micros("openai/gpt-4o-mini", 1200, 1024, 10)}


def test_models_lists_what_the_key_may_use(gateway, settings, fake_openai):
    from tests.conftest import make_tenant

    limited = make_tenant(settings, fake_openai[1], models=("openai/gpt-4o-mini", "sim/gpt-4o"))
    ids = [m.id for m in openai.OpenAI(base_url=gateway.base_url, api_key=limited.api_key).models.list()]
    assert sorted(ids) == ["openai/gpt-4o-mini", "sim/gpt-4o"]


@pytest.mark.parametrize("stream", [False, True])
def test_simulated_provider_is_priced_as_the_real_model(gateway, settings, stream):
    from tests.conftest import make_tenant

    t = make_tenant(settings, None)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0)
    if stream:
        chunks = list(sdk.chat.completions.create(model="sim/o4-mini", messages=MESSAGES, stream=True,
                                                  stream_options={"include_usage": True}))
        usage = chunks[-1].usage
    else:
        usage = sdk.chat.completions.create(model="sim/o4-mini", messages=MESSAGES).usage
    assert usage.completion_tokens_details.reasoning_tokens > 0
    [record] = wait_for_ledger(settings, t.workspace, 1)
    assert record["model"] == "sim/o4-mini"
    assert record["cost_micros"] == openai_cost_micros(
        "openai/o4-mini", usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, usage.completion_tokens)
    assert record["cost_micros"] > 0


def _raw_sse(gateway, tenant, **body) -> list[dict]:
    """The chunks exactly as sent (the SDK's objects cannot tell a missing `usage` from `"usage": null`)."""
    import json as _json

    import httpx

    with httpx.Client(timeout=30) as http:
        response = http.post(gateway.base_url + "/chat/completions",
                             headers={"authorization": f"Bearer {tenant.api_key}"},
                             json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, **body})
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [_json.loads(line) for line in lines[:-1]]


def test_raw_stream_with_include_usage_keeps_the_null_usage_fields_and_the_usage_chunk(gateway, tenant):
    chunks = _raw_sse(gateway, tenant, stream_options={"include_usage": True})
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 1200


def test_raw_stream_keeps_usage_sent_on_a_chunk_with_choices(gateway, tenant, fake_openai):
    fake_openai[0].usage_on_choice_chunk = True
    chunks = _raw_sse(gateway, tenant, stream_options={"include_usage": True})
    with_usage = [c for c in chunks if c.get("usage")]
    assert len(with_usage) == 1 and with_usage[0]["choices"] and with_usage[0]["usage"]["completion_tokens"] == 10
