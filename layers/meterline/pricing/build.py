"""Compile the price catalog: genai-prices' data + Meterline's overrides -> `catalog.json`.

Run at build time (`python -m meterline.pricing.build`), never on the request path: genai-prices'
data module takes about half a second to import. `prices sync` runs the same compiler over newer
published data (`providers_from_json`). The output keeps Meterline's format: decimal USD strings
per 1M tokens (exact in micro-dollars), dated price points each with a source, long-context tiers,
service tiers (with their own tiers, so they compose), speed modes, server-tool fees per 1K calls
and regional multipliers, plus each model's match clauses so provider-side names resolve the way
genai-prices resolves them.

    python -m meterline.pricing.build            # rewrite catalog.json from the installed genai-prices
    python -m meterline.pricing.build --check    # exit 1 if catalog.json differs from a fresh compile
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from meterline.money import MoneyFormatError, usd_to_micros

# genai-prices provider id -> catalog namespace (the provider kinds and OpenAI-compatible hosts
# Meterline serves; the aggregators' hundreds of resold models are left out to keep the catalog small).
NAMESPACES = {
    "openai": "openai", "anthropic": "anthropic", "google": "gemini", "aws": "bedrock", "azure": "azure",
    "deepseek": "deepseek", "mistral": "mistral", "groq": "groq", "together": "together",
    "fireworks": "fireworks", "x-ai": "x-ai", "cerebras": "cerebras", "perplexity": "perplexity",
    "cohere": "cohere", "moonshotai": "moonshotai",
}
TOKEN_KEYS = {
    "input_mtok": "input", "cache_read_mtok": "cache_read", "cache_write_mtok": "cache_write_5m",
    "cache_write_1h_mtok": "cache_write_1h", "output_mtok": "output", "input_audio_mtok": "input_audio",
    "cache_audio_read_mtok": "cache_read_audio", "output_audio_mtok": "output_audio",
    "input_image_mtok": "input_image", "cache_image_read_mtok": "cache_read_image", "output_image_mtok": "output_image",
}
FEE_KEYS = {"web_searches_kcount": "web_search", "storage_searches_kcount": "file_search"}
EPOCH = date(1970, 1, 1)
OUT = Path(__file__).with_name("catalog.json")


def _usd(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _dim(when: dict[str, str]) -> tuple[str, str] | None:
    """A variant's dimension in our format: ('service_tiers'|'speed', name), or None (not modelled)."""
    if len(when) != 1:
        return None
    key, value = next(iter(when.items()))
    if key == "service_tier":
        return "service_tiers", value.lower()
    if key == "processing" and value == "batch":
        return "service_tiers", "batch"
    if key == "speed":
        return "speed", value.lower()
    return None


def _price_at(value: Any, threshold: int | None) -> Decimal | None:
    """A genai price (Decimal or TieredPrices) as billed above `threshold` prompt tokens."""
    if value is None:
        return None
    if not hasattr(value, "tiers"):
        return value
    chosen = value.base
    if threshold is not None:
        for tier in value.tiers:
            if tier.start <= threshold:
                chosen = tier.price
    return chosen


def _thresholds(prices: dict[str, Any]) -> list[int]:
    starts = {t.start for v in prices.values() if hasattr(v, "tiers") for t in v.tiers}
    return sorted(starts)


def _classes(prices: dict[str, Any], threshold: int | None, model_id: str) -> dict[str, str] | None:
    """Every token class explicit (defaults made visible, so a reader and the test oracle need none)."""
    got = {ours: _price_at(prices.get(theirs), threshold) for theirs, ours in TOKEN_KEYS.items()}
    if got["input"] is None:
        return None
    out = {"input": got["input"]}
    out["cache_read"] = got["cache_read"] if got["cache_read"] is not None else got["input"]
    out["cache_write_5m"] = got["cache_write_5m"] if got["cache_write_5m"] is not None else got["input"]
    if got["cache_write_1h"] is not None:
        out["cache_write_1h"] = got["cache_write_1h"]
    elif "claude" in model_id and got["cache_write_5m"] is not None:
        out["cache_write_1h"] = got["input"] * 2  # Anthropic: 1-hour writes are 2x base input
    else:
        out["cache_write_1h"] = out["cache_write_5m"]
    out["output"] = got["output"] if got["output"] is not None else Decimal(0)  # embeddings
    if got["input_audio"] is not None:
        out["input_audio"] = got["input_audio"]
        if got["cache_read_audio"] is not None:
            out["cache_read_audio"] = got["cache_read_audio"]
    for name in ("output_audio", "input_image", "cache_read_image", "output_image"):
        if got[name] is not None:
            out[name] = got[name]
    return {k: _usd(v) for k, v in out.items()}


