"""Meter a finished request (usage -> cost) and shape its ledger record. Pure: no I/O.

When the provider's usage never arrived (a stream cut by the client or the provider), usage is
estimated from the request and what was streamed, and the record carries `estimated=True`;
a request that reached a provider is never recorded as free.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from meterline.budgets.policy import usage_limits
from meterline.gateway.context import RequestContext
from meterline.pricing.cost import Cost, price_request
from meterline.store.ledger import POOLS_FIELD
from meterline.usage import Usage, claim, estimate_request_prompt_tokens

# timezone -> (epoch second, (day, month)): every request of a second shares one answer (zone
# offsets are whole seconds, so a period never changes inside one).
_periods_memo: dict[str, tuple[int, tuple[str, str]]] = {}


def periods(ts_ms: int, timezone: str) -> tuple[str, str]:
    """The request's (day, month) in the workspace's time zone."""
    second = ts_ms // 1000
    found = _periods_memo.get(timezone)
    if found is not None and found[0] == second:
        return found[1]
    local = datetime.fromtimestamp(second, tz=ZoneInfo(timezone))
    day = local.strftime("%Y-%m-%d")
    answer = (day, day[:7])
    if len(_periods_memo) >= 1024:  # bounded: time zone names are few, but come from config
        _periods_memo.clear()
    _periods_memo[timezone] = (second, answer)
    return answer


def estimate_usage(ctx: RequestContext) -> Usage:
    prompt = estimate_request_prompt_tokens(ctx.body)
    output = ctx.translator.stream_output_units if ctx.translator is not None else 0
    return Usage(input_uncached=prompt, output=output, estimated=True)


def plausible(usage: Usage, ctx: RequestContext) -> Usage:
    """Cap usage beyond what the request and the model allow (flagged "implausible", the provider's
    claim kept): a provider's bug or a hostile endpoint must not put 10^40 tokens on a budget."""
    max_input, max_output = usage_limits(ctx.body or {}, ctx.endpoint, ctx.pricing,
                                         ctx.extra.get("input_tokens_estimate"))
    if usage.prompt_total <= max_input and usage.output_total <= max_output:
        return usage
    capped = usage
    if usage.prompt_total > max_input:
        # Priced as uncached input: the claimed split cannot be trusted either.
        capped = replace(capped, input_uncached=max_input, cache_read=0, cache_write_5m=0, cache_write_1h=0,
                         input_audio=0, cache_read_audio=0)
    if usage.output_total > max_output:
        # Audio output keeps its share of the cap (it is priced higher than text: never under-billed).
        audio = min(usage.output_audio, max_output)
        capped = replace(capped, output=max_output - audio, output_audio=audio,
                         reasoning=min(usage.reasoning, max_output) if usage.reasoning is not None else None)
    claimed = usage.claimed or claim(usage.as_dict())
    return replace(capped, flag="implausible", claimed=claimed)


def meter(ctx: RequestContext) -> None:
    """Set ctx.usage (estimated if missing or invalid, capped if implausible) and ctx.cost for a
    request that reached a provider."""
    if not ctx.reached_provider or ctx.cost is not None:
        return
    if ctx.usage is not None and ctx.usage.flag == "invalid":
        ctx.usage = replace(estimate_usage(ctx), flag="invalid", claimed=ctx.usage.claimed)
    if ctx.usage is None:
        # A provider error response is not billed; anything that produced output may be.
        if ctx.outcome in ("upstream_error", "upstream_unavailable"):
            ctx.usage = Usage()
        else:
            ctx.usage = estimate_usage(ctx)
    ctx.usage = plausible(ctx.usage, ctx)
    if ctx.pricing is None:
        ctx.unpriced = True
        return
    day = datetime.fromtimestamp(ctx.started_wall_ms / 1000, tz=UTC).date()
    catalog = ctx.extra.get("catalog")
    ctx.cost = price_request(ctx.pricing, ctx.usage, day, ctx.service_tier,
                             resolve=catalog.resolve if catalog is not None else None)
    if ctx.cost is None:
        ctx.unpriced = True


