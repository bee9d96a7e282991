"""Per-request cache controls and the eligibility rules. Pure.

Request headers:
    Meterline-Cache: on       use the cache for this request even if no rule turns it on
    Meterline-Cache: off      neither read nor write
    Meterline-Cache: refresh  skip the read, call the provider, store the fresh answer
    Cache-Control: no-store   neither read nor write;  no-cache: like refresh;
                   max-age=N  serve only an entry at most N seconds old (else refresh it)

Eligible requests: n == 1 (or absent); temperature == 0 unless the rule opts in to any temperature
(an absent temperature is the provider's default, 1, so it counts as > 0); not a background
Responses call. Storable answers: complete 2xx answers with a natural finish (see `storable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meterline.cache.rules import DEFAULT_TTL_S, CacheRule

CACHEABLE_ENDPOINTS = ("chat.completions", "responses", "messages", "embeddings")
HEADER = "meterline-cache"
AGE_HEADER = "meterline-cache-age"
REASON_HEADER = "meterline-cache-reason"
_MODES = ("on", "off", "refresh")


class ControlError(ValueError):
    """A cache header the gateway cannot honour (answered as a 400 in the caller's dialect)."""

    def __init__(self, message: str, header: str):
        super().__init__(message)
        self.header = header


@dataclass(frozen=True)
class Plan:
    """What the cache does for one request."""

    rule: CacheRule
    read: bool
    write: bool
    max_age_s: int | None = None  # only serve entries at most this old

    @property
    def ttl_s(self) -> int:
        return self.rule.ttl_s


@dataclass(frozen=True)
class Bypass:
    reason: str


def _cache_control(value: str) -> tuple[bool, bool, int | None]:
    """(read, write, max_age) from a Cache-Control request header."""
    read = write = True
    max_age = None
    for directive in value.split(","):
        name, _, arg = directive.strip().lower().partition("=")
        if name == "no-store":
            read = write = False
        elif name == "no-cache":
            read = False
        elif name == "max-age":
            try:
                max_age = int(arg.strip().strip('"'))
            except ValueError as exc:
                raise ControlError("Cache-Control max-age must be a whole number of seconds.",
                                   "cache-control") from exc
            if max_age < 0:
                raise ControlError("Cache-Control max-age must not be negative.", "cache-control")
            if max_age == 0:
                read = False
    return read, write, max_age


def _temperature_positive(endpoint: str, body: dict[str, Any]) -> bool:
    if endpoint == "embeddings":
        return False
    value = body.get("temperature")
    if value is None:
        return True  # the provider default (1.0 on OpenAI and Anthropic)
    return not (isinstance(value, int | float) and not isinstance(value, bool) and value == 0)


def plan(rule: CacheRule | None, headers: dict[str, str], endpoint: str, body: dict[str, Any]) -> Plan | Bypass | None:
    """None: the cache plays no part (no rule on, no header); Bypass: it would, but may not here."""
    mode = (headers.get(HEADER) or "").strip().lower() or None
    if mode is not None and mode not in _MODES:
        raise ControlError("Meterline-Cache must be one of: on, off, refresh.", HEADER)
    enabled = rule is not None and rule.exact
    if not enabled and mode not in ("on", "refresh"):
        return None
    if mode == "off":
        return Bypass("off")
    if endpoint not in CACHEABLE_ENDPOINTS:
        return Bypass("endpoint")
    read, write, max_age = _cache_control(headers.get("cache-control") or "")
    if mode == "refresh":
        read = False
    if not (read or write):
        return Bypass("no-store")
    effective = rule if rule is not None and rule.exact else CacheRule(scope="request", ttl_s=DEFAULT_TTL_S)
    n = body.get("n")
    if n not in (None, 1):
        return Bypass("n")
    if endpoint == "responses" and body.get("background"):
        return Bypass("background")
    if _temperature_positive(endpoint, body) and not effective.any_temperature:
        return Bypass("temperature")
    return Plan(effective, read=read, write=write, max_age_s=max_age)


# -- what may be stored --------------------------------------------------------------------------
_NATURAL_CHAT = ("stop", "tool_calls", "function_call")
_NATURAL_ANTHROPIC = ("end_turn", "stop_sequence", "tool_use")


def storable(endpoint: str, payload: Any) -> bool:
    """A complete answer with a natural finish (not cut by max tokens, a filter, or a refusal to finish)."""
    if not isinstance(payload, dict):
        return False
    if endpoint == "chat.completions":
        choices = payload.get("choices")
        return (isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0], dict)
                and choices[0].get("finish_reason") in _NATURAL_CHAT)
    if endpoint == "responses":
        return payload.get("status") == "completed" and not payload.get("incomplete_details") \
            and not payload.get("error")
    if endpoint == "messages":
        return payload.get("type") == "message" and payload.get("stop_reason") in _NATURAL_ANTHROPIC
    if endpoint == "embeddings":
        return isinstance(payload.get("data"), list) and bool(payload["data"])
    return False
