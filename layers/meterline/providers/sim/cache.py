"""The providers' prompt caches, simulated per workspace and model with real TTLs, so the
prompt-caching levers can be measured locally.

OpenAI (automatic): a prompt of >= 1,024 tokens whose leading segments (tools, instructions, then
messages) match an earlier prompt's within the retention window reads the matching prefix from the
cache, in 128-token steps. Retention: 5 minutes of inactivity (`prompt_cache_retention: "24h"`:
24 hours); a hit refreshes it. `prompt_cache_key` partitions the cache as the provider's routing does.

Anthropic (explicit): each `cache_control` breakpoint caches the prefix up to it (order tools ->
system -> messages) for 5 minutes or, with `"ttl": "1h"`, an hour; a hit refreshes the TTL.
Reads come from the longest cached breakpoint; every later breakpoint writes its increment,
billed at that breakpoint's TTL. Prefixes under the model's minimum are silently not cached.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OPENAI_MIN = 1024
OPENAI_STEP = 128
FIVE_MIN = 300.0
ONE_HOUR = 3600.0
MAX_ENTRIES = 20_000


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Segment:
    """A cacheable unit of a prompt, in prefix order: its canonical content and token count, and
    (Anthropic) the TTL of a breakpoint placed on it."""

    content: Any
    tokens: int
    breakpoint_ttl: float | None = None


@dataclass(frozen=True)
class CacheUsage:
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0


class PromptCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = MAX_ENTRIES):
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[str, float] = OrderedDict()  # key -> expiry
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _alive(self, key: str, now: float) -> bool:
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self._entries[key]
            return False
        return True

    def _put(self, key: str, expiry: float) -> None:
        self._entries[key] = max(expiry, self._entries.get(key, 0.0))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    @staticmethod
    def _prefix_keys(scope: tuple[str, ...], segments: list[Segment]) -> list[tuple[str, int]]:
        """(key, tokens) of every segment boundary: the prefix ending at each segment."""
        out = []
        running = hashlib.sha256(json.dumps(scope).encode())
        total = 0
        for segment in segments:
            running.update(digest(segment.content).encode())
            total += segment.tokens
            out.append((running.copy().hexdigest(), total))
        return out

    def openai(self, scope: tuple[str, ...], segments: list[Segment], retention_s: float = FIVE_MIN) -> int:
        """Cached tokens for this prompt; records its prefixes for later prompts."""
        total = sum(s.tokens for s in segments)
        if total < OPENAI_MIN:
            return 0
        now = self.clock()
        prefixes = self._prefix_keys(("openai", *scope), segments)
        with self._lock:
            hit = 0
            for key, tokens in prefixes:
                if tokens >= OPENAI_MIN and self._alive(key, now):
                    hit = tokens
            for key, tokens in prefixes:
                if tokens >= OPENAI_MIN:
                    self._put(key, now + retention_s)
        if hit < OPENAI_MIN:
            return 0
        return min(hit, total) // OPENAI_STEP * OPENAI_STEP

    def anthropic(self, scope: tuple[str, ...], segments: list[Segment], minimum: int) -> CacheUsage:
        now = self.clock()
        prefixes = self._prefix_keys(("anthropic", *scope), segments)
        points = [(i, key, tokens, segments[i].breakpoint_ttl) for i, (key, tokens) in enumerate(prefixes)
                  if segments[i].breakpoint_ttl is not None and tokens >= minimum]
        read = write_5m = write_1h = 0
        with self._lock:
            start = -1
            for n, (_, key, tokens, _ttl) in enumerate(points):
                if self._alive(key, now):
                    start, read = n, tokens
            accounted = read
            for n, (_, key, tokens, ttl) in enumerate(points):
                assert ttl is not None
                if n <= start:
                    self._put(key, now + ttl)  # a read refreshes the entry
                    continue
                increment = tokens - accounted
                if ttl >= ONE_HOUR:
                    write_1h += increment
                else:
                    write_5m += increment
                accounted = tokens
                self._put(key, now + ttl)
        return CacheUsage(read, write_5m, write_1h)
