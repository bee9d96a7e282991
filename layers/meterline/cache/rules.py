"""Cache rules: which requests the exact-match cache (and provider prompt caching) applies to.

Rules live in the workspace's item collection (store/workspaces.py, sk `cache#<scope>`), so they
arrive with the workspace config the gateway already holds in memory: no extra round trip.
Scopes: `workspace`, `feature:<name>`, `key:<key id>`. The most specific rule wins whole
(key > feature > workspace); rules never merge field by field, so what `cache list` shows is what
applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PARTITIONS = ("workspace", "key", "member", "customer")
PROMPT_CACHE_TTLS = ("5m", "1h")
DEFAULT_TTL_S = 3600
MAX_TTL_S = 30 * 86400
_SCOPE_KINDS = ("feature", "key")


@dataclass(frozen=True)
class CacheRule:
    scope: str = "workspace"
    exact: bool = True  # the exact-match response cache
    ttl_s: int = DEFAULT_TTL_S
    # Cache answers to requests sampled with temperature > 0 (the provider default is 1 when absent).
    any_temperature: bool = False
    # Who may share an entry inside the workspace: everyone (workspace), or per key, member or customer.
    partition: str = "workspace"
    namespace: str = ""  # bump it to start afresh without waiting for TTLs
    prompt_cache: bool = False  # native prompt caching helpers (levers/prompt_cache.py)
    prompt_cache_ttl: str = "5m"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_scope(scope: str) -> str:
    if scope == "workspace":
        return scope
    kind, _, name = scope.partition(":")
    if kind not in _SCOPE_KINDS or not name or len(name) > 128:
        raise ValueError("scope must be 'workspace', 'feature:<name>' or 'key:<key id>'")
    return scope


def parse_ttl(text: str | int) -> int:
    """'90s', '15m', '1h', '7d' or a number of seconds."""
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    else:
        raw = str(text).strip().lower()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        try:
            seconds = int(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else int(raw)
        except ValueError as exc:
            raise ValueError(f"invalid TTL {text!r}: use e.g. 90s, 15m, 1h, 7d") from exc
    if not 1 <= seconds <= MAX_TTL_S:
        raise ValueError(f"TTL must be between 1 s and {MAX_TTL_S // 86400} days")
    return seconds


def make_rule(scope: str, **fields: Any) -> CacheRule:
    """A validated rule (the control plane's input and the store's output both go through here)."""
    rule = CacheRule(scope=validate_scope(scope), **{k: v for k, v in fields.items() if v is not None})
    if rule.partition not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}")
    if rule.prompt_cache_ttl not in PROMPT_CACHE_TTLS:
        raise ValueError(f"prompt cache TTL must be one of {PROMPT_CACHE_TTLS}")
    parse_ttl(rule.ttl_s)
    if len(rule.namespace) > 64:
        raise ValueError("namespace is at most 64 characters")
    return rule


def from_stored(scope: str, stored: dict[str, Any]) -> CacheRule | None:
    fields = {k: stored[k] for k in CacheRule.__dataclass_fields__ if k in stored and k != "scope"}
    try:
        return make_rule(scope, **fields)
    except (ValueError, TypeError):
        return None  # a damaged rule applies as "no rule", never as a crash on the request path


def resolve(rules: dict[str, dict[str, Any]], key_id: str | None, feature: str | None) -> CacheRule | None:
    """The rule for a request: its key's, else its feature's, else the workspace's, else None."""
    for scope in (f"key:{key_id}" if key_id else None, f"feature:{feature}" if feature else None, "workspace"):
        if scope and scope in rules:
            return from_stored(scope, rules[scope])
    return None
