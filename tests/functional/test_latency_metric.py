"""The gateway-added latency metric, through the real gateway: provider time is not the gateway's."""

from __future__ import annotations

import json

import openai

from meterline import telemetry

MESSAGES = [{"role": "user", "content": "Tell me a story"}]


def _value(v):  # Powertools writes a metric's values as a list, or a scalar
    return v[0] if isinstance(v, list) else v


def _service_sets(out: str) -> list[dict]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    return [line for line in lines if line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]]


def test_streamed_and_buffered_added_latency_excludes_the_slow_provider(gateway, tenant, fake_openai,
                                                                          monkeypatch, capsys):
    fake, _ = fake_openai
    monkeypatch.setenv("METERLINE_METRICS", "1")
    monkeypatch.setattr(telemetry, "_cold", False)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    fake.chunks = [f" word{i}" for i in range(8)]
    fake.chunk_delay_s = 0.06  # the provider takes >= 0.48 s to stream
    text = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True) if c.choices)
    assert "word7" in text
    fake.chunk_delay_s = 0.0
    fake.delay_before_headers_s = 0.5  # the provider takes >= 0.5 s to answer
    sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    streamed, buffered = _service_sets(capsys.readouterr().out)[-2:]
    for emf, provider_s in ((streamed, 0.48), (buffered, 0.5)):
        end_to_end, added = _value(emf["LatencyMs"]), _value(emf["GatewayAddedMs"])
        assert end_to_end >= provider_s * 1000
        # The provider's time is left out, however slow this machine is (it only adds to both).
        assert 0 < added <= end_to_end - provider_s * 1000 * 0.9