def usage_classes(usage: Usage, cost: Cost | None) -> dict[str, Any]:
    """The billed classes beyond the five token classes, and each class's unit price, for the ledger
    record (absent when zero, so ordinary records stay small)."""
    out: dict[str, Any] = {
        "input_audio": usage.input_audio or None,
        "cache_read_audio": usage.cache_read_audio or None,
        "output_audio": usage.output_audio or None,
        "rejected_prediction": usage.rejected_prediction or None,
        "tool_calls": dict(usage.tool_calls) or None,
        # image model:quality:size -> images (an image model the request did not name is "default")
        "images": {f"{m or 'default'}:{q}:{s}": n for m, q, s, n in usage.images} or None,
        "speed": usage.speed if usage.speed and usage.speed != "standard" else None,
        "inference_geo": usage.inference_geo if usage.inference_geo not in (None, "", "global") else None,
    }
    if usage.iterations:
        out["iterations"] = [{"type": it.kind, "model": it.model, **{k: v for k, v in it.usage.as_dict().items()
                              if isinstance(v, int) and not isinstance(v, bool) and v}} for it in usage.iterations]
        out["iteration_tokens"] = sum(it.usage.prompt_total + it.usage.output_total for it in usage.iterations)
    if cost is not None:
        # class -> [units, price]: micro-dollars per 1M tokens; per 1K calls for `tool:*`; per image
        # for `image:*`; for `iteration:*` the iteration's own cost in micro-dollars.
        out["prices"] = {k: list(v) for k, v in cost.breakdown.items()} or None
        out["price_gaps"] = list(cost.gaps) or None
    return out


def attempt_request_id(request_id: str, attempt: int) -> str:
    """The ledger id of a failed-over attempt; the attempt that answers keeps the request's own id."""
    return f"{request_id}.{attempt}"


def ledger_record(ctx: RequestContext, request_id: str | None = None) -> dict[str, Any]:
    """The request's ledger record; `request_id` names a failed-over attempt's record instead."""
    assert ctx.key is not None and ctx.workspace is not None
    day, month = periods(ctx.started_wall_ms, ctx.workspace.timezone)
    usage = ctx.usage or Usage()
    target = ctx.target
    record: dict[str, Any] = {
        "request_id": request_id or ctx.request_id,
        "parent_request_id": ctx.request_id,
        "attempt": ctx.attempt,
        "ts": ctx.started_wall_ms,
        "day": day,
        "month": month,
        "endpoint": ctx.endpoint,
        "workspace": ctx.workspace.workspace,
        "key": ctx.key.key_id,
        "member": ctx.key.member,
        "department": ctx.key.department,
        **{k: v for k, v in ctx.tags.items() if v},
        "provider": target.provider if target else None,
        "model": ctx.model_id or ctx.requested_model,
        "upstream_model": ctx.response_model,
        "stream": ctx.stream,
        "outcome": ctx.outcome,
        "status": ctx.error.status if ctx.error else (ctx.upstream_status or 200),
        "error_code": ctx.error.code if ctx.error else None,
        "input_uncached": usage.input_uncached,
        "cache_read": usage.cache_read,
        "cache_write_5m": usage.cache_write_5m,
        "cache_write_1h": usage.cache_write_1h,
        "output": usage.output,
        "reasoning": usage.reasoning,
        "estimated": usage.estimated,
        "usage_flag": usage.flag,
        "usage_claimed": usage.claimed,
        "cost_micros": ctx.cost.micros if ctx.cost else 0,
        "unpriced": ctx.unpriced,
        "price_source": ctx.cost.price_source if ctx.cost else None,
        "service_tier": ctx.service_tier,
        **usage_classes(usage, ctx.cost),
        "latency_ms": int(ctx.elapsed_ms()),
        "ttfb_ms": int(ctx.first_byte_ms) if ctx.first_byte_ms is not None else None,
        "saved_micros": sum(ctx.savings.values()) if ctx.savings else None,
        "savings": dict(ctx.savings) if ctx.savings else None,
    }
    record.update(ctx.extra.get("ledger_extra", {}))  # policy decisions (budget scope, clamp, ...)
    if request_id is None and POOLS_FIELD in ctx.extra:
        # The budget pools this request settled through its record (store/budgets.py `defer`): only
        # the request's own record, which its pools' sweeper fold reads.
        record[POOLS_FIELD] = ctx.extra[POOLS_FIELD]
    return {k: v for k, v in record.items() if v is not None}
