"""OpenAI Embeddings in, OpenAI(-compatible) or Azure OpenAI Embeddings out. Never streamed.

The body passes through (model without its `provider/` prefix); usage is `usage.prompt_tokens`
(embeddings have no output tokens)."""

from __future__ import annotations

import json
from typing import Any

from meterline.errors import redact
from meterline.providers.base import UpstreamRequest
from meterline.sse import Event
from meterline.translators.base import Target, Translated
from meterline.translators.openai_format import error_event
from meterline.translators.openai_hosts import endpoint
from meterline.translators.responses_openai import openai_error_text
from meterline.usage import Usage, from_openai_embeddings


class EmbeddingsToOpenAI:
    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self._secrets: tuple[str, ...] = ()

    def build_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        out = dict(body)
        out["model"] = target.model
        out.pop("stream", None)
        url, auth = endpoint(target, "embeddings")
        self._secrets = (target.api_key,) if target.api_key else ()
        return UpstreamRequest("POST", url, {"content-type": "application/json", "accept": "application/json", **auth},
                               json.dumps(out, separators=(",", ":")).encode(), False, self._secrets)

    def translate_response(self, raw: bytes) -> Translated:
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("provider response is not a JSON object")
        return Translated(raw, from_openai_embeddings(payload.get("usage")), payload.get("model"), None)

    def error_message(self, raw: bytes) -> str:
        return redact(openai_error_text(raw), *self._secrets) or "The provider returned an error."

    # Embeddings are never streamed; the stream surface exists for the protocol only.
    def stream_event(self, event: Event) -> list[bytes]:
        return [event.raw]

    stream_usage: Usage | None = None
    stream_output_units = 0
    stream_model: str | None = None
    stream_service_tier: str | None = None
    stream_complete = True

    def stream_final(self) -> list[bytes]:
        return []

    def stream_error(self, message: str, code: str) -> bytes:
        return error_event(message, code)
