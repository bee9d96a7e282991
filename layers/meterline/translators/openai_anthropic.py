"""OpenAI Chat Completions in, Anthropic Messages out (and back).

Request: system/developer messages become the top-level `system`; user image parts become
`image` blocks (base64 from data URLs, `url` sources otherwise); assistant `tool_calls` become
`tool_use` blocks and `tool` messages `tool_result` blocks (consecutive results share one user
turn, as Anthropic requires alternating roles); tools, tool_choice, stop, temperature, top_p and
`user` map to their Anthropic names. `max_tokens` is required by Anthropic: the request's, else the
model's catalog maximum. JSON mode has no equivalent in the Messages API: refused with a 400.
Anthropic-style `cache_control` in the OpenAI body (on a content part, on a whole message, or on a
tool — set by the client or by the prompt-caching lever) is carried onto the Anthropic block it
marks: the part's block, the message's last block, the tool.

Response and stream: text blocks become `content`, tool_use blocks `tool_calls` (streamed as
`tool_calls` deltas with incremental `arguments`), thinking blocks are not forwarded, and
`stop_reason` maps to `finish_reason`. Usage is Anthropic's (input EXCLUDES cache tokens; stream
usage is `message_start` overlaid with the last cumulative `message_delta`); the OpenAI-shaped
usage shown to the client counts cache tokens inside `prompt_tokens`, as OpenAI does.
"""

from __future__ import annotations

import json
from typing import Any

from meterline.errors import redact
from meterline.providers.base import UpstreamRequest
from meterline.sse import Event
from meterline.translators import openai_format as oa
from meterline.translators.anthropic_anthropic import AnthropicTally, anthropic_url, error_text
from meterline.translators.base import Target, Translated
from meterline.usage import from_anthropic

ANTHROPIC_VERSION = "2023-06-01"
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "refusal": "content_filter", "pause_turn": "stop", "model_context_window_exceeded": "length"}


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = oa.image_url(part)
    parsed = oa.parse_data_url(url)
    if parsed:
        return {"type": "image", "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _marked(block: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """`block` with the `cache_control` of the OpenAI part/message/tool it came from, if any."""
    if isinstance(source.get("cache_control"), dict):
        return {**block, "cache_control": source["cache_control"]}
    return block


def _mark_last(blocks: list[dict[str, Any]], message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message-level `cache_control` marks the message's last block."""
    if blocks and isinstance(message.get("cache_control"), dict):
        blocks[-1] = _marked(blocks[-1], message)
    return blocks


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    blocks = []
    for part in oa.content_parts(content):
        kind = part.get("type")
        if kind == "text":
            blocks.append(_marked({"type": "text", "text": part.get("text", "")}, part))
        elif kind == "image_url":
            blocks.append(_marked(_image_block(part), part))
        else:
            raise oa.unsupported("Anthropic", f"messages[].content[].type={kind}")
    return blocks


def _part_control(content: Any) -> dict[str, Any]:
    """The last `cache_control` among a flattened content's parts (as a source for `_marked`)."""
    controls = [p for p in oa.content_parts(content) if isinstance(p.get("cache_control"), dict)] \
        if isinstance(content, list) else []
    return controls[-1] if controls else {}


def to_messages_request(body: dict[str, Any], target: Target) -> dict[str, Any]:
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []

    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_mark_last([_marked({"type": "text", "text": p.get("text", "")}, p)
                                      for p in oa.content_parts(message.get("content")) if p.get("type") == "text"],
                                     message))
        elif role == "user":
            oa.append_turn(messages, "user", _mark_last(_user_blocks(message.get("content")), message))
        elif role == "assistant":
            content = message.get("content")
            blocks: list[dict[str, Any]] = [_marked({"type": "text", "text": t}, _part_control(content))
                                            for t in [oa.text_of(content)] if t]
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                               "input": oa.tool_arguments(fn.get("arguments"))})
            oa.append_turn(messages, "assistant", _mark_last(blocks, message))
        elif role in ("tool", "function"):
            content = message.get("content")
            result = content if isinstance(content, str) else oa.text_of(content)
            block = {"type": "tool_result", "tool_use_id": message.get("tool_call_id"), "content": result}
            oa.append_turn(messages, "user", [_marked(_marked(block, _part_control(content)), message)])
    out: dict[str, Any] = {"model": target.model, "messages": messages, "max_tokens": oa.max_tokens(body, target)}
    if system:
        out["system"] = system
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = oa.stop_sequences(body)
    if stops:
        out["stop_sequences"] = stops
    tools = oa.tools_of(body)
    if tools:
        out["tools"] = [_marked({"name": t["name"], "description": t["description"] or "",
                                 "input_schema": t["parameters"]}, raw)
                        for t, raw in zip(tools, body["tools"], strict=True)]
    choice = oa.tool_choice(body)
    if choice:
        mode, name = choice
        out["tool_choice"] = ({"type": "tool", "name": name} if mode == "tool"
                              else {"type": {"auto": "auto", "none": "none", "required": "any"}.get(mode, "auto")})
    if body.get("parallel_tool_calls") is False and tools:
        out.setdefault("tool_choice", {"type": "auto"})["disable_parallel_tool_use"] = True
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise oa.unsupported("Anthropic", "response_format")
    tier = oa.service_tier(body, "Anthropic", {"auto": "auto", "default": "standard_only"})
    if tier:
        out["service_tier"] = tier
    if body.get("stream"):
        out["stream"] = True
    return out


