"""The pricing catalog: per model, per billed class, with tiers, service tiers, speed modes,
server-tool fees and effective dates.

`catalog.json` is compiled at build time (`python -m meterline.pricing.build`) from the pinned
genai-prices data plus Meterline's `overrides.json`; nothing here imports genai-prices, so the data
plane's cold start pays only for one `json.loads`. Model specs are parsed on first use.

Model ids are `<namespace>/<model>` (`openai/gpt-4o`, `anthropic/claude-sonnet-4-6`). A name that
is not a catalog id is matched the way genai-prices matches it (each model's `match` clauses, in
the data's order, then the namespace's fallback namespaces), once per distinct name: the answer is
memoised, so a warm request costs one dict lookup. Workspace overrides (negotiated prices) replace
a model's rates wholesale. Pure: reads a JSON file, no I/O beyond that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any

from meterline.money import apply_multiplier, usd_to_micros

# Service-tier / speed names that mean "the standard rates" (as requested or as reported).
STANDARD_TIERS = frozenset({"", "default", "standard", "auto", "standard_only", "on_demand", "on-demand"})
GLOBAL_GEOS = frozenset({"", "global", "not_available"})
TOKEN_CLASSES = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "input_audio",
                 "cache_read_audio", "output_audio", "input_image", "cache_read_image", "output_image")
MEMO_LIMIT = 4096


class CatalogError(ValueError):
    """The catalog file (or an override) is malformed."""


class PriceGap(LookupError):
    """The provider billed something the catalog has no price for (a service tier, speed or region)."""


@dataclass(frozen=True)
class Rates:
    """Integer micro-dollars per million tokens for each token class (audio input and output default
    to the text price where a model publishes none, e.g. a TTS model whose output price is audio's)."""

    input: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    output: int
    input_audio: int | None = None
    cache_read_audio: int | None = None
    output_audio: int | None = None
    # Image tokens (an image model's own rates: what the image-generation tool reports as tokens).
    input_image: int | None = None
    cache_read_image: int | None = None
    output_image: int | None = None

    @property
    def image_in(self) -> int:
        return self.input if self.input_image is None else self.input_image

    @property
    def image_cache_read(self) -> int:
        return self.cache_read if self.cache_read_image is None else self.cache_read_image

    @property
    def image_out(self) -> int:
        return self.output if self.output_image is None else self.output_image

    @property
    def audio_in(self) -> int:
        return self.input if self.input_audio is None else self.input_audio

    @property
    def audio_cache_read(self) -> int:
        return self.cache_read if self.cache_read_audio is None else self.cache_read_audio

    @property
    def audio_out(self) -> int:
        return self.output if self.output_audio is None else self.output_audio

    def scaled(self, multiplier: str) -> Rates:
        def s(v: int | None) -> int | None:
            return None if v is None else apply_multiplier(v, multiplier)

        return Rates(*(apply_multiplier(v, multiplier) for v in self.as_tuple()),
                     input_audio=s(self.input_audio), cache_read_audio=s(self.cache_read_audio),
                     output_audio=s(self.output_audio), input_image=s(self.input_image),
                     cache_read_image=s(self.cache_read_image), output_image=s(self.output_image))

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.input, self.cache_read, self.cache_write_5m, self.cache_write_1h, self.output)

    def as_dict(self) -> dict[str, int]:
        out = dict(zip(TOKEN_CLASSES[:5], self.as_tuple(), strict=True))
        if self.input_audio is not None:
            out["input_audio"] = self.input_audio
        if self.cache_read_audio is not None:
            out["cache_read_audio"] = self.cache_read_audio
        for name in ("output_audio", "input_image", "cache_read_image", "output_image"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class RateTable:
    """Base rates plus long-context tiers: above a tier's threshold the WHOLE request uses its rates."""

    rates: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()

    def at(self, prompt_tokens: int) -> Rates:
        chosen = self.rates
        for threshold, tier_rates in self.tiers:
            if prompt_tokens > threshold:
                chosen = tier_rates
        return chosen

    def scaled(self, multiplier: str) -> RateTable:
        return RateTable(self.rates.scaled(multiplier), tuple((t, r.scaled(multiplier)) for t, r in self.tiers))

    def all_rates(self) -> list[Rates]:
        return [self.rates, *(r for _, r in self.tiers)]


@dataclass(frozen=True)
class PricePoint:
    effective: date
    source: str
    rates: Rates
    # (threshold on prompt tokens, rates): above the threshold the whole request uses those rates.
    tiers: tuple[tuple[int, Rates], ...] = ()
    # Service tier name -> the rate table billed for that tier (its own long-context tiers included,
    # so a service tier and a long-context tier compose).
    service_tiers: dict[str, RateTable] = field(default_factory=dict)
    # Speed mode ("fast") -> rate table (Anthropic fast mode).
    speed: dict[str, RateTable] = field(default_factory=dict)
    # Server-side tool fees: class -> micro-dollars per 1,000 calls.
    fees: dict[str, int] = field(default_factory=dict)
    # Inference region -> decimal multiplier on every token rate (Anthropic `inference_geo: us` 1.1x).
    geo: dict[str, str] = field(default_factory=dict)
    # An image model's documented per-image prices: (quality, size) -> micro-dollars per image.
    images: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_table", RateTable(self.rates, self.tiers))  # built once, read per request

    @property
    def table(self) -> RateTable:
        return self._table  # type: ignore[attr-defined,no-any-return]

    def rates_for(self, prompt_tokens: int, service_tier: str | None, speed: str | None = None,
                  geo: str | None = None) -> Rates:
        """The rates billed for this request. A non-standard tier, speed or region without a price
        raises PriceGap: never silently the standard price."""
        if not service_tier and not speed and not geo:
            return self._table.at(prompt_tokens)  # type: ignore[attr-defined,no-any-return]
        table = self.table
        tier = (service_tier or "").lower()
        if tier not in STANDARD_TIERS:
            if tier not in self.service_tiers:
                raise PriceGap(f"service tier {service_tier!r}")
            table = self.service_tiers[tier]
        mode = (speed or "").lower()
        if mode not in STANDARD_TIERS:
            if mode not in self.speed:
                raise PriceGap(f"speed {speed!r}")
            if tier not in STANDARD_TIERS:
                raise PriceGap(f"speed {speed!r} with service tier {service_tier!r}")
            table = self.speed[mode]
        rates = table.at(prompt_tokens)
        region = (geo or "").lower()
        if region not in GLOBAL_GEOS:
            if region not in self.geo:
                if self.geo:
                    raise PriceGap(f"inference_geo {geo!r}")
                return rates  # a model without regional pricing bills every region alike
            rates = rates.scaled(self.geo[region])
        return rates

    def can_price(self, service_tier: str | None = None, speed: str | None = None) -> bool:
        try:
            self.rates_for(0, service_tier, speed)
        except PriceGap:
            return False
        return True

    def all_rates(self) -> list[Rates]:
        out = self.table.all_rates()
        for t in (*self.service_tiers.values(), *self.speed.values()):
            out.extend(t.all_rates())
        return out


@dataclass(frozen=True)
class ModelPricing:
    model_id: str
    max_output_tokens: int
    points: tuple[PricePoint, ...]  # sorted by effective date
    overridden: bool = False
    # Billed classes the data lists but the gateway cannot meter (e.g. image tokens); informational.
    unmetered: tuple[str, ...] = ()

    def at(self, day: date) -> PricePoint | None:
        current = None
        for point in self.points:
            if point.effective <= day:
                current = point
        return current


# -- parsing ----------------------------------------------------------------------------------------
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
    cache_read = price("cache_read", base.cache_read if base and inherit else input_)

    def optional(name: str, base_value: int | None) -> int | None:
        if name in raw:
            return usd_to_micros(raw[name])
        return base_value if inherit else None

    return Rates(
        input=input_,
        cache_read=cache_read,
        cache_write_5m=price("cache_write_5m", base.cache_write_5m if base and inherit else input_),
        cache_write_1h=price("cache_write_1h", base.cache_write_1h if base and inherit else input_),
        output=price("output", base.output if base else None),
        input_audio=optional("input_audio", base.input_audio if base else None),
        cache_read_audio=optional("cache_read_audio", base.cache_read_audio if base else None),
        output_audio=optional("output_audio", base.output_audio if base else None),
        input_image=optional("input_image", base.input_image if base else None),
        cache_read_image=optional("cache_read_image", base.cache_read_image if base else None),
        output_image=optional("output_image", base.output_image if base else None),
    )


def _table(raw: dict[str, Any], base: RateTable) -> RateTable:
    if "multiplier" in raw:
        return base.scaled(str(raw["multiplier"]))
    rates = _rates(raw, base.rates)
    tiers = tuple((int(t["above_prompt_tokens"]), _rates(t, rates))
                  for t in sorted(raw.get("tiers", []), key=lambda t: int(t["above_prompt_tokens"])))
    return RateTable(rates, tiers)


def _point(raw: dict[str, Any]) -> PricePoint:
    if not raw.get("source"):
        raise CatalogError("every price needs a source")
    base = _rates(raw)
    tiers = tuple(
        (int(t["above_prompt_tokens"]), _rates(t, base))
        for t in sorted(raw.get("tiers", []), key=lambda t: int(t["above_prompt_tokens"]))
    )
    table = RateTable(base, tiers)
    service_tiers = {str(name).lower(): _table(spec, table) for name, spec in raw.get("service_tiers", {}).items()}
    speed = {str(name).lower(): _table(spec, table) for name, spec in raw.get("speed", {}).items()}
    fees = {str(name): usd_to_micros(value) for name, value in raw.get("fees", {}).items()}
    geo = {str(name).lower(): str(mult) for name, mult in raw.get("inference_geo", {}).items()}
    for mult in geo.values():
        apply_multiplier(1_000_000, mult)  # refuses a malformed multiplier at load
    images = {(str(quality).lower(), str(size).lower()): usd_to_micros(price)
              for quality, sizes in raw.get("images", {}).items() for size, price in sizes.items()}
    return PricePoint(
        effective=date.fromisoformat(raw["effective"]),
        source=str(raw["source"]),
        rates=base,
        tiers=tiers,
        service_tiers=service_tiers,
        speed=speed,
        fees=fees,
        geo=geo,
        images=images,
    )


def _model(model_id: str, spec: dict[str, Any]) -> ModelPricing:
    points = tuple(sorted((_point(p) for p in spec["prices"]), key=lambda p: p.effective))
    if not points:
        raise CatalogError(f"{model_id}: no prices")
    return ModelPricing(model_id, int(spec.get("max_output_tokens", 0)), points,
                        unmetered=tuple(spec.get("unmetered", ())))


# -- matching (genai-prices' clause language, evaluated without genai-prices) ------------------------
Matcher = Callable[[str], bool]


def compile_clause(clause: dict[str, Any]) -> Matcher:
    if not isinstance(clause, dict) or len(clause) != 1:
        raise CatalogError(f"bad match clause: {clause!r}")
    kind, arg = next(iter(clause.items()))
    if kind == "equals":
        return lambda s, a=str(arg): s == a
    if kind == "starts_with":
        return lambda s, a=str(arg): s.startswith(a)
    if kind == "ends_with":
        return lambda s, a=str(arg): s.endswith(a)
    if kind == "contains":
        return lambda s, a=str(arg): a in s
    if kind == "regex":
        pattern = re.compile(str(arg))
        return lambda s: pattern.search(s) is not None
    if kind in ("or", "and"):
        parts = [compile_clause(c) for c in arg]
        return (lambda s: any(p(s) for p in parts)) if kind == "or" else (lambda s: all(p(s) for p in parts))
    raise CatalogError(f"unknown match clause {kind!r}")


class _Store:
    """The parsed-on-demand base catalog, shared by every workspace view of it."""

    def __init__(self, data: dict[str, Any]):
        models = data.get("models", {})
        if not isinstance(models, dict):
            raise CatalogError("models must be an object")
        self.raw: dict[str, dict[str, Any]] = {}
        self.snapshots: dict[str, str] = {}
        self.order: dict[str, list[str]] = {}  # namespace -> model ids in match order
        for model_id, spec in models.items():
            if "/" not in model_id:
                raise CatalogError(f"model id must be namespace/model: {model_id!r}")
            namespace = model_id.split("/", 1)[0]
            self.raw[model_id] = spec
            self.order.setdefault(namespace, []).append(model_id)
            for snap in spec.get("snapshots", []):
                self.snapshots[f"{namespace}/{snap}"] = model_id
        self.fallbacks: dict[str, list[str]] = {k: list(v) for k, v in data.get("fallbacks", {}).items()}
        self.meta = {k: v for k, v in data.items() if k != "models"}
        self.parsed: dict[str, ModelPricing] = {}
        self.matchers: dict[str, list[tuple[Matcher, str]]] = {}
        self.memo: dict[str, str | None] = {}

    def pricing(self, model_id: str) -> ModelPricing:
        found = self.parsed.get(model_id)
        if found is None:
            found = self.parsed[model_id] = _model(model_id, self.raw[model_id])
        return found

    def _namespace_matchers(self, namespace: str) -> list[tuple[Matcher, str]]:
        found = self.matchers.get(namespace)
        if found is None:
            found = []
            for model_id in self.order.get(namespace, ()):
                clause = self.raw[model_id].get("match")
                if clause:
                    found.append((compile_clause(clause), model_id))
            self.matchers[namespace] = found
        return found

    def match(self, model_id: str) -> str | None:
        """The catalog id a provider-side model name resolves to, or None (memoised)."""
        if model_id in self.memo:
            return self.memo[model_id]
        namespace, _, name = model_id.partition("/")
        name = name.lower()
        found = None
        for ns in (namespace, *self.fallbacks.get(namespace, ())):
            found = next((mid for matches, mid in self._namespace_matchers(ns) if matches(name)), None)
            if found is not None:
                break
        if len(self.memo) >= MEMO_LIMIT:
            self.memo.clear()  # bounded: a scan of unknown names must not grow memory
        self.memo[model_id] = found
        return found


class Catalog:
    def __init__(self, store: _Store, overrides: dict[str, ModelPricing] | None = None):
        self._store = store
        self._overrides = overrides or {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Catalog:
        return cls(_Store(data))

    def validate(self) -> None:
        """Parse every model and compile every match clause (raises CatalogError / MoneyFormatError)."""
        for model_id in self._store.raw:
            self._store.pricing(model_id)
        for namespace in self._store.order:
            self._store._namespace_matchers(namespace)

    @property
    def meta(self) -> dict[str, Any]:
        return self._store.meta

    def canonical(self, model_id: str) -> str | None:
        """The catalog id a model name prices as (itself, a listed snapshot's family, or a match)."""
        if model_id in self._overrides or model_id in self._store.raw:
            return model_id
        lowered = model_id.lower()
        if lowered in self._store.raw:
            return lowered
        if model_id in self._store.snapshots:
            return self._store.snapshots[model_id]
        if "/" not in model_id:
            return None
        return self._store.match(model_id)

    def resolve(self, model_id: str) -> ModelPricing | None:
        canonical = self.canonical(model_id)
        if canonical is None:
            return None
        found = self._overrides.get(canonical)
        if found is None and canonical in self._store.raw:
            found = self._store.pricing(canonical)
        return found

    def find_by_name(self, model: str) -> ModelPricing | None:
        """A model named without namespace (used by the simulated provider: `sim/gpt-4o`)."""
        for namespace in ("openai", "anthropic", "gemini", "bedrock"):
            found = self.resolve(f"{namespace}/{model}")
            if found:
                return found
        return None

    def model_ids(self) -> list[str]:
        return sorted({*self._store.raw, *self._overrides})

    def raw_spec(self, model_id: str) -> dict[str, Any] | None:
        return self._store.raw.get(model_id)

    def with_overrides(self, overrides: dict[str, dict[str, Any]] | None) -> Catalog:
        """A catalog where a workspace's negotiated prices replace the list prices."""
        if not overrides:
            return self
        models = dict(self._overrides)
        for model_id, raw in overrides.items():
            existing = self.resolve(model_id)
            point = _point({"effective": "1970-01-01", "source": "workspace override", **raw})
            max_out = int(raw.get("max_output_tokens", existing.max_output_tokens if existing else 0))
            target = existing.model_id if existing else model_id
            models[target] = ModelPricing(target, max_out, (point,), overridden=True)
        return Catalog(self._store, models)


def validate_override(raw: dict[str, Any]) -> dict[str, Any]:
    """Check an override parses (raises CatalogError / MoneyFormatError); returns it unchanged."""
    _point({"effective": "1970-01-01", "source": "workspace override", **raw})
    return raw


def bundled_catalog_text() -> str:
    return resources.files("meterline.pricing").joinpath("catalog.json").read_text()


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    return Catalog.from_dict(json.loads(bundled_catalog_text()))


__all__ = ["Catalog", "CatalogError", "ModelPricing", "PriceGap", "PricePoint", "RateTable", "Rates",
           "default_catalog", "replace"]
