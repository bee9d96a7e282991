"""The prompt-caching lever stage (decisions in levers/prompt_cache.py).

Placed after the response cache (a hit never gets here) and before credentials: when the scope's
cache rule turns `prompt_cache` on, it adds Anthropic breakpoints (on /v1/messages, and as
`cache_control` markers on /v1/chat/completions bound for Anthropic or Bedrock Claude/Nova, which the
translators turn into `cache_control` or `cachePoint`) or an OpenAI `prompt_cache_key` to the body
sent upstream (never to what the response cache keyed). Its `after` records the net
value from the request's own usage and rates: `ctx.save("prompt_cache", read discount - write
premium)` (negative when writes were not read), with both parts as ledger notes.
"""

from __future__ import annotations

from meterline.cache import rules
from meterline.gateway.context import RequestContext
from meterline.gateway.pipeline import BaseStage, Decision
from meterline.levers import PROMPT_CACHE, templates
from meterline.levers import prompt_cache as lever

ANTHROPIC_KINDS = ("anthropic", "sim")
CLAUDE_CHAT_KINDS = ("anthropic", "bedrock")  # chat translated to Messages / Converse


class PromptCacheStage(BaseStage):
    name = "prompt_cache"

    def __init__(self) -> None:
        self.tracker = lever.ReuseTracker()

    async def before(self, ctx: RequestContext) -> Decision | None:
        assert ctx.workspace and ctx.key and ctx.body is not None
        routes = ctx.extra.get("routes") or [ctx.extra["route"]]
        kinds = {r.provider.kind for r in routes}
        route = ctx.extra["route"]
        if ctx.extra.get("template_stable") and ctx.endpoint == "chat.completions" \
                and kinds <= set(CLAUDE_CHAT_KINDS) and all(lever.caps_for(r.provider.kind, r.model) for r in routes):
            # The template lever's boundary on chat bound for Claude: known only now that the route is.
            marked = templates.mark_chat_boundary(ctx.body, ctx.extra["template_stable"])
            if marked is not None:
                ctx.body = marked
                ctx.extra["template_marked"] = True
        rule = rules.resolve(ctx.workspace.cache_rules, ctx.key.key_id, ctx.tags.get("feature"))
        if rule is None or not rule.prompt_cache:
            return None
        if ctx.endpoint == "messages" and kinds <= set(ANTHROPIC_KINDS):
            injected = lever.anthropic_breakpoints(ctx.body, route.model, ctx.workspace.workspace,
                                                   rule.prompt_cache_ttl, self.tracker)
            if injected is None:
                return None
            ctx.body = injected.body
            ctx.extra["prompt_cache"] = injected.breakpoints
            ctx.note(prompt_cache_breakpoints=list(injected.breakpoints))
        elif ctx.endpoint == "chat.completions" and kinds <= set(CLAUDE_CHAT_KINDS):
            caps = [lever.caps_for(r.provider.kind, r.model) for r in routes]
            if any(c is None for c in caps):
                return None  # a route that takes no cachePoint (e.g. Llama on Bedrock) would reject it
            injected = lever.chat_breakpoints(ctx.body, lever.merge_caps([c for c in caps if c]), route.model,
                                              ctx.workspace.workspace, rule.prompt_cache_ttl, self.tracker)
            if injected is None:
                return None
            ctx.body = injected.body
            ctx.extra["prompt_cache"] = injected.breakpoints
            ctx.note(prompt_cache_breakpoints=list(injected.breakpoints))
        elif ctx.endpoint in ("chat.completions", "responses") and kinds <= set(lever.OPENAI_KINDS):
            body = lever.openai_cache_key(ctx.body, ctx.workspace.workspace, ctx.tags.get("feature"),
                                          ctx.extra.get("template"), route.model)
            if body is None:
                return None
            ctx.body = body
            ctx.extra["prompt_cache"] = ("prompt_cache_key",)
            ctx.note(prompt_cache_key=True)
        return None

    async def after(self, ctx: RequestContext) -> None:
        if ctx.extra.get("prompt_cache"):
            save_cache_value(ctx, PROMPT_CACHE)


def save_cache_value(ctx: RequestContext, lever_name: str) -> None:
    """Record what a breakpoint placed by `lever_name` earned on this request: read discount minus
    write premium, from the request's own usage and rates (negative when writes were not read),
    with both parts as ledger notes (`<lever>_read_saved`, `<lever>_write_premium`). Estimated usage
    (a cut stream) has no cache split to judge, so it records nothing."""
    if ctx.cost is None or ctx.usage is None or ctx.usage.estimated:
        return
    value = lever.value(ctx.usage, ctx.cost.rates)
    ctx.save(lever_name, value.net)
    if value.read_saved or value.write_premium:
        ctx.note(**{f"{lever_name}_read_saved": value.read_saved, f"{lever_name}_write_premium": value.write_premium})
