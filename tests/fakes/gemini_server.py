"""A fake Gemini API (generativelanguage v1beta) on loopback, speaking the real wire format.

`POST /v1beta/models/{model}:generateContent` returns a GenerateContentResponse (candidates with
content.parts, finishReason, usageMetadata with promptTokenCount INCLUDING
cachedContentTokenCount, candidatesTokenCount, thoughtsTokenCount, totalTokenCount, modelVersion,
responseId). `:streamGenerateContent?alt=sse` streams `data: <GenerateContentResponse>` events with
no terminator; usageMetadata grows chunk by chunk and the last one is final. The key arrives in
`x-goog-api-key`. Errors as {"error": {"code", "message", "status"}}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TEXT = ["Hello", " from", " Gemini", "."]


@dataclass
class FakeGemini:
    prompt_tokens: int = 1500  # includes cached
    cached_tokens: int = 1024
    candidates_tokens: int = 30
    thoughts_tokens: int = 12
    function_call: dict[str, Any] | None = None  # {"name", "args"}
    error: tuple[int, dict[str, Any]] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    audio_tokens: int = 0  # of prompt_tokens, reported per modality in promptTokensDetails
    audio_cached: int = 0  # of cached_tokens, in cacheTokensDetails
    audio_out_tokens: int = 0  # of candidates_tokens, reported in candidatesTokensDetails (native audio)
    service_tier: str | None = None  # usageMetadata.serviceTier
    grounding_queries: list[str] = field(default_factory=list)  # candidates[].groundingMetadata

    def usage(self, candidates: int | None = None) -> dict[str, Any]:
        out = candidates if candidates is not None else self.candidates_tokens
        meta = {"promptTokenCount": self.prompt_tokens, "candidatesTokenCount": out,
                "totalTokenCount": self.prompt_tokens + out + self.thoughts_tokens,
                "thoughtsTokenCount": self.thoughts_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens - self.audio_tokens}]}
        if self.audio_tokens:
            meta["promptTokensDetails"].append({"modality": "AUDIO", "tokenCount": self.audio_tokens})
        if self.cached_tokens:
            meta["cachedContentTokenCount"] = self.cached_tokens
            meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.cached_tokens - self.audio_cached}]
            if self.audio_cached:
                meta["cacheTokensDetails"].append({"modality": "AUDIO", "tokenCount": self.audio_cached})
        if self.audio_out_tokens and out >= self.audio_out_tokens:
            meta["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": out - self.audio_out_tokens},
                                               {"modality": "AUDIO", "tokenCount": self.audio_out_tokens}]
        if self.service_tier:
            meta["serviceTier"] = self.service_tier
        return meta

    def grounding(self) -> dict[str, Any]:
        if not self.grounding_queries:
            return {}
        return {"groundingMetadata": {"webSearchQueries": self.grounding_queries,
                                      "groundingChunks": [{"web": {"uri": "https://example.com", "title": "ex"}}]}}


def build_app(fake: FakeGemini) -> Starlette:
    async def handle(request: Request) -> Response:
        rest = request.path_params["rest"]
        model, _, method = rest.partition(":")
        body = await request.json()
        fake.requests.append(body)
        fake.headers.append(dict(request.headers))
        fake.urls.append(str(request.url))
        if fake.error:
            return JSONResponse(fake.error[1], status_code=fake.error[0])
        parts: list[dict[str, Any]] = [{"text": "".join(TEXT)}]
        if fake.function_call:
            parts.append({"functionCall": fake.function_call})
        if method == "generateContent":
            return JSONResponse({
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0,
                                **fake.grounding()}],
                "usageMetadata": fake.usage(), "modelVersion": model, "responseId": "gem-resp-1",
            })
        if method != "streamGenerateContent" or request.query_params.get("alt") != "sse":
            return JSONResponse({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}},
                                status_code=404)

        async def events():
            for i, piece in enumerate(TEXT):
                last = i == len(TEXT) - 1
                chunk_parts: list[dict[str, Any]] = [{"text": piece}]
                if last and fake.function_call:
                    chunk_parts.append({"functionCall": fake.function_call})
                candidate: dict[str, Any] = {"content": {"role": "model", "parts": chunk_parts}, "index": 0}
                if last:
                    candidate["finishReason"] = "STOP"
                    candidate.update(fake.grounding())
                chunk = {"candidates": [candidate],
                         "usageMetadata": fake.usage(None if last else i + 1),
                         "modelVersion": model, "responseId": "gem-resp-1"}
                yield f"data: {json.dumps(chunk, separators=(',', ':'))}\r\n\r\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1beta/models/{rest:path}", handle, methods=["POST"])])
