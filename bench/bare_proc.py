"""The floor bench/overhead.py compares the gateway with: a bare FastAPI + aiohttp pass-through.

`python bench/overhead.py --transports aiohttp,bare` runs it as the "bare" row: the same uvicorn,
FastAPI and aiohttp the gateway uses, forwarding /v1/chat/completions to the fake upstream with one
pooled session, streamed or not, and nothing else (no authentication, metering, store calls or
ledger). Its CPU per request is what any Python gateway on this stack pays before doing any work.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response, StreamingResponse

COUNTERS = ("key_misses", "key_refreshes", "workspace_misses", "workspace_refreshes", "kms_decrypts",
            "ledger_writes", "dynamo_calls", "dynamo_busy_s", "enforcement_misses", "window_writes",
            "pool_writes", "alone_writes", "settle_writes", "ledger_settlements")


def main() -> None:
    port, stats_path = int(sys.argv[1]), sys.argv[2]
    upstream = os.environ["BENCH_UPSTREAM"]
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    sessions: list[aiohttp.ClientSession] = []

    def dump(*_: object) -> None:
        with open(stats_path, "w") as f:
            json.dump(dict.fromkeys(COUNTERS, 0), f)  # no store, no caches

    signal.signal(signal.SIGUSR1, dump)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        if not sessions:
            sessions.append(aiohttp.ClientSession())
        body = await request.body()
        response = await sessions[0].post(upstream + "/chat/completions", data=body, headers={
            "content-type": "application/json", "authorization": "Bearer sk-bench"})
        if b'"stream":true' not in body:
            data = await response.read()
            response.release()
            return Response(data, status_code=response.status, media_type="application/json")

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                response.release()

        return StreamingResponse(relay(), status_code=response.status, media_type="text/event-stream")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False, proxy_headers=False)


if __name__ == "__main__":
    main()
