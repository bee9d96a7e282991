"""Anthropic Messages in, Anthropic Messages out: `POST /v1/messages` and `/v1/messages/count_tokens`.

The body passes through untouched (cache_control, thinking, tools, betas) except `model`, which loses
its `provider/` prefix. The client's credentials never reach Anthropic: the request carries the
workspace's stored key as `x-api-key`, the client's `anthropic-version` (or the current one) and its
`anthropic-beta`, nothing else. Every streamed event passes through unchanged, the provider's own
`message_stop` included: it is held back and forwarded byte for byte after the ledger record is
durable. Usage: `message_start` overlaid with the last
(cumulative) `message_delta`.
"""

from __future__ import annotations

import json
from typing import Any

from meterline.errors import redact
from meterline.providers.base import UpstreamRequest
from meterline.sse import Event, encode
from meterline.translators.base import StreamTally, Target, Translated
from meterline.usage import Usage, estimate_tokens, from_anthropic, merge_anthropic_stream

ANTHROPIC_VERSION = "2023-06-01"
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def anthropic_url(base_url: str, path: str) -> str:
    """`<base>/v1/<path>`; a base that already ends in /v1 is not doubled."""
    base = base_url.rstrip("/")
    return f"{base}/{path}" if base.endswith("/v1") else f"{base}/v1/{path}"


def error_text(raw: bytes) -> str:
    """The message of an Anthropic error body ({"type": "error", "error": {...}}), or the raw text."""
    try:
        payload = json.loads(raw)
        error = payload.get("error")
        message = error.get("message") if isinstance(error, dict) else error or payload.get("message")
        if not message:
            raise ValueError
    except Exception:
        message = raw[:500].decode("utf-8", errors="replace")
    return str(message)


class AnthropicTally(StreamTally):
    """Anthropic streams report usage in two places: `message_start` (input and cache counts) and
    each `message_delta` (cumulative output, sometimes input again). Usage is the last delta over
    the start, field by field."""

    _start_usage: dict[str, Any] | None = None
    _delta_usage: dict[str, Any] | None = None

    @property
    def stream_usage(self) -> Usage | None:
        return merge_anthropic_stream(self._start_usage, self._delta_usage)

    @property
    def stream_service_tier(self) -> str | None:
        usage = self._delta_usage or self._start_usage or {}
        return usage.get("service_tier")


class AnthropicToAnthropic(AnthropicTally):
    def __init__(self, headers: dict[str, str] | None = None, *, path: str = "messages") -> None:
        self._headers = headers or {}
        self._path = path  # "messages" or "messages/count_tokens"
        self._secrets: tuple[str, ...] = ()
        self._model: str | None = None
        self._done = False
        self._output_units = 0
        self._stop_raw: bytes | None = None

    def build_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        out = dict(body)
        out["model"] = target.model
        headers = {"content-type": "application/json",
                   "anthropic-version": self._headers.get("anthropic-version") or ANTHROPIC_VERSION,
                   "accept": "text/event-stream" if out.get("stream") else "application/json"}
        if self._headers.get("anthropic-beta"):
            headers["anthropic-beta"] = self._headers["anthropic-beta"]
        if target.api_key:
            headers["x-api-key"] = target.api_key
            self._secrets = (target.api_key,)
        return UpstreamRequest("POST", anthropic_url(target.base_url, self._path), headers,
                               json.dumps(out, separators=(",", ":")).encode(), bool(out.get("stream")),
                               self._secrets)

    def translate_response(self, raw: bytes) -> Translated:
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("provider response is not a JSON object")
        if self._path != "messages":
            return Translated(raw, None, None, None)  # count_tokens: an estimate, not spend
        usage = payload.get("usage")
        return Translated(raw, from_anthropic(usage), payload.get("model"),
                          usage.get("service_tier") if isinstance(usage, dict) else None)

    def error_message(self, raw: bytes) -> str:
        return redact(error_text(raw), *self._secrets) or "The provider returned an error."

    # -- streaming -----------------------------------------------------------------------------
    def stream_event(self, event: Event) -> list[bytes]:
        kind = event.event
        if kind in (None, "message_start", "message_delta", "error") and event.data:
            try:
                data = json.loads(event.data)
            except ValueError:
                data = {}
            kind = kind or data.get("type")
            if kind == "message_start":
                message = data.get("message") or {}
                self._start_usage = message.get("usage")
                self._model = message.get("model")
            elif kind == "message_delta" and isinstance(data.get("usage"), dict):
                self._delta_usage = data["usage"]
        if kind == "message_stop":
            self._done = True
            self._stop_raw = event.raw
            return []  # held back: forwarded unchanged after the ledger record is durable
        if kind == "content_block_delta" and event.data:
            # ~ one token per 4 characters of streamed text: the estimate if usage never arrives.
            self._output_units += max(1, estimate_tokens(len(event.data) - 60))
        return [event.raw]

    def stream_final(self) -> list[bytes]:
        return [self._stop_raw or _MESSAGE_STOP]

    def stream_error(self, message: str, code: str) -> bytes:
        # The Anthropic SDKs raise APIStatusError-like errors on an `error` event.
        return encode(json.dumps({"type": "error", "error": {"type": "api_error", "message": message}}), "error")