class OpenAIChatToAnthropic(AnthropicTally):
    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self._headers = headers or {}
        self._secrets: tuple[str, ...] = ()
        self._client_wants_usage = False
        # stream state
        self._writer: oa.ChunkWriter | None = None
        self._model: str | None = None
        self._tool_index: dict[int, int] = {}  # anthropic block index -> openai tool_calls index
        self._finish: str | None = None
        self._done = False
        self._output_units = 0

    def build_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        out = to_messages_request(body, target)
        self._client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION,
                   "accept": "text/event-stream" if out.get("stream") else "application/json"}
        if target.api_key:
            headers["x-api-key"] = target.api_key
            self._secrets = (target.api_key,)
        return UpstreamRequest("POST", anthropic_url(target.base_url, "messages"), headers,
                               json.dumps(out, separators=(",", ":")).encode(), bool(out.get("stream")),
                               self._secrets)

    def translate_response(self, raw: bytes) -> Translated:
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("provider response is not a JSON object")
        usage = from_anthropic(payload.get("usage"))
        texts, calls = [], []
        for block in payload.get("content") or []:
            if block.get("type") == "text":
                texts.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                calls.append(oa.tool_call(block.get("id", ""), block.get("name", ""),
                                          json.dumps(block.get("input") or {}, separators=(",", ":"))))
        body = oa.completion(response_id=payload.get("id", "msg"), model=payload.get("model", ""),
                             text="".join(texts), tool_calls=calls,
                             finish_reason=FINISH.get(payload.get("stop_reason") or "", "stop"), usage=usage)
        return Translated(json.dumps(body, separators=(",", ":")).encode(), usage, payload.get("model"),
                          payload.get("usage", {}).get("service_tier") if isinstance(payload.get("usage"), dict)
                          else None)

    def error_message(self, raw: bytes) -> str:
        return redact(error_text(raw), *self._secrets) or "The provider returned an error."

    # -- streaming -----------------------------------------------------------------------------
    def stream_event(self, event: Event) -> list[bytes]:
        if not event.data:
            return []
        try:
            data = json.loads(event.data)
        except ValueError:
            return []
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = data.get("message") or {}
            self._start_usage = message.get("usage")
            self._model = message.get("model")
            self._writer = oa.ChunkWriter(message.get("id", "msg"), self._model or "")
            return [self._writer.delta({"role": "assistant", "content": ""})]
        writer = self._writer or oa.ChunkWriter("msg", "")
        self._writer = writer
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index[data.get("index", 0)] = len(self._tool_index)
                self._output_units += 1
                return [writer.delta({"tool_calls": [oa.tool_call(block.get("id", ""), block.get("name", ""), "",
                                                                  index)]})]
            if block.get("type") == "text" and block.get("text"):
                self._output_units += 1
                return [writer.delta({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                self._output_units += 1
                return [writer.delta({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta" and data.get("index") in self._tool_index:
                self._output_units += 1
                index = self._tool_index[data["index"]]
                return [writer.delta({"tool_calls": [{"index": index,
                                                      "function": {"arguments": delta.get("partial_json", "")}}]})]
            return []
        if kind == "message_delta":
            if isinstance(data.get("usage"), dict):
                self._delta_usage = data["usage"]
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self._finish = FINISH.get(reason, "stop")
                return [writer.delta({}, self._finish)]
            return []
        if kind == "message_stop":
            self._done = True
            return []
        if kind == "error":
            message = (data.get("error") or {}).get("message") or "The provider reported a stream error."
            return [oa.error_event(redact(str(message), *self._secrets), "upstream_error")]
        return []  # ping, content_block_stop, unknown future events

    def stream_final(self) -> list[bytes]:
        out = []
        usage = self.stream_usage
        if self._client_wants_usage and usage is not None and self._writer is not None:
            out.append(self._writer.usage(usage))
        return [*out, b"data: [DONE]\n\n"]

    def stream_error(self, message: str, code: str) -> bytes:
        return oa.error_event(message, code)
