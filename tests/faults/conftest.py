"""Fault-injection tier: the gateway on uvicorn with its store behind a proxy that delays, holds or
pauses chosen calls (tests/fakes/slow_store.py), and fake upstreams that misbehave."""

from __future__ import annotations

import pytest

from tests.fakes.slow_store import SlowStore, build_app
from tests.servers import ServerThread


@pytest.fixture
def slow_store(moto):
    store = SlowStore(moto.endpoint)
    with ServerThread(build_app(store)) as server:
        yield store, server.url
    store.paused.clear()
