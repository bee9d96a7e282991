"""Every billed class is metered, from fake providers speaking the documented wire format.

GIVEN fake Anthropic / OpenAI / Gemini / Bedrock servers reporting iterations, server-tool calls,
      audio tokens, speed, region and service tiers
WHEN official SDKs (and raw HTTP, for bytes) call the gateway, streamed and not
THEN each recorded cost equals an independent Decimal recomputation from catalog.json, streamed
     equals non-streamed, parameters a provider cannot honour are mapped or refused with a 400,
     and streams reach the client byte for byte.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import anthropic
import httpx
import openai
import pytest

from tests.conftest import wait_for_ledger
from tests.oracle import point

ANTHROPIC_KEY_HEADERS = {"anthropic-version": "2023-06-01"}


def rates(model_id: str, tier: str | None = None, group: str = "service_tiers") -> dict[str, Decimal]:
    """USD per 1M tokens for each class, straight from catalog.json (no meterline code)."""
    spec = point(model_id)
    base = {k: Decimal(v) for k, v in spec.items() if k in (
        "input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "input_audio", "cache_read_audio",
        "output_audio", "input_image", "cache_read_image", "output_image")}
    if tier is None:
        return base
    table = spec[group][tier]
    if "multiplier" in table:
        return {k: v * Decimal(table["multiplier"]) for k, v in base.items()}
    return {k: Decimal(v) for k, v in table.items() if k != "tiers"}


def fee(model_id: str, name: str) -> Decimal:
    return Decimal(point(model_id)["fees"][name])  # USD per 1K calls


def micros(usd: Decimal) -> int:
    return int((usd * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def per_m(tokens: int, price: Decimal) -> Decimal:
    return tokens * price / Decimal(1_000_000)


# -- Anthropic: iterations, web search, fast mode, inference_geo ----------------------------------
OPUS = "anthropic/claude-opus-4-8"
COMPACTION = {"type": "compaction", "input_tokens": 180_000, "output_tokens": 3_500,
              "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
ADVISOR = {"type": "advisor_message", "model": "claude-haiku-4-5", "input_tokens": 5_000, "output_tokens": 400,
           "cache_read_input_tokens": 1_000, "cache_creation_input_tokens": 0}


def anthropic_expected(fake) -> int:
    geo = Decimal(point(OPUS)["inference_geo"]["us"])
    fast = {k: v * geo for k, v in rates(OPUS, "fast", "speed").items()}
    haiku = rates("anthropic/claude-haiku-4-5")  # no regional price: billed alike everywhere
    usd = (per_m(fake.input_tokens, fast["input"]) + per_m(fake.cache_read, fast["cache_read"])
           + per_m(fake.cache_write_5m, fast["cache_write_5m"]) + per_m(fake.cache_write_1h, fast["cache_write_1h"])
           + per_m(fake.output_tokens, fast["output"])
           + 3 * fee(OPUS, "web_search") / 1000
           # the compaction: the request's model, at its speed and region
           + per_m(180_000, fast["input"]) + per_m(3_500, fast["output"])
           # the advisor: its own model's rates
           + per_m(5_000, haiku["input"]) + per_m(1_000, haiku["cache_read"]) + per_m(400, haiku["output"]))
    return micros(usd)


@pytest.fixture
def rich_anthropic(fakes):
    f = fakes.anthropic
    f.usage_extra = {"server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 2},
                     "speed": "fast", "inference_geo": "us"}
    message = {"type": "message", "input_tokens": f.input_tokens, "output_tokens": f.output_tokens}
    f.iterations_start = [COMPACTION]
    f.iterations_delta = [ADVISOR, message]
    return f


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_iterations_server_tools_speed_and_region_are_all_billed(gateway, world, rich_anthropic,
                                                                             settings, stream):
    client = anthropic.Anthropic(base_url=gateway.url, api_key=world.api_key, max_retries=0)
    kwargs = {"model": OPUS, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        with client.messages.stream(**kwargs) as s:
            final = s.get_final_message()
    else:
        final = client.messages.create(**kwargs)
    assert final.content[0].text == "Hello from Claude."
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["cost_micros"] == anthropic_expected(rich_anthropic)
    assert record["tool_calls"] == {"web_search": 3}  # web fetch costs only its tokens
    assert record["speed"] == "fast" and record["inference_geo"] == "us"
    assert [i["type"] for i in record["iterations"]] == ["compaction", "advisor_message"]
    assert record["iteration_tokens"] == 180_000 + 3_500 + 5_000 + 1_000 + 400
    assert record["prices"]["tool:web_search"] == [3, 10_000_000]  # $10 per 1K searches
    assert "price_gaps" not in record


def test_anthropic_stream_reaches_the_client_byte_for_byte(gateway, world, fakes):
    """The provider's events, its own final message_stop included, exactly as the provider sent them."""
    body = {"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=30) as http:
        direct = http.post(fakes.urls["anthropic"] + "/v1/messages", json=body,
                           headers={**ANTHROPIC_KEY_HEADERS, "x-api-key": "k"}).content
        via = http.post(gateway.url + "/v1/messages", json={**body, "model": "anthropic/claude-sonnet-4-6"},
                        headers={**ANTHROPIC_KEY_HEADERS, "x-api-key": world.api_key}).content
    assert via == direct
    assert via.endswith(b'data: {"type":"message_stop","amazon-bedrock-invocationMetrics":null}\n\n')


# -- OpenAI: chunks without a usage key, Responses tool calls ---------------------------------------
def test_openai_chunks_carry_no_usage_key_the_client_did_not_ask_for(gateway, tenant, fake_openai):
    fake, url = fake_openai
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=30) as http:
        direct = http.post(url + "/chat/completions", json=body, headers={"authorization": "Bearer k"}).content
        via = http.post(gateway.base_url + "/chat/completions", json=body,
                        headers={"authorization": f"Bearer {tenant.api_key}"}).content
    assert fake.requests[-1]["stream_options"] == {"include_usage": True}  # the gateway's, for metering
    assert b'"usage"' not in via
    normal = re.compile(rb'"created":\d+')
    assert normal.sub(b"", via) == normal.sub(b"", direct)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_responses_server_tool_calls_are_billed_per_call(gateway, world, fakes, settings, stream):
    f = fakes.openai
    f.tool_items = [
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "a"}},
        {"type": "web_search_call", "id": "ws_2", "status": "completed", "action": {"type": "search", "query": "b"}},
        {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"], "results": None},
        {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "1+1",
         "container_id": "cntr_1", "outputs": None},
        {"type": "code_interpreter_call", "id": "ci_2", "status": "completed", "code": "2+2",
         "container_id": "cntr_1", "outputs": None},
    ]
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    if stream:
        events = list(sdk.responses.create(model="openai/gpt-5", input="search", stream=True))
        assert events[-1].type == "response.completed"
    else:
        sdk.responses.create(model="openai/gpt-5", input="search")
    [record] = wait_for_ledger(settings, world.workspace, 1)
    m = "openai/gpt-5"
    r = rates(m)
    usd = (per_m(f.input_tokens - f.cached_tokens, r["input"]) + per_m(f.cached_tokens, r["cache_read"])
           + per_m(f.output_tokens, r["output"]) + 2 * fee(m, "web_search") / 1000
           + fee(m, "file_search") / 1000 + fee(m, "code_interpreter") / 1000)  # one container
    assert record["cost_micros"] == micros(usd)
    assert record["tool_calls"] == {"code_interpreter": 1, "file_search": 1, "web_search": 2}


