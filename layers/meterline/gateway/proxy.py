"""The upstream step: send (failing over to the next route on 429/5xx/timeouts), then meter; for
streams, forward event by event.

Fallbacks: each attempt that fails over gets its own ledger record (request id `<id>.<n>`, the same
`parent_request_id`, its `attempt` number, its own provider, model, outcome and cost) written
here, before the next attempt; the attempt that answers (or fails last) is the request's own record,
written once by the ledger stage when the pipeline unwinds — stages' `after` hooks run once per
request, not per attempt.

A stream's ledger record is written (by unwinding the pipeline) after the provider's last event
and before the final `data: [DONE]` the client sees. If the client disconnects or the provider
breaks the stream, the same unwinding runs, shielded from cancellation, with estimated usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from meterline.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from meterline.eventstream import EventStreamDecodeError, EventStreamDecoder
from meterline.gateway.context import RequestContext
from meterline.gateway.metering import attempt_request_id, ledger_record, meter
from meterline.gateway.pipeline import Pipeline, Stage, apply_route, prepare_target
from meterline.gateway.services import Services
from meterline.money import micros_to_usd
from meterline.providers.base import UpstreamResponse
from meterline.providers.sim import WORKSPACE_HEADER as SIM_WORKSPACE_HEADER
from meterline.redaction import redact_bytes, redact_headers
from meterline.sse import SSEError, SSEParser
from meterline.telemetry import record_request
from meterline.translators.base import AWS_EVENTSTREAM

log = logging.getLogger("meterline.gateway")
PASS_HEADERS = ("x-request-id", "openai-processing-ms", "openai-version", "request-id", "x-amzn-requestid")
MAX_ERROR_BODY = 64 * 1024
# A buffered (non-stream) answer larger than this is not held in memory: the largest real answers
# (2,048 embeddings of 3,072 floats as base64) are ~25 MB, and Lambda cannot return more than 20 MB.
MAX_UPSTREAM_BODY = 32 * 1024 * 1024


class UpstreamTooLarge(Exception):
    pass


async def read_capped(response: UpstreamResponse, limit: int = MAX_UPSTREAM_BODY) -> bytes:
    """The whole body, unless it exceeds `limit` (UpstreamTooLarge, nothing more is read)."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise UpstreamTooLarge(f"the provider's answer exceeded {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


DEADLINE_MESSAGE = "The request reached the gateway's time limit ({:g} s) and was cut."


def remaining_s(ctx: RequestContext, services: Services) -> float:
    """Time left of the request's deadline (`request_deadline_s`, counted from its arrival)."""
    return services.settings.request_deadline_s - ctx.elapsed_ms() / 1000


def _outcome_of(error: GatewayError) -> str:
    if isinstance(error, UpstreamTimeout):
        return "upstream_timeout"
    if isinstance(error, UpstreamUnavailable):
        return "upstream_unavailable"
    return "upstream_error"


async def open_upstream(ctx: RequestContext, services: Services) -> UpstreamResponse | None:
    """Send the request. Returns the open response, or None with ctx.error set."""
    assert ctx.translator and ctx.target and ctx.body is not None
    try:
        request = ctx.translator.build_request(ctx.body, ctx.target)
    except GatewayError as exc:  # a request this provider cannot express: nothing was sent
        ctx.error, ctx.outcome = exc, "rejected"
        return None
    if ctx.target.kind == "sim" and ctx.workspace:
        request.headers[SIM_WORKSPACE_HEADER] = ctx.workspace.workspace  # the sim's caches are per workspace
    upstream = services.upstream_for(ctx.target.kind)
    left = remaining_s(ctx, services)
    if left <= 0:
        ctx.error = UpstreamTimeout(DEADLINE_MESSAGE.format(services.settings.request_deadline_s),
                                    code="request_deadline_exceeded")
        ctx.outcome = "rejected"  # nothing was sent
        return None
    ctx.reached_provider = True
    sent = time.monotonic()
    try:
        async with asyncio.timeout(left):  # a deadline, not a task per call as wait_for would make
            response = await upstream.send(request)
    except TimeoutError:
        ctx.error = UpstreamTimeout(DEADLINE_MESSAGE.format(services.settings.request_deadline_s),
                                    code="request_deadline_exceeded")
        ctx.outcome = "upstream_timeout"
        return None
    except GatewayError as exc:
        ctx.error, ctx.outcome = exc, _outcome_of(exc)
        return None
    finally:
        ctx.upstream_ms += (time.monotonic() - sent) * 1000
    ctx.upstream_status = response.status_code
    ctx.first_byte_ms = ctx.elapsed_ms()
    if response.status_code >= 400:
        sent = time.monotonic()
        try:
            raw = b""
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            raw = b""
        finally:
            await response.aclose()
            ctx.upstream_ms += (time.monotonic() - sent) * 1000
        message = ctx.translator.error_message(raw)
        ctx.error = UpstreamError(message, status=response.status_code, code="upstream_error")
        ctx.outcome = "upstream_error"
        return None
    return response


