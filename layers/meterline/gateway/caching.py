"""The exact-match response cache stages (decisions in meterline.cache, storage in store/cache.py).

Placement: after authenticate, read body, policies and route (the key needs the *resolved* model),
around enforcement:

    route → CacheLookupStage → enforce → CacheServeStage → credentials → upstream ...

`CacheLookupStage` computes the key and *starts* the lookup (GetItem, plus the cross-instance fill
marker claim) without awaiting it; enforcement's writes go out while the lookup is in flight, so a
miss adds no sequential round trip. `CacheServeStage` awaits the lookup: on a hit the pipeline
stops there (no credentials, no provider call), the request costs $0, the budget reservation made
concurrently is released by enforcement's `after` (it settles 0: nothing reached a provider), and
the ledger records outcome `cache_hit` with the exact_cache saving (what the stored answer's usage
costs at today's price). Rate limits and budgets still decide first: a request they refuse is
refused even if the answer is cached. On a miss, `CacheServeStage.after` stores the answer
(non-streamed body, or the stream collected as the client saw it) concurrently with the ledger write.

Bursts: identical misses in one instance wait for the first (one upstream call, the others are
served from memory as hits). Across instances, the first claims a short fill marker; others that
find the marker and no entry poll the entry for up to FILL_HOLD_S before calling the provider
themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from meterline.cache import controls, rules
from meterline.cache.collect import Collector
from meterline.cache.controls import AGE_HEADER, HEADER, REASON_HEADER, Bypass, ControlError, Plan
from meterline.cache.entry import MAX_STORED_BYTES, Entry, compress
from meterline.cache.key import cache_key
from meterline.cache.replay import replay
from meterline.errors import InvalidRequestError
from meterline.gateway.context import RequestContext
from meterline.gateway.pipeline import BaseStage, Decision, Pipeline, Stage
from meterline.gateway.services import Services
from meterline.levers import EXACT_CACHE
from meterline.money import micros_to_usd
from meterline.pricing.cost import price_request
from meterline.store.cache import CacheStore
from meterline.telemetry import record_request

log = logging.getLogger("meterline.cache")
FILL_HOLD_S = 15  # a fill marker lapses after this: the longest another instance waits for a filler
POLL_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)  # then every second until the marker lapses


@dataclass
class Flight:
    """One request's cache state, from lookup to fill."""

    key: str
    plan: Plan
    route: tuple[str, str] = ("", "")  # (provider, model) the key names: only its answers are stored
    task: asyncio.Task[Entry | None] | None = None
    leader: asyncio.Future[Entry | None] | None = None  # set when followers in this instance wait on us
    claimed: bool = False  # we hold the cross-instance fill marker
    hit: Entry | None = None
    collector: Collector | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _set_headers(ctx: RequestContext, **headers: str) -> None:
    ctx.extra.setdefault("response_headers", {}).update(headers)


def _partition(kind: str, ctx: RequestContext) -> tuple[str, str] | None:
    assert ctx.key
    if kind == "workspace":
        return ("workspace", "")
    if kind == "key":
        return ("key", ctx.key.key_id)
    if kind == "member":
        return ("member", ctx.key.member)
    customer = ctx.tags.get("customer")
    return ("customer", customer) if customer else None


