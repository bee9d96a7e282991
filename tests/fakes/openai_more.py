"""The fake OpenAI server (tests/fakes/openai_server.py) plus the Responses and Embeddings APIs, and
an Azure OpenAI front for all three.

Responses: `POST /v1/responses` returns a `response` object with `usage` (input_tokens including
`input_tokens_details.cached_tokens`, output_tokens including `output_tokens_details.reasoning_tokens`);
streamed as named SSE events response.created, response.output_item.added,
response.output_text.delta..., response.output_text.done, response.completed (carrying the full
response with usage). Embeddings: `POST /v1/embeddings` returns a list of `embedding` objects and
`usage` {prompt_tokens, total_tokens}.

Azure: `/openai/deployments/{deployment}/{chat/completions|responses|embeddings}?api-version=...`
with the key in `api-key`; each call is logged in `FakeAzureLog` and then answered by the same
handlers as OpenAI.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.openai_server import build_app as build_chat_app

RESPONSE_TEXT = ["Hi", " from", " Responses", "."]
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@dataclass
class FakeOpenAIMore:
    chat: FakeOpenAI = field(default_factory=FakeOpenAI)
    input_tokens: int = 2000
    cached_tokens: int = 1536
    output_tokens: int = 64
    reasoning_tokens: int = 32
    embedding_tokens: int = 17
    error: tuple[int, dict[str, Any]] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # Server-side tool call items placed before the message (web_search_call, code_interpreter_call,
    # image_generation_call, ...); streamed as their own output_item / image_generation_call events.
    tool_items: list[dict[str, Any]] = field(default_factory=list)
    partial_images: int = 0  # response.image_generation_call.partial_image events per image
    # The response's `tool_usage` (hosted tools' own usage: image_gen tokens, billable web searches).
    tool_usage: dict[str, Any] | None = None

    def response(self, model: str, status: str = "completed") -> dict[str, Any]:
        extra = {"tool_usage": self.tool_usage} if self.tool_usage is not None and status == "completed" else {}
        return {**extra,
            "id": "resp_fake1", "object": "response", "created_at": int(time.time()), "status": status,
            "model": model + "-2025-08-07", "service_tier": "default",
            "output": [*self.tool_items, {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": "".join(RESPONSE_TEXT), "annotations": []}]}],
            "usage": {"input_tokens": self.input_tokens,
                      "input_tokens_details": {"cached_tokens": self.cached_tokens},
                      "output_tokens": self.output_tokens,
                      "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                      "total_tokens": self.input_tokens + self.output_tokens},
        }


@dataclass
class FakeAzureLog:
    calls: list[dict[str, str]] = field(default_factory=list)


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, separators=(',', ':'))}\n\n".encode()


def build_app(fake: FakeOpenAIMore) -> Starlette:
    async def responses(request: Request) -> Response:
        body = await request.json()
        fake.requests.append(body)
        fake.headers.append(dict(request.headers))
        if fake.error:
            return JSONResponse(fake.error[1], status_code=fake.error[0])
        if not body.get("stream"):
            return JSONResponse(fake.response(body["model"]))

        async def events():
            seq = 0
            created = {**fake.response(body["model"], "in_progress"), "output": [], "usage": None}
            yield _sse("response.created", {"sequence_number": seq, "response": created})
            # Server-side tool calls first, each as its item's added / progress / done events.
            for index, item in enumerate(fake.tool_items):
                kind = item["type"]
                seq += 1
                pending = {k: v for k, v in item.items() if k not in ("result", "revised_prompt")}
                yield _sse("response.output_item.added", {"sequence_number": seq, "output_index": index,
                                                          "item": {**pending, "status": "in_progress"}})
                if kind == "image_generation_call":
                    ids = {"item_id": item["id"], "output_index": index}
                    for step in ("in_progress", "generating"):
                        seq += 1
                        yield _sse(f"response.image_generation_call.{step}", {"sequence_number": seq, **ids})
                    for n in range(fake.partial_images):
                        seq += 1
                        yield _sse("response.image_generation_call.partial_image", {
                            "sequence_number": seq, **ids, "partial_image_index": n,
                            "partial_image_b64": PNG_B64})
                    seq += 1
                    yield _sse("response.image_generation_call.completed", {"sequence_number": seq, **ids})
                seq += 1
                yield _sse("response.output_item.done", {"sequence_number": seq, "output_index": index, "item": item})
            at = len(fake.tool_items)
            seq += 1
            yield _sse("response.output_item.added", {"sequence_number": seq, "output_index": at, "item": {
                "type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}})
            for piece in RESPONSE_TEXT:
                seq += 1
                yield _sse("response.output_text.delta", {"sequence_number": seq, "item_id": "msg_1",
                                                          "output_index": at, "content_index": 0, "delta": piece,
                                                          "logprobs": []})
            seq += 1
            yield _sse("response.output_text.done", {"sequence_number": seq, "item_id": "msg_1", "output_index": at,
                                                     "content_index": 0, "text": "".join(RESPONSE_TEXT),
                                                     "logprobs": []})
            seq += 1
            yield _sse("response.completed", {"sequence_number": seq, "response": fake.response(body["model"])})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        fake.requests.append(body)
        fake.headers.append(dict(request.headers))
        if fake.error:
            return JSONResponse(fake.error[1], status_code=fake.error[0])
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return JSONResponse({
            "object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, -0.2, 0.3]} for i in range(len(inputs))],
            "usage": {"prompt_tokens": fake.embedding_tokens, "total_tokens": fake.embedding_tokens},
        })

    chat = build_chat_app(fake.chat)
    return Starlette(routes=[*chat.routes, Route("/v1/responses", responses, methods=["POST"]),
                             Route("/v1/embeddings", embeddings, methods=["POST"])])


_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|responses|embeddings)$")


def build_azure_app(fake: FakeOpenAIMore, log: FakeAzureLog) -> Any:
    inner = build_app(fake)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            match = _AZURE_PATH.match(scope["path"])
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            query = scope.get("query_string", b"").decode()
            if match is None or "api-version=" not in query or "api-key" not in headers:
                response = JSONResponse({"error": {"code": "404", "message": "Resource not found"}}, status_code=404)
                await response(scope, receive, send)
                return
            log.calls.append({"deployment": match.group(1), "path": match.group(2), "query": query,
                              "api-key": headers["api-key"], "authorization": headers.get("authorization", "")})
            scope = {**scope, "path": "/v1/" + match.group(2), "raw_path": ("/v1/" + match.group(2)).encode(),
                     "query_string": b""}
        await inner(scope, receive, send)

    return app
