"""A fake Bedrock Runtime (Converse / ConverseStream) on loopback, speaking the real wire format.

`POST /model/{modelId}/converse` returns Converse JSON (output.message.content, stopReason, usage
with inputTokens EXCLUDING cacheReadInputTokens / cacheWriteInputTokens, totalTokens, metrics).
`POST /model/{modelId}/converse-stream` answers `application/vnd.amazon.eventstream`: binary
event-stream messages (prelude with total and header lengths + CRC32, typed headers `:event-type`,
`:content-type`, `:message-type`, JSON payload, message CRC32) named messageStart, contentBlockStart,
contentBlockDelta, contentBlockStop, messageStop and metadata (usage). Payloads carry the `p`
padding field Bedrock adds. Requests must be SigV4-signed for service `bedrock`.

`cachePoint` blocks are validated as Bedrock does (a ValidationException 400 for more than 4, a type
other than "default", a TTL other than 5m/1h, a point that leads a list, a point among the tools of a
Nova model, or any point on a model without prompt caching). With `cache_model`, usage follows the
points like the real cache: the longest prefix ending at a point seen before is read, the prefix to
the last point is written at that point's TTL, reported in `cacheDetails` (tokens: 1 per 4
characters of canonical JSON; prefixes under 1,024 tokens are not cached); otherwise usage is the fixed figures below.
"""

from __future__ import annotations

import hashlib
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
    cache_model: bool = False  # usage computed from the request's cachePoints (see module doc)
    cached_prefixes: set[str] = field(default_factory=set)

    def tier(self) -> dict[str, Any]:
        return {"serviceTier": {"type": self.service_tier}} if self.service_tier else {}

    def usage(self, counts: tuple[int, int, int, str] | None = None) -> dict[str, Any]:
        if counts is not None:  # (uncached input, cache read, cache write, its TTL) from the cache model
            input_, read, write, ttl = counts
            usage = {"inputTokens": input_, "outputTokens": self.output_tokens,
                     "totalTokens": input_ + read + write + self.output_tokens,
                     "cacheReadInputTokens": read, "cacheWriteInputTokens": write}
            if write:
                usage["cacheDetails"] = [{"ttl": ttl, "inputTokens": write}]
            return usage
        if self.writes_inside_input:
            input_ = self.input_tokens + self.cache_write
            total = input_ + self.output_tokens + self.cache_read
        else:
            input_ = self.input_tokens
            total = input_ + self.output_tokens + self.cache_read + self.cache_write
        return {"inputTokens": input_, "outputTokens": self.output_tokens, "totalTokens": total,
                "cacheReadInputTokens": self.cache_read, "cacheWriteInputTokens": self.cache_write}


CACHING_MODELS = ("anthropic.claude-3-5-haiku", "anthropic.claude-3-7-sonnet", "anthropic.claude-sonnet-4",
                  "anthropic.claude-opus-4", "anthropic.claude-haiku-4-5", "amazon.nova-")
MIN_CACHED = 1024


def _tokens(value: Any) -> int:
    return max(1, len(json.dumps(value, sort_keys=True, separators=(",", ":"))) // 4)


def _points_error(model: str, body: dict[str, Any]) -> str | None:
    """Bedrock's ValidationException message for misplaced cachePoints, or None."""
    lists = [("toolConfig.tools", (body.get("toolConfig") or {}).get("tools") or []),
             ("system", body.get("system") or [])]
    lists += [(f"messages.{i}.content", m.get("content") or []) for i, m in enumerate(body.get("messages") or [])]
    count = 0
    for where, blocks in lists:
        for i, block in enumerate(blocks):
            if "cachePoint" not in block:
                continue
            count += 1
            point = block["cachePoint"]
            if point.get("type") != "default" or point.get("ttl", "5m") not in ("5m", "1h"):
                return f"Malformed cachePoint at {where}.{i}."
            if i == 0:
                return f"A cachePoint cannot be the first block of {where}."
            if where == "toolConfig.tools" and "amazon.nova" in model:
                return "This model does not support caching tools."
    if count and not any(m in model for m in CACHING_MODELS):
        return "This model doesn't support prompt caching."
    if count > 4:
        return f"A maximum of 4 cache points may be provided; found {count}."
    return None


def cache_usage(fake: FakeBedrock, model: str, body: dict[str, Any]) -> tuple[int, int, int, str]:
    """(uncached input, read, write, the write's TTL) as the provider's cache would bill them."""
    segments: list[Any] = []
    boundaries: list[tuple[str, int]] = []  # (prefix digest, prefix tokens) at each cachePoint
    total, ttl = 0, "5m"
    lists = [(body.get("toolConfig") or {}).get("tools") or [], body.get("system") or []]
    lists += [[{"role": m.get("role")}, *(m.get("content") or [])] for m in body.get("messages") or []]
    for blocks in lists:
        for block in blocks:
            if "cachePoint" in block:
                digest = hashlib.sha256(json.dumps([model, segments], sort_keys=True).encode()).hexdigest()
                boundaries.append((digest, total))
                ttl = block["cachePoint"].get("ttl", "5m")
                continue
            segments.append(block)
            total += _tokens(block)
    read = max((tokens for digest, tokens in boundaries if digest in fake.cached_prefixes), default=0)
    write = 0
    if boundaries and boundaries[-1][1] >= MIN_CACHED and boundaries[-1][1] > read:
        write = boundaries[-1][1] - read
    for digest, tokens in boundaries:
        if tokens >= MIN_CACHED:
            fake.cached_prefixes.add(digest)
    return total - read - write, read, write, ttl


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
        model = request.path_params["model"]
        invalid = _points_error(model, body)
        if invalid:
            return JSONResponse({"message": invalid}, status_code=400,
                                headers={"x-amzn-ErrorType": "ValidationException"})
        counts = cache_usage(fake, model, body) if fake.cache_model else None
        content: list[dict[str, Any]] = [{"text": "".join(TEXT)}]
        stop = "end_turn"
        if fake.tool_use:
            content.append({"toolUse": fake.tool_use})
            stop = "tool_use"
        if operation == "converse":
            return JSONResponse({"output": {"message": {"role": "assistant", "content": content}},
                                 "stopReason": stop, "usage": fake.usage(counts), "metrics": {"latencyMs": 321},
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
            yield event("metadata", {"usage": fake.usage(counts), "metrics": {"latencyMs": 321}, **fake.tier()})

        return StreamingResponse(events(), media_type="application/vnd.amazon.eventstream",
                                 headers={"x-amzn-RequestId": "bedrock-req-1"})

    return Starlette(routes=[Route("/model/{model}/{operation}", handle, methods=["POST"])])