class ResponseCache:
    """The per-process half of the cache: the in-flight table and the two stages over it."""

    def __init__(self, services: Services):
        self.services = services
        self.store = CacheStore(services.settings)
        self.inflight: dict[str, asyncio.Future[Entry | None]] = {}
        self.lookup_stage = CacheLookupStage(self)
        self.serve_stage = CacheServeStage(self)

    # -- lookup (runs while enforcement writes) --------------------------------------------------
    async def lookup(self, workspace: str, flight: Flight) -> Entry | None:
        client, now = self.services.dynamo, int(time.time())
        calls: list[Any] = [self.store.get(client, workspace, flight.key, now)]
        if flight.plan.write:
            calls.append(self.store.claim_fill(client, workspace, flight.key, now, FILL_HOLD_S))
        results = await asyncio.gather(*calls, return_exceptions=True)
        if isinstance(results[0], BaseException):
            log.warning("cache_lookup_failed: %s", type(results[0]).__name__)
            flight.notes["cache_error"] = "lookup"
            return None  # the cache fails open: the provider answers
        entry = self._fresh(results[0], flight.plan)
        if entry is not None or len(results) == 1:
            flight.claimed = results[-1] is True
            return entry
        claimed = results[1]
        flight.claimed = claimed is True
        if claimed is False and results[0] is None:
            return await self._await_other_filler(workspace, flight)
        return None

    async def _await_other_filler(self, workspace: str, flight: Flight) -> Entry | None:
        """Another instance is calling the provider for this key: poll its entry until the marker lapses."""
        deadline = time.monotonic() + FILL_HOLD_S
        flight.notes["cache_waited"] = True
        step = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(min(POLL_S[min(step, len(POLL_S) - 1)], max(deadline - time.monotonic(), 0)))
            step += 1
            try:
                entry = await self.store.get(self.services.dynamo, workspace, flight.key, int(time.time()))
            except Exception:
                return None
            if entry is not None:
                return entry
        return None

    @staticmethod
    def _fresh(entry: Any, plan: Plan) -> Entry | None:
        if not isinstance(entry, Entry):
            return None
        if plan.max_age_s is not None and entry.age_s(int(time.time() * 1000)) > plan.max_age_s:
            return None
        return entry

    async def follow(self, leader: asyncio.Future[Entry | None], flight: Flight) -> Entry | None:
        """An identical request is already in flight in this instance: its answer is ours."""
        flight.notes["cache_waited"] = True
        try:
            entry = await asyncio.wait_for(asyncio.shield(leader), self.services.settings.upstream_read_timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            return None
        return self._fresh(entry, flight.plan)

    def resolve(self, flight: Flight, entry: Entry | None) -> None:
        leader = flight.leader
        if leader is None:
            return
        if not leader.done():
            leader.set_result(entry)
        if self.inflight.get(flight.key) is leader:
            del self.inflight[flight.key]
        flight.leader = None

    # -- fill ------------------------------------------------------------------------------------
    async def _store(self, ctx: RequestContext, flight: Flight, entry: Entry, blob: bytes) -> None:
        assert ctx.workspace
        try:
            await self.store.put(self.services.dynamo, ctx.workspace.workspace, flight.key, entry,
                                 flight.plan.ttl_s, blob)
        except Exception as exc:
            log.warning("cache_store_failed: %s", type(exc).__name__, extra={"request_id": ctx.request_id})
            return
        if not ctx.stream:
            _set_headers(ctx, **{HEADER: "stored"})  # read after the unwind, before the response starts

    async def _release(self, ctx: RequestContext, key: str) -> None:
        assert ctx.workspace
        try:
            await self.store.release_fill(self.services.dynamo, ctx.workspace.workspace, key)
        except Exception:
            log.warning("cache_release_failed", extra={"request_id": ctx.request_id})

    def fill(self, ctx: RequestContext, flight: Flight) -> None:
        answer, body = self._answer(ctx, flight)
        reason = None
        if answer is None:
            reason = "not_complete"
        elif not controls.storable(ctx.endpoint, answer):
            reason = "not_natural_finish"
        blob = compress(body) if reason is None else b""
        if reason is None and not self.store.can_store(blob):
            reason = "too_large"
        pending = ctx.extra.setdefault("pending", [])
        if reason is not None:
            ctx.note(cache="miss", cache_not_stored=reason)
            self.resolve(flight, None)
            if flight.claimed:
                pending.append(asyncio.ensure_future(self._release(ctx, flight.key)))
            return
        assert ctx.usage is not None
        entry = Entry(endpoint=ctx.endpoint, body=body, usage=ctx.usage, created_ms=int(time.time() * 1000),
                      model=ctx.response_model, service_tier=ctx.service_tier, request_id=ctx.request_id)
        self.resolve(flight, entry)  # identical requests waiting in this instance are answered now
        ctx.note(cache="miss", cache_stored=True)
        if len(blob) > MAX_STORED_BYTES:
            ctx.note(cache_spilled=True)  # to S3: the item only points at it
        # Written concurrently with the ledger record: no extra round trip after the last byte.
        pending.append(asyncio.ensure_future(self._store(ctx, flight, entry, blob)))

    @staticmethod
    def _answer(ctx: RequestContext, flight: Flight) -> tuple[dict[str, Any] | None, bytes]:
        route = ctx.extra.get("route")
        # Not a fallback's or a budget downgrade's answer: only the keyed route's.
        same_route = route is not None and (route.provider.name, route.model) == flight.route
        usable = (same_route and ctx.error is None and ctx.outcome == "ok" and ctx.reached_provider
                  and ctx.attempt == 1
                  and ctx.usage is not None and not ctx.usage.estimated
                  and 200 <= (ctx.upstream_status or 200) < 300
                  and "meterline-max-tokens-clamped" not in ctx.extra.get("response_headers", {}))
        if not usable:
            return None, b""
        if ctx.stream:
            collector = flight.collector
            if collector is None or ctx.translator is None:
                return None, b""
            collector.feed(b"".join(ctx.translator.stream_final()))  # the held-back terminal events
            answer = collector.result(ctx.usage)
            if answer is None:
                return None, b""
            return answer, json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
        body = ctx.extra.get("response_body")
        if not isinstance(body, bytes | bytearray):
            return None, b""
        try:
            return json.loads(body), bytes(body)
        except ValueError:
            return None, b""


class CacheLookupStage(BaseStage):
    name = "cache_lookup"

    def __init__(self, cache: ResponseCache):
        self.cache = cache

    async def before(self, ctx: RequestContext) -> Decision | None:
        assert ctx.workspace and ctx.key and ctx.body is not None
        rule = rules.resolve(ctx.workspace.cache_rules, ctx.key.key_id, ctx.tags.get("feature"))
        try:
            plan = controls.plan(rule, ctx.headers, ctx.endpoint, ctx.body)
        except ControlError as exc:
            return Decision.deny(InvalidRequestError(str(exc), code="invalid_header", param=exc.header))
        if plan is None:
            return None
        partition = _partition(plan.rule.partition, ctx) if isinstance(plan, Plan) else None
        if isinstance(plan, Plan) and partition is None:
            plan = Bypass("no_customer")  # a customer-partitioned cache needs Meterline-Customer
        if isinstance(plan, Bypass):
            _set_headers(ctx, **{HEADER: "bypass", REASON_HEADER: plan.reason})
            ctx.note(cache="bypass", cache_reason=plan.reason)
            return None
        assert partition is not None
        route = ctx.extra["route"]
        key = cache_key(workspace=ctx.workspace.workspace, partition=partition, endpoint=ctx.endpoint,
                        provider=route.provider.name, model=route.model, body=ctx.body,
                        namespace=plan.rule.namespace, anthropic_beta=ctx.headers.get("anthropic-beta"))
        flight = Flight(key=key, plan=plan, route=(route.provider.name, route.model))
        ctx.extra["cache"] = flight
        if plan.read:
            leader = self.cache.inflight.get(key)
            if leader is not None and not leader.done():
                flight.task = asyncio.ensure_future(self.cache.follow(leader, flight))
            else:
                flight.leader = self.cache.inflight[key] = asyncio.get_running_loop().create_future()
                flight.task = asyncio.ensure_future(self.cache.lookup(ctx.workspace.workspace, flight))
        elif plan.write:
            _set_headers(ctx, **{REASON_HEADER: "refresh"})
        return None

    async def after(self, ctx: RequestContext) -> None:
        flight: Flight | None = ctx.extra.get("cache")
        if flight is None:
            return
        if flight.task is not None and not flight.task.done():
            flight.task.cancel()  # refused before the lookup was awaited (a rate limit, a budget)
        self.cache.resolve(flight, None)  # followers never wait on a request that is gone


class CacheServeStage(BaseStage):
    name = "cache_serve"

    def __init__(self, cache: ResponseCache):
        self.cache = cache

    async def before(self, ctx: RequestContext) -> Decision | None:
        flight: Flight | None = ctx.extra.get("cache")
        if flight is None:
            return None
        entry = None
        if flight.task is not None:
            try:
                entry = await flight.task
            except Exception as exc:  # the cache never fails a request
                log.warning("cache_lookup_failed: %s", type(exc).__name__)
        if flight.notes:
            ctx.note(**flight.notes)
        if entry is None:
            _set_headers(ctx, **{HEADER: "miss"})
            if flight.plan.write and ctx.stream:
                flight.collector = Collector(ctx.endpoint)
                ctx.extra["stream_tap"] = flight.collector.feed
            return None
        flight.hit = entry
        self.cache.resolve(flight, entry)
        now_ms = int(time.time() * 1000)
        saved = 0
        if ctx.pricing is not None:
            day = datetime.fromtimestamp(ctx.started_wall_ms / 1000, tz=UTC).date()
            cost = price_request(ctx.pricing, entry.usage, day, entry.service_tier)
            saved = cost.micros if cost is not None else 0
        ctx.save(EXACT_CACHE, saved)
        ctx.outcome = "cache_hit"
        ctx.response_model = entry.model
        route = ctx.extra["route"]
        ctx.note(cache="hit", cache_age_s=entry.age_s(now_ms), cached_request_id=entry.request_id,
                 provider=route.provider.name)
        _set_headers(ctx, **{HEADER: "hit", AGE_HEADER: str(entry.age_s(now_ms)), "meterline-cost-usd":
                             micros_to_usd(0), "meterline-saved-usd": micros_to_usd(saved)})
        ctx.extra["cache_hit"] = entry
        return Decision.serve()

    async def after(self, ctx: RequestContext) -> None:
        flight: Flight | None = ctx.extra.get("cache")
        if flight is None or flight.hit is not None or not flight.plan.write:
            return
        self.cache.fill(ctx, flight)


# -- serving a hit -------------------------------------------------------------------------------
def _include_usage(ctx: RequestContext) -> bool:
    options = (ctx.body or {}).get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


async def serve_hit(ctx: RequestContext, pipeline: Pipeline, ran: list[Stage]) -> Response:
    entry: Entry = ctx.extra["cache_hit"]
    headers = {**ctx.extra.get("response_headers", {}), "meterline-request-id": ctx.request_id}
    # Cached answers hold PII placeholders (never values); a PII policy with restoration maps them
    # back with this request's own values (the same redacted prefix numbers them the same way).
    restorer = ctx.extra.get("pii_restorer")
    if not ctx.stream:
        await pipeline.unwind(ctx, ran)  # the ledger record is durable before the answer goes out
        headers = {**ctx.extra.get("response_headers", {}), "meterline-request-id": ctx.request_id}
        body = entry.body if restorer is None else restorer.json_bytes(entry.body)
        return Response(body, status_code=200, headers={**headers, "content-type": "application/json"})
    events, final = replay(ctx.endpoint, json.loads(entry.body), include_usage=_include_usage(ctx))
    if restorer is not None:
        restoring = restorer.stream()
        events = [out for event in events for out in restoring.feed(event)] + list(restoring.flush())
        final = [b"".join(restoring.feed(event)) for event in final]
    return ReplayResponse(ctx, pipeline, ran, events, final,
                          {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})


class ReplayResponse(StreamingResponse):
    """A cached answer as SSE: the body events, then the ledger write, then the final events."""

    def __init__(self, ctx: RequestContext, pipeline: Pipeline, ran: list[Stage], events: list[bytes],
                 final: list[bytes], headers: dict[str, str]):
        self.ctx, self.pipeline, self.ran, self.final = ctx, pipeline, ran, final
        self._done = False
        self._events = events
        super().__init__(self._body(), status_code=200, headers=headers, media_type="text/event-stream")

    async def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        await self.pipeline.unwind(self.ctx, self.ran)
        record_request(self.ctx)

    async def _body(self) -> Any:
        for event in self._events:
            yield event
            await asyncio.sleep(0)  # several writes, like a live stream, never one blob
        with anyio.CancelScope(shield=True):
            await self._finish()
        for event in self.final:
            yield event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish()
