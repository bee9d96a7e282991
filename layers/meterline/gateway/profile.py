"""The profile stage: notes the request's shape on its ledger record for waste scoring.

Thin over `waste.features` (pure). Runs after the body is read and routed (so it sees the request
as the caller sent it, before any lever rewrites it, and knows the catalog model it is priced as).
No I/O; a malformed part of a body only yields fewer fields, never a failed request.
"""

from __future__ import annotations

import logging

from meterline.gateway.context import RequestContext
from meterline.gateway.pipeline import BaseStage, Decision
from meterline.waste.features import profile

log = logging.getLogger("meterline.gateway")


class ProfileStage(BaseStage):
    name = "profile"

    async def before(self, ctx: RequestContext) -> Decision | None:
        if ctx.body is None:
            return None
        try:
            fields = profile(ctx.body, session=bool(ctx.tags.get("session")))
        except Exception:  # scoring inputs are best effort; the request itself must not suffer
            log.warning("profile_failed", extra={"request_id": ctx.request_id})
            return None
        ctx.note(**fields)
        return None

    async def after(self, ctx: RequestContext) -> None:
        # The catalog model the request was finally priced as (the routing lever or a fallback may
        # have changed it since `before`); counterfactuals re-price the record with it.
        if ctx.pricing is not None:
            ctx.note(priced_as=ctx.pricing.model_id)
