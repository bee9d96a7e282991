"""The built-in simulated provider, `sim/<model>`: answers like OpenAI's Chat Completions API.

Deterministic (the reply depends only on the request), streams realistic chunks, and reports
realistic usage: prompt tokens from the messages, cached tokens when the same long prefix was seen
before (like OpenAI's automatic caching, >= 1,024 tokens, in 128-token steps), and reasoning tokens
for reasoning models. Priced as the real model it names, so demos show real money.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from meterline.providers.base import UpstreamRequest
from meterline.usage import estimate_chat_prompt_tokens

_WORDS = (
    "the", "gateway", "meters", "every", "call", "so", "that", "spend", "is", "explained", "and", "bounded",
    "while", "the", "product", "runs", "budgets", "hold", "under", "concurrency", "keys", "stay", "in", "the",
    "vault", "and", "each", "cent", "is", "accounted", "for", "exactly", "in", "integer", "micro", "dollars",
)
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


class SimResponse:
    def __init__(self, status_code: int, payload: bytes | None = None,
                 chunks: list[bytes] | None = None, delay_s: float = 0.0):
        self.status_code = status_code
        self.headers = {"content-type": "text/event-stream" if chunks is not None else "application/json",
                        "x-request-id": "sim-" + hashlib.sha256(payload or b"".join(chunks or [])).hexdigest()[:16]}
        self._payload = payload
        self._chunks = chunks
        self._delay_s = delay_s

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            yield self._payload or b""
            return
        for chunk in self._chunks:
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            yield chunk

    async def aread(self) -> bytes:
        return b"".join([c async for c in self.aiter_bytes()])

    async def aclose(self) -> None:
        return None


class SimUpstream:
    def __init__(self, delay_ms: float | None = None):
        self.delay_s = (float(os.environ.get("METERLINE_SIM_DELAY_MS", "0")) if delay_ms is None else delay_ms) / 1000
        # Prompt prefixes seen recently, to simulate the provider's automatic prompt cache.
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def aclose(self) -> None:
        return None

    def _cached_tokens(self, messages: list[Any], prompt_tokens: int) -> int:
        if prompt_tokens < 1024:
            return 0
        prefix = json.dumps(messages[:-1] or messages, sort_keys=True)
        digest = hashlib.sha256(prefix.encode()).hexdigest()
        hit = digest in self._seen
        self._seen[digest] = None
        self._seen.move_to_end(digest)
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        prefix_tokens = estimate_chat_prompt_tokens(messages[:-1]) if len(messages) > 1 else prompt_tokens
        return (min(prefix_tokens, prompt_tokens) // 128) * 128 if hit else 0

    async def send(self, request: UpstreamRequest) -> SimResponse:
        body = json.loads(request.body)
        model = body["model"]
        messages = body.get("messages") or []
        seed = hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode()).digest()
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 4096
        length = min(20 + seed[0] % 100, int(limit))
        last_user = next((m.get("content") for m in reversed(messages)
                          if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)), "")
        words = [f"Simulated reply from {model} to: {last_user[:60]!r}."]
        words += [_WORDS[(seed[i % 32] + i) % len(_WORDS)] for i in range(max(length - 12, 0))]
        text = " ".join(words)
        pieces = [w + " " for w in text.split(" ")]
        pieces[-1] = pieces[-1].rstrip()
        finish = "length" if length == int(limit) else "stop"
        prompt = estimate_chat_prompt_tokens(messages)
        cached = self._cached_tokens(messages, prompt)
        reasoning = (64 + seed[1] % 200) if model.startswith(REASONING_PREFIXES) else 0
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(pieces) + reasoning,
            "total_tokens": prompt + len(pieces) + reasoning,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        rid = "chatcmpl-sim" + seed.hex()[:20]
        created = int(time.time())
        if not body.get("stream"):
            payload = {
                "id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "logprobs": None, "finish_reason": finish}],
                "usage": usage, "service_tier": "default", "system_fingerprint": "fp_meterline_sim",
            }
            return SimResponse(200, json.dumps(payload).encode())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "service_tier": "default", "system_fingerprint": "fp_meterline_sim",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        chunks += [chunk({"content": p}) for p in pieces]
        chunks.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            data = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "service_tier": "default", "system_fingerprint": "fp_meterline_sim", "choices": [],
                    "usage": usage}
            chunks.append(b"data: " + json.dumps(data).encode() + b"\n\n")
        chunks.append(b"data: [DONE]\n\n")
        return SimResponse(200, None, chunks, self.delay_s)
