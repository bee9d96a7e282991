"""The enforcement stage: rate limits, budgets and the agent-loop breaker, in one round trip.

Before the call, all of these single-item conditional writes go out concurrently (one round trip
of latency, the only one before the first upstream byte on a warm request):
    - a reservation of the request's worst-case cost on every matching budget (all must fit),
    - a count in the minute window of every rate-limited subject (key, member, agent),
    - a count for the session's request fingerprint (agent-loop breaker), when a session is named.
If anything refuses, the reservations that did succeed are released by this stage's `after` (the
pipeline unwinds every stage that ran), and the caller gets a 429 that says which limit.
After the call, `after` settles each reservation to the actual cost; the settlement runs
concurrently with the ledger write (one round trip after the last upstream byte).

Store unavailable: fail closed (503) unless the workspace chose fail-open; either way the ledger
record says so.

Side calls (calls the gateway makes on a request's behalf and meters as their own ledger records:
the semantic lever's embedding call) go through the same budgets: `reserve_side_call` reserves
their worst case on every budget covering the request, under their own lease, and
`settle_side_call` settles it to what they cost. A side call a budget refuses is not made (the
lever that wanted it is skipped); the request itself keeps its own reservation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from meterline.budgets import policy
from meterline.budgets.model import Enforcement
from meterline.errors import GatewayError, InvalidRequestError, ServiceUnavailable
from meterline.gateway import routing
from meterline.gateway.context import RequestContext
from meterline.gateway.metering import periods
from meterline.gateway.pipeline import BaseStage, Decision, settled
from meterline.gateway.services import Services
from meterline.money import micros_to_usd
from meterline.pricing.catalog import ModelPricing
from meterline.store.budgets import Refused, Reservation
from meterline.store.ddb_http import DynamoError
from meterline.store.ledger import POOLS_FIELD

log = logging.getLogger("meterline.enforcement")
LEASE_S = 900  # longer than the longest call the data plane allows (Lambda's 15 minutes)
clock = time.time  # the stage's clock (tests move it; nothing else in the process is affected)


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


def _reset(seconds: float) -> str:
    return f"{max(seconds, 0.001):.3f}s".replace(".000s", "s")


def attribution_of(ctx: RequestContext) -> dict[str, str | None]:
    assert ctx.workspace and ctx.key
    return {"workspace": ctx.workspace.workspace, "key": ctx.key.key_id, "member": ctx.key.member,
            "department": ctx.key.department, **ctx.tags}


class EnforcementStage(BaseStage):
    name = "enforce"

    def __init__(self, services: Services, rate_only: bool = False):
        self.services = services
        self.store = services.budgets
        # Token counting is not spend (no budget, no loop count) but uses the workspace's provider key:
        # it counts against the caller's rate limits like any request.
        self.rate_only = rate_only

    async def before(self, ctx: RequestContext) -> Decision | None:
        assert ctx.workspace and ctx.key and ctx.body is not None
        try:
            enforcement: Enforcement = await self.services.enforcement_cache.get(ctx.workspace.workspace)
        except GatewayError as exc:
            return self._unavailable(ctx, None, exc)
        attribution = attribution_of(ctx)
        now = clock()
        day, month = periods(ctx.started_wall_ms, ctx.workspace.timezone)
        budgets = [] if self.rate_only else policy.matching_budgets(enforcement, attribution)
        limits = policy.limits_for(enforcement, attribution)
        media = policy.media_parts(ctx.body)  # once: it walks the whole request
        unbounded = policy.unbounded_fields(ctx.body, ctx.endpoint, media) if any(b.hard for b in budgets) else []
        if unbounded:
            hard = next(b for b in budgets if b.hard)
            ctx.note(budget_scope=hard.scope)
            if unbounded[0] == "max_tool_calls":  # an image_generation tool may make any number of images
                message = (f"The image_generation tool bills per image and, without 'max_tool_calls', may make any "
                           f"number of them, so its cost cannot be bounded under the hard budget {hard.scope}. "
                           f"Set max_tool_calls (the budget then reserves that many images), or set that budget "
                           f"to alert-only or throttle.")
            else:
                message = (f"'{unbounded[0]}' brings input of a size the gateway cannot see, so its cost cannot be "
                           f"bounded under the hard budget {hard.scope}. Send the full input instead (the budget "
                           f"then reserves its worst case), or set that budget to alert-only or throttle.")
            return Decision.deny(InvalidRequestError(message, code="unbounded_input", param=unbounded[0]))
        # With fallbacks, any route in the plan may be the one that answers: reserve for the dearest.
        routes = ctx.extra.get("routes") or []
        pricings = [r.pricing for r in routes if getattr(r, "pricing", None) is not None] or [ctx.pricing]
        input_tokens = policy.estimate_input_tokens(ctx.body, media)  # once: it serializes the whole request
        ctx.extra["input_tokens_estimate"] = input_tokens
        worst, ctx.extra["worst_pricing"] = max(((policy.worst_case(ctx.body, p, input_tokens=input_tokens), p)
                                                 for p in pricings),
                                                key=lambda candidate: candidate[0].micros)
        # TPM, as OpenAI counts (input estimate + max output; counting tokens produces no output).
        tokens = policy.typical_input_tokens(worst.input_tokens) + (0 if self.rate_only else worst.output_tokens)
        client = self.services.dynamo
        ws = ctx.workspace.workspace

        session = None if self.rate_only else ctx.tags.get("session")
        fingerprint = policy.loop_fingerprint(ctx.body) if session else None
        # From memory first: reservations carved from this process's budget pools, rate windows
        # admitted from its quota blocks (budgets/pool.py, budgets/quota.py). Only what needs a write
        # becomes a call, all sent concurrently: one round trip, or none.
        results: list[Any] = [self.store.carve(ws, b, month, day, ctx.request_id, worst.micros, now) for b in budgets]
        results += [self.store.admit(ws, limit, tokens, now) for limit in limits]
        # A budget with a throttle stage counts every request of the minute in its reservation's own
        # write (BudgetStore.reserve count_minute): the ordinal decides below.
        missing = [i for i, r in enumerate(results) if r is None]
        calls: list[Any] = [
            self.store.reserve(client, ws, budgets[i], month, day, ctx.request_id, worst.micros, LEASE_S, now,
                               count_minute=bool(budgets[i].throttle_rpm), observed=True) if i < len(budgets)
            else self.store.rate_window(client, ws, limits[i - len(budgets)], tokens, now, observed=True)
            for i in missing]
        if session and fingerprint:
            calls.append(self.store.loop_count(client, ws, session, fingerprint, enforcement.policy.loop_window_s, now))
        answers = await settled(calls) if calls else []
        for i, answer in zip(missing, answers, strict=False):
            results[i] = answer
        budget_results = results[: len(budgets)]
        rate_results = results[len(budgets):]
        loop_result = answers[-1] if session and fingerprint else None

        reservations = [r for r in budget_results if isinstance(r, Reservation)]
        ordinals = ctx.extra["throttle_ordinals"] = _ordinals(reservations)
        ctx.extra["reservations"] = reservations  # `after` settles or releases every one of them
        # A reserve that failed after it was sent may still be applied by the store: `after` cancels it
        # by its lease (released if it landed, a tombstone against a late delivery otherwise).
        self._note_uncertain(ctx, budgets, budget_results, worst.micros, month, day)
        ctx.extra["worst_case_micros"] = worst.micros
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            return self._unavailable(ctx, enforcement, failures[0])

        headers = self._rate_headers(limits, rate_results, now)
        ctx.extra["response_headers"] = {**ctx.extra.get("response_headers", {}), **headers}
        for limit, (allowed, state) in zip(limits, rate_results, strict=True):
            if not allowed:
                retry = policy.rate_retry_after(limit, state, tokens, now)
                return Decision.deny(RateLimited(
                    f"Rate limit reached for {limit.subject_type} {limit.subject_value}: "
                    f"{self._limit_text(limit, state)}. Retry after {math.ceil(retry)} s.",
                    headers={**headers, "retry-after": str(math.ceil(retry))}))

        refused = [r for r in budget_results if isinstance(r, Refused)]
        if refused:
            clamped = await self._try_clamp(ctx, refused, reservations, worst, month, day, now)
            if clamped is None:
                return Decision.deny(self._budget_error(ctx, refused[0], worst.micros, headers))

        for r in ctx.extra["reservations"]:
            # In the stage (judged on what was committed before this request), at most throttle_rpm
            # requests of the minute pass: this request's ordinal among all of the minute's decides.
            rpm = r.budget.throttle_rpm
            if policy.throttle_due(r.budget, r.state, r.worst, day) and rpm and ordinals.get(r.budget.scope, 0) > rpm:
                retry = math.ceil(60 - now % 60)
                ctx.note(budget_scope=r.budget.scope)
                return Decision.deny(RateLimited(
                    f"Budget {r.budget.scope} is in its throttle stage ({r.budget.throttle_at}% spent or "
                    f"reserved): {r.budget.throttle_rpm} requests per minute.", code="budget_throttled",
                    headers={**headers, "retry-after": str(retry)}))

        # The ladder's downgrade rung (alert -> downgrade -> throttle -> kill): the reservations above
        # cover the plan as it was, so a cheaper route needs no new write.
        for r in ctx.extra["reservations"]:
            percent = routing.downgrade_due(r.budget, r.state, day, r.worst)
            if percent is not None and routing.downgrade(ctx, r.budget, percent):
                break

        if isinstance(loop_result, dict) and session and fingerprint:
            count = int(loop_result.get("n", 0))
            pol = enforcement.policy
            if count > pol.loop_reject_after:
                ctx.note(loop_count=count)
                return Decision.deny(RateLimited(
                    f"Session {session} repeated a near-identical request {count} times: stopped as an agent loop.",
                    code="agent_loop_detected",
                    headers={"retry-after": str(math.ceil(pol.loop_window_s - now % pol.loop_window_s))}))
            if count > pol.loop_throttle_after and not await self.store.loop_pass(
                    client, ws, session, fingerprint, pol.loop_window_s, pol.loop_throttle_interval_s, now):
                ctx.note(loop_count=count)
                return Decision.deny(RateLimited(
                    f"Session {session} repeated a near-identical request {count} times: throttled to one request "
                    f"per {pol.loop_throttle_interval_s} s.", code="agent_loop_throttled",
                    headers={"retry-after": str(pol.loop_throttle_interval_s)}))
        return None

    async def _try_clamp(self, ctx: RequestContext, refused: list[Refused], reservations: list[Reservation],
                         worst: policy.WorstCase, month: str, day: str, now: float) -> int | None:
        """Where every refusing budget allows clamping: shrink max output tokens to what the tightest
        budget still pays for, release, and reserve again with the smaller worst case."""
        if not all(r.budget.clamp for r in refused):
            return None
        remaining = min(r.cap - r.committed for r in refused)
        for r in reservations:
            cap = r.budget.monthly_micros if r.budget.monthly_micros is not None else r.budget.daily_micros
            if r.budget.hard and cap is not None:
                remaining = min(remaining, cap - (int(r.state.get("committed", 0)) - r.worst))
        max_output = policy.clamp_output(worst, remaining)
        if max_output is None:
            return None
        await self._release(ctx, reservations)
        new_worst = policy.worst_case(ctx.body, ctx.extra.get("worst_pricing"), output_tokens=max_output,
                                      input_tokens=ctx.extra["input_tokens_estimate"])
        budgets = [r.budget for r in reservations] + [r.budget for r in refused]
        # The request is already counted in the minute of every budget it reserved on (a release does
        # not uncount it); a budget that refused it counts it now.
        counted = {r.budget.scope for r in reservations}
        results = await asyncio.gather(*(self.store.reserve(
            self.services.dynamo, ctx.workspace.workspace, b, month, day, ctx.request_id, new_worst.micros, LEASE_S,
            now, count_minute=bool(b.throttle_rpm) and b.scope not in counted) for b in budgets),
            return_exceptions=True)
        ctx.extra["reservations"] = [r for r in results if isinstance(r, Reservation)]
        ctx.extra["throttle_ordinals"].update(_ordinals([r for r in ctx.extra["reservations"]
                                                         if r.budget.scope not in counted]))
        self._note_uncertain(ctx, budgets, results, new_worst.micros, month, day)
        if any(not isinstance(r, Reservation) for r in results):
            return None
        field = "max_completion_tokens" if "max_completion_tokens" in ctx.body else "max_tokens"
        ctx.body[field] = max_output
        ctx.extra["worst_case_micros"] = new_worst.micros
        ctx.extra.setdefault("response_headers", {})["meterline-max-tokens-clamped"] = str(max_output)
        ctx.note(clamped_max_tokens=max_output)
        return max_output

    def _unavailable(self, ctx: RequestContext, enforcement: Enforcement | None, exc: BaseException) -> Decision | None:
        log.warning("enforcement_store_unavailable: %s: %s", type(exc).__name__, str(exc)[:200],
                    extra={"request_id": ctx.request_id})
        if enforcement is not None and enforcement.policy.fail_open:
            ctx.note(enforcement="unchecked")
            return None
        ctx.note(enforcement="unavailable")
        return Decision.deny(ServiceUnavailable(
            "Budgets and rate limits cannot be checked right now (store unavailable); the request was not "
            "forwarded. Retry shortly.", code="budget_store_unavailable", headers={"retry-after": "1"}))

    def _budget_error(self, ctx: RequestContext, refused: Refused, worst: int, headers: dict[str, str]) -> GatewayError:
        b = refused.budget
        ctx.note(budget_scope=b.scope, budget_period=refused.period,
                                     budget_committed=refused.committed, budget_cap=refused.cap,
                                     worst_case_micros=worst)
        # Not a transient condition: tell the SDKs not to retry (they honour `x-should-retry`), and
        # send no Retry-After (a day's or a month's wait is not a retry hint).
        return RateLimited(
            f"Budget exceeded for {b.scope} ({'daily' if refused.period == 'day' else 'monthly'} cap "
            f"${micros_to_usd(refused.cap)}): ${micros_to_usd(refused.committed)} is spent or reserved and this "
            f"request may cost up to ${micros_to_usd(worst)}.", code="budget_exceeded", param=b.scope,
            headers={**headers, "x-should-retry": "false"})

    @staticmethod
    def _limit_text(limit: Any, state: dict[str, Any]) -> str:
        if state.get("hour_limited"):
            return f"{limit.rph} requests per hour"
        parts = [f"{limit.rpm} requests per minute" if limit.rpm else None,
                 f"{limit.tpm} tokens per minute" if limit.tpm else None,
                 f"{limit.burst} requests per second" if limit.burst else None]
        return ", ".join(p for p in parts if p)

    @staticmethod
    def _rate_headers(limits: list[Any], results: list[Any], now: float) -> dict[str, str]:
        """OpenAI-style x-ratelimit-* headers for the key's own limit."""
        for limit, result in zip(limits, results, strict=True):
            if limit.subject_type != "key" or isinstance(result, BaseException):
                continue
            _, state = result
            reset = _reset(60 - now % 60)
            headers = {}
            if limit.rpm is not None:
                headers |= {"x-ratelimit-limit-requests": str(limit.rpm),
                            "x-ratelimit-remaining-requests": str(max(limit.rpm - int(state.get("n", 0)), 0)),
                            "x-ratelimit-reset-requests": reset}
            if limit.tpm is not None:
                headers |= {"x-ratelimit-limit-tokens": str(limit.tpm),
                            "x-ratelimit-remaining-tokens": str(max(limit.tpm - int(state.get("tk", 0)), 0)),
                            "x-ratelimit-reset-tokens": reset}
            return headers
        return {}

    async def _release(self, ctx: RequestContext, reservations: list[Reservation]) -> None:
        await asyncio.gather(*(self.store.settle(self.services.dynamo, ctx.workspace.workspace, r, ctx.request_id, 0)
                               for r in reservations), return_exceptions=True)
        ctx.extra["reservations"] = []

    @staticmethod
    def _note_uncertain(ctx: RequestContext, budgets: list[Any], results: list[Any], worst: int, month: str,
                        day: str) -> None:
        for budget, result in zip(budgets, results, strict=True):
            if isinstance(result, DynamoError) and result.maybe_applied:
                ctx.extra.setdefault("uncertain_reservations", []).append((budget, month, day, worst))

    async def after(self, ctx: RequestContext) -> None:
        uncertain = ctx.extra.pop("uncertain_reservations", [])
        if uncertain:
            ctx.extra.setdefault("pending", []).append(asyncio.ensure_future(
                cancel_all(self.services, ctx.workspace.workspace, ctx.request_id, uncertain)))
        reservations: list[Reservation] = ctx.extra.pop("reservations", [])
        if not reservations:
            return
        actual = ctx.cost.micros if (ctx.cost is not None and ctx.reached_provider) else 0
        actual += ctx.extra.get("prior_attempts_micros", 0)
        # A reservation carved from this process's pool settles through the request's ledger record
        # (it names the pool and the cost; the pool's release adds the costs it owes): no write of
        # its own. The ledger stage reports the record's write back (`ledgered`).
        now = clock()
        store, ws = self.store, ctx.workspace.workspace
        deferred = [] if ctx.ledger_written else [
            r for r in reservations if store.defer(r, ctx.request_id, actual, ctx.started_wall_ms, now)]
        if deferred and actual > 0:
            ctx.extra[POOLS_FIELD] = {r.pool: actual for r in deferred}
            ctx.extra.setdefault("ledgered", []).append(
                lambda written: ledgered_all(self.services, ws, ctx.request_id, deferred, written))
        rest = [r for r in reservations if all(r is not d for d in deferred)] if deferred else reservations
        if rest:
            # Settled concurrently with the ledger write (the ledger stage awaits everything pending).
            ctx.extra.setdefault("pending", []).append(asyncio.ensure_future(
                settle_all(self.services, ws, ctx.request_id, rest, actual)))



