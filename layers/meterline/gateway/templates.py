"""The template stage (lever 5, decisions in levers/templates.py, storage in store/templates.py).

Right after the body is read (before policies, so redaction sees the assembled prompt, and before
the cache key): a request naming `Meterline-Template: name@version` gets the template's stable
parts first, then its rendered prompt, then its own messages. Versions are immutable, so a loaded
template is kept in memory (one GetItem per template version per instance). The ledger record
carries `template` (a rollup dimension: `meterline spend --by template`, `savings --by template`);
where the stage placed the Anthropic breakpoint at the template boundary (on /v1/chat/completions
bound for Claude: placed by the prompt-caching stage once the route is known), `after` records the
template lever's net value (read discount - write premium) like the prompt-caching lever.
"""

from __future__ import annotations

from meterline.errors import InvalidRequestError, NotFoundError, ServiceUnavailable
from meterline.gateway.context import RequestContext
from meterline.gateway.memo import RefreshingCache
from meterline.gateway.pipeline import BaseStage, Decision
from meterline.gateway.prompt_caching import save_cache_value
from meterline.gateway.services import Services
from meterline.levers import TEMPLATE
from meterline.levers.templates import Template, TemplateError, assemble, chat_stable_count, parse_ref, parse_variables
from meterline.store.templates import TemplateStore

HEADER = "meterline-template"
VARIABLES_HEADER = "meterline-template-variables"


class TemplateStage(BaseStage):
    name = "template"

    def __init__(self, services: Services):
        self.services = services
        self.store = TemplateStore(services.settings)
        self.cache: RefreshingCache[tuple[str, str, int], Template | None] = RefreshingCache(self._load, ttl=3600)

    async def _load(self, key: tuple[str, str, int]) -> Template | None:
        try:
            return await self.store.get(self.services.dynamo, *key)
        except Exception as exc:
            raise ServiceUnavailable("The template store is unavailable; try again shortly.") from exc

    async def before(self, ctx: RequestContext) -> Decision | None:
        header = ctx.headers.get(HEADER)
        if not header:
            return None
        assert ctx.workspace and ctx.body is not None
        try:
            name, version = parse_ref(header)
            values = parse_variables(ctx.headers.get(VARIABLES_HEADER))
        except TemplateError as exc:
            return Decision.deny(InvalidRequestError(str(exc), code="invalid_template", param=HEADER))
        template = await self.cache.get((ctx.workspace.workspace, name, version))
        if template is None:
            return Decision.deny(NotFoundError(f"No template {name}@{version} in this workspace.",
                                               code="template_not_found"))
        try:
            ctx.body, marked = assemble(template, ctx.endpoint, ctx.body, values)
        except TemplateError as exc:
            return Decision.deny(InvalidRequestError(str(exc), code="invalid_template", param=HEADER))
        ctx.extra["template"] = template.ref
        ctx.extra["template_marked"] = marked
        if ctx.endpoint == "chat.completions":
            # Marked once the route is known (prompt_caching.py): only Claude takes the breakpoint.
            ctx.extra["template_stable"] = chat_stable_count(template)
        ctx.note(template=template.ref)
        return None

    async def after(self, ctx: RequestContext) -> None:
        if ctx.extra.get("template_marked"):
            save_cache_value(ctx, TEMPLATE)