def retryable(error: GatewayError | None) -> bool:
    """Worth another route: rate limited, provider-side failure, or no answer in time."""
    if isinstance(error, UpstreamTimeout | UpstreamUnavailable):
        return True
    return isinstance(error, UpstreamError) and (error.status == 429 or error.status >= 500)


async def open_with_fallbacks(ctx: RequestContext, services: Services) -> UpstreamResponse | None:
    """Send to the primary route, then to each fallback while the failure is retryable."""
    response = await open_upstream(ctx, services)
    fallbacks = list(ctx.extra.get("routes", [])[1:])
    while response is None and fallbacks and retryable(ctx.error) and remaining_s(ctx, services) > 0:
        route = fallbacks.pop(0)
        try:
            target, translator = await prepare_target(ctx, services, route)
        except GatewayError:
            continue  # this fallback is unusable (its key cannot be read): try the next one
        await record_attempt(ctx, services)
        if ctx.target is not None and ctx.target.api_key:
            ctx.extra["secrets"] = (*ctx.extra.get("secrets", ()), ctx.target.api_key)
        apply_route(ctx, route)
        ctx.target, ctx.translator = target, translator
        ctx.attempt += 1
        response = await open_upstream(ctx, services)
    return response


async def record_attempt(ctx: RequestContext, services: Services) -> None:
    """Meter and record a failed-over attempt, then clear what belongs to that attempt only."""
    meter(ctx)
    if ctx.cost is not None:
        # Budgets settle on everything the request spent, failed-over attempts included.
        ctx.extra["prior_attempts_micros"] = ctx.extra.get("prior_attempts_micros", 0) + ctx.cost.micros
    record = ledger_record(ctx, attempt_request_id(ctx.request_id, ctx.attempt))
    try:
        await services.ledger.put_async(record, services.dynamo)
        services.calls.after_upstream += 1
    except Exception:
        log.error("ledger_write_failed", extra={"ledger_record": record})
    ctx.error, ctx.outcome, ctx.usage, ctx.cost, ctx.unpriced = None, "ok", None, None, False
    ctx.upstream_status = ctx.first_byte_ms = ctx.response_model = ctx.service_tier = None
    ctx.reached_provider = False


def secrets_of(ctx: RequestContext) -> tuple[str | None, ...]:
    """What must never reach the caller: the provider key of this request (and of every attempt)."""
    keys = ctx.extra.get("secrets", ())
    return (*keys, ctx.target.api_key if ctx.target else None)


def passthrough_headers(response: UpstreamResponse, ctx: RequestContext) -> dict[str, str]:
    headers = response.headers
    picked = {name: headers[name] for name in PASS_HEADERS if name in headers}  # type: ignore[operator,index]
    return redact_headers(picked, *secrets_of(ctx))


async def complete(ctx: RequestContext, response: UpstreamResponse, services: Services,
                   pipeline: Pipeline, ran: list[Stage]) -> Response:
    """Non-streaming: read the whole body, meter, record, answer."""
    assert ctx.translator
    try:
        reading = time.monotonic()
        try:
            async with asyncio.timeout(max(remaining_s(ctx, services), 0.001)):
                raw = await read_capped(response, services.settings.max_upstream_body_bytes)
        finally:
            ctx.upstream_ms += (time.monotonic() - reading) * 1000
        translated = ctx.translator.translate_response(raw)
    except TimeoutError:
        ctx.error = UpstreamTimeout(DEADLINE_MESSAGE.format(services.settings.request_deadline_s),
                                    code="request_deadline_exceeded")
        ctx.outcome = "upstream_timeout"
    except httpx.TimeoutException:
        ctx.error, ctx.outcome = UpstreamTimeout("The provider did not finish in time."), "upstream_timeout"
    except UpstreamTooLarge:
        ctx.error = UpstreamUnavailable("The provider's answer is larger than the gateway relays.",
                                        code="upstream_too_large")
        ctx.outcome = "upstream_break"  # billed by the provider: metered with estimated usage
    except (httpx.HTTPError, ValueError):
        ctx.error = UpstreamUnavailable("The provider sent an unreadable response.")
        ctx.outcome = "upstream_break"
    finally:
        await response.aclose()
    if ctx.error is not None:
        return None  # type: ignore[return-value]
    ctx.usage = translated.usage
    ctx.response_model = translated.model
    ctx.service_tier = translated.service_tier
    ctx.extra["response_body"] = translated.body  # what the client receives (the response cache stores it)
    meter(ctx)
    await pipeline.unwind(ctx, ran)
    headers = {"content-type": "application/json", **passthrough_headers(response, ctx)}
    headers.update(result_headers(ctx))
    body = redact_bytes(translated.body, *secrets_of(ctx))
    restorer = ctx.extra.get("pii_restorer")
    if restorer is not None:  # PII policy with restoration: the caller sees its own values again
        body = restorer.json_bytes(body)
    return Response(content=body, status_code=response.status_code, headers=headers)


