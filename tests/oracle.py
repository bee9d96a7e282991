"""An independent price oracle for the tests: reads catalog.json with Decimal arithmetic and
applies the providers' settlement formulas directly, sharing no code with meterline.pricing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

CATALOG = json.loads((Path(__file__).parent.parent / "layers/meterline/pricing/catalog.json").read_text())


def _clause_matches(clause: dict, name: str) -> bool:
    (kind, arg), = clause.items()
    return {
        "equals": lambda: name == arg, "starts_with": lambda: name.startswith(arg),
        "ends_with": lambda: name.endswith(arg), "contains": lambda: arg in name,
        "regex": lambda: re.search(arg, name) is not None,
        "or": lambda: any(_clause_matches(c, name) for c in arg),
        "and": lambda: all(_clause_matches(c, name) for c in arg),
    }[kind]()


def catalog_id(model_id: str) -> str:
    """The catalog entry a provider-side id prices as: itself, else the first entry of its namespace
    whose match clauses accept it (genai-prices' rule, re-implemented here)."""
    if model_id in CATALOG["models"]:
        return model_id
    namespace, name = model_id.split("/", 1)
    for candidate, spec in CATALOG["models"].items():
        if candidate.startswith(namespace + "/") and spec.get("match") and _clause_matches(spec["match"], name.lower()):
            return candidate
    raise KeyError(model_id)


def point(model_id: str) -> dict:
    """The price point in force today (UTC)."""
    today = datetime.now(UTC).date().isoformat()
    return [p for p in CATALOG["models"][catalog_id(model_id)]["prices"] if p["effective"] <= today][-1]


def price(model_id: str, field: str, tier: str | None = None) -> Decimal:
    spec = point(model_id)
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


def _micros(usd_per_million_sum: Decimal) -> int:
    usd = usd_per_million_sum / Decimal(1_000_000)
    return int((usd * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def anthropic_cost_micros(model_id: str, input_tokens: int, cache_read: int, write_5m: int, write_1h: int,
                          output: int) -> int:
    """Anthropic (and Claude on Bedrock): input EXCLUDES cache tokens;
    input x in + write_5m x 1.25 in + write_1h x 2 in + read x 0.1 in + output x out."""
    base = price(model_id, "input")
    return _micros(input_tokens * base + write_5m * base * Decimal("1.25") + write_1h * base * 2
                   + cache_read * base * Decimal("0.1") + output * price(model_id, "output"))


def gemini_cost_micros(model_id: str, prompt: int, cached: int, candidates: int, thoughts: int) -> int:
    """Gemini: prompt INCLUDES cached; (prompt - cached) x in + cached x cache_read + (candidates + thoughts)
    x out; above a long-context threshold the whole request uses that tier's prices."""
    spec = point(model_id)
    rates = {k: spec[k] for k in ("input", "cache_read", "output") if k in spec}
    for tier in spec.get("tiers", []):
        if prompt > int(tier["above_prompt_tokens"]):
            rates = {**rates, **{k: tier[k] for k in ("input", "cache_read", "output") if k in tier}}
    read_price = Decimal(rates.get("cache_read", rates["input"]))
    return _micros((prompt - cached) * Decimal(rates["input"]) + cached * read_price
                   + (candidates + thoughts) * Decimal(rates["output"]))


def bedrock_cost_micros(model_id: str, input_tokens: int, cache_read: int, cache_write: int, output: int) -> int:
    """Bedrock Converse: inputTokens EXCLUDES cache read/write; each class at the catalog's price for the
    inference profile named (a write without a published price is billed as input)."""
    return _micros(input_tokens * price(model_id, "input") + cache_read * price(model_id, "cache_read")
                   + cache_write * price(model_id, "cache_write_5m") + output * price(model_id, "output"))


def embeddings_cost_micros(model_id: str, tokens: int) -> int:
    return _micros(tokens * price(model_id, "input"))
