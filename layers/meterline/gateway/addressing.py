"""Model addressing: `provider/model`, a workspace alias, a bare model on the workspace's default
provider (on `/v1/messages`: on the workspace's Anthropic provider), or `sim/<model>`; plus the
ordered fallbacks tried when a provider answers 429/5xx or times out. Pure: decides from the
workspace config and the catalog, no I/O.

Fallbacks come from the alias the request named (`meterline aliases set fast <model> --fallbacks
a,b`), then from the virtual key (`meterline keys fallbacks <key id> a,b`), in that order, without
duplicates. A fallback the key may not use, that does not resolve, or whose provider cannot serve
the endpoint is skipped (the primary model's errors are the caller's to see; a fallback's are not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from meterline.errors import GatewayError, NotFoundError, PermissionDeniedError
from meterline.pricing.catalog import Catalog, ModelPricing
from meterline.store.keys import KeyRecord
from meterline.store.workspaces import ProviderEntry, WorkspaceConfig
from meterline.translators import registry

SIM = "sim"
SIM_ENTRY = ProviderEntry(name=SIM, kind=SIM, base_url="sim://local", ciphertext=None, catalog=SIM)
ANTHROPIC_ENDPOINTS = ("messages", "messages.count_tokens")
MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class Route:
    provider: ProviderEntry
    model: str  # as the provider expects it
    model_id: str  # "<provider>/<model>": what allowlists and reports see
    pricing: ModelPricing | None  # None: unpriced (only when the workspace forwards those)


def _anthropic_entry(workspace: WorkspaceConfig) -> ProviderEntry | None:
    entry = workspace.providers.get("anthropic")
    if entry is not None and entry.kind == "anthropic":
        return entry
    return next((e for e in workspace.providers.values() if e.kind == "anthropic"), None)


def target_of(requested: str, workspace: WorkspaceConfig, endpoint: str = "chat.completions") -> tuple[str, str]:
    """(provider name, model) a requested model names: alias resolved, default provider applied.
    No catalog lookup, so policies can match `provider/model` cheaply before routing."""
    alias = workspace.aliases.get(requested)
    target = alias.model if alias else requested
    if "/" in target:
        provider_name, model = target.split("/", 1)
        return provider_name, model
    if endpoint in ANTHROPIC_ENDPOINTS:
        found = _anthropic_entry(workspace)
        # A workspace on the simulator with no Anthropic provider serves bare Claude names from the sim.
        fallback = SIM if workspace.default_provider == SIM else "anthropic"
        return (found.name if found else fallback), target
    return (workspace.default_provider or "openai"), target


def resolve(requested: str, workspace: WorkspaceConfig, catalog: Catalog, endpoint: str = "chat.completions") -> Route:
    entry: ProviderEntry | None
    provider_name, model = target_of(requested, workspace, endpoint)
    if not model:
        raise NotFoundError(f"The model `{requested}` does not exist.", param="model")
    if provider_name == SIM:
        entry = SIM_ENTRY
        # A workspace override for `sim/<model>` (meterline prices set --model sim/...) wins; otherwise
        # the simulator is priced as the real model it names.
        pricing = catalog.resolve(f"{SIM}/{model}") or (
            catalog.resolve(model) if "/" in model else catalog.find_by_name(model))
    else:
        entry = workspace.providers.get(provider_name)
        if entry is None:
            raise NotFoundError(
                f"The model `{requested}` does not exist: no provider `{provider_name}` is configured for "
                f"this workspace (add one with `meterline providers add {provider_name}`).",
                code="model_not_found", param="model",
            )
        pricing = catalog.resolve(entry.catalog_model(model))
    if not registry.supports(endpoint, entry.kind):
        raise registry.unsupported(endpoint, entry.kind)
    if pricing is None and workspace.unpriced != "forward":
        raise NotFoundError(
            f"The model `{requested}` has no price in the catalog, so its cost cannot be metered. Add a "
            "workspace price override, or set the workspace to forward unpriced models.",
            code="model_not_priced", param="model",
        )
    return Route(provider=entry, model=model, model_id=f"{entry.name}/{model}", pricing=pricing)


def plan(requested: str, workspace: WorkspaceConfig, catalog: Catalog, key: KeyRecord,
         endpoint: str = "chat.completions", permit: Callable[[str], bool] | None = None) -> list[Route]:
    """The primary route (errors raised: the caller asked for it) then usable fallbacks, in order.
    `permit` (the request's model policies) drops fallbacks a policy would deny."""
    primary = resolve(requested, workspace, catalog, endpoint)
    check_allowed(key, primary, requested)
    routes = [primary]
    alias = workspace.aliases.get(requested)
    candidates = [*(alias.fallbacks if alias else ()), *workspace.key_fallbacks.get(key.key_id, ())]
    for candidate in candidates:
        if len(routes) >= MAX_ATTEMPTS:
            break
        try:
            route = resolve(candidate, workspace, catalog, endpoint)
        except GatewayError:
            continue
        if (allowed(key, route.model_id) and (permit is None or permit(route.model_id))
                and all(r.model_id != route.model_id for r in routes)):
            routes.append(route)
    return routes


def allowed(key: KeyRecord, model_id: str) -> bool:
    return not key.models or any(fnmatchcase(model_id, pattern) for pattern in key.models)


def check_allowed(key: KeyRecord, route: Route, requested: str) -> None:
    if not allowed(key, route.model_id):
        raise PermissionDeniedError(
            f"This key is not allowed to use the model `{requested}`.", code="model_not_allowed", param="model"
        )
