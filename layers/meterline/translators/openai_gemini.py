"""OpenAI Chat Completions in, Gemini `generateContent` / `streamGenerateContent?alt=sse` out.

Request: system/developer messages become `systemInstruction`; user/assistant turns become
`contents` with roles user/model; images become `inlineData` (data URLs) or `fileData` (other
URLs); assistant tool calls become `functionCall` parts and tool messages `functionResponse` parts
(named after the call they answer); tools become `functionDeclarations`; tool_choice maps to
`functionCallingConfig`; max tokens, temperature, top_p, stop, n and JSON mode
(`response_format` json_object / json_schema -> responseMimeType + responseJsonSchema) map to
`generationConfig`. The key goes in `x-goog-api-key`, never in the URL.

Response/stream: text parts become content, functionCall parts tool_calls (Gemini sends each call
whole, so a stream emits it as one delta), thought parts are not forwarded, `finishReason` maps to
finish_reason. Gemini's stream has no terminator: it is complete once a chunk carries a
finishReason; usage is the last chunk's `usageMetadata` (prompt includes cached; output is
candidates + thoughts).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from meterline.errors import redact
from meterline.providers.base import UpstreamRequest
from meterline.sse import Event
from meterline.translators import openai_format as oa
from meterline.translators.base import StreamTally, Target, Translated
from meterline.usage import Usage, from_gemini, gemini_tool_calls, tool_calls

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
          "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
          "IMAGE_SAFETY": "content_filter", "MALFORMED_FUNCTION_CALL": "stop"}
_MIME_BY_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
                "gif": "image/gif", "heic": "image/heic", "pdf": "application/pdf"}


def gemini_url(base_url: str, model: str, stream: bool) -> str:
    base = base_url.rstrip("/")
    if not base.endswith(("/v1beta", "/v1")):
        base += "/v1beta"
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{base}/models/{quote(model, safe='')}:{method}"


def _image_part(part: dict[str, Any]) -> dict[str, Any]:
    url = oa.image_url(part)
    parsed = oa.parse_data_url(url)
    if parsed:
        return {"inlineData": {"mimeType": parsed[0], "data": parsed[1]}}
    ext = url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    return {"fileData": {"mimeType": _MIME_BY_EXT.get(ext, "image/jpeg"), "fileUri": url}}


def _parts(content: Any) -> list[dict[str, Any]]:
    parts = []
    for part in oa.content_parts(content):
        if part.get("type") == "text":
            parts.append({"text": part.get("text", "")})
        elif part.get("type") == "image_url":
            parts.append(_image_part(part))
        else:
            raise oa.unsupported("Gemini", f"messages[].content[].type={part.get('type')}")
    return parts


def to_gemini_request(body: dict[str, Any], target: Target) -> dict[str, Any]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name

    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(p for p in _parts(message.get("content")) if "text" in p)
        elif role == "user":
            oa.append_turn(contents, "user", _parts(message.get("content")), field="parts")
        elif role == "assistant":
            parts = [p for p in _parts(message.get("content")) if p.get("text")]
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                names[call.get("id", "")] = fn.get("name", "")
                parts.append({"functionCall": {"name": fn.get("name"), "args": oa.tool_arguments(fn.get("arguments"))}})
            oa.append_turn(contents, "model", parts, field="parts")
        elif role in ("tool", "function"):
            content = message.get("content")
            text = content if isinstance(content, str) else oa.text_of(content)
            try:
                response = json.loads(text)
            except ValueError:
                response = None
            if not isinstance(response, dict):
                response = {"result": text}
            name = names.get(message.get("tool_call_id", ""), message.get("name", ""))
            part = {"functionResponse": {"name": name, "response": response}}
            oa.append_turn(contents, "user", [part], field="parts")
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxOutputTokens"] = limit
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"),
                     ("seed", "seed"), ("presence_penalty", "presencePenalty"),
                     ("frequency_penalty", "frequencyPenalty")):
        if body.get(src) is not None:
            config[dst] = body[src]
    stops = oa.stop_sequences(body)
    if stops:
        config["stopSequences"] = stops
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            config["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            config["responseMimeType"] = "application/json"
            schema = (response_format.get("json_schema") or {}).get("schema")
            if schema:
                config["responseJsonSchema"] = schema
    if config:
        out["generationConfig"] = config
    tools = oa.tools_of(body)
    if tools:
        out["tools"] = [{"functionDeclarations": [
            {"name": t["name"], **({"description": t["description"]} if t["description"] else {}),
             "parametersJsonSchema": t["parameters"]} for t in tools]}]
    choice = oa.tool_choice(body)
    if choice:
        mode, name = choice
        calling: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}.get(
            mode, "AUTO")}
        if name:
            calling["allowedFunctionNames"] = [name]
        out["toolConfig"] = {"functionCallingConfig": calling}
    tier = oa.service_tier(body, "Gemini", {"auto": None, "default": "standard", "flex": "flex",
                                            "priority": "priority"})
    if tier:
        out["serviceTier"] = tier
    return out


def gemini_service_tier(meta: Any) -> str | None:
    """The tier Gemini says it served (`usageMetadata.serviceTier`), lower-cased."""
    tier = meta.get("serviceTier") if isinstance(meta, dict) else None
    return tier.lower() if isinstance(tier, str) and tier else None


class OpenAIChatToGemini(StreamTally):
    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self._secrets: tuple[str, ...] = ()
        self._client_wants_usage = False
        self._model_name = ""
        self._writer: oa.ChunkWriter | None = None
        self._usage: Usage | None = None
        self._grounding: dict[str, int] = {}
        self._model: str | None = None
        self._tools = 0
        self._finished = False
        self._output_units = 0

    def build_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        out = to_gemini_request(body, target)
        stream = bool(body.get("stream"))
        self._client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._model_name = target.model
        headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
        if target.api_key:
            headers["x-goog-api-key"] = target.api_key
            self._secrets = (target.api_key,)
        return UpstreamRequest("POST", gemini_url(target.base_url, target.model, stream), headers,
                               json.dumps(out, separators=(",", ":")).encode(), stream, self._secrets)

    @staticmethod
    def _candidate(payload: dict[str, Any]) -> dict[str, Any]:
        candidates = payload.get("candidates") or []
        return candidates[0] if candidates and isinstance(candidates[0], dict) else {}

    def _finish(self, reason: str | None, has_tools: bool) -> str:
        mapped = FINISH.get(reason or "STOP", "stop")
        return "tool_calls" if has_tools and mapped == "stop" else mapped

    def translate_response(self, raw: bytes) -> Translated:
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("provider response is not a JSON object")
        usage = from_gemini(payload.get("usageMetadata"))
        tools = gemini_tool_calls(payload.get("candidates"))
        if usage is not None and tools:
            usage = replace(usage, tool_calls=tools)
        candidate = self._candidate(payload)
        texts, calls = [], []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue
            if "text" in part:
                texts.append(part["text"])
            elif "functionCall" in part:
                call = part["functionCall"]
                calls.append(oa.tool_call(call.get("id") or f"call_{len(calls)}", call.get("name", ""),
                                          json.dumps(call.get("args") or {}, separators=(",", ":"))))
        model = payload.get("modelVersion") or self._model_name
        body = oa.completion(response_id=payload.get("responseId") or "gemini", model=model, text="".join(texts),
                             tool_calls=calls, finish_reason=self._finish(candidate.get("finishReason"), bool(calls)),
                             usage=usage)
        return Translated(json.dumps(body, separators=(",", ":")).encode(), usage, model,
                          gemini_service_tier(payload.get("usageMetadata")))

    def error_message(self, raw: bytes) -> str:
        try:
            payload = json.loads(raw)
            if isinstance(payload, list) and payload:  # streamed errors come as a JSON array
                payload = payload[0]
            message = payload["error"]["message"]
        except Exception:
            message = raw[:500].decode("utf-8", errors="replace")
        return redact(str(message), *self._secrets) or "The provider returned an error."

    # -- streaming -----------------------------------------------------------------------------
    def stream_event(self, event: Event) -> list[bytes]:
        if not event.data:
            return []
        try:
            payload = json.loads(event.data)
        except ValueError:
            return []
        if not isinstance(payload, dict):
            return []
        if "error" in payload:
            message = (payload.get("error") or {}).get("message") or "The provider reported a stream error."
            return [oa.error_event(redact(str(message), *self._secrets), "upstream_error")]
        usage = from_gemini(payload.get("usageMetadata"))
        # Grounding metadata may come on any chunk: count each kind at its largest.
        for name, count in gemini_tool_calls(payload.get("candidates")):
            self._grounding[name] = max(self._grounding.get(name, 0), count)
        if usage is not None:
            self._usage = replace(usage, tool_calls=tool_calls(self._grounding)) if self._grounding else usage
            self._service_tier = gemini_service_tier(payload.get("usageMetadata")) or self._service_tier
        self._model = payload.get("modelVersion") or self._model
        out: list[bytes] = []
        if self._writer is None:
            self._writer = oa.ChunkWriter(payload.get("responseId") or "gemini", self._model or self._model_name)
            out.append(self._writer.delta({"role": "assistant", "content": ""}))
        candidate = self._candidate(payload)
        for part in (candidate.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue
            if part.get("text"):
                self._output_units += 1
                out.append(self._writer.delta({"content": part["text"]}))
            elif "functionCall" in part:
                call = part["functionCall"]
                self._output_units += 1
                out.append(self._writer.delta({"tool_calls": [oa.tool_call(
                    call.get("id") or f"call_{self._tools}", call.get("name", ""),
                    json.dumps(call.get("args") or {}, separators=(",", ":")), self._tools)]}))
                self._tools += 1
        if candidate.get("finishReason"):
            self._finished = True
            out.append(self._writer.delta({}, self._finish(candidate["finishReason"], self._tools > 0)))
        return out

    @property
    def stream_usage(self) -> Usage | None:
        return self._usage if self._finished else None

    @property
    def stream_complete(self) -> bool:
        return self._finished

    def stream_final(self) -> list[bytes]:
        out = []
        if self._client_wants_usage and self._usage is not None and self._writer is not None:
            out.append(self._writer.usage(self._usage))
        return [*out, b"data: [DONE]\n\n"]

    def stream_error(self, message: str, code: str) -> bytes:
        return oa.error_event(message, code)