def _pool_fields(reservation: Reservation, error: BaseException) -> dict[str, Any]:
    """A pooled settlement's replay needs its pool, and the settlement count its failed write was
    fenced by (BudgetStore._add_together), when it was one of a pool's counted writes."""
    if not reservation.pool:
        return {}
    seq = getattr(error, "pool_seqs", {}).get(reservation.pool)
    return {"pool": reservation.pool, **({"pool_seq": seq} if seq is not None else {})}


def _ordinals(reservations: list[Reservation]) -> dict[str, int]:
    """Each throttled budget's count of the request in its minute window (reserve count_minute)."""
    return {r.budget.scope: int(r.state.get("tn", 0)) for r in reservations if r.budget.throttle_rpm}


async def cancel_all(services: Services, ws: str, lease_id: str, uncertain: list[tuple[Any, str, str, int]]) -> None:
    """Cancel reservations whose outcome is unknown, by the lease they were sent under."""
    now = clock()
    outcomes = await asyncio.gather(*(
        services.budgets.cancel(services.dynamo, ws, budget, month, day, lease_id, worst, LEASE_S, now)
        for budget, month, day, worst in uncertain), return_exceptions=True)
    for (budget, *_), outcome in zip(uncertain, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            # The lease (if it ever lands) expires and the sweeper releases it.
            log.error("budget_cancel_failed", extra={"request_id": lease_id, "scope": budget.scope,
                                                     "error": type(outcome).__name__})


async def settle_all(services: Services, ws: str, lease_id: str, reservations: list[Reservation],
                     actual: int) -> None:
    """Settle every reservation of one lease to the actual cost; record crossed alert thresholds."""
    store, client = services.budgets, services.dynamo
    results = await asyncio.gather(*(store.settle(client, ws, r, lease_id, actual) for r in reservations),
                                   return_exceptions=True)
    follow_ups = []
    for r, state in zip(reservations, results, strict=True):
        if isinstance(state, BaseException):
            # The line carries the whole settlement: the replay function (meterline.replay, subscribed
            # to these lines) applies it, lease-keyed, so the actual spend still reaches the counter.
            log.error("budget_settle_failed", extra={
                "request_id": lease_id, "scope": r.budget.scope, "error": str(state)[:300],
                "settlement": {"workspace": ws, "scope": r.budget.scope, "month": r.month, "day": r.day,
                               "request_id": lease_id, "worst": r.worst, "actual": actual,
                               "lease_expires": r.lease_expires, **_pool_fields(r, state)}})
            continue
        follow_ups.append(store.record_crossings(client, ws, r.budget, r.month, r.day, actual, state))
    if follow_ups:  # each records the alert thresholds its settlement crossed (and logs its own failures)
        await asyncio.gather(*follow_ups)


async def ledgered_all(services: Services, ws: str, request_id: str, deferred: list[Reservation],
                       written: bool) -> None:
    """The request's ledger record (naming its pools) was written, or not: each pool takes the cost
    (or it is added on its own); a pool whose last request this was is released."""
    for r in deferred:  # one after another: no task each, and most return without a write
        try:
            await services.budgets.ledgered(services.dynamo, ws, r, request_id, written)
        except Exception as exc:
            log.error("budget_follow_up_failed", extra={"request_id": request_id, "error": type(exc).__name__})


async def reserve_side_call(services: Services, ctx: RequestContext, lease_id: str, body: dict[str, Any],
                            pricing: ModelPricing | None) -> list[Reservation] | str:
    """Reserve a side call's worst case (`body` priced as `pricing`) on every budget covering the
    request `ctx`, under `lease_id`. The reservations (none when no budget covers it) for
    `settle_side_call`, or why the call must not be made - then nothing stays reserved. A budget
    that refuses, or a store that does not answer, refuses the side call: it is optional, so neither
    fail-open nor a clamp applies, and its lever is skipped."""
    assert ctx.workspace
    ws = ctx.workspace.workspace
    try:
        enforcement: Enforcement = await services.enforcement_cache.get(ws)
    except GatewayError:
        return "budgets cannot be checked (store unavailable)"
    budgets = policy.matching_budgets(enforcement, attribution_of(ctx))
    if not budgets:
        return []
    worst = policy.worst_case(body, pricing).micros
    day, month = periods(ctx.started_wall_ms, ctx.workspace.timezone)
    now = clock()
    results = await asyncio.gather(*(services.budgets.reserve(services.dynamo, ws, b, month, day, lease_id, worst,
                                                              LEASE_S, now) for b in budgets), return_exceptions=True)
    reservations = [r for r in results if isinstance(r, Reservation)]
    if len(reservations) == len(budgets):
        return reservations
    uncertain = [(b, month, day, worst) for b, r in zip(budgets, results, strict=True)
                 if isinstance(r, DynamoError) and r.maybe_applied]
    await asyncio.gather(settle_all(services, ws, lease_id, reservations, 0),
                         cancel_all(services, ws, lease_id, uncertain))
    refused = next((r for r in results if isinstance(r, Refused)), None)
    if refused is not None:
        return (f"budget {refused.budget.scope}: ${micros_to_usd(refused.committed)} of "
                f"${micros_to_usd(refused.cap)} committed, the call may cost ${micros_to_usd(worst)}")
    return "budgets cannot be checked (store unavailable)"


def settle_side_call(services: Services, ctx: RequestContext, lease_id: str, reservations: list[Reservation],
                     actual: int) -> None:
    """Settle a side call's reservations to what it cost, concurrently with the request's ledger
    write (the ledger stage awaits what is pending on `ctx`)."""
    if reservations:
        assert ctx.workspace
        ctx.extra.setdefault("pending", []).append(asyncio.ensure_future(
            settle_all(services, ctx.workspace.workspace, lease_id, reservations, actual)))


__all__ = ["DynamoError", "EnforcementStage", "RateLimited", "reserve_side_call", "settle_side_call"]
