"""The parsers and the price arithmetic behind image-generation fees, audio output and the tier
multipliers (each against catalog.json read by the independent oracle, or hand arithmetic)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from meterline.pricing import sync
from meterline.pricing.catalog import default_catalog
from meterline.pricing.cost import price_request
from meterline.translators.openai_format import usage_dict
from meterline.usage import Usage, from_gemini, from_openai_chat, openai_images
from tests import oracle

TODAY = datetime.now(UTC).date()


def test_openai_audio_completion_tokens_are_split_from_text_output():
    usage = from_openai_chat({"prompt_tokens": 100, "completion_tokens": 50,
                              "prompt_tokens_details": {"cached_tokens": 20, "audio_tokens": 30},
                              "completion_tokens_details": {"audio_tokens": 45, "reasoning_tokens": 0,
                                                            "rejected_prediction_tokens": 3}})
    assert usage == Usage(input_uncached=50, cache_read=20, input_audio=30, output=5, output_audio=45,
                          reasoning=0, rejected_prediction=3)
    assert usage.output_total == 50 and usage.total == 150
    # An audio count beyond the completion (a provider bug) never bills negative text.
    odd = from_openai_chat({"prompt_tokens": 1, "completion_tokens": 10,
                            "completion_tokens_details": {"audio_tokens": 99}})
    assert (odd.output, odd.output_audio) == (0, 10)
    # What the gateway writes back in OpenAI format keeps the audio counts.
    out = usage_dict(usage)
    assert out["completion_tokens"] == 50 and out["completion_tokens_details"]["audio_tokens"] == 45
    assert out["prompt_tokens_details"]["audio_tokens"] == 30


def test_gemini_audio_answer_is_split_by_modality():
    meta = {"promptTokenCount": 40, "candidatesTokenCount": 300, "thoughtsTokenCount": 7,
            "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 280}, {"modality": "TEXT",
                                                                                   "tokenCount": 20}]}
    usage = from_gemini(meta)
    assert (usage.output, usage.output_audio, usage.reasoning) == (27, 280, 7)


def test_image_calls_take_model_from_the_tool_and_quality_and_size_from_the_item():
    tools = [{"type": "function", "name": "f"},
             {"type": "image_generation", "model": "gpt-image-1.5", "quality": "medium", "size": "auto"}]
    output = [
        {"type": "image_generation_call", "id": "a", "status": "completed", "quality": "HIGH", "size": "1024x1536"},
        {"type": "image_generation_call", "id": "b", "status": "completed", "quality": "auto", "size": "1024x1536"},
        {"type": "image_generation_call", "id": "c", "status": "completed"},  # nothing reported
        {"type": "image_generation_call", "id": "d", "status": "failed", "quality": "high", "size": "1024x1024"},
        {"type": "web_search_call", "id": "e", "status": "completed"},
    ]
    assert openai_images(output, tools) == (("gpt-image-1.5", "high", "1024x1536", 1),
                                            ("gpt-image-1.5", "medium", "1024x1536", 1),
                                            ("gpt-image-1.5", "medium", "auto", 1))
    assert openai_images(output[:1], None) == (("", "high", "1024x1536", 1),)
    assert openai_images("junk", tools) == () and openai_images([None, 3], tools) == ()


def _image_usd(model: str, quality: str, size: str) -> Decimal:
    return Decimal(oracle.point(f"openai/{model}")["images"][quality][size])


def test_image_prices_known_unknown_and_ceiling():
    catalog = default_catalog()
    pricing = catalog.resolve("openai/gpt-5")
    usage = Usage(images=(("gpt-image-1-mini", "high", "1536x1024", 3), ("gpt-image-1.5", "low", "1024x1024", 1)))
    cost = price_request(pricing, usage, TODAY, resolve=catalog.resolve)
    expected = 3 * _image_usd("gpt-image-1-mini", "high", "1536x1024") + _image_usd("gpt-image-1.5", "low",
                                                                                     "1024x1024")
    assert cost.micros == int(expected * 1_000_000) == 3 * 52_000 + 9_000
    assert cost.breakdown["image:gpt-image-1-mini:high:1536x1024"] == (3, 52_000) and not cost.gaps
    # A size the model does not list: its own highest price, flagged.
    odd = price_request(pricing, Usage(images=(("gpt-image-1-mini", "low", "4096x4096", 1),)), TODAY,
                        resolve=catalog.resolve)
    assert odd.micros == 52_000 and odd.gaps == ("image gpt-image-1-mini low 4096x4096 at its highest listed price",)
    # No model named, or no resolver at all: the ceiling ($0.25), flagged - never $0.
    for resolve in (catalog.resolve, None):
        unnamed = price_request(pricing, Usage(images=(("", "high", "1024x1024", 2),)), TODAY, resolve=resolve)
        assert unnamed.micros == 500_000 and unnamed.gaps


def test_audio_output_scales_with_service_tier_multipliers():
    pricing = default_catalog().resolve("gemini/gemini-3.1-flash-live-preview")
    usage = Usage(output=1_000_000, output_audio=1_000_000)
    assert oracle.point("gemini/gemini-3.1-flash-live-preview")["output_audio"] == "12"
    assert price_request(pricing, usage, TODAY).micros == 4_500_000 + 12_000_000
    assert price_request(pricing, usage, TODAY, "flex").micros == (4_500_000 + 12_000_000) // 2
    assert price_request(pricing, usage, TODAY, "priority").micros == (4_500_000 + 12_000_000) * 18 // 10


def test_tier_multipliers_are_the_documented_ones():
    """Gemini Flex 0.5x / Priority 1.8x (inside Google's documented 1.75-2.0x), Bedrock Nova Flex 0.5x /
    Priority 1.75x: read from catalog.json, each with its source and check date."""
    gem = oracle.point("gemini/gemini-2.5-flash")
    assert gem["service_tiers"]["flex"] == {"multiplier": "0.5"}
    assert gem["service_tiers"]["priority"] == {"multiplier": "1.8"}
    assert "ai.google.dev/gemini-api/docs/optimization" in gem["source"] and "(2026-12-02)" in gem["source"]
    nova = oracle.point("bedrock/amazon.nova-pro-v1:0")
    assert nova["service_tiers"] == {"flex": {"multiplier": "0.5"}, "priority": {"multiplier": "1.75"}}
    assert "aws.amazon.com/bedrock/service-tiers" in nova["source"]


def test_anthropic_priority_tier_is_metered_at_list_rates_and_flagged():
    """Priority Tier is capacity bought by commitment (no longer sold; its burndown mirrors the list
    prices): a request Anthropic reports as served at `priority` is metered at the standard list rates
    and the record says so in price_gaps - a workspace sets its contract price with `prices set`."""
    pricing = default_catalog().resolve("anthropic/claude-sonnet-4-6")
    usage = Usage(input_uncached=1_000_000, output=100_000)
    standard = price_request(pricing, usage, TODAY)
    priority = price_request(pricing, usage, TODAY, "priority")
    assert priority.micros == standard.micros and priority.gaps == ("service tier 'priority'",)


def test_prices_diff_reports_changed_per_image_and_audio_prices():
    old = {"models": {"openai/m": {"prices": [{"effective": "2026-01-01", "input": "1", "output": "2",
                                               "output_audio": "8", "images": {"low": {"1024x1024": "0.01"}}}]}}}
    new = {"models": {"openai/m": {"prices": [{"effective": "2026-01-01", "input": "1", "output": "2",
                                               "output_audio": "9", "images": {"low": {"1024x1024": "0.02"}}}]}}}
    changed = {c["price"]: (c["old"], c["new"]) for c in sync.diff(old, new, "2026-06-01")["changed"]}
    assert changed == {"output_audio": ("8", "9"),
                       "images.low": ({"1024x1024": "0.01"}, {"1024x1024": "0.02"})}


def test_reservations_cover_audio_replies_and_bounded_image_calls():
    from meterline.budgets import policy

    catalog = default_catalog()
    audio = catalog.resolve("openai/gpt-4o-audio-preview")
    body = {"model": "gpt-4o-audio-preview", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    worst = policy.worst_case(body, audio)
    assert worst.output_rate == 80_000_000  # audio output, $80/M, not text's $10
    nano = catalog.resolve("openai/gpt-5-nano")
    tools = {"model": "gpt-5-nano", "input": "draw", "max_output_tokens": 100,
             "tools": [{"type": "image_generation"}]}
    assert policy.unbounded_fields(tools, "responses") == ["max_tool_calls"]
    bounded = {**tools, "max_tool_calls": 3}
    assert policy.unbounded_fields(bounded, "responses") == []
    with_images = policy.worst_case(bounded, nano)
    w = with_images
    tokens_micros = -(-(w.input_tokens * w.input_rate + w.output_tokens * w.output_rate) // 1_000_000)
    assert w.fixed_micros == 3 * 250_000 and w.micros == tokens_micros + 3 * 250_000
    # A clamp leaves room for the images before it buys output.
    room = policy.clamp_output(with_images, with_images.fixed_micros + 10_000)
    no_room = policy.clamp_output(with_images, with_images.fixed_micros)
    assert room is not None and no_room is None


def test_tool_usage_image_tokens_parse_conservatively():
    from meterline.usage import openai_tool_usage

    tools = [{"type": "image_generation", "model": "gpt-image-1-mini"}]
    it, searches = openai_tool_usage({"image_gen": {"input_tokens": 90, "output_tokens": 4_000,
                                                    "total_tokens": 4_090, "cached_tokens": 30,
                                                    "input_tokens_details": {"image_tokens": 0, "text_tokens": 90}},
                                      "web_search": {"num_requests": 0}}, tools)
    assert searches == 0 and it.kind == "image_generation" and it.model == "gpt-image-1-mini"
    # No output split: all image tokens (the dearer class); cached without a split: text.
    assert it.usage == Usage(input_uncached=60, cache_read=30, output_image=4_000)
    assert openai_tool_usage({"image_gen": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}, tools) \
        == (None, None)
    assert openai_tool_usage(None, tools) == (None, None)


def test_image_tokens_of_an_unnamed_or_unknown_image_model_use_the_ceiling_rates():
    from meterline.usage import Iteration

    catalog = default_catalog()
    pricing = catalog.resolve("openai/gpt-5")
    tokens = Usage(output_image=1_000_000)
    for model, gap in (("", "image model not named: image tokens at gpt-image-1's rates"),
                       ("gpt-image-9", "image model 'gpt-image-9' at gpt-image-1's rates")):
        usage = Usage(iterations=(Iteration("image_generation", model or None, tokens),))
        cost = price_request(pricing, usage, TODAY, resolve=catalog.resolve)
        assert cost.micros == 40_000_000 and cost.gaps == (gap,)  # gpt-image-1: $40/M image output


def test_requests_show_lines_are_the_metered_classes_and_add_up_to_the_cost():
    """`meterline requests show` lists each billed class with the unit price the meter used (audio,
    tool calls, images, iterations included), and the exact lines sum to the recorded cost."""
    from meterline.admin.reports import cost_lines
    from meterline.gateway.metering import usage_classes
    from meterline.store.workspaces import WorkspaceConfig
    from meterline.usage import Iteration

    catalog = default_catalog()
    pricing = catalog.resolve("openai/gpt-4o-audio-preview")
    usage = Usage(input_uncached=500, input_audio=700, output=60, output_audio=900,
                  tool_calls=(("code_interpreter", 2),), images=(("gpt-image-1.5", "high", "1024x1536", 1),),
                  iterations=(Iteration("image_generation", "gpt-image-1.5", Usage(output_image=4_000)),))
    cost = price_request(pricing, usage, TODAY, resolve=catalog.resolve)
    record = {"model": "openai/gpt-4o-audio-preview", "ts": int(datetime.now(UTC).timestamp() * 1000),
              "cost_micros": cost.micros, "price_source": cost.price_source, "input_uncached": 500, "output": 60,
              **{k: v for k, v in usage_classes(usage, cost).items() if v is not None}}
    lines = cost_lines(record, WorkspaceConfig("ws", "Ws"))
    by_class = {line["class"]: line for line in lines}
    assert by_class["output_audio"]["usd_per_million_micros"] == 80_000_000
    assert by_class["tool:code_interpreter"]["tokens"] == 2 and by_class["image:gpt-image-1.5:high:1024x1536"]
    assert by_class["iteration:0:image_generation"]["cost_micros_exact"] == 4_000 * 32
    exact = sum(line["cost_micros_exact"] for line in lines if line["class"] != "total")
    assert round(exact) == by_class["total"]["cost_micros_exact"] == cost.micros
