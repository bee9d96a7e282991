"""The data plane: OpenAI-compatible (`/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`,
`/v1/models`) and Anthropic-compatible (`/v1/messages`, `/v1/messages/count_tokens`) FastAPI app.
Errors come back in the dialect of the endpoint called.

On Lambda it runs under uvicorn behind the AWS Lambda Web Adapter (response streaming); locally
under `meterline dev`; in tests on uvicorn over loopback. `create_app` builds everything lazily.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from meterline.config import Settings
from meterline.errors import (
    GatewayError,
    NotFoundError,
    PayloadTooLargeError,
    UpstreamUnavailable,
    anthropic_error_body,
    openai_error_body,
)
from meterline.gateway import addressing, caching, proxy
from meterline.gateway.compression import CompressionStage
from meterline.gateway.context import RequestContext
from meterline.gateway.enforcement import EnforcementStage
from meterline.gateway.pipeline import (
    AuthenticateStage,
    CredentialsStage,
    LedgerStage,
    Pipeline,
    ReadBodyStage,
    RouteStage,
)
from meterline.gateway.policy_stage import PolicyStage
from meterline.gateway.profile import ProfileStage
from meterline.gateway.prompt_caching import PromptCacheStage
from meterline.gateway.routing import RoutingStage
from meterline.gateway.semantic import SemanticStage
from meterline.gateway.services import Services
from meterline.gateway.templates import TemplateStage
from meterline.gateway.validation import (
    validate_chat,
    validate_count_tokens,
    validate_embeddings,
    validate_messages,
    validate_responses,
)
from meterline.levers import tokens
from meterline.logs import configure as configure_logging
from meterline.policies.engine import Facts
from meterline.redaction import redact, redact_bytes, redact_headers
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


def header_dict(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's headers by lower-case name, the first of repeated ones (as
    `dict(request.headers)`, in one pass instead of a scan of the list per name)."""
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key not in out:
            out[key] = value.decode("latin-1")
    return out


ANTHROPIC_ENDPOINTS = ("messages", "messages.count_tokens")
# The data plane's routes and their methods (anything else on them is a 405, not a 404).
METHODS = {"/v1/chat/completions": ("POST",), "/v1/responses": ("POST",), "/v1/embeddings": ("POST",),
           "/v1/messages": ("POST",), "/v1/messages/count_tokens": ("POST",), "/v1/models": ("GET",)}
VALIDATORS = {"chat.completions": validate_chat, "messages": validate_messages, "responses": validate_responses,
              "embeddings": validate_embeddings, "messages.count_tokens": validate_count_tokens}


def error_response(ctx: RequestContext) -> JSONResponse:
    error = ctx.error or GatewayError("Internal error.")
    secrets = proxy.secrets_of(ctx)
    if error.message:
        error.message = redact(error.message, *secrets)
    headers = {**redact_headers(error.headers, *secrets), "meterline-request-id": ctx.request_id}
    if ctx.endpoint in ANTHROPIC_ENDPOINTS:
        return JSONResponse(anthropic_error_body(error), status_code=error.status, headers=headers)
    return JSONResponse(openai_error_body(error), status_code=error.status, headers=headers)


def _should_prime() -> bool:
    """On Lambda always (the lifespan runs before the snapshot / in the init phase); elsewhere on
    request (METERLINE_PRIME=1), so tests and `meterline dev` start fast."""
    flag = os.environ.get("METERLINE_PRIME")
    if flag is not None:
        return flag.strip().lower() in ("1", "true", "yes")
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


