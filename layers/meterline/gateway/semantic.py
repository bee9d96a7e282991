"""The semantic-dedup stage (lever 6), after enforcement and the exact cache (an exact hit is cheaper
to find; its scope includes the model that will serve, routed or downgraded):
embeds the request through the workspace's own provider, finds near-duplicates of the same scope
(`cache/semantic.py` decides, `store/semantic.py` keeps LSH buckets and answers with a TTL).

Only where the workspace turned it on for the request's scope (`meterline semantic set`), and not
for a request sent with `Meterline-Semantic: off`.

- Mode `detect` (the default): never serves. The embedding and the bucket lookup start concurrently
  with the upstream call and are awaited after it, so they add no latency before the first byte;
  a near-duplicate is noted on the ledger record (`semantic_duplicate_of`, `semantic_similarity`
  in 1/10,000) for waste scoring, and the request is stored as an entry.
- Mode `serve`: the embedding call and the lookup run **before** the upstream (one provider round
  trip and one DynamoDB round trip more on every covered request — the price of answering from the
  cache), and a hit that passes the conservative gate (cosine >= 0.95, at most 4 turns, no tools or
  non-text parts, same negations/numbers/names) is answered from the stored answer: $0, outcome
  `cache_hit`, saving `semantic_cache` = what the original request cost. Streaming requests are
  never served (detect only); only complete 2xx non-streamed answers are stored.
- The embedding call is metered like any call: its own ledger record (`<request id>.emb`,
  `purpose: semantic_embedding`), attributed like the request, and it goes through the same budgets:
  its worst case is reserved on every budget covering the request (its own lease, `<request id>.emb`)
  before the call and settled to its cost after it, so embeddings can never overspend a budget.
  A budget that refuses it (or a budget store that does not answer) skips the lever for that
  request (`semantic_error: budget ...`); the request itself goes on under its own reservation.
  With no budget on the request's scopes this costs nothing (the definitions are cached).
- The lever runs after enforcement: a request that a budget or rate limit refuses makes no
  embedding call.
- Any failure of the lever (no embedding provider, the provider or the table down) turns the lever
  off for that request and is noted (`semantic_error`); it never fails the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from meterline.cache import semantic
from meterline.cache.entry import Entry
from meterline.errors import GatewayError
from meterline.gateway import addressing, enforcement
from meterline.gateway.compression import lever_config
from meterline.gateway.context import RequestContext
from meterline.gateway.metering import ledger_record, meter
from meterline.gateway.pipeline import BaseStage, Decision, apply_route, prepare_target
from meterline.gateway.services import Services
from meterline.levers import SEMANTIC_CACHE
from meterline.money import micros_to_usd
from meterline.store.semantic import SemanticStore
from meterline.usage import Usage

log = logging.getLogger("meterline.gateway")
OPT_OUT_HEADER = "meterline-semantic"
SERVABLE_ENDPOINTS = ("chat.completions", "messages", "responses")


class LeverUnavailable(Exception):
    """The lever cannot run for this request (no embedding provider, provider or table error)."""


@dataclass
class _State:
    settings: semantic.Settings
    query: semantic.Query
    unit: list[float] | None = None
    match: semantic.Match | None = None
    task: asyncio.Future[None] | None = None
    error: str | None = None


class SemanticStage(BaseStage):
    name = "semantic"

    def __init__(self, services: Services):
        self.services = services
        self.store = SemanticStore(services.settings)

    async def before(self, ctx: RequestContext) -> Decision | None:
        if ctx.endpoint not in SERVABLE_ENDPOINTS or ctx.body is None:
            return None
        raw = lever_config(ctx, "semantic")
        if raw is None or ctx.headers.get(OPT_OUT_HEADER, "").strip().lower() == "off":
            return None
        try:
            settings = semantic.Settings.from_dict(raw)
        except (TypeError, ValueError):
            log.warning("semantic_settings_invalid", extra={"request_id": ctx.request_id})
            return None
        assert ctx.workspace
        query = semantic.query_of(ctx.workspace.workspace, ctx.endpoint, ctx.model_id or "", ctx.body)
        if query is None:
            return None
        state = _State(settings, query)
        ctx.extra["semantic"] = state
        if settings.mode == "serve" and query.servable and not ctx.stream:
            await self._lookup(ctx, state)
            if state.match is not None and state.match.blocked is None:
                answer = await self._answer(ctx, state)
                if answer is not None:
                    self._serve(ctx, state, answer)
                    return Decision.serve()  # the pipeline stops here; the app answers the hit
            return None
        state.task = asyncio.ensure_future(self._lookup(ctx, state))
        return None

    async def _lookup(self, ctx: RequestContext, state: _State) -> None:
        try:
            state.unit = semantic.normalize(await self._embed(ctx, state.settings, state.query.text))
            candidates = await self.store.candidates(self.services.dynamo, ctx.workspace.workspace,  # type: ignore[union-attr]
                                                     semantic.buckets(state.query.scope, state.unit))
            guard = semantic.guard_of(state.query.text)
            state.match = semantic.best_match(state.unit, guard, candidates, float(state.settings.threshold))
        except LeverUnavailable as exc:
            state.error = str(exc)
        except Exception as exc:  # the table or the provider: never fail the request for a lever
            log.warning("semantic_lookup_failed: %s", type(exc).__name__, extra={"request_id": ctx.request_id})
            state.error = f"lookup failed ({type(exc).__name__})"

    async def _answer(self, ctx: RequestContext, state: _State) -> bytes | None:
        assert state.match and ctx.workspace
        try:
            return await self.store.answer(self.services.dynamo, ctx.workspace.workspace, state.query.scope,
                                           state.match.entry.entry_id)
        except Exception as exc:
            state.error = f"answer read failed ({type(exc).__name__})"
            return None

    def _serve(self, ctx: RequestContext, state: _State, answer: bytes) -> None:
        assert state.match
        entry = state.match.entry
        ctx.outcome = "cache_hit"
        # Answered like an exact-cache hit (gateway/caching.py serve_hit), from the stored body.
        ctx.extra["cache_hit"] = Entry(ctx.endpoint, answer, Usage(), int(time.time() * 1000),
                                       request_id=entry.request_id)
        ctx.extra.setdefault("response_headers", {}).update({
            "meterline-cache": "semantic", "meterline-semantic-similarity": f"{state.match.similarity:.4f}",
            "meterline-cost-usd": micros_to_usd(0), "meterline-saved-usd": micros_to_usd(entry.cost_micros)})
        ctx.save(SEMANTIC_CACHE, entry.cost_micros)
        ctx.note(semantic_mode="serve", semantic_served_from=entry.request_id,
                 semantic_similarity=round(state.match.similarity * 10_000))

    async def _embed(self, ctx: RequestContext, settings: semantic.Settings, text: str) -> list[float]:
        """One metered embeddings call on the workspace's own provider; its own ledger record."""
        services, ws, key = self.services, ctx.workspace, ctx.key
        assert ws and key
        catalog = ctx.extra["catalog"]
        try:
            route = addressing.resolve(settings.embedding_model, ws, catalog, "embeddings")
        except GatewayError as exc:
            raise LeverUnavailable(f"embedding model {settings.embedding_model}: {exc}") from exc
        sub = RequestContext(endpoint="embeddings", headers={}, request_id=ctx.request_id)
        sub.key, sub.workspace, sub.tags = key, ws, dict(ctx.tags)
        sub.extra["catalog"] = catalog
        sub.requested_model = settings.embedding_model
        sub.body = {"model": route.model, "input": text, "dimensions": settings.dimensions,
                    "encoding_format": "float"}
        apply_route(sub, route)
        from meterline.gateway import proxy  # proxy imports the pipeline module, as this one does

        lease = f"{ctx.request_id}.emb"
        reservations = await enforcement.reserve_side_call(services, ctx, lease, sub.body, route.pricing)
        if isinstance(reservations, str):
            raise LeverUnavailable(f"embedding call not made: {reservations}")
        vector: list[float] | None = None
        try:
            sub.target, sub.translator = await prepare_target(sub, services, route)
            response = await proxy.open_upstream(sub, services)
            if response is not None:
                try:
                    raw = await response.aread()
                finally:
                    await response.aclose()
                translated = sub.translator.translate_response(raw)
                sub.usage, sub.response_model = translated.usage, translated.model
                vector = [float(x) for x in json.loads(raw)["data"][0]["embedding"]]
        except (GatewayError, ValueError, KeyError, IndexError, TypeError) as exc:
            sub.error = sub.error or GatewayError("embedding failed")
            sub.outcome = "upstream_break" if sub.reached_provider else "error"
            del exc
        finally:
            if sub.reached_provider:
                meter(sub)
            enforcement.settle_side_call(services, ctx, lease, reservations,
                                         sub.cost.micros if sub.cost is not None and sub.reached_provider else 0)
            if sub.reached_provider:
                sub.note(purpose="semantic_embedding")
                record = ledger_record(sub, f"{ctx.request_id}.emb")
                try:
                    await services.ledger.put_async(record, services.dynamo)
                except Exception:
                    log.error("ledger_write_failed", extra={"ledger_record": record})
        if vector is None:
            raise LeverUnavailable(f"embedding call failed ({sub.error.message if sub.error else 'no vector'})")
        return vector

    async def after(self, ctx: RequestContext) -> None:
        state: _State | None = ctx.extra.get("semantic")
        if state is None:
            return
        if state.task is not None:
            await state.task
        notes: dict[str, Any] = {"semantic_mode": state.settings.mode}
        if state.error:
            ctx.note(**notes, semantic_error=state.error[:300])
            return
        match = state.match
        if ctx.outcome == "cache_hit":
            return  # served: noted in _serve; the stored entry stays the original
        if match is not None:
            notes.update(semantic_duplicate_of=match.entry.request_id,
                         semantic_similarity=round(match.similarity * 10_000))
            if match.blocked:
                notes["semantic_blocked"] = match.blocked
        elif state.settings.mode == "serve" and not state.query.servable:
            notes["semantic_not_servable"] = state.query.reason
        ctx.note(**notes)
        if state.unit is None or ctx.outcome != "ok" or ctx.cost is None:
            return
        if match is not None and match.similarity >= 0.999:
            return  # an exact repeat of a stored entry: one entry is enough
        answer = None
        if state.settings.mode == "serve" and state.query.servable and not ctx.stream and (
                ctx.upstream_status or 0) < 300:
            answer = ctx.extra.get("response_body")
        # Written concurrently with the ledger record (the ledger stage awaits what is pending).
        ctx.extra.setdefault("pending", []).append(asyncio.ensure_future(self._put(ctx, state, answer)))

    async def _put(self, ctx: RequestContext, state: _State, answer: bytes | None) -> None:
        assert ctx.workspace and ctx.cost and state.unit
        try:
            await self.store.put(self.services.dynamo, ctx.workspace.workspace, state.query.scope,
                                 semantic.buckets(state.query.scope, state.unit), state.unit,
                                 semantic.guard_of(state.query.text), ctx.request_id, ctx.cost.micros,
                                 state.settings.ttl_s, answer, ctx.model_id)
        except Exception as exc:  # a lost entry costs a future hit, never the request
            log.warning("semantic_store_failed: %s", type(exc).__name__, extra={"request_id": ctx.request_id})
