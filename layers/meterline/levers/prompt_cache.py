"""Native prompt caching: help the provider's own cache hit. Pure (the reuse tracker is in memory).

Anthropic (`/v1/messages` to an Anthropic provider), only when the client set no `cache_control`
anywhere (top level, tools, system, messages) — a client's breakpoints and TTLs are never changed:
    1. the stable prefix: a breakpoint on the last system block (else the last tool), when tools +
       system reach the model's minimum cacheable length (pricing/cache_rules.py, a data table) and this
       instance has seen the same prefix from the same workspace and model often enough within the
       TTL to pay for the write (5-minute entries: this is at least the 2nd use within 5 minutes;
       1-hour entries: at least the 3rd within the hour — writes cost 1.25x / 2x, reads 0.1x);
    2. rolling conversation breakpoints, for a conversation that already had a turn (>= 3 messages)
       and whose prompt reaches the minimum: one on the last block (writes this turn's prompt for the
       next turn) and one on the last block of the message before the latest assistant message —
       exactly where the previous turn's write ended, so it reads it whatever the lookback window;
never more than MAX_BREAKPOINTS (4) in total. Longer TTLs come first (the prefix may be 1 h, the
conversation breakpoints are 5 min).

OpenAI (chat and Responses to an OpenAI or Azure provider): `prompt_cache_key` from the workspace,
the feature/template and the model when the client sent none, so requests sharing a prefix route to
the same cache. Never `prompt_cache_retention` or `prompt_cache_options` (sending both is rejected).

What it saved (`value`): the cache-read discount against uncached input, minus the write premium
paid above uncached input, from the request's own usage and rates. It can be negative (writes that
were never read); it is recorded as it is, so the lever's net value is honest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from meterline.money import round_scaled
from meterline.pricing.cache_rules import min_cacheable
from meterline.pricing.catalog import Rates
from meterline.usage import Usage, estimate_tokens

MAX_BREAKPOINTS = 4
FIVE_MIN_S = 300
ONE_HOUR_S = 3600
# Uses of a prefix within the TTL (this request included) before a breakpoint pays for its write.
USES_TO_PAY = {"5m": 2, "1h": 3}
OPENAI_KINDS = ("openai", "azure", "sim")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _tokens(value: Any) -> int:
    return estimate_tokens(len(value) if isinstance(value, str) else len(json.dumps(value, separators=(",", ":"))))


class ReuseTracker:
    """How often each stable prefix was used recently, per instance (no round trip). Bounded."""

    def __init__(self, max_prefixes: int = 10_000, clock: Any = time.monotonic):
        self.clock = clock
        self.max_prefixes = max_prefixes
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def use(self, key: str, window_s: float) -> int:
        """Record a use now; return the uses within the window, this one included."""
        now = self.clock()
        with self._lock:
            uses = self._seen.setdefault(key, deque())
            self._seen.move_to_end(key)
            while uses and uses[0] <= now - window_s:
                uses.popleft()
            uses.append(now)
            while len(uses) > 16:
                uses.popleft()
            while len(self._seen) > self.max_prefixes:
                self._seen.popitem(last=False)
            return len(uses)


def client_breakpoints(body: dict[str, Any]) -> int:
    """Breakpoints the client set itself (the top-level automatic one counts)."""
    count = 1 if body.get("cache_control") else 0
    blocks: list[Any] = list(body.get("tools") or [])
    if isinstance(body.get("system"), list):
        blocks += body["system"]
    for message in body.get("messages") or []:
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            blocks += message["content"]
    return count + sum(1 for b in blocks if isinstance(b, dict) and b.get("cache_control"))


@dataclass(frozen=True)
class Injected:
    body: dict[str, Any]
    breakpoints: tuple[str, ...]  # where: "prefix", "conversation_read", "conversation_write"


def _control(ttl: str) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": ttl}


def _mark_last_block(message: dict[str, Any], ttl: str) -> bool:
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return False
        message["content"] = [{"type": "text", "text": content, "cache_control": _control(ttl)}]
        return True
    if isinstance(content, list) and content and isinstance(content[-1], dict) and \
            content[-1].get("type") not in ("thinking", "redacted_thinking"):
        content[-1] = {**content[-1], "cache_control": _control(ttl)}
        return True
    return False


def anthropic_breakpoints(body: dict[str, Any], model: str, workspace: str, ttl: str,
                          tracker: ReuseTracker) -> Injected | None:
    """The request with breakpoints placed, or None when the lever should not act."""
    if client_breakpoints(body):
        return None
    minimum = min_cacheable(model)
    tools, system = body.get("tools") or [], body.get("system")
    prefix_tokens = _tokens(tools) + (_tokens(system) if system else 0)
    out = copy.deepcopy(body)
    placed: list[str] = []
    if prefix_tokens >= minimum and (tools or system):
        window = ONE_HOUR_S if ttl == "1h" else FIVE_MIN_S
        uses = tracker.use(_digest(["anthropic", workspace, model, tools, system]), window)
        if uses >= USES_TO_PAY[ttl]:
            if isinstance(system, str) and system:
                out["system"] = [{"type": "text", "text": system, "cache_control": _control(ttl)}]
                placed.append("prefix")
            elif isinstance(system, list) and system and isinstance(system[-1], dict):
                out["system"][-1] = {**system[-1], "cache_control": _control(ttl)}
                placed.append("prefix")
            elif tools and isinstance(tools[-1], dict):
                out["tools"][-1] = {**tools[-1], "cache_control": _control(ttl)}
                placed.append("prefix")
    messages = out.get("messages") or []
    if len(messages) >= 3 and prefix_tokens + _tokens(messages) >= minimum:
        # Conversation breakpoints are 5-minute entries: turns follow each other quickly, and a
        # longer TTL may not come after a shorter one.
        last_assistant = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last_assistant is not None and last_assistant >= 1 and len(placed) + 2 <= MAX_BREAKPOINTS \
                and _mark_last_block(messages[last_assistant - 1], "5m"):
            placed.append("conversation_read")
        if len(placed) < MAX_BREAKPOINTS and _mark_last_block(messages[-1], "5m"):
            placed.append("conversation_write")
    if not placed:
        return None
    return Injected(out, tuple(placed))


def openai_cache_key(body: dict[str, Any], workspace: str, feature: str | None, template: str | None,
                     model: str) -> dict[str, Any] | None:
    """The request with a `prompt_cache_key`, or None when the client set one (or caching options)."""
    if body.get("prompt_cache_key") is not None:
        return None
    key = "ml_" + _digest(["openai", workspace, feature or "", template or "", model])[:32]
    return {**body, "prompt_cache_key": key}


def _signed_round(scaled: int) -> int:
    return round_scaled(scaled) if scaled >= 0 else -round_scaled(-scaled)


@dataclass(frozen=True)
class Value:
    read_saved: int  # cache reads x (input rate - read rate)
    write_premium: int  # cache writes x (write rate - input rate)
    net: int  # both from the exact scaled sum, rounded once


def value(usage: Usage, rates: Rates) -> Value:
    """What the provider's cache saved on this request against the same tokens uncached; exact."""
    saved = usage.cache_read * (rates.input - rates.cache_read)
    premium = (usage.cache_write_5m * (rates.cache_write_5m - rates.input)
               + usage.cache_write_1h * (rates.cache_write_1h - rates.input))
    return Value(_signed_round(saved), _signed_round(premium), _signed_round(saved - premium))