def result_headers(ctx: RequestContext) -> dict[str, str]:
    headers = {**ctx.extra.get("response_headers", {}), "meterline-request-id": ctx.request_id}
    if ctx.cost is not None:
        headers["meterline-cost-usd"] = micros_to_usd(ctx.cost.micros)
        if ctx.usage and ctx.usage.estimated:
            headers["meterline-cost-estimated"] = "true"
    elif ctx.unpriced:
        headers["meterline-cost-usd"] = "unpriced"
    return headers


class MeteredStream:
    def __init__(self, ctx: RequestContext, response: UpstreamResponse, pipeline: Pipeline, ran: list[Stage],
                 deadline_s: float = 840.0):
        self.ctx = ctx
        self.response = response
        self.pipeline = pipeline
        self.ran = ran
        self.deadline_s = deadline_s
        self._finished = False

    async def finish(self) -> None:
        """Idempotent: close upstream, meter, unwind every stage (ledger last)."""
        if self._finished:
            return
        self._finished = True
        ctx, translator = self.ctx, self.ctx.translator
        assert translator
        with contextlib.suppress(Exception):  # the upstream may already be gone
            await self.response.aclose()
        ctx.usage = translator.stream_usage
        ctx.response_model = translator.stream_model
        ctx.service_tier = translator.stream_service_tier
        if ctx.usage is None and ctx.outcome == "ok":
            ctx.outcome = "upstream_break"  # ended without usage: estimated below
        meter(ctx)
        await self.pipeline.unwind(ctx, self.ran)
        record_request(ctx)

    async def body(self) -> AsyncIterator[bytes]:
        ctx, translator = self.ctx, self.ctx.translator
        assert translator
        framing = getattr(translator, "stream_framing", None)
        parser: SSEParser | EventStreamDecoder = EventStreamDecoder() if framing == AWS_EVENTSTREAM else SSEParser()
        broken: str | None = None
        tap = ctx.extra.get("stream_tap")  # the response cache collecting the answer the client sees
        restorer = ctx.extra.get("pii_restorer")
        restoring = restorer.stream() if restorer is not None else None
        secrets = secrets_of(ctx)
        code = "upstream_stream_interrupted"
        chunks = self.response.aiter_bytes()
        try:
            while True:
                # The deadline bounds every wait for the provider (the ledger must be written before
                # Lambda's hard stop); time spent sending to a slow client is the client's own.
                waiting = time.monotonic()
                left = self.deadline_s - (waiting - ctx.started)
                try:
                    async with asyncio.timeout(max(left, 0.001)):  # never around a yield
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    ctx.upstream_ms += (time.monotonic() - waiting) * 1000
                for event in parser.feed(chunk):
                    for out in translator.stream_event(event):
                        out = redact_bytes(out, *secrets)  # every event passes: provider error events too
                        if tap is not None:
                            tap(out)  # what is cached keeps PII placeholders; restoration is per request
                        if restoring is None:
                            sending = time.monotonic()  # the send to the client is the client's time
                            yield out
                            ctx.client_ms += (time.monotonic() - sending) * 1000
                        else:  # PII restoration across events (a placeholder may span two deltas)
                            for restored in restoring.feed(out):
                                sending = time.monotonic()
                                yield restored
                                ctx.client_ms += (time.monotonic() - sending) * 1000
        except TimeoutError:
            broken, code = DEADLINE_MESSAGE.format(self.deadline_s), "request_deadline_exceeded"
            ctx.outcome = "upstream_timeout"
        except (httpx.HTTPError, EventStreamDecodeError, SSEError):
            broken = "The provider's stream was interrupted."
            ctx.outcome = "upstream_break"
        except BaseException:
            # Client went away (cancellation / generator closed): record what we know, then re-raise.
            ctx.outcome = "client_disconnect"
            with anyio.CancelScope(shield=True):
                await self.finish()
            raise
        if broken is None and not translator.stream_complete and translator.stream_usage is None:
            broken = "The provider's stream ended early."
            ctx.outcome = "upstream_break"
        with anyio.CancelScope(shield=True):
            await self.finish()
        if restoring is not None:
            for out in restoring.flush():
                yield out
        if broken is not None:
            yield translator.stream_error(broken, code)
        else:
            for out in translator.stream_final():
                out = redact_bytes(out, *secrets)
                yield out if restoring is None else b"".join(restoring.feed(out))


class MeteredStreamingResponse(StreamingResponse):
    """Guarantees the stream's cleanup even when the body generator never ran or was abandoned."""

    def __init__(self, stream: MeteredStream, headers: dict[str, str]):
        self.stream = stream
        self._gen = stream.body()
        super().__init__(self._gen, status_code=200, headers=headers, media_type="text/event-stream")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._gen.aclose()
                await self.stream.finish()


def stream_headers(ctx: RequestContext, response: UpstreamResponse) -> dict[str, str]:
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **passthrough_headers(response, ctx)}
    headers.update(ctx.extra.get("response_headers", {}))
    headers["meterline-request-id"] = ctx.request_id
    return headers


def now_ms() -> int:
    return int(time.time() * 1000)


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
