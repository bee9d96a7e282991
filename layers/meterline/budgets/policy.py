"""Budget and rate-limit decisions. Pure: no I/O, no clocks (times are passed in).

Money bound: a reservation is the request's worst case - estimated input at the highest input-class
rate the model has (uncached, cache write 5m/1h; every tier and service tier) plus its maximum output
at the highest output rate. Output can never exceed the reserved maximum (the provider stops at
max_tokens), so a request settles above its reservation only by the input estimator's error; the
estimator counts ~3 characters per token (more tokens than English prose actually has).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meterline.budgets.model import Budget, Enforcement, RateLimit
from meterline.pricing.catalog import ModelPricing, Rates

PER_MILLION = 1_000_000
MIN_CLAMPED_OUTPUT = 16  # below this a clamped request is useless: reject instead


def matching_budgets(enforcement: Enforcement, attribution: Mapping[str, str | None]) -> list[Budget]:
    """Every budget whose scope covers the request (all of them must pass)."""
    out = []
    for budget in enforcement.budgets:
        if budget.scope_type == "workspace" or attribution.get(budget.scope_type) == budget.scope_value:
            out.append(budget)
    return out


def limits_for(enforcement: Enforcement, attribution: Mapping[str, str | None]) -> list[RateLimit]:
    """The rate limits that apply: explicit per subject, else the workspace default per type; every
    key has the workspace's default RPM floor unless a limit for it (or for `key:*`) is set."""
    out = []
    for subject_type in ("key", "member", "agent"):
        value = attribution.get(subject_type)
        if not value:
            continue
        limit = enforcement.limits.get(f"{subject_type}:{value}") or enforcement.limits.get(f"{subject_type}:*")
        if limit is None and subject_type == "key":
            limit = RateLimit("key", "*", rpm=enforcement.policy.key_rpm_default)
        if limit is not None:
            out.append(RateLimit(subject_type, value, limit.rpm, limit.rph, limit.burst, limit.tpm))
    return out


def requested_tier(body: Mapping[str, Any]) -> str | None:
    """The service tier a request asks for, in any dialect (OpenAI / Anthropic `service_tier`,
    Gemini `serviceTier`, Bedrock `serviceTier.type`)."""
    value = body.get("service_tier", body.get("serviceTier"))
    if isinstance(value, Mapping):
        value = value.get("type")
    return value if isinstance(value, str) else None


def worst_rates(pricing: ModelPricing, point_index: int = -1,
                body: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """(highest input-class rate, highest output rate) across the long-context tiers of the table
    the request can be billed at: the standard one, and the service tier / speed / region it asks for."""
    point = pricing.points[point_index]
    body = body or {}
    tables = [point.table]
    tier = (requested_tier(body) or "").lower()
    if tier in point.service_tiers:
        tables.append(point.service_tiers[tier])
    speed = body.get("speed")
    if isinstance(speed, str) and speed.lower() in point.speed:
        tables.append(point.speed[speed.lower()])
    rate_sets: list[Rates] = [r for t in tables for r in t.all_rates()]
    geo = body.get("inference_geo")
    if isinstance(geo, str) and geo.lower() in point.geo:
        rate_sets = [r.scaled(point.geo[geo.lower()]) for r in rate_sets]
    worst_in = max(max(r.input, r.cache_write_5m, r.cache_write_1h, r.cache_read, r.audio_in) for r in rate_sets)
    worst_out = max(r.output for r in rate_sets)
    return worst_in, worst_out


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """Conservative prompt estimate: every character of the JSON messages (and tools) / 3, rounded up."""
    import json

    text = json.dumps([body.get("messages"), body.get("tools"), body.get("system"), body.get("input")],
                      ensure_ascii=False, separators=(",", ":"))
    return (len(text) + 2) // 3


def requested_max_output(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class WorstCase:
    input_tokens: int
    output_tokens: int
    micros: int
    input_rate: int
    output_rate: int


def worst_case(body: Mapping[str, Any], pricing: ModelPricing | None, output_tokens: int | None = None,
               input_tokens: int | None = None) -> WorstCase:
    """`input_tokens` may be passed in when already estimated (it serializes the whole request)."""
    if input_tokens is None:
        input_tokens = estimate_input_tokens(body)
    if output_tokens is None:
        output_tokens = requested_max_output(body) or (pricing.max_output_tokens if pricing else 0) or 4096
    if pricing is None:
        return WorstCase(input_tokens, output_tokens, 0, 0, 0)
    rate_in, rate_out = worst_rates(pricing, body=body)
    scaled = input_tokens * rate_in + output_tokens * rate_out
    micros = -(-scaled // PER_MILLION)  # round up: a reservation never under-covers
    return WorstCase(input_tokens, output_tokens, micros, rate_in, rate_out)


def clamp_output(worst: WorstCase, remaining_micros: int) -> int | None:
    """The largest max output the remaining budget pays for, or None if not even MIN_CLAMPED_OUTPUT."""
    if worst.output_rate <= 0:
        return None
    input_cost = -(-(worst.input_tokens * worst.input_rate) // PER_MILLION)
    affordable = ((remaining_micros - input_cost) * PER_MILLION) // worst.output_rate
    if affordable < MIN_CLAMPED_OUTPUT:
        return None
    return min(affordable, worst.output_tokens)


def crossed_thresholds(before: int, after: int, cap: int, thresholds: tuple[int, ...]) -> list[int]:
    """Alert thresholds (percent) that `after` reached and `before` had not."""
    return [t for t in sorted(thresholds) if before * 100 < t * cap <= after * 100]


def throttle_reached(spent: int, cap: int | None, throttle_at: int | None) -> bool:
    return cap is not None and throttle_at is not None and spent * 100 >= throttle_at * cap


_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


def loop_fingerprint(body: Mapping[str, Any]) -> str:
    """Near-identical requests share a fingerprint: same model and the same last user turn (and tool
    results), compared case-insensitively with numbers and whitespace runs folded."""
    messages = body.get("messages") or []
    tail = [m for m in messages if isinstance(m, dict) and m.get("role") in ("user", "tool")][-2:]
    import json

    text = json.dumps([body.get("model"), [m.get("content") for m in tail]], sort_keys=True, default=str)
    normal = _SPACE.sub(" ", _DIGITS.sub("#", text.lower()))
    return hashlib.sha256(normal.encode()).hexdigest()[:24]
