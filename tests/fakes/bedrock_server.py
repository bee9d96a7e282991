"""A fake Bedrock Runtime (Converse / ConverseStream) on loopback, speaking the real wire format.

`POST /model/{modelId}/converse` returns Converse JSON (output.message.content, stopReason, usage
with inputTokens EXCLUDING cacheReadInputTokens / cacheWriteInputTokens, totalTokens, metrics).
`POST /model/{modelId}/converse-stream` answers `application/vnd.amazon.eventstream`: binary
event-stream messages (prelude with total and header lengths + CRC32, typed headers `:event-type`,
`:content-type`, `:message-type`, JSON payload, message CRC32) named messageStart, contentBlockStart,
contentBlockDelta, contentBlockStop, messageStop and metadata (usage). Payloads carry the `p`
padding field Bedrock adds. Requests must be SigV4-signed for service `bedrock`.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TEXT = ["Hello", " from", " Bedrock", "."]


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (vnd.amazon.eventstream framing)."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message) & 0xFFFFFFFF)


def event(name: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps({**data, "p": "abcdefghij"}, separators=(",", ":")).encode()
    return encode_message({":event-type": name, ":content-type": "application/json", ":message-type": "event"},
                          payload)


def exception(name: str, message: str) -> bytes:
    return encode_message({":exception-type": name, ":content-type": "application/json",
                           ":message-type": "exception"}, json.dumps({"message": message}).encode())


@dataclass
class FakeBedrock:
    input_tokens: int = 800  # excludes cache tokens
    cache_read: int = 1200
    cache_write: int = 400
    output_tokens: int = 25
    # The reported anomaly: inputTokens also counts the cache writes (totalTokens then omits them).
    writes_inside_input: bool = False
    tool_use: dict[str, Any] | None = None  # {"toolUseId", "name", "input"}
    error: tuple[int, str, str] | None = None  # (status, x-amzn-ErrorType, message)
    stream_exception: str | None = None  # e.g. "throttlingException" after the first delta
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    service_tier: str | None = None  # echoed as serviceTier {"type": ...} when set

    def tier(self) -> dict[str, Any]:
        return {"serviceTier": {"type": self.service_tier}} if self.service_tier else {}

    def usage(self) -> dict[str, Any]:
        if self.writes_inside_input:
            input_ = self.input_tokens + self.cache_write
            total = input_ + self.output_tokens + self.cache_read
        else:
            input_ = self.input_tokens
            total = input_ + self.output_tokens + self.cache_read + self.cache_write
        return {"inputTokens": input_, "outputTokens": self.output_tokens, "totalTokens": total,
                "cacheReadInputTokens": self.cache_read, "cacheWriteInputTokens": self.cache_write}


def build_app(fake: FakeBedrock) -> Starlette:
    async def handle(request: Request) -> Response:
        operation = request.path_params["operation"]
        body = await request.json()
        fake.requests.append(body)
        fake.headers.append(dict(request.headers))
        fake.paths.append(request.url.path)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 Credential=") or "/bedrock/aws4_request" not in auth:
            return JSONResponse({"message": "Missing Authentication Token"}, status_code=403,
                                headers={"x-amzn-ErrorType": "MissingAuthenticationTokenException"})
        if fake.error:
            status, kind, message = fake.error
            return JSONResponse({"message": message}, status_code=status, headers={"x-amzn-ErrorType": kind})
        content: list[dict[str, Any]] = [{"text": "".join(TEXT)}]
        stop = "end_turn"
        if fake.tool_use:
            content.append({"toolUse": fake.tool_use})
            stop = "tool_use"
        if operation == "converse":
            return JSONResponse({"output": {"message": {"role": "assistant", "content": content}},
                                 "stopReason": stop, "usage": fake.usage(), "metrics": {"latencyMs": 321},
                                 **fake.tier()},
                                headers={"x-amzn-RequestId": "bedrock-req-1"})

        async def events():
            yield event("messageStart", {"role": "assistant"})
            for i, piece in enumerate(TEXT):
                yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
                if i == 0 and fake.stream_exception:
                    yield exception(fake.stream_exception, "Too many requests, please wait before trying again.")
                    return
            yield event("contentBlockStop", {"contentBlockIndex": 0})
            if fake.tool_use:
                use = fake.tool_use
                yield event("contentBlockStart", {"contentBlockIndex": 1, "start": {
                    "toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}})
                yield event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {
                    "toolUse": {"input": json.dumps(use["input"])}}})
                yield event("contentBlockStop", {"contentBlockIndex": 1})
            yield event("messageStop", {"stopReason": stop})
            yield event("metadata", {"usage": fake.usage(), "metrics": {"latencyMs": 321}, **fake.tier()})

        return StreamingResponse(events(), media_type="application/vnd.amazon.eventstream",
                                 headers={"x-amzn-RequestId": "bedrock-req-1"})

    return Starlette(routes=[Route("/model/{model}/{operation}", handle, methods=["POST"])])
