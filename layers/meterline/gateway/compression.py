"""The compression stage (lever 4), last before credentials: after routing and a budget downgrade
(the tokenizer follows the model that will serve the request) and after the exact cache (whose key
is over the request as the client sent it; compression is deterministic, so the same request always
compresses the same way). Rewrites the request body with `levers/compression.py` and records what it
removed. Budgets reserved for the uncompressed prompt: a slight over-reservation, settled to actual.

Only where the workspace turned it on for the request's scope (`meterline compression set`), and
not for a request sent with `Meterline-Compression: off`. The saving is the tokens removed times the
request's effective input price (its actual input cost divided by its prompt tokens, so tokens that
would have been cache reads count at the cache-read price): an estimate by nature — the provider
never saw the original — computed with exact integer arithmetic and noted with its tokenizer.
"""

from __future__ import annotations

import logging
from typing import Any

from meterline.gateway.context import RequestContext
from meterline.gateway.pipeline import BaseStage, Decision
from meterline.levers import COMPRESSION, compression, tokens
from meterline.levers.routing import SCOPE_TYPES
from meterline.money import PER_MILLION

log = logging.getLogger("meterline.gateway")
OPT_OUT_HEADER = "meterline-compression"


def lever_config(ctx: RequestContext, lever: str) -> dict[str, Any] | None:
    """The most specific settings of `lever` covering the request (same precedence as routing)."""
    assert ctx.workspace and ctx.key
    configs = ctx.workspace.levers.get(lever)
    if not configs:
        return None
    attribution = {"key": ctx.key.key_id, "member": ctx.key.member, **ctx.tags}
    for scope_type in SCOPE_TYPES:
        value = "*" if scope_type == "workspace" else attribution.get(scope_type)
        if value and f"{scope_type}:{value}" in configs:
            return configs[f"{scope_type}:{value}"]
    return None


def input_saving(removed_tokens: int, ctx: RequestContext) -> int | None:
    """removed tokens x (actual input cost / actual prompt tokens), rounded half up to micro-dollars."""
    usage, cost = ctx.usage, ctx.cost
    if usage is None or cost is None or usage.prompt_total <= 0 or removed_tokens <= 0:
        return None
    rates = cost.rates
    input_scaled = (usage.input_uncached * rates.input + usage.cache_read * rates.cache_read
                    + usage.cache_write_5m * rates.cache_write_5m + usage.cache_write_1h * rates.cache_write_1h)
    numerator, denominator = removed_tokens * input_scaled, usage.prompt_total * PER_MILLION
    return (2 * numerator + denominator) // (2 * denominator)


class CompressionStage(BaseStage):
    name = "compression"

    async def before(self, ctx: RequestContext) -> Decision | None:
        if ctx.endpoint not in compression.COMPRESSIBLE_ENDPOINTS or ctx.body is None:
            return None
        raw = lever_config(ctx, "compression")
        if raw is None or ctx.headers.get(OPT_OUT_HEADER, "").strip().lower() == "off":
            return None
        try:
            settings = compression.Settings.from_dict(raw)
        except ValueError:
            log.warning("compression_settings_invalid", extra={"request_id": ctx.request_id})
            return None
        encoding = tokens.encoding_name(ctx.model_id or ctx.requested_model or "")
        result = compression.compress(ctx.endpoint, ctx.body, settings, lambda text: tokens.count(text, encoding))
        if not result.blocks_changed:
            return None
        ctx.extra["compression"] = result
        ctx.note(compression_tokens_before=result.tokens_before, compression_tokens_after=result.tokens_after,
                 compression_saved_tokens=result.saved_tokens, compression_by_transform=dict(result.by_transform),
                 compression_tokenizer=encoding)
        return None

    async def after(self, ctx: RequestContext) -> None:
        result: compression.Result | None = ctx.extra.get("compression")
        if result is None or not ctx.reached_provider:
            return
        saving = input_saving(result.saved_tokens, ctx)
        if saving:
            ctx.save(COMPRESSION, saving)