class GatewayApp(FastAPI):
    """The data plane's FastAPI app, with its POST endpoints dispatched by exact path straight to
    their handler, ahead of FastAPI's middleware stack (server errors, exception telemetry, body
    limit), router, per-route wrappers and dependency solving: together ~0.1 ms of CPU per request
    that does nothing for these handlers (a Request in, a Response out, no parameters; the body
    limit is ReadBodyStage's). What the server-error middleware would do for them is done here: an
    unhandled exception is logged and answered with a 500 in the endpoint's dialect (nothing of it
    reaches the caller). Anything else (other methods or paths, a root path, lifespan) takes
    FastAPI's own route."""

    data_plane: dict[str, Callable[[Request], Awaitable[Response]]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            handler = self.data_plane.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                started = False

                async def tracked(message: Message) -> None:
                    nonlocal started
                    if message["type"] == "http.response.start":
                        started = True
                    await send(message)

                try:
                    response = await handler(Request(scope, receive, tracked))
                    await response(scope, receive, tracked)
                except Exception:
                    log.exception("unhandled_error")
                    if not started:
                        await internal_error(scope["path"])(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def internal_error(path: str) -> JSONResponse:
    error = GatewayError("Internal error.")
    body = anthropic_error_body(error) if path.startswith("/v1/messages") else openai_error_body(error)
    return JSONResponse(body, status_code=500)


def create_app(settings: Settings | None = None, services: Services | None = None) -> GatewayApp:
    configure_logging("gateway")
    state: dict[str, Services] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # DynamoDB/KMS calls run in threads: size the pool for concurrent requests, not for cores.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=64))
        owned = services is None
        state["services"] = services or Services.build(settings or Settings.from_env())
        if _should_prime():
            primed = await asyncio.to_thread(state["services"].prime)
            logging.getLogger("meterline.gateway").info("primed", extra={"primed": primed})
        if tokens.preload_requested():
            # SnapStart: load the tokenizer before the snapshot, never on a restored warm request.
            tokens.preload()
        try:
            yield
        finally:
            if owned:
                await state["services"].aclose()

    app = GatewayApp(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    # One routing stage per process: its session-affinity pins and output history span endpoints.
    routing_stages: dict[int, RoutingStage] = {}

    def build_pipeline(svc: Services, endpoint: str) -> Pipeline:
        stages = [
            AuthenticateStage(svc),
            ReadBodyStage(svc, read_limited, VALIDATORS[endpoint]),
            TemplateStage(svc),  # Meterline-Template: assembled before policies and the cache key
            PolicyStage(svc),
            RouteStage(),
            ProfileStage(),  # request shape for waste scoring (waste/features.py)
            CredentialsStage(svc),
        ]
        if endpoint != "messages.count_tokens":  # token counting is not spend: no ledger record, no budget
            stages.insert(0, LedgerStage(svc))
            # route -> routing lever (the plan may change) -> exact-cache lookup (started; its key names
            # the routed model) -> enforce (writes while the lookup is in flight; may downgrade) -> exact-
            # cache serve (a hit stops here) -> semantic dedup (serve: a hit stops here) -> compression
            # -> prompt-cache breakpoints (on the compressed body) -> credentials
            routing = routing_stages.setdefault(id(svc), RoutingStage())
            cache = caching.ResponseCache(svc)
            at = len(stages) - 1
            stages[at:at] = [routing, cache.lookup_stage, EnforcementStage(svc), cache.serve_stage,
                             SemanticStage(svc), CompressionStage(), PromptCacheStage()]
        else:  # ... but it is a call on the workspace's provider key: rate-limited like any other
            stages.insert(len(stages) - 1, EnforcementStage(svc, rate_only=True))
        return Pipeline(stages)

    pipelines: dict[tuple[int, str], Pipeline] = {}

    def pipeline_for(svc: Services, endpoint: str = "chat.completions") -> Pipeline:
        found = pipelines.get((id(svc), endpoint))
        if found is None:
            found = pipelines[(id(svc), endpoint)] = build_pipeline(svc, endpoint)
        return found

    def new_context(request: Request, endpoint: str) -> RequestContext:
        client = request.scope.get("client")
        ctx = RequestContext(endpoint=endpoint, headers=header_dict(request.scope["headers"]),
                             client_ip=client[0] if client else None)
        ctx.extra["request"] = request
        return ctx

    async def metered(request: Request, endpoint: str) -> Response:
        svc = state["services"]
        ctx = new_context(request, endpoint)
        pipeline = pipeline_for(svc, endpoint)
        ran = await pipeline.enter(ctx)
        try:
            if ctx.error is None and "cache_hit" in ctx.extra:
                return await caching.serve_hit(ctx, pipeline, ran)
            if ctx.error is None:
                response = await proxy.open_with_fallbacks(ctx, svc)
                if response is not None:
                    if ctx.stream:
                        stream = proxy.MeteredStream(ctx, response, pipeline, ran, svc.settings.request_deadline_s)
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

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await metered(request, "chat.completions")

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        return await metered(request, "responses")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        return await metered(request, "embeddings")

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        return await metered(request, "messages")

    @app.post("/v1/messages/count_tokens")
    async def count_tokens(request: Request) -> Response:
        """Authenticated and forwarded to the workspace's Anthropic provider; not metered as spend."""
        svc = state["services"]
        ctx = new_context(request, "messages.count_tokens")
        pipeline = pipeline_for(svc, "messages.count_tokens")
        ran = await pipeline.enter(ctx)
        try:
            if ctx.error is None:
                response = await proxy.open_upstream(ctx, svc)
                if response is not None:
                    try:
                        raw = await proxy.read_capped(response, 1024 * 1024)  # a count is a few bytes
                    except Exception:
                        ctx.error = UpstreamUnavailable("The provider sent an unreadable response.")
                    finally:
                        await response.aclose()
                    if ctx.error is None:
                        return Response(redact_bytes(raw, *proxy.secrets_of(ctx)), status_code=response.status_code,
                                        headers={"content-type": "application/json",
                                                 "meterline-request-id": ctx.request_id})
            return error_response(ctx)
        finally:
            await asyncio.shield(pipeline.unwind(ctx, ran))

    app.data_plane = {
        "/v1/chat/completions": chat_completions, "/v1/responses": responses, "/v1/embeddings": embeddings,
        "/v1/messages": messages, "/v1/messages/count_tokens": count_tokens}

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
        entries = [addressing.SIM_ENTRY, *ctx.workspace.providers.values()]
        for alias in ctx.workspace.aliases:
            if addressing.allowed(ctx.key, alias) or addressing.allowed(ctx.key, ctx.workspace.aliases[alias].model):
                data.append({"id": alias, "object": "model", "created": 0, "owned_by": "alias"})
        for entry in entries:
            deployments = entry.options.get("deployments") or {}
            if deployments:  # Azure: the deployments are the models
                data.extend({"id": f"{entry.name}/{d}", "object": "model", "created": 0, "owned_by": entry.name}
                            for d in sorted(deployments) if addressing.allowed(ctx.key, f"{entry.name}/{d}"))
                continue
            for model_id in catalog.model_ids():
                namespace, name = model_id.split("/", 1)
                if entry.name != addressing.SIM and namespace != entry.catalog:
                    continue
                if entry.name == addressing.SIM and namespace not in ("openai", "anthropic", "gemini"):
                    continue
                exposed = f"{entry.name}/{name}"
                if addressing.allowed(ctx.key, exposed):
                    data.append({"id": exposed, "object": "model", "created": 0, "owned_by": entry.name})
        policies = ctx.workspace.policies
        if policies.count:  # hide what the workspace's model policies would deny this key
            facts = Facts(endpoint="models", model="", key=ctx.key.key_id, member=ctx.key.member,
                          department=ctx.key.department, feature=ctx.tags.get("feature"))
            applicable = policies.applicable(facts)
            data = [d for d in data if policies.model_permitted(facts, "/".join(addressing.target_of(
                d["id"], ctx.workspace)), applicable)]
        return JSONResponse({"object": "list", "data": data},
                            headers={"meterline-request-id": ctx.request_id})

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def unknown(rest: str, request: Request) -> Response:
        path = f"/v1/{rest}"
        allowed = METHODS.get(path.rstrip("/"))
        if allowed and request.method not in allowed:
            # A known endpoint with the wrong method: 405 with Allow, in the endpoint's dialect.
            ctx = RequestContext(endpoint="messages" if path.startswith("/v1/messages") else "unknown", headers={})
            ctx.error = GatewayError(f"{request.method} is not allowed on {path}; use {', '.join(allowed)}.",
                                     code="method_not_allowed", status=405, headers={"allow": ", ".join(allowed)})
            ctx.error.type = "invalid_request_error"
            return error_response(ctx)
        ctx = RequestContext(endpoint="unknown", headers={})
        ctx.error = NotFoundError(f"Unknown endpoint {path}.", code="unknown_url")
        return error_response(ctx)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> Response:
        log.exception("unhandled_error")
        return internal_error(request.url.path)

    return app
