"""OpenAI Chat Completions shapes, shared by the translators that answer in OpenAI's format for
another provider (openai_anthropic, openai_gemini, openai_bedrock): reading request parts
(content, images, tool calls) and writing `chat.completion` / `chat.completion.chunk` objects.
Pure: no I/O, no money.
"""

from __future__ import annotations

import json
import time
from typing import Any

from meterline.errors import InvalidRequestError
from meterline.sse import encode
from meterline.translators.base import Target
from meterline.usage import Usage

DEFAULT_MAX_TOKENS = 4096


# -- reading requests ------------------------------------------------------------------------------
def max_tokens(body: dict[str, Any], target: Target) -> int:
    """The request's output limit; else the model's catalog maximum; else a safe default."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return target.max_output_tokens or DEFAULT_MAX_TOKENS


def stop_sequences(body: dict[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else [str(s) for s in stop]


def content_parts(content: Any) -> list[dict[str, Any]]:
    """A message's content as a list of OpenAI parts ({"type": "text"|"image_url", ...})."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        return [p for p in content if isinstance(p, dict)]
    raise InvalidRequestError("Invalid message content: expected a string or an array of parts.",
                              code="invalid_value", param="messages")


def text_of(content: Any) -> str:
    return "".join(p.get("text", "") for p in content_parts(content) if p.get("type") == "text")


def image_url(part: dict[str, Any]) -> str:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("Invalid image part: 'image_url.url' is required.", code="invalid_value",
                                  param="messages")
    return url


def parse_data_url(url: str) -> tuple[str, str] | None:
    """`data:<mime>;base64,<data>` -> (mime, base64 data); None for any other URL."""
    if not url.startswith("data:"):
        return None
    head, _, data = url[5:].partition(",")
    mime, _, encoding = head.partition(";")
    if encoding != "base64" or not data:
        raise InvalidRequestError("Image data URLs must be base64 encoded.", code="invalid_value",
                                  param="messages")
    return mime or "application/octet-stream", data


def tool_arguments(arguments: Any) -> dict[str, Any]:
    """An assistant tool call's JSON `arguments` string as an object."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        raise InvalidRequestError("Invalid tool call: 'arguments' is not valid JSON.", code="invalid_value",
                                  param="messages") from exc
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def tools_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI function tools as (name, description, parameters) dicts."""
    out = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise InvalidRequestError("Only function tools can be sent to this provider.", code="invalid_value",
                                      param="tools")
        fn = tool.get("function") or {}
        out.append({"name": fn.get("name"), "description": fn.get("description"),
                    "parameters": fn.get("parameters") or {"type": "object", "properties": {}}})
    return out


def tool_choice(body: dict[str, Any]) -> tuple[str, str | None] | None:
    """("auto" | "none" | "required" | "tool", name) or None when unset."""
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if isinstance(choice, str):
        return choice, None
    if isinstance(choice, dict):
        return "tool", (choice.get("function") or {}).get("name")
    raise InvalidRequestError("Invalid 'tool_choice'.", code="invalid_value", param="tool_choice")


def service_tier(body: dict[str, Any], provider: str, mapping: dict[str, str | None]) -> str | None:
    """An OpenAI-format `service_tier` as the provider's own value (None: send nothing, the provider's
    default is the same thing); a tier the provider has no equivalent for is a clear 400, never dropped."""
    value = body.get("service_tier")
    if value is None:
        return None
    if not isinstance(value, str) or value not in mapping:
        supported = ", ".join(f"'{k}'" for k in mapping)
        raise InvalidRequestError(f"service_tier '{value}' has no equivalent on {provider}; use one of {supported}.",
                                  code="unsupported_value", param="service_tier")
    return mapping[value]


def unsupported(provider: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"'{param}' is not supported when calling {provider} models through the OpenAI "
                               "format.", code="unsupported_parameter", param=param)


# -- writing responses -----------------------------------------------------------------------------
def usage_dict(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_total,
        "completion_tokens": usage.output_total,
        "total_tokens": usage.total,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
    }
    if usage.cache_write:
        out["prompt_tokens_details"]["cache_write_tokens"] = usage.cache_write
    if usage.input_audio or usage.cache_read_audio:
        out["prompt_tokens_details"]["audio_tokens"] = usage.input_audio + usage.cache_read_audio
    if usage.reasoning is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    if usage.output_audio:
        out.setdefault("completion_tokens_details", {})["audio_tokens"] = usage.output_audio
    return out


def tool_call(call_id: str, name: str, arguments: str, index: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    if index is not None:
        call = {"index": index, **call}
    return call


def completion(*, response_id: str, model: str, text: str | None, tool_calls: list[dict[str, Any]],
               finish_reason: str, usage: Usage | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None,
                               "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    out: dict[str, Any] = {
        "id": response_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        out["usage"] = usage_dict(usage)
    return out


class ChunkWriter:
    """Writes `chat.completion.chunk` SSE events for one stream (same id, model and created)."""

    def __init__(self, response_id: str, model: str):
        self.response_id = response_id
        self.model = model
        self.created = int(time.time())

    def _event(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        data: dict[str, Any] = {"id": self.response_id, "object": "chat.completion.chunk", "created": self.created,
                                "model": self.model, "choices": choices}
        if usage is not None:
            data["usage"] = usage_dict(usage)
        return encode(json.dumps(data, separators=(",", ":")))

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

    def usage(self, usage: Usage) -> bytes:
        return self._event([], usage)


def error_event(message: str, code: str) -> bytes:
    """The OpenAI SDKs raise APIError on a stream event carrying "error"."""
    return encode(json.dumps({"error": {"message": message, "type": "upstream_error", "code": code,
                                        "param": None}}))


def append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]], field: str = "content") -> None:
    """Add blocks as a turn, merged into the previous one when the role repeats: Anthropic, Bedrock and
    Gemini require alternating roles, while OpenAI allows e.g. several tool results in a row."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][field].extend(blocks)
    else:
        turns.append({"role": role, field: blocks})
