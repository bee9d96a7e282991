"""A fake OpenAI Chat Completions server on loopback, speaking the real wire format.

Recorded from OpenAI's documented responses: `chat.completion` objects with `usage` including
`prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`, SSE
`chat.completion.chunk` events, the `choices: []` usage chunk when `stream_options.include_usage`
is set, and `data: [DONE]`. Behaviours (errors, delays, cuts, usage on a chunk with choices)
are set per test on the `FakeOpenAI` controller.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

RAW = "__raw_usage__"


def dumps(data: Any) -> bytes:
    """JSON, with a raw usage text spliced in where `FakeOpenAI.usage_raw` asks for one."""
    text = json.dumps(data, separators=(",", ":"))
    usage = data.get("usage") if isinstance(data, dict) else None
    if isinstance(usage, dict) and RAW in usage:
        text = text.replace(json.dumps({RAW: usage[RAW]}, separators=(",", ":")), usage[RAW])
    return text.encode()


WORDS = ["Hello", " there", "!", " How", " can", " I", " help", " you", " today", "?"]


@dataclass
class FakeOpenAI:
    prompt_tokens: int = 1200
    cached_tokens: int = 1024
    completion_tokens: int = 10
    reasoning_tokens: int = 4
    service_tier: str = "default"
    # Usage on the last chunk that still has choices (as some OpenAI-compatible providers do).
    usage_on_choice_chunk: bool = False
    # "null" -> every chunk carries "usage": null like OpenAI does with include_usage.
    null_usage_on_chunks: bool = True
    error: tuple[int, dict[str, Any]] | None = None
    delay_before_headers_s: float = 0.0
    chunk_delay_s: float = 0.0
    chunks: list[str] = field(default_factory=lambda: list(WORDS))
    cut_after_chunks: int | None = None  # drop the connection mid-stream
    gate: threading.Event | None = None  # hold the stream after its first chunk until set
    gate_timed_out: bool = False
    last_chunk_sent_at: float | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # Raw JSON text sent as the `usage` object instead (e.g. with NaN, 1e309, -5 or 10^40 in it).
    usage_raw: str | None = None
    # Extra response headers (e.g. an upstream echoing a secret in x-request-id).
    extra_headers: dict[str, str] = field(default_factory=dict)
    # gpt-4o-audio / gpt-audio: audio tokens inside prompt_tokens and completion_tokens (the reply then
    # carries `message.audio`, streamed as `delta.audio`); Predicted Outputs' rejected tokens, which
    # OpenAI counts inside completion_tokens.
    audio_prompt_tokens: int = 0
    audio_completion_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    def usage(self) -> dict[str, Any]:
        if self.usage_raw is not None:
            return {RAW: self.usage_raw}
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": self.audio_prompt_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens,
                                          "audio_tokens": self.audio_completion_tokens,
                                          "accepted_prediction_tokens": self.accepted_prediction_tokens,
                                          "rejected_prediction_tokens": self.rejected_prediction_tokens},
        }


def build_app(fake: FakeOpenAI) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        fake.requests.append(body)
        fake.headers.append(dict(request.headers))
        if fake.delay_before_headers_s:
            await asyncio.sleep(fake.delay_before_headers_s)
        if fake.error:
            status, payload = fake.error
            return JSONResponse(payload, status_code=status)
        created = int(time.time())
        model = body["model"]
        headers = {"x-request-id": "req_upstream_fake", **fake.extra_headers}
        audio = bool(fake.audio_completion_tokens)
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(fake.chunks), "refusal": None,
                                       "annotations": []}
            if audio:  # an audio reply: the text is the audio's transcript, content is null
                message.update(content=None, audio={"id": "audio_fake1", "data": "UklGRiQAAABXQVZF",
                                                    "expires_at": created + 3600, "transcript": "".join(fake.chunks)})
            return Response(dumps({
                "id": "chatcmpl-fake123", "object": "chat.completion", "created": created,
                "model": model + "-2024-08-06",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                "usage": fake.usage(), "service_tier": fake.service_tier, "system_fingerprint": "fp_fake",
            }), headers=headers, media_type="application/json")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = "absent") -> bytes:
            data: dict[str, Any] = {
                "id": "chatcmpl-fake123", "object": "chat.completion.chunk", "created": created,
                "model": model + "-2024-08-06", "service_tier": fake.service_tier, "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if usage != "absent":
                data["usage"] = usage
            elif include_usage and fake.null_usage_on_chunks:
                data["usage"] = None
            return b"data: " + dumps(data) + b"\n\n"

        async def events():
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            for i, word in enumerate(fake.chunks):
                if fake.cut_after_chunks is not None and i >= fake.cut_after_chunks:
                    raise RuntimeError("simulated upstream connection drop")
                if fake.chunk_delay_s:
                    await asyncio.sleep(fake.chunk_delay_s)
                last = i == len(fake.chunks) - 1
                delta = {"audio": {"id": "audio_fake1", "transcript": word}} if audio else {"content": word}
                if last and fake.usage_on_choice_chunk and include_usage:
                    yield chunk(delta, usage=fake.usage())
                else:
                    yield chunk(delta)
                if i == 0 and fake.gate is not None:
                    deadline = time.monotonic() + 5
                    while not fake.gate.is_set():
                        if time.monotonic() > deadline:
                            fake.gate_timed_out = True
                            break
                        await asyncio.sleep(0.01)
            if audio:
                yield chunk({"audio": {"id": "audio_fake1", "data": "UklGRiQAAABXQVZF", "expires_at": created + 3600}})
            yield chunk({}, "stop")
            if include_usage and not fake.usage_on_choice_chunk:
                data = {"id": "chatcmpl-fake123", "object": "chat.completion.chunk", "created": created,
                        "model": model + "-2024-08-06", "service_tier": fake.service_tier,
                        "system_fingerprint": "fp_fake", "choices": [], "usage": fake.usage()}
                yield b"data: " + dumps(data) + b"\n\n"
            fake.last_chunk_sent_at = time.monotonic()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
