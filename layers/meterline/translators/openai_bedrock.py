"""OpenAI Chat Completions in, Bedrock Converse / ConverseStream out.

Request: `POST <base>/model/<modelId>/converse` (or `/converse-stream`), signed with SigV4 by the
Bedrock upstream (providers/bedrock.py), never by the translator. System/developer messages become
`system` blocks; images must be data URLs (Converse takes bytes or S3, not web URLs: other URLs are a
400); assistant tool calls become `toolUse` blocks and tool messages `toolResult` blocks; tools
become `toolConfig.tools[].toolSpec`; max tokens, temperature, top_p and stop become
`inferenceConfig`. JSON mode has no Converse equivalent: refused with a 400. Anthropic-style
`cache_control` in the OpenAI body (on a content part, a message or a tool — set by the client or by
the prompt-caching lever) becomes a `{"cachePoint": {"type": "default"}}` block right after what it
marks (a `ttl` of 1h carried; 5m is the default), in `system`, the message's content or `toolConfig.tools`.

Response: Converse JSON. Stream: AWS event-stream messages (decoded by the proxy) named
messageStart / contentBlockStart / contentBlockDelta / contentBlockStop / messageStop / metadata;
usage comes from `metadata` (inputTokens EXCLUDES cache reads/writes; see usage.from_bedrock for the
anomaly guard). An `exception:*` message is a provider error mid-stream.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from meterline.errors import redact
from meterline.providers.base import UpstreamRequest
from meterline.sse import Event
from meterline.translators import openai_format as oa
from meterline.translators.base import AWS_EVENTSTREAM, StreamTally, Target, Translated
from meterline.usage import Usage, from_bedrock

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "content_filtered": "content_filter", "guardrail_intervened": "content_filter",
          "model_context_window_exceeded": "length"}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}


def bedrock_url(base_url: str, model: str, stream: bool) -> str:
    return f"{base_url.rstrip('/')}/model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"


def cache_point(control: Any) -> dict[str, Any] | None:
    """The Converse cachePoint for an Anthropic-style `cache_control`, None when there is none."""
    if not isinstance(control, dict) or not control:
        return None
    point: dict[str, Any] = {"type": "default"}
    if control.get("ttl") == "1h":  # 5 minutes is the default; models without extended TTL reject the field
        point["ttl"] = "1h"
    return {"cachePoint": point}


def _with_point(blocks: list[dict[str, Any]], source: dict[str, Any]) -> list[dict[str, Any]]:
    """`blocks` followed by the cachePoint that `source` (a message) asks for, if any."""
    point = cache_point(source.get("cache_control"))
    if point and blocks and "cachePoint" not in blocks[-1]:
        blocks.append(point)
    return blocks


def _texts(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The text blocks, each with the cachePoint that followed it (a point never leads)."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        if "text" in block or ("cachePoint" in block and out and "text" in out[-1]):
            out.append(block)
    return out


def _content(content: Any) -> list[dict[str, Any]]:
    blocks = []
    for part in oa.content_parts(content):
        point = cache_point(part.get("cache_control"))
        if part.get("type") == "text":
            if part.get("text"):
                blocks.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            parsed = oa.parse_data_url(oa.image_url(part))
            if parsed is None:
                raise oa.unsupported("Bedrock", "image_url (web URLs; send a base64 data URL)")
            fmt = _IMAGE_FORMATS.get(parsed[0])
            if fmt is None:
                raise oa.unsupported("Bedrock", f"image type {parsed[0]}")
            blocks.append({"image": {"format": fmt, "source": {"bytes": parsed[1]}}})
        else:
            raise oa.unsupported("Bedrock", f"messages[].content[].type={part.get('type')}")
        if point and blocks and "cachePoint" not in blocks[-1]:
            blocks.append(point)
    return blocks


def to_converse_request(body: dict[str, Any], target: Target) -> dict[str, Any]:
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []

    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_with_point(_texts(_content(message.get("content"))), message))
        elif role == "user":
            oa.append_turn(messages, "user", _with_point(_content(message.get("content")), message))
        elif role == "assistant":
            blocks = _texts(_content(message.get("content")))
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append({"toolUse": {"toolUseId": call.get("id"), "name": fn.get("name"),
                                           "input": oa.tool_arguments(fn.get("arguments"))}})
            oa.append_turn(messages, "assistant", _with_point(blocks, message))
        elif role in ("tool", "function"):
            content = message.get("content")
            text = content if isinstance(content, str) else oa.text_of(content)
            blocks = [{"toolResult": {"toolUseId": message.get("tool_call_id"), "content": [{"text": text}]}}]
            parts = content if isinstance(content, list) else []
            marked = [p for p in parts if isinstance(p, dict) and p.get("cache_control")]
            _with_point(blocks, {"cache_control": marked[-1]["cache_control"]} if marked else {})
            oa.append_turn(messages, "user", _with_point(blocks, message))
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxTokens"] = limit
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stops = oa.stop_sequences(body)
    if stops:
        config["stopSequences"] = stops
    if config:
        out["inferenceConfig"] = config
    tools = oa.tools_of(body)
    if tools:
        specs: list[dict[str, Any]] = []
        for t, raw in zip(tools, body["tools"], strict=True):
            described = {"description": t["description"]} if t["description"] else {}
            specs.append({"toolSpec": {"name": t["name"], **described, "inputSchema": {"json": t["parameters"]}}})
            point = cache_point(raw.get("cache_control"))
            if point:
                specs.append(point)
        tool_config: dict[str, Any] = {"tools": specs}
        choice = oa.tool_choice(body)
        if choice and choice[0] == "tool":
            tool_config["toolChoice"] = {"tool": {"name": choice[1]}}
        elif choice and choice[0] == "required":
            tool_config["toolChoice"] = {"any": {}}
        elif choice and choice[0] == "auto":
            tool_config["toolChoice"] = {"auto": {}}
        if not (choice and choice[0] == "none"):
            out["toolConfig"] = tool_config
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise oa.unsupported("Bedrock", "response_format")
    tier = oa.service_tier(body, "Bedrock", {"auto": None, "default": "default", "flex": "flex",
                                             "priority": "priority"})
    if tier:
        out["serviceTier"] = {"type": tier}
    return out


def bedrock_service_tier(payload: Any) -> str | None:
    """The tier Bedrock says it served (`serviceTier.type` on the response / metadata event)."""
    tier = payload.get("serviceTier") if isinstance(payload, dict) else None
    value = tier.get("type") if isinstance(tier, dict) else None
    return value.lower() if isinstance(value, str) and value else None


class OpenAIChatToBedrock(StreamTally):
    stream_framing = AWS_EVENTSTREAM

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self._client_wants_usage = False
        self._model_name = ""
        self._writer: oa.ChunkWriter | None = None
        self._usage: Usage | None = None
        self._tool_index: dict[int, int] = {}
        self._stopped = False
        self._finish: str | None = None
        self._output_units = 0

    def build_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        out = to_converse_request(body, target)
        stream = bool(body.get("stream"))
        self._client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._model_name = target.model
        headers = {"content-type": "application/json",
                   "accept": "application/vnd.amazon.eventstream" if stream else "application/json"}
        request = UpstreamRequest("POST", bedrock_url(target.base_url, target.model, stream), headers,
                                  json.dumps(out, separators=(",", ":")).encode(), stream)
        request.signing = ("bedrock", target.options.get("region") or "us-east-1")
        return request

    def translate_response(self, raw: bytes) -> Translated:
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("provider response is not a JSON object")
        usage = from_bedrock(payload.get("usage"))
        texts, calls = [], []
        message = (payload.get("output") or {}).get("message") or {}
        for block in message.get("content") or []:
            if "text" in block:
                texts.append(block["text"])
            elif "toolUse" in block:
                use = block["toolUse"]
                calls.append(oa.tool_call(use.get("toolUseId", ""), use.get("name", ""),
                                          json.dumps(use.get("input") or {}, separators=(",", ":"))))
        body = oa.completion(response_id="bedrock-" + str(payload.get("metrics", {}).get("latencyMs", "0")),
                             model=self._model_name, text="".join(texts), tool_calls=calls,
                             finish_reason=FINISH.get(payload.get("stopReason") or "", "stop"), usage=usage)
        return Translated(json.dumps(body, separators=(",", ":")).encode(), usage, None,
                          bedrock_service_tier(payload))

    def error_message(self, raw: bytes) -> str:
        try:
            payload = json.loads(raw)
            message = payload.get("message") or payload.get("Message")
            if not message:
                raise ValueError
        except Exception:
            message = raw[:500].decode("utf-8", errors="replace")
        return redact(str(message)) or "The provider returned an error."

    # -- streaming -----------------------------------------------------------------------------
    def stream_event(self, event: Event) -> list[bytes]:
        try:
            data = json.loads(event.data or "{}")
        except ValueError:
            return []
        kind = event.event or ""
        if kind.startswith("exception:"):
            message = data.get("message") or data.get("Message") or kind.split(":", 1)[1]
            return [oa.error_event(redact(str(message)), "upstream_error")]
        if self._writer is None:
            self._writer = oa.ChunkWriter("bedrock-stream", self._model_name)
            first = [self._writer.delta({"role": "assistant", "content": ""})]
        else:
            first = []
        writer = self._writer
        if kind == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if use:
                index = self._tool_index[data.get("contentBlockIndex", 0)] = len(self._tool_index)
                self._output_units += 1
                return [*first, writer.delta({"tool_calls": [oa.tool_call(use.get("toolUseId", ""),
                                                                          use.get("name", ""), "", index)]})]
        elif kind == "contentBlockDelta":
            delta = data.get("delta") or {}
            if delta.get("text"):
                self._output_units += 1
                return [*first, writer.delta({"content": delta["text"]})]
            if "toolUse" in delta and data.get("contentBlockIndex") in self._tool_index:
                self._output_units += 1
                index = self._tool_index[data["contentBlockIndex"]]
                return [*first, writer.delta({"tool_calls": [{"index": index, "function": {
                    "arguments": (delta.get("toolUse") or {}).get("input", "")}}]})]
        elif kind == "messageStop":
            self._stopped = True
            self._finish = FINISH.get(data.get("stopReason") or "", "stop")
            return [*first, writer.delta({}, self._finish)]
        elif kind == "metadata":
            self._usage = from_bedrock(data.get("usage"))
            self._service_tier = bedrock_service_tier(data) or self._service_tier
        return first

    @property
    def stream_complete(self) -> bool:
        return self._stopped and self._usage is not None

    def stream_final(self) -> list[bytes]:
        out = []
        if self._client_wants_usage and self._usage is not None and self._writer is not None:
            out.append(self._writer.usage(self._usage))
        return [*out, b"data: [DONE]\n\n"]

    def stream_error(self, message: str, code: str) -> bytes:
        return oa.error_event(message, code)
