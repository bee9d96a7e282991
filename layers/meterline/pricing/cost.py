"""Cost of one request: usage x rates, in integer micro-dollars. Computed once, after translation.

Every billed class is summed exactly at the 1e-6 micro-dollar scale (tokens x micro-dollars per 1M
tokens; calls x micro-dollars per 1K calls x 1000; images x micro-dollars per image x 1e6) and
rounded once, half up: token classes, audio input and output, server-tool fees, images made by an
image-generation tool (per image, by image model, quality and size), and the extra iterations
(Anthropic compaction at the request's model, advisor calls at the advisor's model, each with its
own rates and tiers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date

from meterline.money import round_scaled
from meterline.pricing.catalog import STANDARD_TIERS, ModelPricing, PriceGap, PricePoint, Rates
from meterline.usage import Usage

# An image the catalog cannot place (the tool named no image model, or one without per-image prices)
# is charged at the highest per-image price of this model, whose prices bound the others OpenAI
# lists (overrides.json; docs/PRICING.md), and recorded as a price gap.
CEILING_IMAGE_MODEL = {"openai": "gpt-image-1", "azure": "gpt-image-1"}
IMAGE_GENERATION = "image_generation"  # the iteration kind of an image tool's own token usage
UNLISTED_IMAGE_MICROS = 250_000  # $0.25: gpt-image-1 high, 1024x1536 - used only if that entry is gone


@dataclass(frozen=True)
class Cost:
    micros: int
    rates: Rates
    price_source: str
    price_effective: date
    # Per billed class: units and unit price (micro-dollars per 1M tokens, or per 1K calls for fees).
    breakdown: dict[str, tuple[int, int]] = field(default_factory=dict)
    # What the catalog could not price (charged at the standard rates, and said so in the ledger).
    gaps: tuple[str, ...] = ()


def _token_terms(usage: Usage, rates: Rates) -> list[tuple[str, int, int]]:
    return [
        ("input", usage.input_uncached, rates.input),
        ("cache_read", usage.cache_read, rates.cache_read),
        ("cache_write_5m", usage.cache_write_5m, rates.cache_write_5m),
        ("cache_write_1h", usage.cache_write_1h, rates.cache_write_1h),
        ("output", usage.output, rates.output),
        ("input_audio", usage.input_audio, rates.audio_in),
        ("cache_read_audio", usage.cache_read_audio, rates.audio_cache_read),
        ("output_audio", usage.output_audio, rates.audio_out),
        ("input_image", usage.input_image, rates.image_in),
        ("cache_read_image", usage.cache_read_image, rates.image_cache_read),
        ("output_image", usage.output_image, rates.image_out),
    ]


def _scaled_tokens(usage: Usage, rates: Rates) -> int:
    return sum(n * r for _, n, r in _token_terms(usage, rates))


def cost_of(usage: Usage, rates: Rates) -> int:
    """Exact: sum of tokens x (micro-dollars per 1M tokens), divided by 1M once, rounded half up."""
    return round_scaled(_scaled_tokens(usage, rates))


def _rates(point: PricePoint, usage: Usage, service_tier: str | None, gaps: list[str]) -> Rates:
    if (not service_tier or service_tier in STANDARD_TIERS) and not usage.speed and not usage.inference_geo:
        return point.table.at(usage.prompt_total)  # the common case, no lookups
    try:
        return point.rates_for(usage.prompt_total, service_tier, usage.speed, usage.inference_geo)
    except PriceGap as gap:
        gaps.append(str(gap))
    for tier, speed, geo in ((service_tier, None, usage.inference_geo), (None, None, None)):
        try:
            return point.rates_for(usage.prompt_total, tier, speed, geo)
        except PriceGap:
            continue
    return point.rates_for(usage.prompt_total, None)


def _image_price(pricing: ModelPricing, image_model: str, quality: str, size: str, day: date,
                 resolve: Callable[[str], ModelPricing | None] | None, gaps: list[str]) -> int:
    """Micro-dollars per image: the image model's documented price for that quality and size. What the
    catalog does not list (a model, an "auto" or custom size) is charged at the highest per-image price
    it lists for that model - else for the ceiling model - and recorded as a gap:
    never $0, never silently."""
    namespace = pricing.model_id.split("/", 1)[0]
    table: dict[tuple[str, str], int] = {}
    for name in (image_model, CEILING_IMAGE_MODEL.get(namespace, "")):
        found = resolve(f"{namespace}/{name}") if name and resolve is not None else None
        point = found.at(day) if found is not None else None
        if point is not None and point.images:
            table = point.images
            break
    price = table.get((quality, size)) if name == image_model else None
    if price is not None:
        return price
    gaps.append(f"image {image_model or 'default model'} {quality} {size} at its highest listed price")
    return max(table.values(), default=UNLISTED_IMAGE_MICROS)


def price_request(pricing: ModelPricing, usage: Usage, day: date, service_tier: str | None = None,
                  resolve: Callable[[str], ModelPricing | None] | None = None) -> Cost | None:
    """The request's cost; None when the model has no price on `day`. `resolve` finds the pricing
    of another model named in the usage (an advisor iteration); without it, or when that model is
    not in the catalog, the iteration is priced at the request's model and recorded as a gap."""
    point = pricing.at(day)
    if point is None:
        return None
    gaps: list[str] = []
    rates = _rates(point, usage, service_tier, gaps)
    breakdown: dict[str, tuple[int, int]] = {}
    if usage.input_uncached:
        breakdown["input"] = (usage.input_uncached, rates.input)
    if usage.cache_read:
        breakdown["cache_read"] = (usage.cache_read, rates.cache_read)
    if usage.cache_write_5m:
        breakdown["cache_write_5m"] = (usage.cache_write_5m, rates.cache_write_5m)
    if usage.cache_write_1h:
        breakdown["cache_write_1h"] = (usage.cache_write_1h, rates.cache_write_1h)
    if usage.output:
        breakdown["output"] = (usage.output, rates.output)
    if usage.input_audio:
        breakdown["input_audio"] = (usage.input_audio, rates.audio_in)
    if usage.cache_read_audio:
        breakdown["cache_read_audio"] = (usage.cache_read_audio, rates.audio_cache_read)
    if usage.output_audio:
        breakdown["output_audio"] = (usage.output_audio, rates.audio_out)
    scaled = sum(units * rate for units, rate in breakdown.values())
    for name, calls in usage.tool_calls:
        fee = point.fees.get(name)
        if fee is None:
            gaps.append(f"{name} fee")
            continue
        scaled += calls * fee * 1000  # micro-dollars per 1K calls -> the 1e-6 scale of per-1M rates
        breakdown[f"tool:{name}"] = (calls, fee)
    for image_model, quality, size, count in () if usage.images_in_tokens else usage.images:
        each = _image_price(pricing, image_model, quality, size, day, resolve, gaps)
        scaled += count * each * 1_000_000  # micro-dollars per image -> the 1e-6 scale
        key = f"image:{image_model or 'default'}:{quality}:{size}"
        breakdown[key] = (count, each)
    namespace = pricing.model_id.split("/", 1)[0]
    for index, iteration in enumerate(usage.iterations):
        it_point = point
        model = iteration.model
        if iteration.kind == IMAGE_GENERATION and not model:
            # The tool named no image model: its tokens at the ceiling model's (highest) rates, flagged.
            model = CEILING_IMAGE_MODEL.get(namespace, "")
            gaps.append(f"image model not named: image tokens at {model}'s rates")
        if model and resolve is not None:
            other = resolve(f"{namespace}/{model}")
            other_point = other.at(day) if other is not None else None
            if other_point is None and iteration.kind == IMAGE_GENERATION and model != CEILING_IMAGE_MODEL.get(
                    namespace):
                ceiling = resolve(f"{namespace}/{CEILING_IMAGE_MODEL.get(namespace, '')}")
                other_point = ceiling.at(day) if ceiling is not None else None
                gaps.append(f"image model {model!r} at {CEILING_IMAGE_MODEL.get(namespace)}'s rates")
            elif other_point is None:
                gaps.append(f"iteration model {model!r}")
            if other_point is not None:
                it_point = other_point
        # An iteration runs in the request's region; a compaction (same model) also at its speed.
        it_usage = replace(iteration.usage, inference_geo=iteration.usage.inference_geo or usage.inference_geo,
                           speed=iteration.usage.speed or (usage.speed if iteration.kind == "compaction" else None))
        it_rates = _rates(it_point, it_usage, service_tier, gaps)
        scaled += _scaled_tokens(it_usage, it_rates)
        for name, calls in it_usage.tool_calls:
            fee = it_point.fees.get(name)
            if fee is not None:
                scaled += calls * fee * 1000
        key = f"iteration:{index}:{iteration.kind}"
        breakdown[key] = (it_usage.prompt_total + it_usage.output_total,
                          round_scaled(_scaled_tokens(it_usage, it_rates)))
    return Cost(round_scaled(scaled), rates, point.source, point.effective, breakdown,
                tuple(dict.fromkeys(gaps)) if gaps else ())
