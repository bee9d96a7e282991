"""The data plane: an OpenAI-compatible FastAPI app.

On Lambda it runs under uvicorn behind the AWS Lambda Web Adapter (response streaming); locally
under `meterline dev`; in tests on uvicorn over loopback. `create_app` builds everything lazily.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from meterline.config import Settings
from meterline.errors import GatewayError, NotFoundError, PayloadTooLargeError, openai_error_body
from meterline.gateway import proxy, routing
from meterline.gateway.context import RequestContext
from meterline.gateway.pipeline import (
    AuthenticateStage,
    CredentialsStage,
    LedgerStage,
    Pipeline,
    ReadBodyStage,
    RouteStage,
)
from meterline.gateway.services import Services
from meterline.gateway.validation import validate_chat
from meterline.telemetry import record_request

log = logging.getLogger("meterline.gateway")


async def read_limited(ctx: RequestContext, limit: int) -> bytes:
    request: Request = ctx.extra["request"]
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def error_response(ctx: RequestContext) -> JSONResponse:
    error = ctx.error or GatewayError("Internal error.")
    headers = {**error.headers, "meterline-request-id": ctx.request_id}
    return JSONResponse(openai_error_body(error), status_code=error.status, headers=headers)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    state: dict[str, Services] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # DynamoDB/KMS calls run in threads: size the pool for concurrent requests, not for cores.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=64))
        owned = services is None
        state["services"] = services or Services.build(settings or Settings.from_env())
        try:
            yield
        finally:
            if owned:
                await state["services"].aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def chat_pipeline(svc: Services) -> Pipeline:
        return Pipeline([
            LedgerStage(svc),
            AuthenticateStage(svc),
            ReadBodyStage(svc, read_limited, validate_chat),
            RouteStage(),
            CredentialsStage(svc),
        ])

    pipelines: dict[int, Pipeline] = {}

    def pipeline_for(svc: Services) -> Pipeline:
        found = pipelines.get(id(svc))
        if found is None:
            found = pipelines[id(svc)] = chat_pipeline(svc)
        return found

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        svc = state["services"]
        ctx = RequestContext(endpoint="chat.completions", headers=dict(request.headers),
                             client_ip=request.client.host if request.client else None)
        ctx.extra["request"] = request
        pipeline = pipeline_for(svc)
        ran = await pipeline.enter(ctx)
        try:
            if ctx.error is None:
                response = await proxy.open_upstream(ctx, svc)
                if response is not None:
                    if ctx.stream:
                        stream = proxy.MeteredStream(ctx, response, pipeline, ran)
                        return proxy.MeteredStreamingResponse(stream, proxy.stream_headers(ctx, response))
                    done = await proxy.complete(ctx, response, svc, pipeline, ran)
                    if done is not None:
                        return done
            await pipeline.unwind(ctx, ran)
            return error_response(ctx)
        except BaseException:
            ctx.outcome = ctx.outcome if ctx.outcome != "ok" else "error"
            await asyncio.shield(pipeline.unwind(ctx, ran))
            raise
        finally:
            if not ctx.stream or ctx.error is not None:
                record_request(ctx)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        svc = state["services"]
        ctx = RequestContext(endpoint="models", headers=dict(request.headers))
        decision = await AuthenticateStage(svc).before(ctx)
        if decision is not None:
            ctx.error = decision.error
            return error_response(ctx)
        assert ctx.key and ctx.workspace
        catalog = ctx.extra["catalog"]
        data = []
        entries = [routing.SIM_ENTRY, *ctx.workspace.providers.values()]
        for entry in entries:
            for model_id in catalog.model_ids():
                namespace, name = model_id.split("/", 1)
                if entry.name != routing.SIM and namespace != entry.catalog:
                    continue
                if entry.name == routing.SIM and namespace not in ("openai", "anthropic", "gemini"):
                    continue
                exposed = f"{entry.name}/{name}"
                if routing.allowed(ctx.key, exposed):
                    data.append({"id": exposed, "object": "model", "created": 0, "owned_by": entry.name})
        return JSONResponse({"object": "list", "data": data},
                            headers={"meterline-request-id": ctx.request_id})

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def unknown(rest: str) -> Response:
        ctx = RequestContext(endpoint="unknown", headers={})
        ctx.error = NotFoundError(f"Unknown endpoint /v1/{rest}.", code="unknown_url")
        return error_response(ctx)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> Response:
        log.exception("unhandled_error")
        body = openai_error_body(GatewayError("Internal error."))
        return JSONResponse(body, status_code=500)

    return app
