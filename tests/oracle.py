"""An independent price oracle for the tests: reads catalog.json with Decimal arithmetic and
applies the providers' settlement formulas directly, sharing no code with meterline.pricing."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

CATALOG = json.loads((Path(__file__).parent.parent / "layers/meterline/pricing/catalog.json").read_text())


def price(model_id: str, field: str, tier: str | None = None) -> Decimal:
    spec = CATALOG["models"][model_id]["prices"][-1]
    if tier:
        tiers = spec.get("service_tiers", {})
        if tier in tiers:
            t = tiers[tier]
            if "multiplier" in t:
                return Decimal(spec.get(field, spec["input"])) * Decimal(t["multiplier"])
            return Decimal(t.get(field, spec.get(field, spec["input"])))
    return Decimal(spec.get(field, spec["input"]))


def openai_cost_micros(model_id: str, prompt: int, cached: int, completion: int, tier: str | None = None) -> int:
    """OpenAI: (prompt - cached) x input + cached x cache_read + completion x output, per 1M tokens."""
    usd = (
        (prompt - cached) * price(model_id, "input", tier)
        + cached * price(model_id, "cache_read", tier)
        + completion * price(model_id, "output", tier)
    ) / Decimal(1_000_000)
    return int((usd * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))