def test_a_requested_tier_without_a_price_is_refused_before_it_is_sent(gateway, world, fakes, settings):
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        sdk.responses.create(model="openai/gpt-5-nano", input="hi", service_tier="priority")
    assert err.value.code == "unpriced_service_tier" and "priority" in err.value.message
    assert fakes.openai.requests == []


# -- Gemini: audio input, grounding, service tier --------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_gemini_audio_grounding_and_flex_tier(gateway, world, fakes, settings, stream):
    g = fakes.gemini
    g.audio_tokens, g.audio_cached, g.service_tier = 600, 200, "flex"
    g.grounding_queries = ["weather paris", "weather rome"]
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    kwargs = {"model": "gemini/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}],
              "service_tier": "flex"}
    if stream:
        for _ in sdk.chat.completions.create(stream=True, **kwargs):
            pass
    else:
        sdk.chat.completions.create(**kwargs)
    assert g.requests[-1]["serviceTier"] == "flex"
    [record] = wait_for_ledger(settings, world.workspace, 1)
    m = "gemini/gemini-2.5-flash"
    r = rates(m, "flex")
    text_uncached = g.prompt_tokens - g.cached_tokens - (g.audio_tokens - g.audio_cached)
    usd = (per_m(text_uncached, r["input"]) + per_m(g.cached_tokens - g.audio_cached, r["cache_read"])
           + per_m(g.audio_tokens - g.audio_cached, r["input_audio"]) + per_m(g.audio_cached, r["cache_read_audio"])
           + per_m(g.candidates_tokens + g.thoughts_tokens, r["output"])
           + fee(m, "grounded_prompt") / 1000)  # Gemini 2.x: per grounded prompt, not per query
    assert r["input_audio"] == Decimal("0.5")  # $1.00/M audio at flex's 50 %, not text's $0.30
    assert record["cost_micros"] == micros(usd)
    assert record["service_tier"] == "flex" and record["input_audio"] == 400 and record["cache_read_audio"] == 200


