"""Anthropic Messages, simulated natively for `sim/claude-*`: text, tools (`tool_choice`
auto/any/tool/none), extended thinking (budget within `max_tokens`), `cache_control` breakpoints
with 5-minute/1-hour TTLs and real write/read usage (per workspace and model, see cache.py),
`count_tokens`, the real errors (context overflow, max_tokens, too many breakpoints), and the
streaming event sequence."""

from __future__ import annotations

import base64
import json
from typing import Any

from meterline.pricing.cache_rules import min_cacheable
from meterline.providers.sim import models, text
from meterline.providers.sim.cache import FIVE_MIN, ONE_HOUR, PromptCache, Segment
from meterline.providers.sim.response import SimError, SimResponse, ok, stream
from meterline.providers.sim.schema import instance
from meterline.providers.sim.tools import Tool, Turn, answer_after_tool, choose, hints

MAX_BREAKPOINTS = 4


def _ttl(block: Any) -> float | None:
    control = block.get("cache_control") if isinstance(block, dict) else None
    if not isinstance(control, dict):
        return None
    return ONE_HOUR if control.get("ttl") == "1h" else FIVE_MIN


def _strip(block: Any) -> Any:
    return {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block


def block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_use":
        return f"{block.get('name', '')} {json.dumps(block.get('input') or {})}"
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return " ".join(block_text(b) for b in content)
        return str(content or "")
    if kind in ("thinking", "redacted_thinking"):
        return ""  # earlier turns' thinking is not counted as input
    if kind == "document":
        source = block.get("source") or {}
        return str(source.get("data", "")) if source.get("type") == "text" else ""
    return ""


def block_tokens(block: Any) -> int:
    if isinstance(block, dict) and block.get("type") in ("image", "document") and \
            (block.get("source") or {}).get("type") != "text":
        return 1_600
    return text.count(block_text(block))


def segments_of(body: dict[str, Any]) -> list[Segment]:
    """The prompt in cache-prefix order (tools, system, messages), one segment per block."""
    out: list[Segment] = []
    for tool in body.get("tools") or []:
        out.append(Segment(["tool", _strip(tool)], text.count(json.dumps(_strip(tool))), _ttl(tool)))
    system = body.get("system")
    if isinstance(system, str) and system:
        out.append(Segment(["system", system], text.count(system)))
    elif isinstance(system, list):
        out += [Segment(["system", _strip(b)], block_tokens(b), _ttl(b)) for b in system]
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for j, block in enumerate(blocks):
            framing = 3 if j == 0 else 0
            out.append(Segment([i, message.get("role"), _strip(block)], block_tokens(block) + framing, _ttl(block)))
    return out


def with_automatic_breakpoint(body: dict[str, Any], segments: list[Segment]) -> list[Segment]:
    """A top-level `cache_control` places the breakpoint on the last block."""
    control = body.get("cache_control")
    if isinstance(control, dict) and segments and segments[-1].breakpoint_ttl is None:
        last = segments[-1]
        segments = [*segments[:-1], Segment(last.content, last.tokens, ONE_HOUR if control.get("ttl") == "1h"
                                            else FIVE_MIN)]
    return segments


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(s.tokens for s in segments_of(body)) + 4


def check_prompt(model: str, prompt: int, max_tokens: int | None) -> None:
    window = models.context_window(model)
    if prompt > window:
        raise SimError(400, f"prompt is too long: {prompt} tokens > {window} maximum")
    if max_tokens is not None and prompt + max_tokens > window:
        raise SimError(400, f"input length and `max_tokens` exceed context limit: {prompt} + {max_tokens} > {window}, "
                            "decrease input length or `max_tokens` and try again")


def count_tokens(body: dict[str, Any]) -> SimResponse:
    prompt = prompt_tokens(body)
    check_prompt(body["model"], prompt, None)
    return ok({"input_tokens": prompt})


def turn_of(messages: list[dict[str, Any]]) -> Turn:
    turn = Turn()
    for message in messages:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        texts = [b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
        if message.get("role") == "user" and texts:
            turn.user_text = " ".join(texts)
        if message.get("role") == "assistant":
            turn.called += [b.get("name") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
    last = messages[-1] if messages else {}
    results = [b for b in (last.get("content") if isinstance(last.get("content"), list) else [])
               if isinstance(b, dict) and b.get("type") == "tool_result"]
    if last.get("role") == "user" and results:
        turn.after_tool, turn.tool_output = True, " ".join(block_text(b) for b in results)
    return turn


def _tools(body: dict[str, Any]) -> list[Tool]:
    return [Tool(str(t["name"]), t.get("description") or "", t.get("input_schema") or {"type": "object"})
            for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name") and "input_schema" in t]


def build(body: dict[str, Any], cache: PromptCache, workspace: str, delay_s: float) -> SimResponse:
    model, max_tokens = body["model"], int(body["max_tokens"])
    cap = models.max_output(model)
    if cap is not None and max_tokens > cap:
        raise SimError(400, f"max_tokens: {max_tokens} > {cap}, which is the maximum allowed number of output tokens "
                            f"for {model}")
    segments = with_automatic_breakpoint(body, segments_of(body))
    breakpoints = sum(1 for s in segments if s.breakpoint_ttl is not None)
    if breakpoints > MAX_BREAKPOINTS:
        raise SimError(400, f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
                            f"Found {breakpoints}.")
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    budget = 0
    if thinking.get("type") == "enabled":
        budget = int(thinking.get("budget_tokens") or 0)
        if budget < 1024:
            raise SimError(400, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        if budget >= max_tokens:
            raise SimError(400, "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                                "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                                "#max-tokens-and-context-window-size")
    elif thinking.get("type") == "adaptive":
        budget = max_tokens // 2
    prompt = sum(s.tokens for s in segments) + 4
    check_prompt(model, prompt, max_tokens)
    usage_cache = cache.anthropic((workspace, model), segments, min_cacheable(model))
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    turn = turn_of(messages)
    seed = text.seed_of(model, body.get("system"), messages, body.get("tools"))
    tools = _tools(body)
    raw_choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {"type": "auto"}
    choice = {"any": "required", "tool": "named", "none": "none"}.get(raw_choice.get("type"), "auto")
    if choice == "named" and not any(t.name == raw_choice.get("name") for t in tools):
        raise SimError(400, f"tool_choice: tool `{raw_choice.get('name')}` not found in `tools`")
    if thinking and choice in ("required", "named"):
        raise SimError(400, "Thinking may not be enabled when tool_choice forces tool use.")

    content: list[dict[str, Any]] = []
    used = 0
    if budget:
        words = text.prose(text.seed_of(seed, "thinking"), model, "let me think: " + turn.user_text)
        thought, used, _ = text.truncate(words, min(budget, max_tokens - 1))
        content.append({"type": "thinking", "thinking": thought,
                        "signature": base64.b64encode(text.seed_of("sig", thought)).decode()})
    room = max_tokens - used
    tool = choose(tools, choice, raw_choice.get("name"), turn)
    if tool is not None:
        args = json.dumps(instance(tool.parameters, seed, hints(turn.user_text)))
        _, n, cut = text.truncate(args, room)
        if cut:
            stop, n = "max_tokens", room
            content.append({"type": "text", "text": ""})
        else:
            stop = "tool_use"
            if turn.user_text and choice == "auto":
                lead = "I'll use the tool for that."
                n += text.count(lead)
                content.append({"type": "text", "text": lead})
            content.append({"type": "tool_use", "id": "toolu_sim" + seed.hex()[:20], "name": tool.name,
                            "input": json.loads(args)})
        used += n
    else:
        answer = answer_after_tool(turn) if turn.after_tool else text.prose(seed, model, turn.user_text)
        answer, n, cut = text.truncate(answer, room)
        used += n
        stop = "max_tokens" if cut else "end_turn"
        content.append({"type": "text", "text": answer})
    usage = {"input_tokens": prompt - usage_cache.read - usage_cache.write_5m - usage_cache.write_1h,
             "cache_creation_input_tokens": usage_cache.write_5m + usage_cache.write_1h,
             "cache_read_input_tokens": usage_cache.read,
             "cache_creation": {"ephemeral_5m_input_tokens": usage_cache.write_5m,
                                "ephemeral_1h_input_tokens": usage_cache.write_1h},
             "output_tokens": used, "service_tier": "standard"}
    message = {"id": "msg_sim" + seed.hex()[:20], "type": "message", "role": "assistant", "model": model,
               "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}
    if not body.get("stream"):
        return ok(message)
    return stream(events(message), delay_s)


def events(message: dict[str, Any]) -> list[bytes]:
    out: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        out.append(f"event: {kind}\ndata: ".encode() + json.dumps({"type": kind, **fields},
                                                                    separators=(",", ":")).encode() + b"\n\n")

    usage = message["usage"]
    opening = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    emit("message_start", message=opening)
    emit("ping")
    for index, block in enumerate(message["content"]):
        if block["type"] == "thinking":
            emit("content_block_start", index=index,
                 content_block={"type": "thinking", "thinking": "", "signature": ""})
            for piece in text.chunks(block["thinking"], 6):
                emit("content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": piece})
            emit("content_block_delta", index=index, delta={"type": "signature_delta", "signature": block["signature"]})
        elif block["type"] == "tool_use":
            emit("content_block_start", index=index, content_block={**block, "input": {}})
            for piece in text.chunks(json.dumps(block["input"])):
                emit("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": piece})
        else:
            emit("content_block_start", index=index, content_block={"type": "text", "text": ""})
            for piece in text.chunks(block["text"]):
                if piece:
                    emit("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
        emit("content_block_stop", index=index)
    emit("message_delta", delta={"stop_reason": message["stop_reason"], "stop_sequence": None},
         usage={"input_tokens": usage["input_tokens"], "cache_creation_input_tokens":
                usage["cache_creation_input_tokens"], "cache_read_input_tokens": usage["cache_read_input_tokens"],
                "output_tokens": usage["output_tokens"]})
    emit("message_stop")
    return out
