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

OpenAI-format chat to Claude (`/v1/chat/completions` routed to Anthropic, or to a Bedrock model with
`cachePoint` support): the same rules, placed in the OpenAI body as Anthropic-style `cache_control`
on content parts and tools (the convention clients use for this); the chat->Anthropic translator
carries them as `cache_control`, the chat->Bedrock translator as `{"cachePoint": ...}` blocks after
the marked block. Every route of the request must support caching: the largest minimum of their
models applies, a tools breakpoint only where every model caches tools (Nova does not), and the
1-hour TTL only where every model takes it (else 5 minutes). A client's own markers (on parts, on
a message or on a tool) count, and stop the lever as on /v1/messages.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meterline.money import round_scaled
from meterline.pricing.cache_rules import bedrock_caching, min_cacheable
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


def _mark_last(message: dict[str, Any], ttl: str, markable: Callable[[str | None], bool]) -> bool:
    """Put a breakpoint on a message's last content block (a string becomes one text block), if that
    block's type can carry one (`markable`: the dialect's rule)."""
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return False
        message["content"] = [{"type": "text", "text": content, "cache_control": _control(ttl)}]
        return True
    if isinstance(content, list) and content and isinstance(content[-1], dict) and markable(content[-1].get("type")):
        content[-1] = {**content[-1], "cache_control": _control(ttl)}
        return True
    return False


def _mark_last_block(message: dict[str, Any], ttl: str) -> bool:
    # Anthropic Messages: any block but thinking, which cannot carry cache_control.
    return _mark_last(message, ttl, lambda kind: kind not in ("thinking", "redacted_thinking"))


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


@dataclass(frozen=True)
class Caps:
    """What the provider behind a route caches: its minimum prefix, whether tools take a breakpoint,
    whether 1-hour entries exist, and the largest prefix it caches (None: no limit)."""

    minimum: int
    tools: bool = True
    ttl_1h: bool = True
    max_tokens: int | None = None


def caps_for(kind: str, model: str) -> Caps | None:
    """The caching caps of an Anthropic or Bedrock route, None when it takes no breakpoints."""
    if kind == "anthropic":
        return Caps(min_cacheable(model))
    if kind == "bedrock":
        caching = bedrock_caching(model)
        if caching is None:
            return None
        return Caps(min_cacheable(model), caching.tools, caching.ttl_1h, caching.max_cached_tokens)
    return None


def merge_caps(caps: list[Caps]) -> Caps:
    """Caps every route can take (a fallback must not be sent a breakpoint it rejects)."""
    limits = [c.max_tokens for c in caps if c.max_tokens is not None]
    return Caps(max(c.minimum for c in caps), all(c.tools for c in caps), all(c.ttl_1h for c in caps),
                min(limits) if limits else None)


def _has_control(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("cache_control"))


def chat_client_breakpoints(body: dict[str, Any]) -> int:
    """Breakpoints an OpenAI-format chat body carries (Anthropic-style `cache_control` on tools,
    messages or content parts)."""
    count = sum(1 for tool in body.get("tools") or [] if _has_control(tool))
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        count += 1 if _has_control(message) else 0
        if isinstance(message.get("content"), list):
            count += sum(1 for part in message["content"] if _has_control(part))
    return count


_SYSTEM_ROLES = ("system", "developer")


def _mark_last_part(message: dict[str, Any], ttl: str) -> bool:
    # OpenAI chat: the part types the translators carry to Anthropic blocks.
    return _mark_last(message, ttl, lambda kind: kind in ("text", "image_url"))


def chat_breakpoints(body: dict[str, Any], caps: Caps, model: str, workspace: str, ttl: str,
                     tracker: ReuseTracker) -> Injected | None:
    """An OpenAI-format chat request bound for Claude (or Nova) with breakpoints placed as
    `cache_control`, or None when the lever should not act. Same rules as `anthropic_breakpoints`."""
    if chat_client_breakpoints(body):
        return None
    if ttl == "1h" and not caps.ttl_1h:
        ttl = "5m"
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    systems = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES]
    prefix_tokens = _tokens(tools) + sum(_tokens(s) for s in systems if s)
    out = copy.deepcopy(body)
    placed: list[str] = []
    if prefix_tokens >= caps.minimum and (caps.max_tokens is None or prefix_tokens <= caps.max_tokens) \
            and (tools or systems):
        window = ONE_HOUR_S if ttl == "1h" else FIVE_MIN_S
        uses = tracker.use(_digest(["chat", workspace, model, tools, systems]), window)
        if uses >= USES_TO_PAY[ttl]:
            last_system = max((i for i, m in enumerate(messages) if isinstance(m, dict)
                               and m.get("role") in _SYSTEM_ROLES), default=None)
            if last_system is not None and _mark_last_part(out["messages"][last_system], ttl):
                placed.append("prefix")
            elif tools and caps.tools and isinstance(tools[-1], dict):
                out["tools"][-1] = {**tools[-1], "cache_control": _control(ttl)}
                placed.append("prefix")
    conversation = out.get("messages") or []
    turns = [i for i, m in enumerate(conversation) if isinstance(m, dict) and m.get("role") not in _SYSTEM_ROLES]
    total = prefix_tokens + _tokens([conversation[i] for i in turns])
    if len(turns) >= 3 and total >= caps.minimum and (caps.max_tokens is None or total <= caps.max_tokens):
        # As on /v1/messages: 5-minute entries, one where the previous turn's write ended (the last
        # turn before the latest assistant message), one on the last message.
        assistants = [i for i in turns if conversation[i].get("role") == "assistant"]
        before = [i for i in turns if assistants and i < assistants[-1]]
        if before and len(placed) + 2 <= MAX_BREAKPOINTS and _mark_last_part(conversation[before[-1]], "5m"):
            placed.append("conversation_read")
        if len(placed) < MAX_BREAKPOINTS and turns[-1] not in assistants[-1:] \
                and _mark_last_part(conversation[turns[-1]], "5m"):
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
