"""Model addressing: `provider/model`, a bare model on the workspace's default provider, or
`sim/<model>`. Pure: decides from the workspace config and the catalog, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from meterline.errors import NotFoundError, PermissionDeniedError
from meterline.pricing.catalog import Catalog, ModelPricing
from meterline.store.keys import KeyRecord
from meterline.store.workspaces import ProviderEntry, WorkspaceConfig

SIM = "sim"
SIM_ENTRY = ProviderEntry(name=SIM, kind=SIM, base_url="sim://local", ciphertext=None, catalog=SIM)


@dataclass(frozen=True)
class Route:
    provider: ProviderEntry
    model: str  # as the provider expects it
    model_id: str  # "<provider>/<model>": what allowlists and reports see
    pricing: ModelPricing | None  # None: unpriced (only when the workspace forwards those)


def resolve(requested: str, workspace: WorkspaceConfig, catalog: Catalog) -> Route:
    if "/" in requested:
        provider_name, model = requested.split("/", 1)
    else:
        provider_name, model = (workspace.default_provider or "openai"), requested
    if not model:
        raise NotFoundError(f"The model `{requested}` does not exist.", param="model")
    if provider_name == SIM:
        entry = SIM_ENTRY
        pricing = catalog.resolve(model) if "/" in model else catalog.find_by_name(model)
    else:
        entry = workspace.providers.get(provider_name)
        if entry is None:
            raise NotFoundError(
                f"The model `{requested}` does not exist: no provider `{provider_name}` is configured for "
                f"this workspace (add one with `meterline providers add {provider_name}`).",
                code="model_not_found", param="model",
            )
        pricing = catalog.resolve(f"{entry.catalog}/{model}")
    if pricing is None and workspace.unpriced != "forward":
        raise NotFoundError(
            f"The model `{requested}` has no price in the catalog, so its cost cannot be metered. Add a "
            "workspace price override, or set the workspace to forward unpriced models.",
            code="model_not_priced", param="model",
        )
    return Route(provider=entry, model=model, model_id=f"{entry.name}/{model}", pricing=pricing)


def allowed(key: KeyRecord, model_id: str) -> bool:
    return not key.models or any(fnmatchcase(model_id, pattern) for pattern in key.models)


def check_allowed(key: KeyRecord, route: Route, requested: str) -> None:
    if not allowed(key, route.model_id):
        raise PermissionDeniedError(
            f"This key is not allowed to use the model `{requested}`.", code="model_not_allowed", param="model"
        )
