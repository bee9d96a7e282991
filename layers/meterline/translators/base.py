"""Translator interface: one implementation per (input API, provider) pair, created per request
so that stream state lives on it. Translators map requests, responses, stream events and usage;
they never compute money (that happens once, after translation, in meterline.gateway.metering)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from meterline.providers.base import UpstreamRequest
from meterline.sse import Event
from meterline.usage import Usage


@dataclass(frozen=True)
class Target:
    """Where a request goes: resolved by routing, consumed by the translator."""

    provider: str  # provider entry name ("openai", "groq", "sim")
    kind: str  # provider kind ("openai", "openai_compatible", "sim")
    base_url: str
    model: str  # the model name the provider expects
    api_key: str | None


@dataclass(frozen=True)
class Translated:
    body: bytes  # what the client receives
    usage: Usage | None
    model: str | None  # model the provider says it used
    service_tier: str | None


class Translator(Protocol):
    def build_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest: ...

    def translate_response(self, raw: bytes) -> Translated: ...

    def error_message(self, raw: bytes) -> str: ...

    # Streaming: feed each upstream event, forward what it returns, in order.
    def stream_event(self, event: Event) -> list[bytes]: ...

    @property
    def stream_usage(self) -> Usage | None: ...

    @property
    def stream_output_units(self) -> int: ...

    @property
    def stream_model(self) -> str | None: ...

    @property
    def stream_service_tier(self) -> str | None: ...

    @property
    def stream_complete(self) -> bool: ...

    def stream_final(self) -> list[bytes]: ...

    def stream_error(self, message: str, code: str) -> bytes: ...
