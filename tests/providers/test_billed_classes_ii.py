"""Image-generation tool calls, audio output and rejected prediction tokens are metered at their own
prices, from fake providers speaking the documented wire format.

GIVEN a fake OpenAI Responses server returning `image_generation_call` output items (streamed as
      output_item / image_generation_call.* events), a fake Chat Completions server reporting audio
      tokens and rejected prediction tokens, and a fake Gemini server reporting audio answers
WHEN the official openai SDK calls the gateway, streamed and not
THEN each recorded cost equals an independent Decimal recomputation from catalog.json (per-image
     prices by image model, quality and size; audio tokens at the model's audio rates; rejected
     prediction tokens as output), streamed equals non-streamed, and what the catalog cannot place is
     charged at its highest listed per-image price and named in `price_gaps`, never $0.
"""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from tests.conftest import wait_for_ledger
from tests.fakes.openai_more import PNG_B64
from tests.oracle import CATALOG, point
from tests.providers.test_billed_classes import micros, per_m, rates


def per_image(image_model: str, quality: str, size: str) -> Decimal:
    """USD per image, straight from catalog.json."""
    return Decimal(point(f"openai/{image_model}")["images"][quality][size])


def image_item(n: int, quality: str | None, size: str | None, status: str = "completed") -> dict:
    """An `image_generation_call` output item as the Responses API returns it."""
    item = {"type": "image_generation_call", "id": f"ig_{n}", "status": status, "action": "generate",
            "background": "opaque", "output_format": "png", "revised_prompt": "a red fox, watercolour",
            "result": PNG_B64 if status == "completed" else None}
    if quality is not None:
        item["quality"] = quality
    if size is not None:
        item["size"] = size
    return item


def call_responses(gateway, world, stream: bool, tools: list[dict]) -> None:
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    kwargs = {"model": "openai/gpt-5", "input": "draw a fox", "tools": tools}
    if stream:
        events = list(sdk.responses.create(stream=True, **kwargs))
        kinds = [e.type for e in events]
        assert kinds[-1] == "response.completed"
        assert "response.image_generation_call.completed" in kinds  # the provider's events pass through
    else:
        response = sdk.responses.create(**kwargs)
        assert [o.type for o in response.output][:1] == ["image_generation_call"]


def token_usd(f) -> Decimal:
    r = rates("openai/gpt-5")
    return (per_m(f.input_tokens - f.cached_tokens, r["input"]) + per_m(f.cached_tokens, r["cache_read"])
            + per_m(f.output_tokens, r["output"]))


@pytest.mark.parametrize("stream", [False, True])
def test_image_generation_calls_are_billed_per_image_by_model_quality_and_size(gateway, world, fakes, settings,
                                                                                stream):
    f = fakes.openai
    f.partial_images = 1 if stream else 0
    # The item reports the quality and size used; the tool config names the image model.
    f.tool_items = [image_item(1, "high", "1024x1536"), image_item(2, "low", "1024x1024"),
                    image_item(3, "high", "1024x1536"),
                    image_item(4, "high", "1024x1024", status="failed")]  # no image, not billed
    call_responses(gateway, world, stream, [{"type": "image_generation", "model": "gpt-image-1.5",
                                             "quality": "auto", "size": "auto"}])
    assert f.requests[-1]["tools"][0]["model"] == "gpt-image-1.5"  # the request reached the provider as sent
    [record] = wait_for_ledger(settings, world.workspace, 1)
    usd = (token_usd(f) + 2 * per_image("gpt-image-1.5", "high", "1024x1536")
           + per_image("gpt-image-1.5", "low", "1024x1024"))
    assert per_image("gpt-image-1.5", "high", "1024x1536") == Decimal("0.2")  # OpenAI's listed price
    assert record["cost_micros"] == micros(usd)
    assert record["images"] == {"gpt-image-1.5:high:1024x1536": 2, "gpt-image-1.5:low:1024x1024": 1}
    assert record["prices"]["image:gpt-image-1.5:high:1024x1536"] == [2, 200_000]  # micro-dollars per image
    assert "price_gaps" not in record


@pytest.mark.parametrize("stream", [False, True])
def test_an_image_the_catalog_cannot_place_is_charged_at_the_ceiling_and_flagged(gateway, world, fakes, settings,
                                                                                  stream):
    f = fakes.openai
    # No image model named (the provider's default), a custom size, and one whose size only the
    # request says: quality from the item, size from the tool config.
    f.tool_items = [image_item(1, "medium", "1536x864"), image_item(2, "low", None)]
    call_responses(gateway, world, stream, [{"type": "image_generation", "size": "1024x1024"}])
    [record] = wait_for_ledger(settings, world.workspace, 1)
    ceiling = max(Decimal(p) for sizes in point("openai/gpt-image-1")["images"].values() for p in sizes.values())
    assert ceiling == Decimal("0.25")
    assert record["cost_micros"] == micros(token_usd(f) + 2 * ceiling)
    assert record["images"] == {"default:medium:1536x864": 1, "default:low:1024x1024": 1}
    assert sorted(record["price_gaps"]) == [
        "image default model low 1024x1024 at its highest listed price",
        "image default model medium 1536x864 at its highest listed price"]


