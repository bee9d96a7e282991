"""Cost of one request: usage x rates, in integer micro-dollars. Computed once, after translation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from meterline.money import round_scaled
from meterline.pricing.catalog import ModelPricing, Rates
from meterline.usage import Usage


@dataclass(frozen=True)
class Cost:
    micros: int
    rates: Rates
    price_source: str
    price_effective: date


def cost_of(usage: Usage, rates: Rates) -> int:
    """Exact: sum of tokens x (micro-dollars per 1M tokens), divided by 1M once, rounded half up."""
    scaled = (
        usage.input_uncached * rates.input
        + usage.cache_read * rates.cache_read
        + usage.cache_write_5m * rates.cache_write_5m
        + usage.cache_write_1h * rates.cache_write_1h
        + usage.output * rates.output
    )
    return round_scaled(scaled)


def price_request(pricing: ModelPricing, usage: Usage, day: date, service_tier: str | None = None) -> Cost | None:
    point = pricing.at(day)
    if point is None:
        return None
    rates = point.rates_for(usage.prompt_total, service_tier)
    return Cost(cost_of(usage, rates), rates, point.source, point.effective)
