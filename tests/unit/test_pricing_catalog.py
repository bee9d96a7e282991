"""The compiled catalog: from the pinned genai-prices data plus our overrides, current models
resolve (by the data's own match rules), every id is priced with a source, tiers compose."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from meterline.pricing import build
from meterline.pricing.catalog import Catalog, default_catalog
from meterline.pricing.cost import price_request
from meterline.usage import Usage
from tests import oracle

ROOT = Path(__file__).resolve().parents[2]
CATALOG_FILE = ROOT / "layers/meterline/pricing/catalog.json"
TODAY = date(2026, 12, 1)


def test_committed_catalog_is_a_fresh_compile_of_the_pinned_genai_prices():
    """catalog.json cannot drift from its sources: it is exactly what the build step produces."""
    assert CATALOG_FILE.read_text() == build.compile_bundled(), "run `python -m meterline.pricing.build`"
    pinned = [line for line in (ROOT / "pyproject.toml").read_text().splitlines() if "genai-prices" in line]
    generated = json.loads(CATALOG_FILE.read_text())["generated_from"]["genai_prices"]
    assert pinned and all(f"=={generated}" in line for line in pinned)


def test_every_model_id_resolves_to_a_sourced_exact_price():
    catalog = default_catalog()
    catalog.validate()  # every spec parses, every price exact in micro-dollars, every clause compiles
    for model_id in catalog.model_ids():
        pricing = catalog.resolve(model_id)
        assert pricing is not None and pricing.model_id == model_id
        assert all(p.source for p in pricing.points), model_id
        assert pricing.at(TODAY) is not None, model_id


@pytest.mark.parametrize(("name", "canonical"), [
    ("openai/gpt-5.2", "openai/gpt-5.2"),
    ("openai/gpt-5.2-2025-12-11", "openai/gpt-5.2"),
    ("openai/gpt-5.4-mini", "openai/gpt-5.4-mini"),
    ("openai/gpt-5.4-nano", "openai/gpt-5.4-nano"),
    ("openai/gpt-5.6", "openai/gpt-5.6-sol"),
    ("openai/gpt-5.6-luna-2026-07-30", "openai/gpt-5.6-luna"),
    ("openai/o3-pro", "openai/o3-pro"),
    ("anthropic/claude-opus-4-8", "anthropic/claude-opus-4-8"),
    ("anthropic/claude-opus-5-20261014", "anthropic/claude-opus-5"),
    ("anthropic/claude-sonnet-5", "anthropic/claude-sonnet-5"),
    ("anthropic/claude-haiku-5-5", "anthropic/claude-haiku-5-5"),
    ("anthropic/claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5"),
    ("gemini/gemini-3.5-flash", "gemini/gemini-3.5-flash"),
    ("gemini/gemini-3.1-pro-preview", "gemini/gemini-3.1-pro-preview"),
    ("bedrock/us.anthropic.claude-opus-4-8-v1:0", "bedrock/regional.anthropic.claude-opus-4-8-v1:0"),
    ("bedrock/eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
     "bedrock/regional.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("bedrock/global.anthropic.claude-opus-4-8-v1:0", "bedrock/global.anthropic.claude-opus-4-8-v1:0"),
    ("bedrock/us.amazon.nova-pro-v1:0", "bedrock/amazon.nova-pro-v1:0"),
    ("bedrock/amazon.nova-premier-v1:0", "bedrock/amazon.nova-premier-v1:0"),
    ("bedrock/us.meta.llama4-maverick-17b-instruct-v1:0", "bedrock/meta.llama4-maverick-17b-instruct-v1:0"),
    ("bedrock/mistral.mistral-large-3-675b-instruct", "bedrock/mistral.mistral-large-3-675b-instruct"),
    ("bedrock/deepseek.r1-v1:0", "bedrock/deepseek.r1-v1:0"),
    ("bedrock/openai.gpt-oss-120b-1:0", "bedrock/openai.gpt-oss-120b-1:0"),
    ("deepseek/deepseek-chat", "deepseek/deepseek-chat"),
    ("mistral/mistral-large-latest", "mistral/mistral-large"),
])
def test_current_models_resolve_by_the_data_match_rules(name, canonical):
    pricing = default_catalog().resolve(name)
    assert pricing is not None, name
    assert pricing.model_id == canonical
    assert oracle.catalog_id(name) == canonical  # the independent oracle agrees on the entry


def test_unknown_names_stay_unpriced_and_the_memo_is_bounded():
    catalog = default_catalog()
    assert catalog.resolve("openai/not-a-model") is None
    assert catalog.resolve("nosuchprovider/gpt-4o") is None
    for i in range(5000):
        catalog.resolve(f"openai/unknown-{i}")
    assert len(catalog._store.memo) <= 4096


def test_bedrock_regional_profiles_cost_ten_percent_more_than_global():
    catalog = default_catalog()
    regional = catalog.resolve("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0").at(TODAY).rates
    global_ = catalog.resolve("bedrock/global.anthropic.claude-sonnet-4-5-20250929-v1:0").at(TODAY).rates
    assert global_.input == 3_000_000 and regional.input == 3_300_000
    assert regional.output == 16_500_000 and regional.cache_write_1h == 6_600_000


def _decimal_cost(spec: dict, usage: dict[str, int]) -> int:
    total = sum(Decimal(n) * Decimal(spec[k]) for k, n in usage.items())
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_service_tier_and_long_context_compose():
    """gpt-5.4 flex at 300K input: the flex table's own long-context tier, not flex OR long context."""
    pricing = default_catalog().resolve("openai/gpt-5.4")
    usage = Usage(input_uncached=300_000, output=2_000)
    spec = oracle.point("openai/gpt-5.4")["service_tiers"]["flex"]
    tier = next(t for t in spec["tiers"] if t["above_prompt_tokens"] < 300_000)
    expected = _decimal_cost(tier, {"input": 300_000, "output": 2_000})
    cost = price_request(pricing, usage, TODAY, "flex")
    assert cost.micros == expected == 750_000 + 22_500
    assert cost.micros > price_request(pricing, Usage(input_uncached=200_000, output=2_000), TODAY, "flex").micros * 1.4


