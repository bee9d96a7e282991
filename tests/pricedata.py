"""genai-prices' bundled data written back in its published `data.json` shape, so `prices sync`
can be tested against a local copy of "newer" data (a changed price, a new model) with no network."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

from meterline.pricing.build import NAMESPACES


def _plain(value: Any) -> Any:
    from genai_prices.types import ModelPrice, TieredPrices

    if isinstance(value, ModelPrice):
        return {k: _plain(v) for k, v in value.__dict__.items() if v is not None and not k.startswith("_")}
    if isinstance(value, TieredPrices):
        tiers = [{"start": t.start, "price": _plain(t.price)} for t in value.tiers]
        return {"base": _plain(value.base), "tiers": tiers}
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            if f.name.startswith("_"):
                continue
            v = getattr(value, f.name)
            if v is not None:
                out[f.name.rstrip("_")] = _plain(v)
        return out
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def published(providers: list[Any] | None = None) -> list[dict[str, Any]]:
    if providers is None:
        from genai_prices.data import providers as bundled

        providers = [p for p in bundled if p.id in NAMESPACES]
    out = []
    for provider in providers:
        raw = _plain(provider)
        raw.pop("extractors", None)
        out.append(raw)
    return out


def dumps(data: list[dict[str, Any]]) -> bytes:
    return json.dumps(data).encode()
