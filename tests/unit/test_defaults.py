"""Defaults that are promises (README): pinned so that a change is a decision, not an accident."""

from __future__ import annotations

from meterline.config import Settings


def test_revocation_takes_effect_within_30_s_by_default(monkeypatch):
    monkeypatch.delenv("METERLINE_KEY_CACHE_TTL", raising=False)
    assert Settings().key_cache_ttl_s == Settings.from_env().key_cache_ttl_s == 30.0


def test_request_deadline_is_below_lambdas_15_minutes_and_the_store_is_bounded(monkeypatch):
    for name in ("METERLINE_REQUEST_DEADLINE", "METERLINE_STORE_MAX_IN_FLIGHT", "METERLINE_EGRESS_ALLOW"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.request_deadline_s < 900 and settings.store_max_in_flight == 16
    assert settings.egress_allow_hosts == ()  # nothing local reachable on AWS unless the owner says so
