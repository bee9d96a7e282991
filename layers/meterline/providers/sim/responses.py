"""OpenAI Responses API, simulated: `input` as text or items (messages, function_call,
function_call_output), `instructions`, function tools with `tool_choice`, structured output
(`text.format` json_schema / json_object), `max_output_tokens` (status `incomplete`), reasoning items
for reasoning models, automatic prompt caching, and the streaming event sequence."""

from __future__ import annotations

import json
import time
from typing import Any

from meterline.providers.sim import models, text
from meterline.providers.sim.cache import PromptCache, Segment
from meterline.providers.sim.chat import content_text, openai_retention
from meterline.providers.sim.response import SimError, SimResponse, ok, stream
from meterline.providers.sim.schema import instance, strict_problem
from meterline.providers.sim.tools import Tool, Turn, choose, hints, text_answer


def items_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return [i for i in raw or [] if isinstance(i, dict)]


def item_text(item: dict[str, Any]) -> str:
    kind = item.get("type", "message")
    if kind == "message" or "role" in item:
        return content_text(item.get("content"))
    if kind == "function_call":
        return f"{item.get('name', '')} {item.get('arguments', '')}"
    if kind == "function_call_output":
        output = item.get("output")
        return output if isinstance(output, str) else json.dumps(output)
    return ""


def parse_tools(body: dict[str, Any]) -> list[Tool]:
    out = []
    for i, raw in enumerate(body.get("tools") or []):
        if not isinstance(raw, dict) or raw.get("type") != "function":
            continue  # hosted tools (web search, file search) are not simulated: the model never calls them
        params = raw.get("parameters") or {"type": "object", "properties": {}}
        tool = Tool(str(raw.get("name")), raw.get("description") or "", params, raw.get("strict", True) is not False)
        if tool.strict:
            problem = strict_problem(params)
            if problem:
                raise SimError(400, f"Invalid schema for function '{tool.name}': {problem}",
                               param=f"tools[{i}].parameters", code="invalid_function_parameters")
        out.append(tool)
    return out


def turn_of(items: list[dict[str, Any]]) -> Turn:
    turn = Turn()
    for item in items:
        if item.get("role") == "user":
            turn.user_text = content_text(item.get("content"))
        if item.get("type") == "function_call" and item.get("name"):
            turn.called.append(item["name"])
    outputs = []
    for item in reversed(items):
        if item.get("type") != "function_call_output":
            break
        outputs.insert(0, item_text(item))
    if outputs:
        turn.after_tool, turn.tool_output = True, " ".join(outputs)
    return turn


def output_format(body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    fmt = ((body.get("text") or {}).get("format")) if isinstance(body.get("text"), dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return "text", None
    if fmt["type"] == "json_object":
        return "json_object", None
    if fmt["type"] == "json_schema":
        schema = fmt.get("schema") or {"type": "object", "properties": {}}
        if fmt.get("strict"):
            problem = strict_problem(schema)
            if problem:
                raise SimError(400, f"Invalid schema for response_format '{fmt.get('name', 'response')}': {problem}",
                               param="text.format.schema", code="invalid_json_schema")
        return "json_schema", schema
    raise SimError(400, f"Invalid value: '{fmt['type']}'.", param="text.format.type", code="invalid_value")


def build(body: dict[str, Any], cache: PromptCache, workspace: str, delay_s: float) -> SimResponse:
    model = body["model"]
    items = items_of(body)
    tools = parse_tools(body)
    mode, schema = output_format(body)
    raw_choice = body.get("tool_choice")
    if isinstance(raw_choice, dict):
        choice, named = "named", raw_choice.get("name")
    else:
        choice, named = (raw_choice if raw_choice in ("auto", "none", "required") else "auto"), None
    sizes = [4 + text.count(item_text(i)) for i in items]
    head = text.count(str(body.get("instructions") or "")) + (text.count(json.dumps(body["tools"])) if tools else 0) \
        + (text.count(json.dumps(schema)) if schema else 0)
    prompt = sum(sizes) + head + 3
    window = models.context_window(model)
    if prompt > window:
        raise SimError(400, "Your input exceeds the context window of this model. Please adjust your input and try "
                            "again.", param="input", code="context_length_exceeded")
    requested = body.get("max_output_tokens")
    if requested is not None and requested < 16:
        raise SimError(400, f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but "
                            f"got {requested} instead.", param="max_output_tokens", code="integer_below_min_value")
    segments = [Segment([body.get("tools") or [], body.get("instructions") or "", body.get("text")], head + 3)]
    segments += [Segment(i, n) for i, n in zip(items, sizes, strict=True)]
    cached = cache.openai((workspace, model, str(body.get("prompt_cache_key") or "")), segments,
                          openai_retention(body))
    turn = turn_of(items)
    seed = text.seed_of(model, items, body.get("instructions"), body.get("tools"), body.get("text"))
    limit = requested or models.max_output(model) or 16_384
    reasoning = min(64 + seed[1] % 200, limit) if models.is_reasoning(model) else 0
    room = limit - reasoning
    rid = "resp_sim" + seed.hex()[:24]
    output: list[dict[str, Any]] = []
    if reasoning:
        output.append({"type": "reasoning", "id": "rs_sim" + seed.hex()[:20], "summary": []})
    tool = choose(tools, choice, named, turn)
    if tool is not None:
        args, used, cut = text.truncate(json.dumps(instance(tool.parameters, seed, hints(turn.user_text))), room)
        output.append({"type": "function_call", "id": "fc_sim" + seed.hex()[:20], "call_id": "call_" + seed.hex()[:24],
                       "name": tool.name, "arguments": args, "status": "completed"})
    else:
        answer, used, cut = text.truncate(text_answer(turn, seed, model, schema, mode), room)
        output.append({"type": "message", "id": "msg_sim" + seed.hex()[:20], "status": "incomplete" if cut else
                       "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": answer, "annotations": [], "logprobs": []}]})
    usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
             "output_tokens": used + reasoning, "output_tokens_details": {"reasoning_tokens": reasoning},
             "total_tokens": prompt + used + reasoning}
    response = {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": "incomplete" if cut else "completed",
        "error": None, "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": body.get("instructions"), "max_output_tokens": requested, "model": model, "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True), "previous_response_id":
        body.get("previous_response_id"), "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0), "truncation": "disabled", "usage": usage,
        "user": None, "metadata": body.get("metadata") or {},
    }
    if not body.get("stream"):
        return ok(response)
    return stream(events(response), delay_s)


def events(response: dict[str, Any]) -> list[bytes]:
    out: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(out), **fields}
        out.append(f"event: {kind}\ndata: ".encode() + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")

    opening = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            part = item["content"][0]
            emit("response.output_item.added", output_index=index,
                 item={**item, "status": "in_progress", "content": []})
            emit("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                 part={**part, "text": ""})
            for piece in text.chunks(part["text"]):
                if piece:
                    emit("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                         delta=piece, logprobs=[])
            emit("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                 text=part["text"], logprobs=[])
            emit("response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part)
        elif item["type"] == "function_call":
            emit("response.output_item.added", output_index=index,
                 item={**item, "status": "in_progress", "arguments": ""})
            for piece in text.chunks(item["arguments"]):
                emit("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece)
            emit("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                 name=item["name"], arguments=item["arguments"])
        else:
            emit("response.output_item.added", output_index=index, item=item)
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.incomplete" if response["status"] == "incomplete" else "response.completed", response=response)
    return out
