"""A small async TTL cache with refresh-ahead and load coalescing.

Entries are served until `ttl`; after `refresh_after` a hit also starts one background reload, so
steady traffic never waits on the store (zero AWS round trips on a warm request) while a change
(a revoked key, a rotated provider key) still takes effect within `ttl`. Concurrent misses for one
key share a single load, so a burst of first requests makes one store call, not hundreds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RefreshingCache(Generic[K, V]):
    def __init__(self, loader: Callable[[K], Awaitable[V]], ttl: float, refresh_after: float | None = None,
                 max_entries: int = 50_000):
        self._loader = loader
        self.ttl = ttl
        self.refresh_after = refresh_after if refresh_after is not None else ttl * 2 / 3
        self._entries: dict[K, tuple[float, V]] = {}
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self._max = max_entries
        self.loads = 0  # completed loads
        self.misses = 0  # loads a request had to wait for (a store round trip before upstream)
        self.refreshes = 0  # background refresh-ahead loads (off the request's critical path)

    async def get(self, key: K) -> V:
        now = time.monotonic()
        entry = self._entries.get(key)
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
            if len(self._entries) >= self._max:
                self._entries.clear()  # crude bound: a full reload beats unbounded memory
            self._entries[key] = (time.monotonic(), value)
            return value
        finally:
            self._inflight.pop(key, None)

    def invalidate(self, key: K | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)


def _swallow(future: asyncio.Future) -> None:
    # A failed background refresh keeps serving the cached value until ttl; the next miss retries.
    if not future.cancelled():
        future.exception()
