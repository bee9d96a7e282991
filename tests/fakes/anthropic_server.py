"""A fake Anthropic Messages server on loopback, speaking the real wire format.

`POST /v1/messages`: a `message` object with `usage` (input_tokens EXCLUDING cache tokens,
cache_creation_input_tokens with its `cache_creation` 5m/1h split, cache_read_input_tokens,
output_tokens); streamed as SSE with named events message_start, content_block_start, ping,
content_block_delta (text_delta / input_json_delta), content_block_stop, message_delta (cumulative
usage: an early one and a final one) and message_stop. `POST /v1/messages/count_tokens`:
{"input_tokens": n}. Errors as {"type": "error", "error": {"type", "message"}}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TEXT = ["Hello", " from", " Claude", "."]


@dataclass
class FakeAnthropic:
    input_tokens: int = 300
    cache_read: int = 2000
    cache_write_5m: int = 500
    cache_write_1h: int = 1000
    output_tokens: int = 42
    # Report only cache_creation_input_tokens (older API versions): all writes count as 5m.
    legacy_cache_fields: bool = False
    tool_call: dict[str, Any] | None = None  # {"id", "name", "input"}: answer with a tool_use block
    error: tuple[int, dict[str, Any]] | None = None
    cut_after_deltas: int | None = None
    # More billed classes in `usage`: e.g. server_tool_use, speed, inference_geo (in the final usage).
    usage_extra: dict[str, Any] = field(default_factory=dict)
    # `usage.iterations`: streamed, the first list rides on message_start, the second on the final
    # message_delta (the delta's list does not repeat message_start's); not streamed, both in order.
    iterations_start: list[dict[str, Any]] = field(default_factory=list)
    iterations_delta: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def usage(self, output: int) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_write_5m + self.cache_write_1h,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": output,
            "service_tier": "standard",
        }
        if not self.legacy_cache_fields:
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": self.cache_write_5m,
                                       "ephemeral_1h_input_tokens": self.cache_write_1h}
        return usage


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def build_app(fake: FakeAnthropic) -> Starlette:
    def record(request: Request, body: dict[str, Any]) -> None:
        fake.requests.append(body)
        fake.headers.append(dict(request.headers))
        fake.paths.append(request.url.path)

    async def count_tokens(request: Request) -> Response:
        body = await request.json()
        record(request, body)
        if fake.error:
            return JSONResponse(fake.error[1], status_code=fake.error[0])
        return JSONResponse({"input_tokens": fake.input_tokens + fake.cache_read})

    async def messages(request: Request) -> Response:
        body = await request.json()
        record(request, body)
        if fake.error:
            return JSONResponse(fake.error[1], status_code=fake.error[0], headers={"request-id": "req_fake_err"})
        model = body["model"]
        content: list[dict[str, Any]] = [{"type": "text", "text": "".join(TEXT)}]
        stop = "end_turn"
        if fake.tool_call:
            content.append({"type": "tool_use", **fake.tool_call})
            stop = "tool_use"
        if not body.get("stream"):
            return JSONResponse({
                "id": "msg_fake01", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop, "stop_sequence": None, "usage": {
                    **fake.usage(fake.output_tokens), **fake.usage_extra,
                    **({"iterations": fake.iterations_start + fake.iterations_delta}
                       if fake.iterations_start or fake.iterations_delta else {})},
            }, headers={"request-id": "req_fake_anthropic"})

        async def events():
            start_usage = fake.usage(1)
            if fake.iterations_start:
                start_usage["iterations"] = fake.iterations_start
            yield _sse("message_start", {"type": "message_start", "message": {
                "id": "msg_fake01", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": start_usage}})
            yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}})
            yield _sse("ping", {"type": "ping"})
            for i, piece in enumerate(TEXT):
                if fake.cut_after_deltas is not None and i >= fake.cut_after_deltas:
                    raise RuntimeError("simulated upstream connection drop")
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": piece}})
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            if fake.tool_call:
                call = fake.tool_call
                yield _sse("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
                    "type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}})
                args = json.dumps(call["input"], separators=(",", ":"))
                for piece in (args[: len(args) // 2], args[len(args) // 2:]):
                    yield _sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                                       "delta": {"type": "input_json_delta", "partial_json": piece}})
                yield _sse("content_block_stop", {"type": "content_block_stop", "index": 1})
            # An early cumulative delta, then the final one: metering must use the LAST.
            yield _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": None},
                                         "usage": {"output_tokens": fake.output_tokens // 2}})
            yield _sse("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop, "stop_sequence": None},
                                         "usage": {"output_tokens": fake.output_tokens, **fake.usage_extra,
                                                   **({"iterations": fake.iterations_delta}
                                                      if fake.iterations_delta else {})}})
            # The provider's own final event, byte for byte (with an extra field the gateway must keep).
            yield b'event: message_stop\ndata: {"type":"message_stop","amazon-bedrock-invocationMetrics":null}\n\n'


        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"request-id": "req_fake_anthropic"})

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"]),
                             Route("/v1/messages/count_tokens", count_tokens, methods=["POST"])])
