"""Pure pricing core: exact money, the catalog's integrity, tiers, service tiers, snapshots, overrides."""

from __future__ import annotations

import json
import random
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from meterline.money import MoneyFormatError, micros_to_usd, round_scaled, usd_to_micros
from meterline.pricing.catalog import Catalog, CatalogError, default_catalog
from meterline.pricing.cost import cost_of, price_request
from meterline.usage import Usage

CATALOG_FILE = Path(__file__).resolve().parents[2] / "layers/meterline/pricing/catalog.json"
TODAY = date(2026, 11, 22)


@pytest.mark.parametrize(("text", "micros"), [("2.50", 2_500_000), ("0.075", 75_000), ("0.000001", 1),
                                              ("0", 0), ("15", 15_000_000)])
def test_usd_parses_exactly(text, micros):
    assert usd_to_micros(text) == micros


@pytest.mark.parametrize("bad", ["0.0000001", "-1", "abc", "NaN", "inf"])
def test_inexact_or_invalid_amounts_are_refused(bad):
    with pytest.raises(MoneyFormatError):
        usd_to_micros(bad)


def test_rounding_is_half_up_once():
    assert round_scaled(1_499_999) == 1 and round_scaled(1_500_000) == 2 and round_scaled(0) == 0
    assert micros_to_usd(1820) == "0.001820" and micros_to_usd(12_345_678) == "12.345678"


def test_every_catalog_price_is_exact_sourced_and_dated():
    raw = json.loads(CATALOG_FILE.read_text())
    catalog = default_catalog()
    assert len(raw["models"]) >= 20
    for model_id, spec in raw["models"].items():
        pricing = catalog.resolve(model_id)
        assert pricing is not None and pricing.max_output_tokens >= 0
        for point in spec["prices"]:  # future points are announced price changes
            assert point["source"] and date.fromisoformat(point["effective"])
        assert pricing.at(TODAY) is not None, model_id


def test_cost_matches_an_independent_decimal_computation_for_random_usage():
    rng = random.Random(7)
    raw = json.loads(CATALOG_FILE.read_text())
    for model_id in raw["models"]:
        point = [p for p in raw["models"][model_id]["prices"] if date.fromisoformat(p["effective"]) <= TODAY][-1]
        rates = default_catalog().resolve(model_id).at(TODAY).rates
        for _ in range(50):
            u = Usage(input_uncached=rng.randint(0, 200_000), cache_read=rng.randint(0, 50_000),
                      cache_write_5m=rng.randint(0, 5_000), cache_write_1h=rng.randint(0, 5_000),
                      output=rng.randint(0, 30_000))
            expected = (
                u.input_uncached * Decimal(point["input"])
                + u.cache_read * Decimal(point.get("cache_read", point["input"]))
                + u.cache_write_5m * Decimal(point.get("cache_write_5m", point["input"]))
                + u.cache_write_1h * Decimal(point.get("cache_write_1h", point["input"]))
                + u.output * Decimal(point["output"])
            ).quantize(Decimal(1), rounding=ROUND_HALF_UP)  # USD/1M x tokens = micro-dollars
            assert cost_of(u, rates) == int(expected), model_id


def test_long_context_tier_prices_the_whole_request():
    pricing = default_catalog().resolve("gemini/gemini-2.5-pro")
    small = price_request(pricing, Usage(input_uncached=200_000, output=1000), TODAY)
    large = price_request(pricing, Usage(input_uncached=200_001, output=1000), TODAY)
    assert small.micros == 200_000 * 125 // 100 + 1000 * 10  # 1.25 / 10 per 1M
    assert large.micros == 500_003 + 1000 * 15  # whole request at 2.50 / 15; 500002.5 rounds half up
    assert large.rates.cache_write_5m == large.rates.input == 2_500_000  # tier writes follow tier input


def test_service_tier_actually_used_decides_the_price():
    pricing = default_catalog().resolve("openai/gpt-5")
    usage = Usage(input_uncached=1000, cache_read=1000, output=1000)
    assert price_request(pricing, usage, TODAY).micros == 1250 + 125 + 10000
    assert price_request(pricing, usage, TODAY, "flex").micros == (1250 + 125 + 10000) // 2 + 1  # 5687.5 rounds up
    assert price_request(pricing, usage, TODAY, "priority").micros == 2500 + 250 + 20000
    # A tier the catalog cannot price is charged at standard rates AND recorded as a gap, never silently.
    unknown = price_request(pricing, usage, TODAY, "unknown-tier")
    assert unknown.micros == 1250 + 125 + 10000 and unknown.gaps == ("service tier 'unknown-tier'",)


def test_dated_snapshots_resolve_only_where_listed():
    catalog = default_catalog()
    assert catalog.resolve("openai/gpt-4o-2024-08-06").model_id == "openai/gpt-4o"
    assert catalog.resolve("openai/gpt-4o-2099-01-01") is None  # gpt-4o matches listed snapshots only


def test_price_history_is_chosen_by_effective_date():
    catalog = Catalog.from_dict({"models": {"x/m": {"prices": [
        {"effective": "2025-01-01", "source": "a", "input": "1", "output": "2"},
        {"effective": "2026-06-01", "source": "b", "input": "3", "output": "4"}]}}})
    pricing = catalog.resolve("x/m")
    assert pricing.at(date(2024, 12, 31)) is None
    assert pricing.at(date(2026, 5, 31)).source == "a" and pricing.at(date(2026, 6, 1)).source == "b"


def test_workspace_overrides_replace_list_prices_and_price_unknown_models():
    catalog = default_catalog().with_overrides({
        "openai/gpt-4o": {"input": "2.00", "output": "8.00"},
        "groq/llama-3.3-70b-versatile": {"input": "0.59", "output": "0.79"}})
    assert catalog.resolve("openai/gpt-4o-2024-08-06").at(TODAY).rates.input == 2_000_000
    assert catalog.resolve("groq/llama-3.3-70b-versatile").overridden
    assert default_catalog().resolve("openai/gpt-4o").at(TODAY).rates.input == 2_500_000  # list untouched


def test_malformed_catalog_is_refused():
    with pytest.raises(CatalogError):
        Catalog.from_dict({"models": {"nonamespace": {"prices": [{"effective": "2025-01-01", "source": "s",
                                                                   "input": "1", "output": "1"}]}}})
    with pytest.raises(CatalogError):
        Catalog.from_dict({"models": {"a/b": {"prices": [{"effective": "2025-01-01", "input": "1",
                                                           "output": "1"}]}}}).validate()  # parsed lazily