def test_an_image_model_without_per_image_prices_is_flagged_not_free(gateway, world, fakes, settings):
    fakes.openai.tool_items = [image_item(1, "high", "2048x2048")]
    call_responses(gateway, world, False, [{"type": "image_generation", "model": "gpt-image-2"}])
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert "images" not in point("openai/gpt-image-2")  # token-priced, any size: no per-image list
    assert record["cost_micros"] == micros(token_usd(fakes.openai) + Decimal("0.25"))
    assert record["price_gaps"] == ["image gpt-image-2 high 2048x2048 at its highest listed price"]


@pytest.mark.parametrize("stream", [False, True])
def test_reported_image_tool_tokens_are_priced_at_the_image_models_token_rates(gateway, world, fakes, settings,
                                                                                stream):
    """Where the response carries `tool_usage` (hosted tools' own usage), the image tool is billed by
    its tokens at the image model's rates - not per image again - and web search by its billable
    count (a page open is not a billable search)."""
    f = fakes.openai
    f.tool_items = [image_item(1, "high", "1024x1536"), image_item(2, "low", "1024x1024"),
                    {"type": "web_search_call", "id": "ws_1", "status": "completed",
                     "action": {"type": "search", "query": "fox"}},
                    {"type": "web_search_call", "id": "ws_2", "status": "completed",
                     "action": {"type": "open_page", "url": "https://example.com"}}]
    f.tool_usage = {
        "image_gen": {"input_tokens": 300, "input_tokens_details": {"image_tokens": 200, "text_tokens": 100},
                      "cached_tokens": 50, "cached_tokens_details": {"cached_image_tokens": 50,
                                                                     "cached_text_tokens": 0},
                      "output_tokens": 6_400, "output_tokens_details": {"image_tokens": 6_272, "text_tokens": 128},
                      "total_tokens": 6_700},
        "web_search": {"num_requests": 1}}
    call_responses(gateway, world, stream, [{"type": "image_generation", "model": "gpt-image-1.5"},
                                            {"type": "web_search"}])
    [record] = wait_for_ledger(settings, world.workspace, 1)
    img = point("openai/gpt-image-1.5")
    usd_image = (per_m(100, Decimal(img["input"])) + per_m(150, Decimal(img["input_image"]))
                 + per_m(50, Decimal(img["cache_read_image"])) + per_m(128, Decimal(img["output"]))
                 + per_m(6_272, Decimal(img["output_image"])))
    assert Decimal(img["output_image"]) == 32  # $32/M image output tokens, not text's $10
    usd = token_usd(f) + usd_image + Decimal(point("openai/gpt-5")["fees"]["web_search"]) / 1000
    assert record["cost_micros"] == micros(usd)
    assert record["tool_calls"] == {"web_search": 1}
    assert record["images"] == {"gpt-image-1.5:high:1024x1536": 1, "gpt-image-1.5:low:1024x1024": 1}
    assert not [k for k in record["prices"] if k.startswith("image:")]  # not priced per image as well
    [iteration] = record["iterations"]
    assert iteration["type"] == "image_generation" and iteration["model"] == "gpt-image-1.5"
    assert record["prices"]["iteration:0:image_generation"] == [6_700, micros(usd_image)]
    assert "price_gaps" not in record