# -- Bedrock: Nova service tiers --------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_nova_priority_tier_is_requested_and_priced(gateway, world, fakes, settings, stream):
    b = fakes.bedrock
    b.service_tier = "priority"
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    kwargs = {"model": "bedrock/us.amazon.nova-pro-v1:0", "messages": [{"role": "user", "content": "hi"}],
              "service_tier": "priority"}
    if stream:
        for _ in sdk.chat.completions.create(stream=True, **kwargs):
            pass
    else:
        sdk.chat.completions.create(**kwargs)
    assert b.requests[-1]["serviceTier"] == {"type": "priority"}
    [record] = wait_for_ledger(settings, world.workspace, 1)
    r = rates("bedrock/amazon.nova-pro-v1:0", "priority")
    usd = (per_m(b.input_tokens, r["input"]) + per_m(b.cache_read, r["cache_read"])
           + per_m(b.cache_write, r["cache_write_5m"]) + per_m(b.output_tokens, r["output"]))
    assert record["cost_micros"] == micros(usd) and record["service_tier"] == "priority"


# -- A parameter the provider cannot honour is mapped or refused, never dropped ----------------------
def test_openai_service_tier_to_anthropic_is_mapped_or_refused(gateway, world, fakes):
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    sdk.chat.completions.create(model="anthropic/claude-sonnet-4-6", service_tier="default",
                                messages=[{"role": "user", "content": "hi"}])
    assert fakes.anthropic.requests[-1]["service_tier"] == "standard_only"
    # Priced (Anthropic bills batch), but a Messages call cannot ask for it: a 400, not a silent drop.
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="anthropic/claude-sonnet-4-6", service_tier="batch",
                                    messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "unsupported_value" and err.value.param == "service_tier"
    assert "no equivalent on Anthropic" in err.value.message
    # Not priced at all (Anthropic has no flex tier): refused before routing to a translator.
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="anthropic/claude-sonnet-4-6", service_tier="flex",
                                    messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "unpriced_service_tier" and err.value.param == "service_tier"
    assert len(fakes.anthropic.requests) == 1
