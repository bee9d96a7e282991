"""The refresh-ahead cache: coalesced misses, background refresh, expiry bound."""

from __future__ import annotations

import asyncio

import pytest

from meterline.gateway.memo import RefreshingCache


def test_concurrent_misses_share_one_load_and_hits_make_none():
    calls = []

    async def loader(key: str) -> str:
        calls.append(key)
        await asyncio.sleep(0.01)
        return key.upper()

    async def run() -> None:
        cache = RefreshingCache(loader, ttl=10)
        assert await asyncio.gather(*(cache.get("a") for _ in range(50))) == ["A"] * 50
        assert await cache.get("a") == "A"
        assert calls == ["a"] and cache.misses == 1

    asyncio.run(run())


def test_refresh_ahead_serves_the_cached_value_and_expiry_forces_a_reload():
    version = {"n": 0}
    now = [100.0]  # a stepped clock: the test never depends on how long a sleep takes under load

    async def loader(key: str) -> int:
        version["n"] += 1
        return version["n"]

    async def run() -> None:
        cache = RefreshingCache(loader, ttl=0.2, refresh_after=0.05, clock=lambda: now[0])
        assert await cache.get("k") == 1
        now[0] += 0.07
        assert await cache.get("k") == 1  # stale-but-valid: served at once, refresh started
        assert cache.refreshes == 1
        await asyncio.sleep(0)  # let the background refresh run
        await asyncio.sleep(0)
        assert await cache.get("k") == 2 and cache.refreshes == 1 and cache.misses == 1
        now[0] += 0.25
        assert await cache.get("k") == 3 and cache.misses == 2  # past ttl: the request waits for a load

    asyncio.run(run())


def test_a_failed_load_is_not_cached():
    attempts = {"n": 0}

    async def loader(key: str) -> str:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("store down")
        return "ok"

    async def run() -> None:
        cache = RefreshingCache(loader, ttl=10)
        with pytest.raises(RuntimeError):
            await cache.get("k")
        assert await cache.get("k") == "ok"

    asyncio.run(run())


def test_a_flood_of_unknown_keys_never_evicts_known_ones_and_repeats_are_served_from_memory():
    calls = []

    async def loader(key: str) -> str | None:
        calls.append(key)
        return key.upper() if key.startswith("valid") else None

    async def run() -> None:
        cache = RefreshingCache(loader, ttl=60, max_entries=10, max_negative=100)
        for i in range(10):
            await cache.get(f"valid{i}")
        for i in range(5_000):  # unknown keys: their own bounded LRU
            assert await cache.get(f"unknown{i % 200}") is None
        calls.clear()
        for i in range(10):
            assert await cache.get(f"valid{i}") == f"VALID{i}"
        assert calls == []  # every known key is still cached
        assert await cache.get("unknown199") is None and calls == []  # a recent unknown: from memory
        await cache.get("valid10")  # an 11th known key evicts the least recently used one only
        assert len(cache._entries) == 10 and len(cache._negative) == 100

    asyncio.run(run())