def _table(prices: dict[str, Any], model_id: str) -> dict[str, Any] | None:
    base = _classes(prices, None, model_id)
    if base is None:
        return None
    tiers = []
    for threshold in _thresholds(prices):
        tier = _classes(prices, threshold, model_id)
        if tier is not None and tier != base:
            tiers.append({"above_prompt_tokens": threshold, **tier})
    return {**base, **({"tiers": tiers} if tiers else {})}


def _fees(prices: dict[str, Any], namespace: str, model_id: str) -> dict[str, str]:
    fees = {}
    for theirs, ours in FEE_KEYS.items():
        value = prices.get(theirs)
        if value is None:
            continue
        if namespace == "gemini" and ours == "web_search" and model_id.startswith(("gemini-1", "gemini-2")):
            ours = "grounded_prompt"  # Gemini 2.x bills grounding per grounded prompt, 3.x per search query
        fees[ours] = _usd(_price_at(value, None))
    return fees


def _unmetered(prices: dict[str, Any]) -> set[str]:
    return {k for k, v in prices.items() if v is not None and k not in TOKEN_KEYS and k not in FEE_KEYS}


def _start(constraint: Any) -> date | None:
    """A StartDateConstraint's date; EPOCH for none; None for constraints we cannot model (time of day)."""
    if constraint is None:
        return EPOCH
    start = getattr(constraint, "start_date", None)
    return start if isinstance(start, date) else None


def _model_points(model: Any, namespace: str, source: str) -> tuple[list[dict[str, Any]], set[str]]:
    conditionals = ([(EPOCH, model.prices)] if not isinstance(model.prices, list)
                    else [(_start(c.constraint), c.prices) for c in model.prices])
    conditionals = [(d, p) for d, p in conditionals if d is not None]
    variants = [(_start(v.constraint), v) for v in (model.price_variants or [])]
    variants = [(d, v) for d, v in variants if d is not None and _dim(v.when) is not None]
    dates = sorted({d for d, _ in conditionals} | {d for d, _ in variants})
    points: list[dict[str, Any]] = []
    unmetered: set[str] = set()
    for day in dates:
        active = [p for d, p in conditionals if d <= day]
        standard = active[-1] if active else conditionals[0][1]
        prices = {k: v for k, v in standard.__dict__.items() if not k.startswith("_") and v is not None}
        unmetered |= _unmetered(prices)
        table = _table(prices, model.id)
        if table is None:
            continue
        point: dict[str, Any] = {"effective": day.isoformat(), "source": source, **table}
        fees = _fees(prices, namespace, model.id)
        if fees:
            point["fees"] = fees
        overlays: dict[tuple[str, str], dict[str, Any]] = {}
        for d, variant in variants:
            if d > day:
                continue
            overlay = overlays.setdefault(_dim(variant.when), {})
            for key, value in variant.prices.__dict__.items():
                if value is not None and not key.startswith("_"):
                    overlay.setdefault(key, value)
        for (group, name), overlay in sorted(overlays.items()):
            if name in ("default", "standard"):
                continue
            vtable = _table({**prices, **overlay}, model.id)
            if vtable is not None:
                point.setdefault(group, {})[name] = vtable
        body = {k: v for k, v in point.items() if k not in ("effective",)}
        if points and {k: v for k, v in points[-1].items() if k != "effective"} == body:
            continue
        points.append(point)
    return points, unmetered


def _clause(logic: Any) -> dict[str, Any]:
    """genai-prices' match logic as plain JSON (the same clause names)."""
    data = dataclasses.asdict(logic)
    return _rename(data)


def _rename(value: Any) -> Any:
    if isinstance(value, dict):
        return {k.rstrip("_"): _rename(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v) for v in value]
    return value


def load_overrides() -> dict[str, Any]:
    return json.loads(resources.files("meterline.pricing").joinpath("overrides.json").read_text())


def _matches(clause: dict[str, Any] | None, name: str) -> bool:
    from meterline.pricing.catalog import compile_clause

    return clause is None or compile_clause(clause)(name)


PATCH_GROUPS = ("service_tiers", "speed", "fees", "inference_geo", "images")


def _patch(spec: dict[str, Any], patch: dict[str, Any], source: str) -> None:
    if "max_output_tokens" in patch:
        spec["max_output_tokens"] = int(patch["max_output_tokens"])
    for point in spec["prices"]:
        touched = False
        # Token classes the data lacks (e.g. audio prices): set on the point, as every other class is.
        for name, value in patch.get("classes", {}).items():
            if name not in point or patch.get("replace"):
                point[name] = value
                touched = True
        for group in PATCH_GROUPS:
            for name, value in patch.get(group, {}).items():
                current = point.setdefault(group, {})
                if name not in current or patch.get("replace"):
                    current[name] = value
                    touched = True
        if touched and source not in point["source"]:
            point["source"] = f"{point['source']}; {source}"
        for group in PATCH_GROUPS:
            if group in point and not point[group]:
                del point[group]


