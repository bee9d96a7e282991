"""The pricing catalog: per model, per token class, with tiers, service tiers and effective dates.

Model ids are `<namespace>/<model>` (`openai/gpt-4o`, `anthropic/claude-sonnet-4-6`). Dated
snapshots resolve to their family only when the catalog lists them under `snapshots` (that is,
where we checked the prices match). Workspace overrides (negotiated prices) replace a model's
rates wholesale. Pure: reads a JSON file, no I/O beyond that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any

from meterline.money import apply_multiplier, usd_to_micros


class CatalogError(ValueError):
    """The catalog file (or an override) is malformed."""


@dataclass(frozen=True)
class Rates:
    """Integer micro-dollars per million tokens for each token class."""

    input: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    output: int

    def scaled(self, multiplier: str) -> Rates:
        return Rates(*(apply_multiplier(v, multiplier) for v in self.as_tuple()))

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.input, self.cache_read, self.cache_write_5m, self.cache_write_1h, self.output)


@dataclass(frozen=True)
class PricePoint:
    effective: date
    source: str
    rates: Rates
    # (threshold on prompt tokens, rates): above the threshold the whole request uses those rates.
    tiers: tuple[tuple[int, Rates], ...] = ()
    # Service tier name -> rates actually billed for that tier.
    service_tiers: dict[str, Rates] = field(default_factory=dict)

    def rates_for(self, prompt_tokens: int, service_tier: str | None) -> Rates:
        if service_tier and service_tier in self.service_tiers:
            return self.service_tiers[service_tier]
        chosen = self.rates
        for threshold, tier_rates in self.tiers:
            if prompt_tokens > threshold:
                chosen = tier_rates
        return chosen


@dataclass(frozen=True)
class ModelPricing:
    model_id: str
    max_output_tokens: int
    points: tuple[PricePoint, ...]  # sorted by effective date
    overridden: bool = False

    def at(self, day: date) -> PricePoint | None:
        current = None
        for point in self.points:
            if point.effective <= day:
                current = point
        return current


def _rates(raw: dict[str, Any], base: Rates | None = None) -> Rates:
    def price(name: str, default: int | None) -> int:
        if name in raw:
            return usd_to_micros(raw[name])
        if default is None:
            raise CatalogError(f"missing price {name!r} in {raw!r}")
        return default

    input_ = price("input", base.input if base else None)
    # A tier or service tier that sets its own input price but no write price bills writes at that
    # input price (as the base does where no write price is published, e.g. OpenAI).
    inherit = base is not None and "input" not in raw
    return Rates(
        input=input_,
        cache_read=price("cache_read", base.cache_read if base and inherit else input_),
        cache_write_5m=price("cache_write_5m", base.cache_write_5m if base and inherit else input_),
        cache_write_1h=price("cache_write_1h", base.cache_write_1h if base and inherit else input_),
        output=price("output", base.output if base else None),
    )


def _point(raw: dict[str, Any]) -> PricePoint:
    base = _rates(raw)
    tiers = tuple(
        (int(t["above_prompt_tokens"]), _rates(t, base))
        for t in sorted(raw.get("tiers", []), key=lambda t: int(t["above_prompt_tokens"]))
    )
    service_tiers = {}
    for name, spec in raw.get("service_tiers", {}).items():
        service_tiers[name] = base.scaled(spec["multiplier"]) if "multiplier" in spec else _rates(spec, base)
    if not raw.get("source"):
        raise CatalogError("every price needs a source")
    return PricePoint(
        effective=date.fromisoformat(raw["effective"]),
        source=str(raw["source"]),
        rates=base,
        tiers=tiers,
        service_tiers=service_tiers,
    )


class Catalog:
    def __init__(self, models: dict[str, ModelPricing], snapshots: dict[str, str]):
        self._models = models
        self._snapshots = snapshots

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Catalog:
        models: dict[str, ModelPricing] = {}
        snapshots: dict[str, str] = {}
        for model_id, spec in data.get("models", {}).items():
            if "/" not in model_id:
                raise CatalogError(f"model id must be namespace/model: {model_id!r}")
            points = tuple(sorted((_point(p) for p in spec["prices"]), key=lambda p: p.effective))
            if not points:
                raise CatalogError(f"{model_id}: no prices")
            models[model_id] = ModelPricing(model_id, int(spec.get("max_output_tokens", 0)), points)
            namespace = model_id.split("/", 1)[0]
            for snap in spec.get("snapshots", []):
                snapshots[f"{namespace}/{snap}"] = model_id
        return cls(models, snapshots)

    def resolve(self, model_id: str) -> ModelPricing | None:
        found = self._models.get(model_id)
        if found is None and model_id in self._snapshots:
            found = self._models[self._snapshots[model_id]]
        return found

    def find_by_name(self, model: str) -> ModelPricing | None:
        """A model named without namespace (used by the simulated provider: `sim/gpt-4o`)."""
        for namespace in ("openai", "anthropic", "gemini", "bedrock"):
            found = self.resolve(f"{namespace}/{model}")
            if found:
                return found
        return None

    def model_ids(self) -> list[str]:
        return sorted(self._models)

    def with_overrides(self, overrides: dict[str, dict[str, Any]] | None) -> Catalog:
        """A catalog where a workspace's negotiated prices replace the list prices."""
        if not overrides:
            return self
        models = dict(self._models)
        for model_id, raw in overrides.items():
            existing = self.resolve(model_id)
            point = _point({"effective": "1970-01-01", "source": "workspace override", **raw})
            max_out = int(raw.get("max_output_tokens", existing.max_output_tokens if existing else 0))
            target = existing.model_id if existing else model_id
            models[target] = ModelPricing(target, max_out, (point,), overridden=True)
        return Catalog(models, dict(self._snapshots))


def validate_override(raw: dict[str, Any]) -> dict[str, Any]:
    """Check an override parses (raises CatalogError / MoneyFormatError); returns it unchanged."""
    _point({"effective": "1970-01-01", "source": "workspace override", **raw})
    return raw


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    text = resources.files("meterline.pricing").joinpath("catalog.json").read_text()
    return Catalog.from_dict(json.loads(text))


__all__ = ["Catalog", "CatalogError", "ModelPricing", "PricePoint", "Rates", "default_catalog", "replace"]
