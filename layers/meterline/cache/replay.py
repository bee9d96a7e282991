"""A stored answer replayed as the endpoint's native stream. Pure.

Each endpoint gets the event sequence its official SDK expects, in several chunks like an original
stream (text, reasoning and tool arguments are sliced at word boundaries), never as one blob:
    chat.completions  role chunk, reasoning_content / content / refusal deltas, tool calls (id and
                      name first, then argument slices), the finish chunk, the usage chunk when the
                      client asked for it, then [DONE]
    responses         response.created/in_progress, per output item its added/delta/done events
                      (message text, function-call arguments, reasoning summaries), response.completed
    messages          message_start, per content block start/deltas/stop (text, tool_use input JSON,
                      thinking + signature), message_delta (stop reason, usage), message_stop
`replay` returns (body events, final events): the gateway sends the final ones after the ledger
record is durable, as it does for a live stream.
"""

from __future__ import annotations

import json
import re
from typing import Any

from meterline.sse import encode

_PIECE = re.compile(r"\S+\s*|\s+")
SLICE_CHARS = 24  # about a few tokens per chunk, like a provider's stream
MAX_CHUNKS_PER_PART = 400  # long answers get bigger slices, not thousands of events


def slices(text: str) -> list[str]:
    """Text cut at word boundaries into pieces of about SLICE_CHARS; joins back to exactly `text`."""
    if not text:
        return []
    size = max(SLICE_CHARS, len(text) // MAX_CHUNKS_PER_PART + 1)
    out: list[str] = []
    current = ""
    for piece in _PIECE.findall(text):
        if current and len(current) + len(piece) > size:
            out.append(current)
            current = ""
        while len(piece) > size * 4:  # one enormous "word" (base64, minified JSON): cut it
            out.append(piece[: size * 4])
            piece = piece[size * 4:]
        current += piece
    if current:
        out.append(current)
    return out


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# -- chat.completions ------------------------------------------------------------------------------
def _chat(answer: dict[str, Any], include_usage: bool) -> tuple[list[bytes], list[bytes]]:
    meta = {"id": answer.get("id"), "object": "chat.completion.chunk", "created": answer.get("created", 0),
            "model": answer.get("model")}
    for name in ("system_fingerprint", "service_tier"):
        if answer.get(name) is not None:
            meta[name] = answer[name]
    out: list[bytes] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        out.append(encode(_json({**meta, "choices": [choice]})))

    for choice in answer.get("choices") or []:
        index = int(choice.get("index", 0))
        message = choice.get("message") or {}
        chunk(index, {"role": message.get("role", "assistant"), "content": ""})
        for piece in slices(message.get("reasoning_content") or ""):
            chunk(index, {"reasoning_content": piece})
        for piece in slices(message.get("content") or ""):
            chunk(index, {"content": piece})
        for piece in slices(message.get("refusal") or ""):
            chunk(index, {"refusal": piece})
        for i, call in enumerate(message.get("tool_calls") or []):
            fn = call.get("function") or {}
            chunk(index, {"tool_calls": [{"index": i, "id": call.get("id"), "type": call.get("type", "function"),
                                          "function": {"name": fn.get("name"), "arguments": ""}}]})
            for piece in slices(fn.get("arguments") or ""):
                chunk(index, {"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        chunk(index, {}, choice.get("finish_reason"))
    if include_usage and answer.get("usage") is not None:
        out.append(encode(_json({**meta, "choices": [], "usage": answer["usage"]})))
    return out, [b"data: [DONE]\n\n"]


# -- responses -------------------------------------------------------------------------------------
def _responses(answer: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    sequence = 0
    out: list[bytes] = []

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        data = encode(_json({"type": kind, "sequence_number": sequence, **fields}), kind)
        sequence += 1
        return data

    pending = {**answer, "status": "in_progress", "output": [], "usage": None}
    out.append(event("response.created", response=pending))
    out.append(event("response.in_progress", response=pending))
    for output_index, item in enumerate(answer.get("output") or []):
        kind, item_id = item.get("type"), item.get("id")
        if kind == "message":
            out.append(event("response.output_item.added", output_index=output_index,
                             item={**item, "status": "in_progress", "content": []}))
            for content_index, part in enumerate(item.get("content") or []):
                where = {"item_id": item_id, "output_index": output_index, "content_index": content_index}
                ptype = part.get("type")
                if ptype == "output_text":
                    out.append(event("response.content_part.added", **where,
                                     part={"type": "output_text", "text": "", "annotations": []}))
                    for piece in slices(part.get("text") or ""):
                        out.append(event("response.output_text.delta", **where, delta=piece, logprobs=[]))
                    out.append(event("response.output_text.done", **where, text=part.get("text") or "", logprobs=[]))
                elif ptype == "refusal":
                    out.append(event("response.content_part.added", **where, part={"type": "refusal", "refusal": ""}))
                    for piece in slices(part.get("refusal") or ""):
                        out.append(event("response.refusal.delta", **where, delta=piece))
                    out.append(event("response.refusal.done", **where, refusal=part.get("refusal") or ""))
                else:
                    out.append(event("response.content_part.added", **where, part=part))
                out.append(event("response.content_part.done", **where, part=part))
        elif kind == "function_call":
            out.append(event("response.output_item.added", output_index=output_index,
                             item={**item, "arguments": "", "status": "in_progress"}))
            for piece in slices(item.get("arguments") or ""):
                out.append(event("response.function_call_arguments.delta", item_id=item_id,
                                 output_index=output_index, delta=piece))
            out.append(event("response.function_call_arguments.done", item_id=item_id, output_index=output_index,
                             arguments=item.get("arguments") or ""))
        elif kind == "reasoning":
            out.append(event("response.output_item.added", output_index=output_index, item={**item, "summary": []}))
            for summary_index, part in enumerate(item.get("summary") or []):
                where = {"item_id": item_id, "output_index": output_index, "summary_index": summary_index}
                out.append(event("response.reasoning_summary_part.added", **where,
                                 part={"type": "summary_text", "text": ""}))
                for piece in slices(part.get("text") or ""):
                    out.append(event("response.reasoning_summary_text.delta", **where, delta=piece))
                out.append(event("response.reasoning_summary_text.done", **where, text=part.get("text") or ""))
                out.append(event("response.reasoning_summary_part.done", **where, part=part))
        else:
            out.append(event("response.output_item.added", output_index=output_index, item=item))
        out.append(event("response.output_item.done", output_index=output_index, item=item))
    return out, [event("response.completed", response=answer)]


# -- messages --------------------------------------------------------------------------------------
def _messages(answer: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    out: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        out.append(encode(_json({"type": kind, **fields}), kind))

    usage = dict(answer.get("usage") or {})
    start = {**answer, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": min(1, int(usage.get("output_tokens") or 0))}}
    event("message_start", message=start)
    for index, block in enumerate(answer.get("content") or []):
        btype = block.get("type")
        if btype == "text":
            head = {"type": "text", "text": ""}
            if "citations" in block:
                head["citations"] = []
            event("content_block_start", index=index, content_block=head)
            for piece in slices(block.get("text") or ""):
                event("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
            for citation in block.get("citations") or []:
                event("content_block_delta", index=index, delta={"type": "citations_delta", "citation": citation})
        elif btype == "tool_use":
            event("content_block_start", index=index, content_block={**block, "input": {}})
            for piece in slices(_json(block.get("input") or {})):
                event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": piece})
        elif btype == "thinking":
            event("content_block_start", index=index, content_block={"type": "thinking", "thinking": "",
                                                                      "signature": ""})
            for piece in slices(block.get("thinking") or ""):
                event("content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": piece})
            if block.get("signature"):
                event("content_block_delta", index=index, delta={"type": "signature_delta",
                                                                 "signature": block["signature"]})
        else:  # redacted_thinking, server tool blocks: sent whole, as Anthropic does
            event("content_block_start", index=index, content_block=block)
        event("content_block_stop", index=index)
    event("message_delta", delta={"stop_reason": answer.get("stop_reason"),
                                  "stop_sequence": answer.get("stop_sequence")}, usage=usage)
    final = encode(_json({"type": "message_stop"}), "message_stop")
    return out, [final]


def replay(endpoint: str, answer: dict[str, Any], *, include_usage: bool = False) -> tuple[list[bytes], list[bytes]]:
    if endpoint == "chat.completions":
        return _chat(answer, include_usage)
    if endpoint == "responses":
        return _responses(answer)
    if endpoint == "messages":
        return _messages(answer)
    raise ValueError(f"{endpoint} does not stream")