def compile_catalog(providers: list[Any], overrides: dict[str, Any], genai_version: str) -> dict[str, Any]:
    models: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    fallbacks: dict[str, list[str]] = {}
    for provider in providers:
        namespace = NAMESPACES.get(provider.id)
        if namespace is None:
            continue
        fb = [NAMESPACES[p] for p in (provider.fallback_model_providers or []) if p in NAMESPACES]
        if fb:
            fallbacks[namespace] = fb
        url = (provider.pricing_urls or [""])[0]
        source = f"genai-prices {genai_version}: {url}".strip()
        for model in provider.models:
            model_id = f"{namespace}/{model.id.lower()}"
            try:
                points, unmetered = _model_points(model, namespace, source)
                for point in points:  # every price exact in micro-dollars, or the model is left out
                    json.dumps(point)
                    _check_exact(point)
            except MoneyFormatError:
                skipped.append(model_id)
                continue
            if not points:
                skipped.append(model_id)
                continue
            spec: dict[str, Any] = {"match": _clause(model.match), "prices": points}
            if unmetered:
                spec["unmetered"] = sorted(unmetered)
            models[model_id] = spec
    for rule in overrides.get("rules", []):
        _need_source(rule)
        for model_id, spec in models.items():
            namespace, name = model_id.split("/", 1)
            if namespace == rule["namespace"] and _matches(rule.get("match"), name):
                _patch(spec, rule, f"{rule['source']} ({rule['date']})")
    for model_id, entry in overrides.get("models", {}).items():
        _need_source(entry)
        source = f"{entry['source']} ({entry['date']})"
        if model_id in models and "prices" not in entry:
            _patch(models[model_id], entry, source)
            continue
        spec = {k: v for k, v in entry.items() if k not in ("source", "date")}
        spec["prices"] = [{**p, "source": p.get("source", source)} for p in entry["prices"]]
        models[model_id] = spec
    for spec in models.values():
        spec.setdefault("max_output_tokens", 0)
    ordered = {k: {"max_output_tokens": v.pop("max_output_tokens"), **v} for k, v in models.items()}
    return {
        "schema": 2,
        "currency": "USD",
        "unit": "USD per 1M tokens; fees USD per 1K calls",
        "generated_from": {"genai_prices": genai_version, "overrides": overrides.get("version", "")},
        "notes": "Compiled by `python -m meterline.pricing.build`; do not edit by hand (see docs/PRICING.md).",
        "fallbacks": fallbacks,
        "skipped": sorted(skipped),
        "models": ordered,
    }


def _need_source(entry: dict[str, Any]) -> None:
    if not entry.get("source") or not entry.get("date"):
        raise ValueError(f"every override needs a source and a date: {entry!r}")
    date.fromisoformat(entry["date"])


def _check_exact(value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("effective", "source"):
                continue
            _check_exact(v)
    elif isinstance(value, list):
        for v in value:
            _check_exact(v)
    elif isinstance(value, str):
        usd_to_micros(value)


def providers_from_json(raw: Any) -> list[Any]:
    """Published genai-prices data (the `data.json` list of providers) as genai-prices objects."""
    from genai_prices.types import _providers_from_raw  # the parser its own updater uses

    if not isinstance(raw, list):
        raise ValueError("price data must be a list of providers")
    return _providers_from_raw(raw)


def bundled_providers() -> tuple[list[Any], str]:
    from importlib.metadata import version

    from genai_prices.data import providers

    return providers, version("genai-prices")


def render(catalog: dict[str, Any]) -> str:
    """One model per line: compact to load (it is parsed at every cold start) and readable in a diff."""
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    head = [f" {json.dumps(k)}:{json.dumps(v, **compact)}" for k, v in catalog.items() if k != "models"]
    models = [f"  {json.dumps(k)}:{json.dumps(v, **compact)}" for k, v in catalog["models"].items()]
    return "{\n" + ",\n".join([*head, ' "models":{\n' + ",\n".join(models) + "\n }"]) + "\n}\n"


def compile_bundled() -> str:
    providers, genai_version = bundled_providers()
    return render(compile_catalog(providers, load_overrides(), genai_version))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meterline.pricing.build", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if catalog.json is not a fresh compile")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = compile_bundled()
    if args.check:
        same = args.out.read_text() == text
        print("catalog.json is current" if same else "catalog.json differs from a fresh compile")
        return 0 if same else 1
    args.out.write_text(text)
    models = json.loads(text)["models"]
    print(f"wrote {args.out} ({len(models)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
