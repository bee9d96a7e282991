"""OpenAI Chat Completions in, OpenAI(-compatible) or Azure OpenAI Chat Completions out.

The host decides only the URL and the auth header (translators/openai_hosts.py): Azure OpenAI
speaks the same wire format on `/openai/deployments/<deployment>/chat/completions?api-version=`.

Requests pass through with two changes: the model loses its `provider/` prefix, and streaming
requests get `stream_options.include_usage` so the provider reports usage. If the client did not
ask for usage, the usage-only chunk (`choices: []`) is stripped, so the client sees exactly the
stream it would have seen without the gateway. Usage is read wherever it appears (some compatible
providers put it on a chunk with choices); the last one wins. Every other byte passes unchanged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from meterline import jsonc
from meterline.errors import redact
from meterline.providers.base import UpstreamRequest
from meterline.sse import Event, encode
from meterline.translators.base import StreamTally, Target, Translated
from meterline.translators.openai_hosts import endpoint
from meterline.usage import Usage, from_openai_chat

_USAGE_MARK = '"usage"'
# A null `usage` member with its separating comma (compact or spaced JSON).
_NULL_USAGE = re.compile(r'\s*,\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*')
# Chunks that carry no token: the opening role chunk (empty content) and the closing empty delta.
_EMPTY_DELTAS = ('"content":""', '"content": ""', '"delta":{}', '"delta": {}')


def _carries_tokens(data: str) -> bool:
    return not any(mark in data for mark in _EMPTY_DELTAS)


class OpenAIChatToOpenAI(StreamTally):
    def __init__(self) -> None:
        self._client_wants_usage = False
        self._usage: Usage | None = None
        self._output_units = 0  # ~one token per content chunk: the estimate when usage never came
        self._model: str | None = None
        self._service_tier: str | None = None
        self._done = False
        self._secrets: tuple[str, ...] = ()

    # -- request -------------------------------------------------------------------------------
    def build_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        out = dict(body)
        out["model"] = target.model
        if out.get("stream"):
            options = dict(out.get("stream_options") or {})
            self._client_wants_usage = bool(options.get("include_usage"))
            options["include_usage"] = True
            out["stream_options"] = options
        url, auth = endpoint(target, "chat/completions")
        headers = {"content-type": "application/json", "accept": "application/json", **auth}
        if out.get("stream"):
            headers["accept"] = "text/event-stream"
        if target.api_key:
            self._secrets = (target.api_key,)
        return UpstreamRequest(
            method="POST",
            url=url,
            headers=headers,
            body=jsonc.dumps(out),
            stream=bool(out.get("stream")),
            secrets=self._secrets,
        )

    # -- non-streaming -------------------------------------------------------------------------
    def translate_response(self, raw: bytes) -> Translated:
        payload = json.loads(raw)  # not orjson: a provider's integer beyond 64 bits must stay exact
        if not isinstance(payload, dict):
            raise ValueError("provider response is not a JSON object")
        return Translated(
            body=raw,
            usage=from_openai_chat(payload.get("usage")),
            model=payload.get("model"),
            service_tier=payload.get("service_tier"),
        )

    def error_message(self, raw: bytes) -> str:
        try:
            payload = json.loads(raw)
            message = payload["error"]["message"] if isinstance(payload.get("error"), dict) else payload["error"]
        except Exception:
            message = raw[:500].decode("utf-8", errors="replace")
        return redact(str(message), *self._secrets) or "The provider returned an error."

    # -- streaming -----------------------------------------------------------------------------
    def stream_event(self, event: Event) -> list[bytes]:
        data = event.data
        if data is None:
            return [event.raw]
        if data.strip() == "[DONE]":
            self._done = True
            self._done_raw = event.raw
            return []  # held back: forwarded unchanged after the ledger record is durable
        if _USAGE_MARK not in data or _NULL_USAGE.search(data):
            self._output_units += _carries_tokens(data)
            if not self._client_wants_usage:
                # include_usage was the gateway's: OpenAI then adds `"usage":null` to every chunk,
                # which a client that did not ask would never see.
                return [_NULL_USAGE.sub("", event.raw.decode()).encode()]
            return [event.raw]
        try:
            chunk = json.loads(data)
        except ValueError:
            return [event.raw]
        usage = from_openai_chat(chunk.get("usage")) if isinstance(chunk, dict) else None
        if usage is None:
            self._output_units += _carries_tokens(data)
            return [event.raw]
        self._usage = usage
        self._model = chunk.get("model") or self._model
        self._service_tier = chunk.get("service_tier") or self._service_tier
        if chunk.get("choices"):
            self._output_units += _carries_tokens(data)
            return [event.raw]
        return [event.raw] if self._client_wants_usage else []

    def stream_final(self) -> list[bytes]:
        return [getattr(self, "_done_raw", None) or b"data: [DONE]\n\n"]

    def stream_error(self, message: str, code: str) -> bytes:
        # The OpenAI SDKs raise APIError on a stream event carrying "error".
        return encode(json.dumps({"error": {"message": message, "type": "upstream_error", "code": code,
                                            "param": None}}))
