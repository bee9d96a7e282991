"""Translator interface: one implementation per (input API, provider) pair, created per request
so that stream state lives on it. Translators map requests, responses, stream events and usage;
they never compute money (that happens once, after translation, in meterline.gateway.metering).

Streams: the proxy decodes the provider's framing into `Event`s and feeds them one by one. Most
providers speak SSE; a translator whose provider does not (Bedrock's AWS event stream) says so in
`stream_framing`, and each decoded message arrives as an Event whose `event` is the message's
`:event-type` (or `exception:<type>`) and whose `data` is its JSON payload.

Requests a translator cannot express for its provider raise `InvalidRequestError` from
`build_request` (a clear 400 in the caller's dialect, nothing sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # Provider-specific settings from the provider entry (Azure api_version, Bedrock region, ...).
    options: dict[str, Any] = field(default_factory=dict)
    # The model's maximum output from the catalog, for APIs that require a max (Anthropic).
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class Translated:
    body: bytes  # what the client receives
    usage: Usage | None
    model: str | None  # model the provider says it used
    service_tier: str | None


SSE = "sse"
AWS_EVENTSTREAM = "aws-eventstream"


class Translator(Protocol):
    # Optional attribute `stream_framing` (SSE when absent): how the provider frames its stream.

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


class StreamTally:
    """Stream bookkeeping shared by every translator: what the proxy reads once a stream ends.

    Translators set `_usage` (the provider's, when it arrived), `_output_units` (content deltas seen,
    the estimate's basis if usage never comes), `_model`, `_service_tier` and `_done` (the provider's
    own end-of-stream event arrived) as events pass, and override a property only where the provider
    needs more (Anthropic merges message_start with the last message_delta).
    """

    _usage: Usage | None = None
    _output_units: int = 0
    _model: str | None = None
    _service_tier: str | None = None
    _done: bool = False

    @property
    def stream_usage(self) -> Usage | None:
        return self._usage

    @property
    def stream_output_units(self) -> int:
        return self._output_units

    @property
    def stream_model(self) -> str | None:
        return self._model

    @property
    def stream_service_tier(self) -> str | None:
        return self._service_tier

    @property
    def stream_complete(self) -> bool:
        return self._done
