"""OpenAI Chat Completions, simulated: text, tools (`tool_choice`), `response_format` (json_object,
json_schema with `strict`), `n`, exact `max_tokens`/`max_completion_tokens`, reasoning tokens,
automatic prompt caching, context-window errors, and streaming with text and tool-call deltas."""

from __future__ import annotations

import json
import time
from typing import Any

from meterline.providers.sim import models, text
from meterline.providers.sim.cache import FIVE_MIN, PromptCache, Segment
from meterline.providers.sim.response import SimError, SimResponse, dumps, ok, stream
from meterline.providers.sim.schema import instance, strict_problem
from meterline.providers.sim.tools import Tool, Turn, choose, hints, text_answer

ONE_DAY = 86_400.0


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def message_tokens(message: dict[str, Any]) -> int:
    n = 4 + text.count(content_text(message.get("content")))
    content = message.get("content")
    if isinstance(content, list):
        n += 85 * sum(1 for p in content if isinstance(p, dict) and p.get("type") in ("image_url", "input_image"))
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            n += text.count(json.dumps(call.get("function") or {}))
    return n


def parse_tools(body: dict[str, Any]) -> list[Tool]:
    out = []
    for i, raw in enumerate(body.get("tools") or []):
        fn = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise SimError(400, f"Missing required parameter: 'tools[{i}].function'.", param=f"tools[{i}].function",
                           code="missing_required_parameter")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        tool = Tool(fn["name"], fn.get("description") or "", params, bool(fn.get("strict")))
        if tool.strict:
            problem = strict_problem(params)
            if problem:
                raise SimError(400, f"Invalid schema for function '{tool.name}': {problem}",
                               param=f"tools[{i}].function.parameters", code="invalid_function_parameters")
        out.append(tool)
    return out


def tool_choice(raw: Any) -> tuple[str, str | None]:
    if isinstance(raw, dict):
        name = (raw.get("function") or {}).get("name") or raw.get("name")
        return "named", name
    if raw in ("none", "auto", "required"):
        return raw, None
    return "auto", None


def turn_of(messages: list[dict[str, Any]]) -> Turn:
    turn = Turn()
    for message in messages:
        role = message.get("role")
        if role == "user":
            turn.user_text = content_text(message.get("content"))
        for call in message.get("tool_calls") or []:
            name = ((call or {}).get("function") or {}).get("name")
            if name:
                turn.called.append(name)
    last = messages[-1] if messages else {}
    if last.get("role") in ("tool", "function"):
        turn.after_tool = True
        outputs = []
        for message in reversed(messages):
            if message.get("role") not in ("tool", "function"):
                break
            outputs.insert(0, content_text(message.get("content")))
        turn.tool_output = " ".join(outputs)
    return turn


