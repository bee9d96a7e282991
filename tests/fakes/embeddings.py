"""Deterministic embeddings for tests and the bench: similar texts are close, like (a poor) real model.

Words and their character trigrams are hashed into `dimensions` signed buckets, then normalized.
Texts that share most words land near each other, so "turn on dark mode in my settings" and
"turn off dark mode in my settings" score very high — the case the semantic guards exist for.
Also a tiny OpenAI-compatible server: `/v1/embeddings` plus the fake chat completions.
"""

from __future__ import annotations

import hashlib
import math
import re

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.openai_server import FakeOpenAI, build_app

_WORD = re.compile(r"[a-z0-9']+")


def embed(text: str, dimensions: int = 256) -> list[float]:
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        padded = f" {word} "
        features = [(word, 1.0)] + [(padded[i:i + 3], 0.35) for i in range(len(padded) - 2)]
        for feature, weight in features:
            digest = hashlib.sha256(feature.encode()).digest()
            index = int.from_bytes(digest[:4], "big") % dimensions
            vector[index] += weight if digest[4] & 1 else -weight
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def build_app_with_embeddings(fake: FakeOpenAI, calls: list[dict] | None = None) -> Starlette:
    async def embeddings(request: Request) -> Response:
        body = await request.json()
        if calls is not None:
            calls.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or 256)
        tokens = sum(len(str(i).split()) for i in inputs)
        return JSONResponse({"object": "list", "model": body["model"],
                             "data": [{"object": "embedding", "index": i, "embedding": embed(str(t), dims)}
                                      for i, t in enumerate(inputs)],
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return Starlette(routes=[*build_app(fake).routes, Route("/v1/embeddings", embeddings, methods=["POST"])])
