"""A store proxy for fault injection: forwards AWS JSON calls to the embedded moto server, and can
hold chosen calls before forwarding them (the store applies them late) or hold their answers (the
store applied them, the client never hears), refuse them (a 500, never applied), or stop answering
altogether (a paused store)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class SlowStore:
    upstream: str
    # (predicate on (target, body), "apply" = hold the call before forwarding it | "answer" = forward
    # it at once and hold its answer; held until `release` is set (at most 60 s) | "refuse" = answer
    # 500 InternalServerError without forwarding: the store never applies it).
    rules: list[tuple[Callable[[str, bytes], bool], str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)  # set = every call hangs
    pending: int = 0
    held: int = 0
    forwarded: int = 0
    refused: int = 0

    def hold(self, target: str, body: bytes) -> str | None:
        for predicate, mode in self.rules:
            if predicate(target, body):
                return mode
        return None

    async def wait_release(self) -> None:
        self.held += 1
        for _ in range(3000):
            if self.release.is_set():
                return
            await asyncio.sleep(0.02)


def build_app(store: SlowStore) -> Starlette:
    client: dict[str, httpx.AsyncClient] = {}

    async def forward(request: Request) -> Response:
        body = await request.body()
        target = request.headers.get("x-amz-target", "")
        store.pending += 1
        try:
            while store.paused.is_set():
                await asyncio.sleep(0.02)
            mode = store.hold(target, body)
            if mode == "refuse":
                store.refused += 1
                return Response(b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError",'
                                b'"message":"injected fault"}', status_code=500,
                                headers={"content-type": "application/x-amz-json-1.0"})
            if mode == "apply":
                await store.wait_release()
            http = client.setdefault("c", httpx.AsyncClient(timeout=60))
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            answer = await http.post(store.upstream + "/", content=body, headers=headers)
            store.forwarded += 1
            if mode == "answer":
                await store.wait_release()
            return Response(answer.content, status_code=answer.status_code,
                            headers={"content-type": answer.headers.get("content-type", "application/json")})
        finally:
            store.pending -= 1

    return Starlette(routes=[Route("/", forward, methods=["POST"])])


def is_reserve(target: str, body: bytes) -> bool:
    return target.endswith("UpdateItem") and b"SET #lease = :lease" in body