def structured_schema(body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """("text" | "json_object" | "json_schema", schema). Raises the provider's error for bad schemas."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return "text", None
    if fmt["type"] == "json_object":
        words = json.dumps(body.get("messages") or []).lower()
        if "json" not in words:
            raise SimError(400, "'messages' must contain the word 'json' in some form, to use 'response_format' of "
                                "type 'json_object'.", param="messages")
        return "json_object", None
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object", "properties": {}}
        if spec.get("strict"):
            problem = strict_problem(schema)
            if problem:
                raise SimError(400, f"Invalid schema for response_format '{spec.get('name', 'response')}': {problem}",
                               param="response_format", code="invalid_json_schema")
        return "json_schema", schema
    raise SimError(400, f"Invalid value: '{fmt['type']}'. Supported values are: 'json_object', 'json_schema', "
                        "and 'text'.", param="response_format.type", code="invalid_value")


def check_limits(model: str, prompt: int, requested: int | None, param: str) -> None:
    cap = models.max_output(model)
    if requested is not None and cap is not None and requested > cap:
        raise SimError(400, f"max_tokens is too large: {requested}. This model supports at most {cap} completion "
                            f"tokens, whereas you provided {requested}.", param=param, code="invalid_value")
    window = models.context_window(model)
    if requested is not None and prompt + requested > window:
        raise SimError(400, f"This model's maximum context length is {window} tokens. However, you requested "
                            f"{prompt + requested} tokens ({prompt} in the messages, {requested} in the completion). "
                            "Please reduce the length of the messages or completion.", param="messages",
                       code="context_length_exceeded")
    if prompt > window:
        raise SimError(400, f"This model's maximum context length is {window} tokens. However, your messages "
                            f"resulted in {prompt} tokens. Please reduce the length of the messages.",
                       param="messages", code="context_length_exceeded")


def openai_segments(body: dict[str, Any], items: list[dict[str, Any]], sizes: list[int]) -> list[Segment]:
    head = [body.get("tools") or [], body.get("instructions") or "", body.get("response_format") or body.get("text")]
    return [Segment(head, 0), *(Segment(item, n) for item, n in zip(items, sizes, strict=True))]


def openai_retention(body: dict[str, Any]) -> float:
    options = body.get("prompt_cache_options") or {}
    ttl = body.get("prompt_cache_retention") or (options.get("ttl") if isinstance(options, dict) else None)
    return ONE_DAY if ttl in ("24h", "extended") else FIVE_MIN


def build(body: dict[str, Any], cache: PromptCache, workspace: str, delay_s: float) -> SimResponse:
    model = body["model"]
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    tools = parse_tools(body)
    mode, schema = structured_schema(body)
    choice, named = tool_choice(body.get("tool_choice"))
    if choice == "named" and not any(t.name == named for t in tools):
        raise SimError(400, f"Invalid value for 'tool_choice': function '{named}' not found in 'tools'.",
                       param="tool_choice", code="invalid_value")
    sizes = [message_tokens(m) for m in messages]
    prompt = sum(sizes) + 3 + (text.count(json.dumps(body["tools"])) if tools else 0) \
        + (text.count(json.dumps(schema)) if schema else 0)
    param = "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
    requested = body.get("max_completion_tokens") or body.get("max_tokens")
    check_limits(model, prompt, requested, param)
    segments = openai_segments(body, messages, sizes)
    segments[0] = Segment(segments[0].content, prompt - sum(sizes))
    cached = cache.openai((workspace, model, str(body.get("prompt_cache_key") or "")), segments,
                          openai_retention(body))
    turn = turn_of(messages)
    n = int(body.get("n") or 1)
    choices, completion, reasoning_total = [], 0, 0
    for index in range(n):
        seed = text.seed_of(model, messages, body.get("tools"), body.get("response_format"), index)
        limit = requested or models.max_output(model) or 16_384
        reasoning = min(64 + seed[1] % 200, limit) if models.is_reasoning(model) else 0
        room = limit - reasoning
        tool = choose(tools, choice, named, turn)
        if tool is not None:
            args = json.dumps(instance(tool.parameters, seed, hints(turn.user_text)))
            args, used, cut = text.truncate(args, room)
            call_id = "call_" + seed.hex()[:24]
            message = {"role": "assistant", "content": None, "refusal": None, "annotations": [],
                       "tool_calls": [{"id": call_id, "type": "function",
                                       "function": {"name": tool.name, "arguments": args}}]}
            finish = "length" if cut else "tool_calls"
        else:
            answer, used, cut = text.truncate(text_answer(turn, seed, model, schema, mode), room)
            message = {"role": "assistant", "content": answer, "refusal": None, "annotations": []}
            finish = "length" if cut else "stop"
        choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": finish})
        completion += used + reasoning
        reasoning_total += reasoning
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": reasoning_total, "audio_tokens": 0,
                                           "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    rid = "chatcmpl-sim" + text.seed_of(model, messages, n).hex()[:20]
    created = int(time.time())
    if not body.get("stream"):
        return ok({"id": rid, "object": "chat.completion", "created": created, "model": model, "choices": choices,
                   "usage": usage, "service_tier": "default", "system_fingerprint": "fp_meterline_sim"})
    return stream(stream_chunks(rid, created, model, choices, usage, body), delay_s)


def stream_chunks(rid: str, created: int, model: str, choices: list[dict[str, Any]], usage: dict[str, Any],
                  body: dict[str, Any]) -> list[bytes]:
    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_meterline_sim",
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + dumps(data) + b"\n\n"

    out: list[bytes] = []
    for choice in choices:
        index, message = choice["index"], choice["message"]
        if message.get("tool_calls"):
            out.append(chunk(index, {"role": "assistant", "content": None, "refusal": None}))
            for position, call in enumerate(message["tool_calls"]):
                fn = call["function"]
                out.append(chunk(index, {"tool_calls": [{"index": position, "id": call["id"], "type": "function",
                                                         "function": {"name": fn["name"], "arguments": ""}}]}))
                out += [chunk(index, {"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
                        for piece in text.chunks(fn["arguments"])]
        else:
            out.append(chunk(index, {"role": "assistant", "content": "", "refusal": None}))
            out += [chunk(index, {"content": piece}) for piece in text.chunks(message["content"]) if piece]
        out.append(chunk(index, {}, choice["finish_reason"]))
    if (body.get("stream_options") or {}).get("include_usage"):
        data = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_meterline_sim", "choices": [], "usage": usage}
        out.append(b"data: " + dumps(data) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out
