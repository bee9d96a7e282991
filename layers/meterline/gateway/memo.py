"""A small async TTL cache with refresh-ahead and load coalescing.

Entries are served until `ttl`; after `refresh_after` a hit also starts one background reload, so
steady traffic never waits on the store (zero AWS round trips on a warm request) while a change
(a revoked key, a rotated provider key) still takes effect within `ttl`. Concurrent misses for one
key share a single load, so a burst of first requests makes one store call, not hundreds.

Bounded as an LRU (`max_entries`), with negative results (a loader returning None: an unknown key)
kept apart in their own smaller LRU (`max_negative`): a flood of unknown keys is answered from memory
when it repeats and can never evict the entries real traffic uses.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RefreshingCache(Generic[K, V]):
    def __init__(self, loader: Callable[[K], Awaitable[V]], ttl: float, refresh_after: float | None = None,
                 max_entries: int = 50_000, max_negative: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self._loader = loader
        self._clock = clock  # injectable so tests step time instead of sleeping on a loaded machine
        self.ttl = ttl
        self.refresh_after = refresh_after if refresh_after is not None else ttl * 2 / 3
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._negative: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self._max = max_entries
        self._max_negative = max_negative
        self.loads = 0  # completed loads
        self.misses = 0  # loads a request had to wait for (a store round trip before upstream)
        self.refreshes = 0  # background refresh-ahead loads (off the request's critical path)

    async def get(self, key: K) -> V:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        else:
            entry = self._negative.get(key)
        if entry is not None:
            loaded_at, value = entry
            age = now - loaded_at
            if age < self.ttl:
                if age >= self.refresh_after and key not in self._inflight:
                    self.refreshes += 1
                    self._start_load(key).add_done_callback(_swallow)
                return value
        inflight = self._inflight.get(key)
        if inflight is None:
            self.misses += 1
            inflight = self._start_load(key)
        return await asyncio.shield(inflight)

    def _start_load(self, key: K) -> asyncio.Future[V]:
        future: asyncio.Future[V] = asyncio.ensure_future(self._load(key))
        self._inflight[key] = future
        return future

    async def _load(self, key: K) -> V:
        try:
            value = await self._loader(key)
            self.loads += 1
            entries, bound = (self._negative, self._max_negative) if value is None else (self._entries, self._max)
            (self._entries if value is None else self._negative).pop(key, None)
            entries[key] = (self._clock(), value)
            entries.move_to_end(key)
            while len(entries) > bound:
                entries.popitem(last=False)  # least recently used
            return value
        finally:
            self._inflight.pop(key, None)

    def invalidate(self, key: K | None = None) -> None:
        if key is None:
            self._entries.clear()
            self._negative.clear()
        else:
            self._entries.pop(key, None)
            self._negative.pop(key, None)


def _swallow(future: asyncio.Future) -> None:
    # A failed background refresh keeps serving the cached value until ttl; the next miss retries.
    if not future.cancelled():
        future.exception()