def test_gemini_multiplier_tiers_compose_with_long_context():
    pricing = default_catalog().resolve("gemini/gemini-2.5-pro")
    large = Usage(input_uncached=250_000, output=1_000)
    standard = price_request(pricing, large, TODAY)
    flex = price_request(pricing, large, TODAY, "flex")
    priority = price_request(pricing, large, TODAY, "priority")
    assert standard.micros == 250_000 * 25 // 10 + 15_000  # whole request at the >200K tier 2.50 / 15
    assert flex.micros == standard.micros // 2
    assert priority.micros == standard.micros * 18 // 10


def test_priority_is_priced_or_a_gap_never_silently_standard():
    catalog = default_catalog()
    usage = Usage(input_uncached=1_000_000, output=0)
    gpt4o = price_request(catalog.resolve("openai/gpt-4o"), usage, TODAY, "priority")
    assert gpt4o.micros == 4_250_000 and not gpt4o.gaps  # $4.25/M, not the standard $2.50
    nano = catalog.resolve("openai/gpt-5-nano").at(TODAY)
    assert not nano.can_price("priority") and nano.can_price("flex") and nano.can_price("default")
    gap = price_request(catalog.resolve("openai/gpt-5-nano"), usage, TODAY, "priority")
    assert gap.gaps == ("service tier 'priority'",)


def test_anthropic_fast_mode_and_us_inference_geo():
    pricing = default_catalog().resolve("anthropic/claude-opus-4-8")
    base = Usage(input_uncached=10_000, output=1_000)
    assert price_request(pricing, base, TODAY).micros == 50_000 + 25_000
    fast = price_request(pricing, Usage(input_uncached=10_000, output=1_000, speed="fast"), TODAY)
    assert fast.micros == 100_000 + 50_000  # fast mode: $10 / $50
    geo = price_request(pricing, Usage(input_uncached=10_000, output=1_000, inference_geo="us"), TODAY)
    assert geo.micros == 55_000 + 27_500  # 1.1x every rate
    both = price_request(pricing, Usage(input_uncached=10_000, output=1_000, speed="fast", inference_geo="us"), TODAY)
    assert both.micros == 110_000 + 55_000


def test_bedrock_nova_flex_and_priority():
    pricing = default_catalog().resolve("bedrock/amazon.nova-pro-v1:0")
    usage = Usage(input_uncached=1_000_000, output=1_000_000)
    assert price_request(pricing, usage, TODAY).micros == 800_000 + 3_200_000
    assert price_request(pricing, usage, TODAY, "flex").micros == 400_000 + 1_600_000
    assert price_request(pricing, usage, TODAY, "priority").micros == 1_400_000 + 5_600_000


def test_overrides_need_a_source_and_a_date():
    with pytest.raises(ValueError, match="source and a date"):
        build.compile_catalog([], {"models": {"x/y": {"prices": []}}}, "0")
    compiled = build.compile_catalog([], {"models": {"x/y": {"source": "https://example.com", "date": "2026-12-01",
                                                             "prices": [{"effective": "2026-01-01", "input": "1",
                                                                         "output": "2"}]}}}, "0")
    catalog = Catalog.from_dict(compiled)
    catalog.validate()
    assert catalog.resolve("x/y").points[0].source == "https://example.com (2026-12-01)"


def test_data_plane_never_imports_genai_prices():
    code = ("import sys; from meterline.gateway.app import create_app; create_app(); "
            "from meterline.pricing.catalog import default_catalog; default_catalog().resolve('openai/gpt-5.2'); "
            "print('genai_prices' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1",
                              "PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == "False"
