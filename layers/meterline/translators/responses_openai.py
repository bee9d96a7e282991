"""OpenAI Responses API in, OpenAI(-compatible) or Azure OpenAI Responses API out.

The body passes through (model without its `provider/` prefix). Usage is the response's `usage`
(input_tokens includes cached; output_tokens includes reasoning). A stream's usage arrives in the
terminal event (`response.completed`, `response.incomplete` or `response.failed`), which is held back
and sent after the ledger record is durable; every other event passes through unchanged.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from meterline.errors import redact
from meterline.providers.base import UpstreamRequest
from meterline.sse import Event, encode
from meterline.translators.base import StreamTally, Target, Translated
from meterline.translators.openai_hosts import endpoint
from meterline.usage import (
    Usage,
    from_openai_responses,
    openai_images,
    openai_tool_calls,
    openai_tool_usage,
    tool_calls,
)

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def openai_error_text(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
        error = payload["error"]
        message = error["message"] if isinstance(error, dict) else error
    except Exception:
        message = raw[:500].decode("utf-8", errors="replace")
    return str(message)


def _usage(response: dict[str, Any], tools: Any = None) -> Usage | None:
    """Token usage plus the server-side tool calls billed per call and the images billed per image
    (from the response's output items; the image tool's config from the request's `tools`)."""
    usage = from_openai_responses(response.get("usage"))
    if usage is None:
        return None
    output = response.get("output")
    calls = openai_tool_calls(output)
    images = openai_images(output, tools)
    # Hosted tools' own usage, where the response reports it: the image tool's tokens (priced at the
    # image model's token rates instead of per image) and the billable web searches.
    image_gen, searches = openai_tool_usage(response.get("tool_usage"), tools)
    if searches is not None:
        calls = tool_calls({**dict(calls), "web_search": searches})
    if calls or images or image_gen:
        usage = replace(usage, tool_calls=calls, images=images, images_in_tokens=image_gen is not None,
                        iterations=(*usage.iterations, image_gen) if image_gen else usage.iterations)
    return usage


class ResponsesToOpenAI(StreamTally):
    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self._secrets: tuple[str, ...] = ()
        self._usage: Usage | None = None
        self._model: str | None = None
        self._service_tier: str | None = None
        self._terminal: list[bytes] = []
        self._output_units = 0
        self._tools: Any = None

    def build_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        out = dict(body)
        out["model"] = target.model
        self._tools = out.get("tools")  # the image tool's model, quality and size price its images
        url, auth = endpoint(target, "responses")
        stream = bool(out.get("stream"))
        headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json",
                   **auth}
        self._secrets = (target.api_key,) if target.api_key else ()
        return UpstreamRequest("POST", url, headers, json.dumps(out, separators=(",", ":")).encode(), stream,
                               self._secrets)

    def translate_response(self, raw: bytes) -> Translated:
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("provider response is not a JSON object")
        return Translated(raw, _usage(payload, self._tools), payload.get("model"), payload.get("service_tier"))

    def error_message(self, raw: bytes) -> str:
        return redact(openai_error_text(raw), *self._secrets) or "The provider returned an error."

    def stream_event(self, event: Event) -> list[bytes]:
        kind = event.event
        if kind is None and event.data and '"type"' in event.data:
            try:
                kind = json.loads(event.data).get("type")
            except ValueError:
                kind = None
        if kind == "response.output_text.delta":
            self._output_units += 1
        if kind in TERMINAL and event.data:
            try:
                response = json.loads(event.data).get("response") or {}
            except ValueError:
                response = {}
            self._usage = _usage(response, self._tools)
            self._model = response.get("model") or self._model
            self._service_tier = response.get("service_tier") or self._service_tier
            self._terminal.append(event.raw)
            return []  # held back: sent after the ledger record is durable
        return [event.raw]

    @property
    def stream_complete(self) -> bool:
        return bool(self._terminal)

    def stream_final(self) -> list[bytes]:
        return list(self._terminal)

    def stream_error(self, message: str, code: str) -> bytes:
        # The OpenAI SDKs raise APIError on an `error` event of a Responses stream.
        return encode(json.dumps({"type": "error", "code": code, "message": message, "param": None}), "error")
