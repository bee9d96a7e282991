"""`prices sync` / `prices diff`: compile newer published price data and compare it with the catalog
in force. Runs in the CLI and the admin API, never on the data plane (it imports genai-prices).

The source is genai-prices' published `data.json` (a URL, by default its `main` branch) or a local
file; it is compiled with Meterline's overrides by the same compiler as the build step, so the
accepted catalog has exactly the bundled catalog's format and guarantees.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from meterline.pricing import build
from meterline.pricing.catalog import Catalog, CatalogError

DEFAULT_SOURCE = "https://raw.githubusercontent.com/pydantic/genai-prices/refs/heads/main/prices/new_data/v2/data.json"
MAX_BYTES = 64 * 1024 * 1024
CLASSES = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "input_audio", "cache_read_audio",
           "output_audio", "input_image", "cache_read_image", "output_image")


class SyncError(ValueError):
    """The price data could not be fetched, parsed or compiled."""


def fetch(source: str | None = None, timeout: float = 30.0) -> bytes:
    """The published data: an http(s) URL or a local file path."""
    source = source or DEFAULT_SOURCE
    if source.startswith(("http://", "https://")):
        try:
            with httpx.Client(timeout=timeout, follow_redirects=True) as client:
                response = client.get(source)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise SyncError(f"could not fetch price data from {source}: {exc}") from exc
        data = response.content
    else:
        path = Path(source.removeprefix("file://"))
        if not path.is_file():
            raise SyncError(f"no price data file at {source}")
        data = path.read_bytes()
    if len(data) > MAX_BYTES:
        raise SyncError("price data is larger than 64 MiB")
    return data


def compile_source(data: bytes, label: str) -> dict[str, Any]:
    """Published genai-prices data -> a validated Meterline catalog (dict)."""
    try:
        raw = json.loads(data)
        providers = build.providers_from_json(raw)
        digest = hashlib.sha256(data).hexdigest()[:12]
        compiled = build.compile_catalog(providers, build.load_overrides(), f"{label} sha256:{digest}")
        Catalog.from_dict(compiled).validate()
    except (ValueError, CatalogError) as exc:
        raise SyncError(f"price data does not compile: {str(exc)[:500]}") from exc
    compiled["compiled_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return compiled


def _current_point(spec: dict[str, Any], today: str) -> dict[str, Any] | None:
    points = [p for p in spec.get("prices", []) if p.get("effective", "") <= today]
    return points[-1] if points else None


def diff(old: dict[str, Any], new: dict[str, Any], today: str | None = None) -> dict[str, Any]:
    """New models, removed models, and changed prices in force today (per class, per service tier)."""
    today = today or datetime.now(UTC).date().isoformat()
    old_models, new_models = old.get("models", {}), new.get("models", {})
    changed = []
    for model_id in sorted(set(old_models) & set(new_models)):
        a, b = _current_point(old_models[model_id], today), _current_point(new_models[model_id], today)
        if a is None or b is None:
            continue
        for where, x, y in [("", a, b), *((f"{group}.{name}.", a.get(group, {}).get(name, {}),
                                          b.get(group, {}).get(name, {}))
                                         for group in ("service_tiers", "speed")
                                         for name in sorted(set(a.get(group, {})) | set(b.get(group, {}))))]:
            for cls in (*CLASSES, "multiplier"):
                if x.get(cls) != y.get(cls):
                    changed.append({"model": model_id, "price": f"{where}{cls}", "old": x.get(cls), "new": y.get(cls)})
        for group in ("fees", "images"):  # server-tool fees per 1K calls; image prices per image
            for name in sorted(set(a.get(group, {})) | set(b.get(group, {}))):
                if a.get(group, {}).get(name) != b.get(group, {}).get(name):
                    changed.append({"model": model_id, "price": f"{group}.{name}", "old": a.get(group, {}).get(name),
                                    "new": b.get(group, {}).get(name)})
    return {
        "new": sorted(set(new_models) - set(old_models)),
        "removed": sorted(set(old_models) - set(new_models)),
        "changed": changed,
    }


def render_diff(d: dict[str, Any], limit: int = 200) -> str:
    lines = [f"{len(d['new'])} new, {len(d['changed'])} changed prices, {len(d['removed'])} removed"]
    lines += [f"+ {m}" for m in d["new"][:limit]]
    unit = "USD per 1M tokens; fees per 1K calls; images per image"
    lines += [f"~ {c['model']} {c['price']}: {c['old']} -> {c['new']} ({unit})" for c in d["changed"][:limit]]
    lines += [f"- {m}" for m in d["removed"][:limit]]
    return "\n".join(lines)
