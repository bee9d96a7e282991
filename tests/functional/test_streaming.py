"""Streaming through a real server: no buffering, and a cut stream is still recorded."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.conftest import wait_for_ledger

MESSAGES = [{"role": "user", "content": "Tell me a story"}]


def test_first_chunk_arrives_before_the_upstream_sends_its_last(gateway, tenant, fake_openai):
    fake, _ = fake_openai
    fake.gate = threading.Event()  # the upstream holds the rest of the stream until the client saw a chunk
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    stream = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    first_content_at = None
    for chunk in stream:
        if first_content_at is None and chunk.choices and chunk.choices[0].delta.content:
            first_content_at = time.monotonic()
            assert fake.last_chunk_sent_at is None  # the upstream has not finished: nothing was buffered
            fake.gate.set()
    assert first_content_at is not None
    assert not fake.gate_timed_out
    assert first_content_at < fake.last_chunk_sent_at


def test_client_disconnect_mid_stream_is_recorded_with_estimated_usage(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    fake.chunks = [f" word{i}" for i in range(200)]
    fake.chunk_delay_s = 0.02
    with httpx.Client(timeout=10) as http, http.stream(
        "POST", gateway.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {tenant.api_key}"},
        json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
    ) as response:
        received = 0
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += 1
            if received >= 5:
                break  # the client goes away mid-stream
    [record] = wait_for_ledger(settings, tenant.workspace, 1, timeout=10)
    assert record["outcome"] == "client_disconnect"
    assert record["estimated"] is True
    assert 4 <= record["output"] < 200  # about one token per streamed chunk, not the full answer
    assert record["input_uncached"] > 0 and record["cost_micros"] > 0


def test_upstream_break_mid_stream_is_recorded_and_surfaced_to_the_sdk(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    fake.cut_after_chunks = 3
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
            got.append(chunk)
    # The gateway's error event, not a transport failure (APIConnectionError is an APIError too).
    assert not isinstance(err.value, openai.APIConnectionError)
    assert "interrupted" in str(err.value.message) or "ended early" in str(err.value.message)
    assert len(got) >= 3
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["outcome"] == "upstream_break" and record["estimated"] is True
    assert record["output"] == 3


def test_ledger_record_is_durable_before_the_final_event(gateway, tenant, fake_openai, settings):
    from tests.conftest import ledger_items

    seen_before_done = []
    with httpx.Client(timeout=10) as http, http.stream(
        "POST", gateway.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {tenant.api_key}"},
        json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
    ) as response:
        for line in response.iter_lines():
            if line == "data: [DONE]":
                seen_before_done = ledger_items(settings, tenant.workspace)
    assert len(seen_before_done) == 1 and seen_before_done[0]["outcome"] == "ok"