# -- Audio output (and input) at the model's audio rates; rejected prediction tokens as output ------
@pytest.mark.parametrize("stream", [False, True])
def test_openai_audio_tokens_are_priced_at_audio_rates(gateway, world, fakes, settings, stream):
    c = fakes.openai.chat
    c.prompt_tokens, c.cached_tokens, c.audio_prompt_tokens = 1200, 0, 700
    c.completion_tokens, c.audio_completion_tokens = 960, 900  # 60 text (transcript) + 900 audio
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    kwargs = {"model": "openai/gpt-4o-audio-preview", "modalities": ["text", "audio"],
              "audio": {"voice": "alloy", "format": "wav"}, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        chunks = list(sdk.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
        usage = chunks[-1].usage
    else:
        reply = sdk.chat.completions.create(**kwargs)
        assert reply.choices[0].message.audio.transcript
        usage = reply.usage
    # The client sees the provider's usage untouched.
    assert (usage.completion_tokens, usage.completion_tokens_details.audio_tokens) == (960, 900)
    [record] = wait_for_ledger(settings, world.workspace, 1)
    r = rates("openai/gpt-4o-audio-preview")
    assert (r["input_audio"], r["output_audio"]) == (Decimal(40), Decimal(80))  # not text's $2.50 / $10
    usd = (per_m(500, r["input"]) + per_m(700, r["input_audio"]) + per_m(60, r["output"])
           + per_m(900, r["output_audio"]))
    assert record["cost_micros"] == micros(usd)
    assert (record["input_audio"], record["output_audio"], record["output"]) == (700, 900, 60)
    assert record["prices"]["output_audio"] == [900, 80_000_000]


@pytest.mark.parametrize("stream", [False, True])
def test_rejected_prediction_tokens_are_billed_as_output(gateway, world, fakes, settings, stream):
    """Predicted Outputs: OpenAI counts rejected prediction tokens inside completion_tokens and bills
    them as output; the ledger keeps them apart for information and charges them once."""
    c = fakes.openai.chat
    c.completion_tokens, c.accepted_prediction_tokens, c.rejected_prediction_tokens = 180, 90, 70
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    kwargs = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "refactor this"}],
              "prediction": {"type": "content", "content": "def f():\n    return 1\n"}}
    if stream:
        for _ in sdk.chat.completions.create(stream=True, **kwargs):
            pass
    else:
        sdk.chat.completions.create(**kwargs)
    assert c.requests[-1]["prediction"]["type"] == "content"
    [record] = wait_for_ledger(settings, world.workspace, 1)
    r = rates("openai/gpt-4o")
    usd = (per_m(c.prompt_tokens - c.cached_tokens, r["input"]) + per_m(c.cached_tokens, r["cache_read"])
           + per_m(180, r["output"]))  # the 70 rejected tokens are inside the 180, billed once
    assert record["cost_micros"] == micros(usd)
    assert (record["output"], record["rejected_prediction"]) == (180, 70)


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_audio_answers_are_priced_at_the_audio_output_rate(gateway, world, fakes, settings, stream):
    g = fakes.gemini
    g.candidates_tokens, g.audio_out_tokens, g.thoughts_tokens = 800, 750, 0
    model = "gemini/gemini-live-2.5-flash"
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    kwargs = {"model": model, "messages": [{"role": "user", "content": "say hi"}]}
    if stream:
        chunks = list(sdk.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
        usage = chunks[-1].usage
    else:
        usage = sdk.chat.completions.create(**kwargs).usage
    assert usage.completion_tokens == 800 and usage.completion_tokens_details.audio_tokens == 750
    [record] = wait_for_ledger(settings, world.workspace, 1)
    r = rates(model)
    assert r["output_audio"] == Decimal(12) and r["output"] == Decimal(2)
    usd = (per_m(g.prompt_tokens - g.cached_tokens, r["input"]) + per_m(g.cached_tokens, r["cache_read"])
           + per_m(50, r["output"]) + per_m(750, r["output_audio"]))
    assert record["cost_micros"] == micros(usd)
    assert (record["output"], record["output_audio"]) == (50, 750)


def test_every_model_that_answers_in_audio_prices_audio_output():
    """Models that speak (OpenAI audio / realtime, Gemini Live / native audio) bill audio out apart
    from text (gpt-4o-audio-preview lacked it in the upstream data; the overrides add it): no audio
    answer priced as text. Models that only listen (transcribe, 2.5 Flash) have no audio output."""
    speaking = [mid for mid in CATALOG["models"]
                if (mid.startswith("openai/") and ("audio" in mid or "realtime" in mid) and "tts" not in mid
                    and "realtime-whisper" not in mid and "realtime-translate" not in mid)
                or (mid.startswith("gemini/") and ("live" in mid or "native-audio" in mid))]
    assert len(speaking) >= 8
    assert [m for m in speaking if "output_audio" not in point(m)] == []


# -- Budgets: images and audio replies are inside the reservation ----------------------------------
def test_a_hard_budget_bounds_image_generation_by_max_tool_calls(gateway, world, fakes, settings):
    """Without max_tool_calls the model may make any number of images: refused with a clear 400 under a
    hard budget (nothing sent). With it, that many images at the highest listed price are reserved,
    so a budget too small for them refuses the request up front instead of overspending."""
    from meterline.budgets.model import Budget
    from meterline.store.budgets import BudgetStore

    BudgetStore(settings).put_budget(world.workspace, Budget("workspace", world.workspace, monthly_micros=400_000))
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)
    tools = [{"type": "image_generation", "model": "gpt-image-1.5"}]
    with pytest.raises(openai.BadRequestError) as err:
        sdk.responses.create(model="openai/gpt-5-nano", input="draw", tools=tools, max_output_tokens=100)
    assert err.value.code == "unbounded_input" and err.value.param == "max_tool_calls"
    assert "max_tool_calls" in err.value.message
    # Two images may cost $0.50 (at the $0.25 ceiling): more than the $0.40 left.
    with pytest.raises(openai.APIStatusError) as err:
        sdk.responses.create(model="openai/gpt-5-nano", input="draw", tools=tools, max_output_tokens=100,
                             max_tool_calls=2)
    assert err.value.status_code == 429 and err.value.code == "budget_exceeded"
    assert fakes.openai.requests == []
    # One image fits: served, and settled at its real price.
    fakes.openai.tool_items = [image_item(1, "low", "1024x1024")]
    sdk.responses.create(model="openai/gpt-5-nano", input="draw", tools=tools, max_output_tokens=100,
                         max_tool_calls=1)
    assert len(fakes.openai.requests) == 1
    records = wait_for_ledger(settings, world.workspace, 3)
    served = next(r for r in records if r.get("outcome") not in ("rejected",) and r.get("images"))
    assert served["images"] == {"gpt-image-1.5:low:1024x1024": 1}
    assert served["prices"]["image:gpt-image-1.5:low:1024x1024"] == [1, 9_000]
