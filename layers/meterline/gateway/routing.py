"""The routing stage (lever 3), right after the route step: applies the workspace's routing rules
(`levers/routing.py` decides) to the route plan, keeps conversations on one model, and records what
routing saved.

- No rule for the workspace (or `Meterline-Routing: off` on the request): nothing happens, at no cost.
- Session affinity: the first decision for a conversation is pinned, so a conversation never changes
  model mid-way (provider prompt caches stay warm). A conversation is named by `Meterline-Session-Id`,
  else by a hash of its opening (system prompt, tools, first user turn), which every later turn of
  the same conversation repeats. Pins live in this instance's memory (bounded, 1 h); the decision
  itself is computed from the opening, so another instance decides the same way unless the rule
  changed or the route's output-length history differs there.
- Mode `on`: the plan becomes [routed model, the rule's further models, the requested model and its
  own fallbacks]; a 429/5xx on the routed model falls back to what the caller asked for.
- Mode `shadow`: nothing switches; the ledger records the model it would have used and the projected
  saving on the actual usage.
- Saving (`on`): what the requested model would have cost for the same usage, from the catalog,
  minus what the routed call cost; negative when a rule sends a request to a dearer model.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from meterline.budgets.model import Budget
from meterline.errors import GatewayError
from meterline.gateway import addressing
from meterline.gateway.context import RequestContext
from meterline.gateway.pipeline import BaseStage, Decision, apply_route
from meterline.levers import ROUTING
from meterline.levers import routing as lever
from meterline.levers.models import facts_for
from meterline.pricing.cost import price_request

AFFINITY_TTL_S = 3600.0
AFFINITY_MAX = 20_000
HISTORY_MAX = 5_000
OPT_OUT_HEADER = "meterline-routing"


class Affinity:
    """conversation -> the model name it was routed to ("" = stayed on the requested model). Bounded LRU."""

    def __init__(self, ttl: float = AFFINITY_TTL_S, max_entries: int = AFFINITY_MAX):
        self.ttl, self.max = ttl, max_entries
        self._pins: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, key: str, now: float) -> str | None:
        entry = self._pins.get(key)
        if entry is None or now - entry[0] > self.ttl:
            return None
        self._pins[key] = (now, entry[1])  # a live conversation keeps its pin
        self._pins.move_to_end(key)
        return entry[1]

    def pin(self, key: str, model: str, now: float) -> None:
        self._pins[key] = (now, model)
        self._pins.move_to_end(key)
        while len(self._pins) > self.max:
            self._pins.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pins)


class OutputHistory:
    """Expected output tokens per (workspace, rule scope, requested model): an exponential moving
    average of what the route actually produced. Bounded."""

    def __init__(self, max_entries: int = HISTORY_MAX, alpha: float = 0.2):
        self.max, self.alpha = max_entries, alpha
        self._avg: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def expected(self, key: tuple[str, str, str]) -> int | None:
        value = self._avg.get(key)
        return round(value) if value is not None else None

    def add(self, key: tuple[str, str, str], output_tokens: int) -> None:
        old = self._avg.get(key)
        self._avg[key] = float(output_tokens) if old is None else old + self.alpha * (output_tokens - old)
        self._avg.move_to_end(key)
        while len(self._avg) > self.max:
            self._avg.popitem(last=False)


def _header_text(value: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in value)[:400]


class RoutingStage(BaseStage):
    name = "routing"

    def __init__(self) -> None:
        self.affinity = Affinity()
        self.history = OutputHistory()

    async def before(self, ctx: RequestContext) -> Decision | None:
        ws, key = ctx.workspace, ctx.key
        assert ws is not None and key is not None and ctx.body is not None
        if not ws.routes or ctx.endpoint not in lever.ROUTABLE_ENDPOINTS:
            return None
        if ctx.headers.get(OPT_OUT_HEADER, "").strip().lower() == "off":
            return None
        attribution = {"key": key.key_id, "member": key.member, **ctx.tags}
        rule = lever.match(ws.routes, attribution)
        if rule is None:
            return None
        requested: addressing.Route = ctx.extra["route"]
        catalog = ctx.extra["catalog"]
        resolved: dict[str, addressing.Route] = {}
        candidates: list[lever.Candidate] = []
        unavailable: list[str] = []
        for name in rule.targets():
            try:
                route = addressing.resolve(name, ws, catalog, ctx.endpoint)
            except GatewayError:
                unavailable.append(name)
                continue
            if route.pricing is None:  # a saving must be measurable: never route to an unpriced model
                unavailable.append(name)
                continue
            resolved[name] = route
            candidates.append(lever.Candidate(name, route.model_id, facts_for(route.pricing.model_id),
                                              allowed=addressing.allowed(key, route.model_id)))
        features = lever.features(ctx.endpoint, ctx.body)
        history_key = (ws.workspace, rule.scope, requested.model_id)
        conversation = f"{ws.workspace}|{rule.scope}|{requested.model_id}|" + (
            f"s:{ctx.tags['session']}" if ctx.tags.get("session") else f"o:{features.opening}")
        now = time.monotonic()
        pinned = self.affinity.get(conversation, now)
        decision: lever.Decision
        if pinned is not None:
            if pinned == "":
                decision = lever.Decision(None, "session affinity: conversation stays on the requested model")
            elif pinned in resolved and lever.violation(
                    next(c for c in candidates if c.name == pinned), features) is None:
                decision = lever.Decision(pinned, f"session affinity: conversation pinned to {pinned}")
            else:
                # The pinned model can no longer take this turn (a constraint, a rule change): switching
                # to the requested model is the only safe move.
                decision = lever.Decision(None, f"session affinity: {pinned} no longer usable")
        else:
            decision = lever.decide(rule, features, candidates, requested.model_id,
                                    self.history.expected(history_key))
            if unavailable:
                decision = lever.Decision(decision.model, decision.reason + f" (unavailable: {', '.join(unavailable)})",
                                          decision.tier, decision.score, decision.fallbacks, decision.skipped)
            self.affinity.pin(conversation, decision.model or "", now)
        ctx.extra["routing"] = {"rule": rule, "decision": decision, "requested": requested,
                                "history_key": history_key,
                                "target": resolved.get(decision.model) if decision.model else None}
        notes: dict[str, Any] = {"routing_mode": rule.mode, "routing_reason": decision.reason,
                                 "requested_model": requested.model_id}
        if decision.tier:
            notes["routing_tier"], notes["routing_score"] = decision.tier, decision.score
        headers = ctx.extra.setdefault("response_headers", {})
        if decision.model is None:
            ctx.note(**notes)
            headers["meterline-routing-reason"] = _header_text(decision.reason)
            return None
        target = resolved[decision.model]
        if rule.mode == "shadow":
            notes["routing_shadow_model"] = target.model_id
            ctx.note(**notes)
            headers["meterline-routing-reason"] = _header_text(f"shadow: would route to {target.model_id}: "
                                                               f"{decision.reason}")
            return None
        plan = [target, *(resolved[n] for n in decision.fallbacks), *ctx.extra.get("routes", [requested])]
        unique: list[addressing.Route] = []
        for route in plan:
            if all(r.model_id != route.model_id for r in unique) and addressing.allowed(key, route.model_id):
                unique.append(route)
        ctx.extra["routes"] = unique[: addressing.MAX_ATTEMPTS]
        apply_route(ctx, unique[0])
        ctx.note(**notes)
        headers["meterline-routed-model"] = _header_text(target.model_id)
        headers["meterline-routing-reason"] = _header_text(decision.reason)
        return None

    async def after(self, ctx: RequestContext) -> None:
        state = ctx.extra.get("routing")
        if not state:
            return
        requested: addressing.Route = state["requested"]
        rule: lever.RouteRule = state["rule"]
        usage = ctx.usage
        if usage is not None and not usage.estimated and ctx.outcome == "ok":
            self.history.add(state["history_key"], usage.output)
        if usage is None or ctx.cost is None or not ctx.reached_provider:
            return
        day = datetime.fromtimestamp(ctx.started_wall_ms / 1000, tz=UTC).date()
        if rule.mode == "on":
            ctx.note(routed_model=ctx.model_id)
            if ctx.model_id != requested.model_id and requested.pricing is not None:
                counterfactual = price_request(requested.pricing, usage, day, ctx.service_tier)
                if counterfactual is not None:
                    ctx.note(routing_counterfactual_micros=counterfactual.micros)
                    ctx.save(ROUTING, counterfactual.micros - ctx.cost.micros)
            return
        target: addressing.Route | None = state["target"]
        if target is not None and target.pricing is not None:
            projected = price_request(target.pricing, usage, day, ctx.service_tier)
            if projected is not None:
                ctx.note(routing_projected_saving_micros=ctx.cost.micros - projected.micros)


def downgrade_due(budget: Budget, state: dict[str, Any], day: str, own_worst: int) -> int | None:
    """The percent of a budget's cap committed before this request (spent plus other requests'
    in-flight reservations, like the throttle stage judges it) if its downgrade rung is reached
    (monthly cap, else daily), else None. Read from the counter the reservation returned: its
    committed figure, less this request's own reservation (`own_worst`). (The reservation returns
    only the attributes it updated; committed always is, spent is not where it did not change.)"""
    if budget.downgrade_at is None or not budget.downgrade_to:
        return None
    cap, committed, spent = ((budget.monthly_micros, "committed", "spent") if budget.monthly_micros is not None
                             else (budget.daily_micros, f"dc_{day}", f"ds_{day}"))
    # (A reservation of 0, for an unpriced model, may leave committed out: then spent.)
    before = max(0, int(state[committed]) - own_worst) if committed in state else int(state.get(spent, 0))
    if not cap or before * 100 < budget.downgrade_at * cap:
        return None
    return before * 100 // cap


def downgrade(ctx: RequestContext, budget: Budget, percent: int) -> bool:
    """The ladder's downgrade rung (called by enforcement once the reservations are in): route this
    request to the budget's cheaper model, if it can take the request (hard constraints, the key's
    allowlist, priced). Overrides routing rules and session affinity: the budget comes first. The
    saving is recorded like routing's (`routing`), against the model the caller asked for."""
    ws, key = ctx.workspace, ctx.key
    assert ws and key and ctx.body is not None and budget.downgrade_to
    current: addressing.Route = ctx.extra["route"]
    try:
        target = addressing.resolve(budget.downgrade_to, ws, ctx.extra["catalog"], ctx.endpoint)
    except GatewayError:
        ctx.note(budget_downgrade_skipped=f"{budget.downgrade_to} unavailable")
        return False
    reason = f"budget {budget.scope} at {percent}% >= {budget.downgrade_at}%: downgrade to {target.model_id}"
    if target.model_id == current.model_id:
        return False
    candidate = lever.Candidate(budget.downgrade_to, target.model_id,
                                facts_for(target.pricing.model_id if target.pricing else target.model_id),
                                allowed=addressing.allowed(key, target.model_id))
    problem = "unpriced" if target.pricing is None else lever.violation(
        candidate, lever.features(ctx.endpoint, ctx.body))
    if problem is not None:
        ctx.note(budget_downgrade_skipped=f"{target.model_id}: {problem}")
        return False
    state = ctx.extra.get("routing")
    requested: addressing.Route = state["requested"] if state else current
    rule = lever.RouteRule("budget", budget.scope, (budget.downgrade_to,), mode="on")
    ctx.extra["routing"] = {"rule": rule, "decision": lever.Decision(budget.downgrade_to, reason),
                            "requested": requested, "target": target,
                            "history_key": (ws.workspace, rule.scope, requested.model_id)}
    # (The exact cache, keyed before enforcement on the model asked for, stores only that route's
    # answers, never a downgrade's: gateway/caching.py.)
    plan = [target, *(r for r in ctx.extra.get("routes", [current]) if r.model_id != target.model_id)]
    ctx.extra["routes"] = plan[: addressing.MAX_ATTEMPTS]
    apply_route(ctx, target)
    ctx.note(routing_mode="on", routing_reason=reason, requested_model=requested.model_id,
             budget_downgrade=budget.scope)
    headers = ctx.extra.setdefault("response_headers", {})
    headers["meterline-routed-model"] = _header_text(target.model_id)
    headers["meterline-routing-reason"] = _header_text(reason)
    return True
