"""The request pipeline: stages over one RequestContext.

    ledger → authenticate → read body → policies → route → enforce → credentials → [upstream] → meter
                                                                                   ↓
    ledger.after ← ... ← every stage that ran, in reverse (settle, release, record)

A stage's `before` returns None to continue or a denying Decision to short-circuit (policy
outcomes are values); it raises only on failures (a store down). Either way, every stage whose
`before` ran gets its `after`, in reverse order, on success, rejection, error or client
disconnect. The ledger stage runs first so that its `after` runs last, when the outcome, usage and
cost are final: one record per authenticated request, durable before the response ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.requests import ClientDisconnect

from meterline import attribution
from meterline.budgets import policy
from meterline.config import ORIGIN_VERIFY_HEADER
from meterline.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailable,
)
from meterline.gateway import addressing
from meterline.gateway.context import RequestContext
from meterline.gateway.metering import ledger_record, meter
from meterline.gateway.services import Services
from meterline.gateway.validation import check_content_type, parse_json_object
from meterline.store.ledger import POOLS_FIELD
from meterline.translators import registry
from meterline.translators.base import Target, Translator
from meterline.vault import VaultError

log = logging.getLogger("meterline.gateway")
STREAMING_ENDPOINTS = ("chat.completions", "messages", "responses")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    error: GatewayError | None = None
    # Allowed, and answered already (a cache hit): the stages after this one do not run.
    served: bool = False

    @classmethod
    def deny(cls, error: GatewayError) -> Decision:
        return cls(False, error)

    @classmethod
    def serve(cls) -> Decision:
        return cls(True, None, True)


class Stage(Protocol):
    name: str

    async def before(self, ctx: RequestContext) -> Decision | None: ...

    async def after(self, ctx: RequestContext) -> None: ...


class BaseStage:
    name = "stage"

    async def before(self, ctx: RequestContext) -> Decision | None:
        return None

    async def after(self, ctx: RequestContext) -> None:
        return None


async def settled(calls: list[Awaitable[Any]]) -> list[Any]:
    """`asyncio.gather(*calls, return_exceptions=True)`, without a task for a lone call (the common
    case: a key's rate window and no budget)."""
    if len(calls) == 1:
        try:
            return [await calls[0]]
        except Exception as exc:
            return [exc]
    return await asyncio.gather(*calls, return_exceptions=True)


def presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key") or None


class LedgerStage(BaseStage):
    """Writes the request's one ledger record. First in line, so its `after` runs last."""

    name = "ledger"

    def __init__(self, services: Services):
        self.services = services

    async def after(self, ctx: RequestContext) -> None:
        if ctx.ledger_written or ctx.key is None or ctx.workspace is None:
            return  # unauthenticated requests are counted in metrics, not in a tenant's ledger
        written = False
        try:
            written = await self._write(ctx)
        finally:
            ctx.ledger_written = True
            # Budget pools waiting for the record (enforcement `ledgered`), whatever became of it.
            for report in ctx.extra.pop("ledgered", ()):
                await report(written)

    async def _write(self, ctx: RequestContext) -> bool:
        meter(ctx)
        record = ledger_record(ctx)
        # Budget settlements started by later stages' `after` run concurrently with this write:
        # one round trip after the last upstream byte, and all durable before the response ends.
        pending = ctx.extra.pop("pending", [])
        try:
            write = self.services.ledger.put_async(record, self.services.dynamo)
            if pending:  # concurrent; settlements log their own failures
                outcome = (await asyncio.gather(write, *pending, return_exceptions=True))[0]
                if isinstance(outcome, BaseException):
                    raise outcome
            else:
                await write  # no task for a lone write
            self.services.calls.after_upstream += 1
            return True
        except Exception as exc:
            # The provider has answered (and billed): never drop the record. The structured log line
            # is durable in CloudWatch Logs and carries the full record for replay (docs/ARCHITECTURE.md),
            # without the budget pools it names: their costs are added at once instead (`ledgered`).
            record = {k: v for k, v in record.items() if k != POOLS_FIELD}
            log.error("ledger_write_failed", extra={"ledger_record": record, "error": str(exc)[:300]})
            return False


class AuthenticateStage(BaseStage):
    name = "authenticate"

    def __init__(self, services: Services):
        self.services = services

    async def before(self, ctx: RequestContext) -> Decision | None:
        secret = self.services.settings.origin_secret
        if secret and not hmac.compare_digest(ctx.headers.get(ORIGIN_VERIFY_HEADER, "").encode(), secret.encode()):
            # Deployed behind CloudFront + WAF: a request straight to the function URL skipped the WAF.
            return Decision.deny(PermissionDeniedError(
                "This gateway accepts requests only through its CloudFront URL.", code="origin_not_verified"))
        key = presented_key(ctx.headers)
        if not key:
            return Decision.deny(AuthenticationError(
                "You didn't provide an API key. Send your Meterline virtual key as 'Authorization: Bearer <key>'."))
        record = await self.services.key_cache.get(hashlib.sha256(key.encode()).hexdigest())
        if record is None:
            return Decision.deny(AuthenticationError("Incorrect API key provided."))
        import time

        if not record.usable(time.time()):
            reason = "revoked" if record.revoked else "expired"
            return Decision.deny(AuthenticationError(f"This API key has been {reason}.", code=f"key_{reason}"))
        view = await self.services.workspace_cache.get(record.workspace)
        if view is None:
            return Decision.deny(AuthenticationError("This API key's workspace no longer exists."))
        ctx.key = record
        ctx.workspace = view.config
        ctx.extra["catalog"] = view.catalog
        try:
            ctx.tags = attribution.from_headers(ctx.headers)
        except GatewayError as exc:
            return Decision.deny(exc)
        return None


class ReadBodyStage(BaseStage):
    """Reads the body within the size limit and validates it for the endpoint."""

    name = "read_body"

    def __init__(self, services: Services, read: Callable[[RequestContext, int], Awaitable[bytes]],
                 validate: Callable[[dict], None]):
        self.services = services
        self.read = read
        self.validate = validate

    async def before(self, ctx: RequestContext) -> Decision | None:
        limit = self.services.settings.max_body_bytes
        try:
            declared = int(ctx.headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return Decision.deny(PayloadTooLargeError(f"Request body is {declared} bytes; the limit is {limit}."))
        try:
            check_content_type(ctx.headers.get("content-type"))
            raw = await self.read(ctx, limit)
            body = parse_json_object(raw)
            self.validate(body)
        except GatewayError as exc:
            return Decision.deny(exc)
        except ClientDisconnect:
            # The client went away while sending its body: nothing to answer, nothing was forwarded.
            ctx.note(body_incomplete=True)
            return Decision.deny(GatewayError("The client disconnected while sending the request.",
                                              code="client_disconnect", status=499))
        ctx.body = body
        ctx.extra["body_bytes"] = len(raw)
        ctx.stream = bool(body.get("stream")) and ctx.endpoint in STREAMING_ENDPOINTS
        ctx.requested_model = str(body.get("model"))
        return None


class RouteStage(BaseStage):
    """Resolves provider and model (and the ordered fallbacks), the price each is metered at, and
    the key's model allowlist."""

    name = "route"

    async def before(self, ctx: RequestContext) -> Decision | None:
        assert ctx.workspace and ctx.key and ctx.requested_model
        try:
            routes = addressing.plan(ctx.requested_model, ctx.workspace, ctx.extra["catalog"], ctx.key, ctx.endpoint,
                                     ctx.extra.get("model_permit"))
        except GatewayError as exc:
            ctx.model_id = None
            return Decision.deny(exc)
        unpriced_tier = _unpriced_tier(ctx.body, routes[0])
        if unpriced_tier is not None:
            return Decision.deny(unpriced_tier)
        ctx.extra["routes"] = routes
        apply_route(ctx, routes[0])
        return None


def _unpriced_tier(body: dict[str, Any] | None, route: addressing.Route) -> GatewayError | None:
    """A request that asks for a service tier or speed the catalog cannot price is refused before
    it is sent (a clear 400), rather than billed at a price the gateway would have to guess."""
    point = route.pricing.at(datetime.now(UTC).date()) if route.pricing is not None else None
    if point is None or not body:
        return None
    tier = policy.requested_tier(body)
    speed = body.get("speed") if isinstance(body.get("speed"), str) else None
    if point.can_price(tier, speed):
        return None
    asked = f"service_tier '{tier}'" if not point.can_price(tier) else f"speed '{speed}'"
    return InvalidRequestError(
        f"The model `{route.model_id}` has no catalog price for {asked}, so its cost cannot be metered. "
        "Use the standard tier, or add a workspace price override for it.",
        code="unpriced_service_tier", param="service_tier" if "service_tier" in asked else "speed")


def apply_route(ctx: RequestContext, route: addressing.Route) -> None:
    ctx.model_id = route.model_id
    ctx.pricing = route.pricing
    ctx.extra["route"] = route


async def prepare_target(ctx: RequestContext, services: Services, route: addressing.Route) -> tuple[Target, Translator]:
    """The provider key (vault, cached) and a fresh translator for one route. Raises GatewayError."""
    entry = route.provider
    api_key = None
    if entry.ciphertext:
        assert ctx.workspace
        workspace = ctx.workspace.workspace
        # Warm: from memory, without a thread hop; cold: KMS, off the event loop.
        api_key = services.secrets.peek(entry.ciphertext, workspace, entry.name)
        if api_key is None:
            try:
                api_key = await asyncio.to_thread(services.secrets.get, entry.ciphertext, workspace, entry.name)
            except VaultError as exc:
                raise GatewayError(
                    f"The stored key for provider `{entry.name}` cannot be used; store it again.",
                    code="provider_key_invalid", status=500) from exc
            except Exception as exc:
                raise ServiceUnavailable("The key vault is unavailable; try again shortly.") from exc
    max_out = route.pricing.max_output_tokens if route.pricing else None
    target = Target(provider=entry.name, kind=entry.kind, base_url=entry.base_url, model=route.model,
                    api_key=api_key, options=entry.options, max_output_tokens=max_out or None)
    return target, registry.translator_for(ctx.endpoint, entry.kind, ctx.headers)


class CredentialsStage(BaseStage):
    """Provider key from the vault: decrypted once, then served from memory (no KMS when warm)."""

    name = "credentials"

    def __init__(self, services: Services):
        self.services = services

    async def before(self, ctx: RequestContext) -> Decision | None:
        route: addressing.Route = ctx.extra["route"]
        try:
            ctx.target, ctx.translator = await prepare_target(ctx, self.services, route)
        except ServiceUnavailable:
            raise
        except GatewayError as exc:
            return Decision.deny(exc)
        return None


class Pipeline:
    def __init__(self, stages: list[Stage]):
        self.stages = stages

    async def enter(self, ctx: RequestContext) -> list[Stage]:
        """Run every `before`; stop at the first denial or failure (recorded on ctx.error)."""
        ran: list[Stage] = []
        for stage in self.stages:
            ran.append(stage)
            try:
                decision = await stage.before(ctx)
            except GatewayError as exc:
                ctx.error, ctx.outcome = exc, "error"
                return ran
            except Exception as exc:
                log.exception("stage_failed", extra={"stage": stage.name, "request_id": ctx.request_id})
                ctx.error, ctx.outcome = GatewayError("Internal error."), "error"
                del exc
                return ran
            if decision is not None and not decision.allowed:
                ctx.error, ctx.outcome = decision.error, "rejected"
                return ran
            if decision is not None and decision.served:
                return ran
        return ran

    async def unwind(self, ctx: RequestContext, ran: list[Stage]) -> None:
        # meter -> settle -> ledger: usage and cost are final (estimated if the call was cut) before
        # any `after` runs, so a budget settles exactly what the ledger records.
        meter(ctx)
        for stage in reversed(ran):
            try:
                await stage.after(ctx)
            except Exception:
                # One stage failing its cleanup must not skip the others (the ledger above all).
                log.exception("stage_after_failed", extra={"stage": stage.name, "request_id": ctx.request_id})
        ran.clear()
