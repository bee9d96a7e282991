"""Control-plane operations: the one implementation behind both the admin API and the CLI.

Every operation is scoped to one workspace and logged as an audit event (who, what, target),
never with a secret in it.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from botocore.exceptions import ClientError

from meterline.admin.access import Access, AccessDenied
from meterline.budgets.model import Budget, RateLimit
from meterline.config import Settings
from meterline.egress import EgressError, check_url
from meterline.levers import LEVERS, compression
from meterline.levers.routing import SCOPE_TYPES as ROUTE_SCOPES
from meterline.levers.routing import RouteRule
from meterline.policies.engine import Facts, evaluate, message_count, requested_max_tokens
from meterline.policies.model import PolicyError, PolicySpec
from meterline.pricing.catalog import validate_override
from meterline.store.audit import AuditStore
from meterline.store.budgets import BudgetStore
from meterline.store.keys import KeyNotFound, KeyRecord, KeyStore
from meterline.store.rollups import ROLLUP_DIMENSIONS, RollupStore, bound_value, counters_of
from meterline.store.workspaces import Alias, ProviderEntry, WorkspaceStore
from meterline.vault import Vault
from meterline.vkeys import generate, hash_key

audit = logging.getLogger("meterline.audit")
PROVIDER_KINDS = ("openai", "openai_compatible", "anthropic", "gemini", "bedrock", "azure")
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com",
                     "gemini": "https://generativelanguage.googleapis.com"}
# Where each kind's models are priced in the catalog (Azure deployments map onto OpenAI models).
DEFAULT_CATALOG = {"openai": "openai", "azure": "openai", "anthropic": "anthropic", "gemini": "gemini",
                   "bedrock": "bedrock"}
AZURE_API_VERSION = "2024-10-21"
# MCP scopes a virtual key can carry (its own slice, or the whole workspace); "mcp" = "mcp:key".
KEY_SCOPES = {"mcp": "mcp:key", "mcp:key": "mcp:key", "mcp:member": "mcp:member",
              "mcp:department": "mcp:department", "mcp:admin": "mcp:admin"}



def _compression_config(raw: dict[str, Any]) -> dict[str, Any]:
    return compression.Settings.from_dict(raw).to_dict()


def _semantic_config(raw: dict[str, Any]) -> dict[str, Any]:
    from meterline.cache import semantic

    try:
        return semantic.Settings.from_dict(raw).to_dict()
    except TypeError as exc:
        raise ValueError(str(exc)) from exc


# Each lever with per-scope settings, and how its settings are validated (ValueError: refused).
LEVER_VALIDATORS = {"compression": _compression_config, "semantic": _semantic_config}


WORKSPACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # it is part of every table key: no '#', '/'
MAX_KEY_DAYS = 3650  # ten years


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, TypeError, ZoneInfoNotFoundError) as exc:
        raise OpError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Paris)") from exc


class OpError(ValueError):
    """A control-plane request that cannot be carried out (bad input, missing workspace)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Ops:
    """The operations, run as `actor` with `access` (admin/access.py; None: the caller holds the
    tables' own credentials, as the CLI does). Each public operation is guarded by its role in
    OP_ROLES (wrapped below the class): checked before it runs, a read audited when it returns."""

    settings: Settings
    actor: str = "cli"
    access: Access | None = None
    _depth: int = field(default=0, init=False, repr=False)
    _read_audited: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.access is None:
            self.access = Access.direct(self.actor)

    def _audit(self, action: str, workspace: str | None, *, before: Any = None, after: Any = None,
               **target: Any) -> None:
        """Record a change in the immutable audit table (who, what, before and after, when) and the log."""
        audit.info("admin_action", extra={"audit": {"actor": self.actor, "action": action, "workspace": workspace,
                                                    "target": target, "ts": int(time.time())}})
        AuditStore(self.settings).record(self.actor, action, workspace, target=target, before=before,
                                         after=after if after is not None else (target or None))

    def _audit_read(self, what: str, workspace: str | None, **target: Any) -> None:
        """Reads are audited too (who looked at which workspace's spend, keys, exports), table only."""
        self._read_audited = True
        AuditStore(self.settings).record(self.actor, f"read.{what}", workspace, target=target or None)

    def _require_workspace(self, workspace: str) -> Any:
        config = WorkspaceStore(self.settings).load(workspace)
        if config is None:
            raise OpError(f"no workspace {workspace!r}", status=404)
        return config

    # workspaces
    def create_workspace(self, workspace: str, name: str, *, default_provider: str | None = None,
                         unpriced: str = "reject", timezone: str = "UTC") -> dict[str, Any]:
        if not isinstance(workspace, str) or not WORKSPACE_ID.fullmatch(workspace):
            raise OpError("a workspace id is 1-64 letters, digits, '_' or '-', starting with a letter or digit")
        if unpriced not in ("reject", "forward"):
            raise OpError("unpriced must be 'reject' or 'forward'")
        _zone(timezone)
        try:
            WorkspaceStore(self.settings).create(workspace, name, default_provider=default_provider,
                                                 unpriced=unpriced, timezone=timezone)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise OpError(f"workspace {workspace!r} already exists", status=409) from exc
            raise
        self._audit("workspace.create", workspace)
        return {"workspace": workspace, "name": name}

    def list_workspaces(self) -> list[dict[str, Any]]:
        """The workspaces the caller may read (every one for the platform role)."""
        assert self.access is not None
        return [{"id": w["pk"], "name": w.get("name", ""), "default_provider": w.get("default_provider", ""),
                 "unpriced": w.get("unpriced", "reject"), "timezone": w.get("timezone", "UTC")}
                for w in WorkspaceStore(self.settings).list_workspaces() if self.access.readable(w["pk"])]

    def update_workspace(self, workspace: str, **changes: Any) -> None:
        if not changes:
            raise OpError("nothing to change")
        if changes.get("unpriced") not in (None, "reject", "forward"):
            raise OpError("unpriced must be 'reject' or 'forward'")
        if "timezone" in changes:
            _zone(changes["timezone"])
        if "trusted_proxies" in changes:
            changes["trusted_proxies"] = _cidrs(changes["trusted_proxies"])
        config = self._require_workspace(workspace)
        before = {k: _plain(getattr(config, k, None)) for k in changes}
        WorkspaceStore(self.settings).update_settings(workspace, **changes)
        self._audit("workspace.update", workspace, before=before, after={k: _plain(v) for k, v in changes.items()},
                    fields=sorted(changes))

    # keys
    def create_key(self, workspace: str, member: str, department: str = "default", models: tuple[str, ...] = (),
                   expires_in_days: float | None = None, name: str = "",
                   scopes: tuple[str, ...] = ()) -> dict[str, Any]:
        self._require_workspace(workspace)
        scopes = tuple(KEY_SCOPES.get(s, s) for s in scopes)
        if any(s not in KEY_SCOPES.values() for s in scopes) or len(scopes) > 1:
            raise OpError(f"scopes: one of {', '.join(KEY_SCOPES)}")
        if expires_in_days is not None and (isinstance(expires_in_days, bool) or not isinstance(
                expires_in_days, int | float) or not 0 < expires_in_days <= MAX_KEY_DAYS):
            raise OpError(f"expires_in_days must be more than 0 and at most {MAX_KEY_DAYS}")
        if not member.strip():
            raise OpError("member must not be empty")
        key, key_id = generate()
        expires = int(time.time() + expires_in_days * 86400) if expires_in_days else None
        KeyStore(self.settings).create(KeyRecord(key_hash=hash_key(key), key_id=key_id, workspace=workspace,
                                                 member=member, department=department, models=models,
                                                 expires_at=expires, name=name, scopes=scopes))
        self._audit("key.create", workspace, key_id=key_id, member=member, department=department, scopes=list(scopes))
        return {"key_id": key_id, "api_key": key, "member": member, "department": department,
                "models": list(models), "expires_at": expires, "scopes": list(scopes)}

    def list_keys(self, workspace: str) -> list[dict[str, Any]]:
        self._audit_read("keys", workspace)
        now = time.time()
        return [{"key_id": k.key_id, "name": k.name, "member": k.member, "department": k.department,
                 "models": list(k.models), "expires_at": k.expires_at, "scopes": list(k.scopes),
                 "status": "revoked" if k.revoked else ("active" if k.usable(now) else "expired")}
                for k in KeyStore(self.settings).list(workspace)]

    def revoke_key(self, workspace: str, key_id: str) -> None:
        try:
            KeyStore(self.settings).revoke(workspace, key_id)
        except KeyNotFound as exc:
            raise OpError(f"no key {key_id} in workspace {workspace}", status=404) from exc
        self._audit("key.revoke", workspace, key_id=key_id, before={"status": "active"}, after={"status": "revoked"})

    # providers (the vault)
    def put_provider(self, workspace: str, name: str, *, secret: str | None, kind: str | None = None,
                     base_url: str | None = None, catalog: str | None = None, region: str | None = None,
                     api_version: str | None = None, deployments: dict[str, str] | None = None) -> dict[str, Any]:
        """Store a provider entry; `secret` (never logged) is KMS-encrypted under {workspace, provider}."""
        self._require_workspace(workspace)
        kind = kind or (name if name in PROVIDER_KINDS else "openai_compatible")
        if kind not in PROVIDER_KINDS:
            raise OpError(f"kind must be one of {PROVIDER_KINDS}")
        options: dict[str, Any] = {}
        if kind == "bedrock":
            options["region"] = region or self.settings.region
            if secret:
                raise OpError("bedrock uses the gateway's IAM role (locally your AWS credentials), never a stored key")
        elif region:
            raise OpError("region applies to bedrock only")
        if kind == "azure":
            options["api_version"] = api_version or AZURE_API_VERSION
            options["deployments"] = dict(deployments or {})
            if not options["deployments"]:
                raise OpError("azure needs at least one deployment NAME=MODEL, the catalog model it runs "
                              "(CLI --deployment, admin API `deployments`)")
        elif api_version or deployments:
            raise OpError("api_version and deployments apply to azure only")
        base_url = base_url or DEFAULT_BASE_URLS.get(kind)
        if kind == "bedrock" and not base_url:
            base_url = f"https://bedrock-runtime.{options['region']}.amazonaws.com"
        if not base_url:
            raise OpError("base_url is required for this provider (for azure: https://<resource>.openai.azure.com)")
        try:
            check_url(base_url, self.settings.egress_allow_hosts)
        except EgressError as exc:
            raise OpError(f"base_url refused: {exc}") from exc
        ciphertext = Vault(self.settings).encrypt(secret, workspace, name) if secret else None
        catalog = catalog or DEFAULT_CATALOG.get(kind, name)
        WorkspaceStore(self.settings).put_provider(
            workspace, ProviderEntry(name, kind, base_url, ciphertext, catalog, options))
        self._audit("provider.put", workspace, provider=name, kind=kind, key_stored=bool(ciphertext))
        return {"name": name, "kind": kind, "base_url": base_url, "priced_as": catalog, "key_stored": bool(ciphertext),
                "options": options}

    def list_providers(self, workspace: str) -> list[dict[str, Any]]:
        config = self._require_workspace(workspace)
        self._audit_read("providers", workspace)
        return [{"name": p.name, "kind": p.kind, "base_url": p.base_url, "priced_as": p.catalog,
                 "key_stored": bool(p.ciphertext), "options": p.options} for p in config.providers.values()]

    def delete_provider(self, workspace: str, name: str) -> None:
        entry = self._require_workspace(workspace).providers.get(name)
        if entry is None:
            raise OpError(f"no provider {name!r} in workspace {workspace}", status=404)
        WorkspaceStore(self.settings).delete_provider(workspace, name)
        self._audit("provider.delete", workspace, provider=name, before={
            "kind": entry.kind, "base_url": entry.base_url, "catalog": entry.catalog, "options": entry.options,
            "key_stored": bool(entry.ciphertext)}, after={})

    # aliases and fallbacks
    def set_alias(self, workspace: str, name: str, model: str, fallbacks: tuple[str, ...] = ()) -> Alias:
        if "/" in name:
            raise OpError("an alias name has no '/' (it would shadow provider/model addressing)")
        if "/" not in model:
            raise OpError("the alias target is provider/model, e.g. anthropic/claude-haiku-4-5")
        old = self._require_workspace(workspace).aliases.get(name)
        alias = Alias(name, model, tuple(fallbacks))
        WorkspaceStore(self.settings).put_alias(workspace, alias)
        self._audit("alias.set", workspace, alias=name, model=model, fallbacks=list(fallbacks),
                    before={"model": old.model, "fallbacks": list(old.fallbacks)} if old else None)
        return alias

    def list_aliases(self, workspace: str) -> list[dict[str, Any]]:
        config = self._require_workspace(workspace)
        rows = [{"alias": a.name, "model": a.model, "fallbacks": list(a.fallbacks)} for a in config.aliases.values()]
        rows += [{"alias": f"(key {k})", "model": "*", "fallbacks": list(f)} for k, f in config.key_fallbacks.items()]
        return rows

    def delete_alias(self, workspace: str, name: str) -> None:
        old = self._require_workspace(workspace).aliases.get(name)
        if old is None:
            raise OpError(f"no alias {name!r} in workspace {workspace}", status=404)
        WorkspaceStore(self.settings).delete_alias(workspace, name)
        self._audit("alias.delete", workspace, alias=name, after={},
                    before={"model": old.model, "fallbacks": list(old.fallbacks)})

    def set_key_fallbacks(self, workspace: str, key_id: str, fallbacks: tuple[str, ...]) -> None:
        self._require_workspace(workspace)
        WorkspaceStore(self.settings).put_key_fallbacks(workspace, key_id, tuple(fallbacks))
        self._audit("key.fallbacks", workspace, key_id=key_id, fallbacks=list(fallbacks))

    # model routing (levers/routing.py)
    def set_route(self, workspace: str, rule: RouteRule) -> dict[str, Any]:
        from meterline.errors import GatewayError
        from meterline.gateway import addressing
        from meterline.pricing.catalog import default_catalog

        try:
            rule.validate()
        except ValueError as exc:
            raise OpError(str(exc)) from exc
        config = self._require_workspace(workspace)
        catalog = default_catalog().with_overrides(config.price_overrides)
        for model in rule.targets():
            try:
                route = addressing.resolve(model, config, catalog)
            except GatewayError as exc:
                raise OpError(f"route target {model}: {exc}") from exc
            if route.pricing is None:
                raise OpError(f"route target {model} has no price: routing must measure what it saves")
        WorkspaceStore(self.settings).put_route(workspace, rule)
        self._audit("route.set", workspace, **rule.to_dict())
        return rule.to_dict()

    def list_routes(self, workspace: str) -> list[dict[str, Any]]:
        config = self._require_workspace(workspace)
        return [config.routes[scope].to_dict() for scope in sorted(config.routes)]

    def delete_route(self, workspace: str, scope: str) -> None:
        if not WorkspaceStore(self.settings).delete_route(workspace, scope):
            raise OpError(f"no route for {scope} in workspace {workspace}", status=404)
        self._audit("route.delete", workspace, scope=scope)

    # lever settings per scope (compression, semantic dedup)
    def set_lever(self, workspace: str, lever: str, scope: str, config: dict[str, Any]) -> dict[str, Any]:
        validate = LEVER_VALIDATORS.get(lever)
        if validate is None:
            raise OpError(f"lever must be one of {sorted(LEVER_VALIDATORS)}")
        scope_type, _, scope_value = scope.partition(":")
        if scope_type not in ROUTE_SCOPES or not scope_value or (scope_type == "workspace" and scope_value != "*"):
            raise OpError(f"scope is <type>:<value> with type one of {ROUTE_SCOPES} (the workspace: workspace:*)")
        try:
            config = validate(config)
        except ValueError as exc:
            raise OpError(str(exc)) from exc
        self._require_workspace(workspace)
        WorkspaceStore(self.settings).put_lever(workspace, lever, scope, config)
        self._audit(f"{lever}.set", workspace, scope=scope, **config)
        return {"lever": lever, "scope": scope, **config}

    def list_levers(self, workspace: str, lever: str) -> list[dict[str, Any]]:
        config = self._require_workspace(workspace)
        scopes = config.levers.get(lever, {})
        return [{"scope": scope, **scopes[scope]} for scope in sorted(scopes)]

    def delete_lever(self, workspace: str, lever: str, scope: str) -> None:
        if not WorkspaceStore(self.settings).delete_lever(workspace, lever, scope):
            raise OpError(f"no {lever} settings for {scope} in workspace {workspace}", status=404)
        self._audit(f"{lever}.delete", workspace, scope=scope)

    # the price catalog in force (`prices sync` / `prices diff`)
    def catalog_in_force(self) -> tuple[dict[str, Any], str]:
        """The accepted catalog stored by `prices sync`, else the bundled one; and where it came from."""
        from meterline.pricing.catalog import bundled_catalog_text
        from meterline.store.prices import PriceCatalogStore

        store = PriceCatalogStore(self.settings)
        head = store.head()
        if head is not None:
            body = store.body(head.digest)
            if body is not None:
                return body, f"accepted {head.accepted_at} from {head.source}"
        return json.loads(bundled_catalog_text()), "bundled"

    def prices_diff(self, source: str | None = None) -> dict[str, Any]:
        from meterline.pricing import sync

        try:
            data = sync.fetch(source)
            new = sync.compile_source(data, "published")
        except sync.SyncError as exc:
            raise OpError(str(exc)) from exc
        current, origin = self.catalog_in_force()
        return {"source": source or sync.DEFAULT_SOURCE, "current": origin, "catalog": new,
                "diff": sync.diff(current, new)}

    def prices_sync(self, source: str | None = None, accept: bool = False,
                    allow_removals: bool = False) -> dict[str, Any]:
        """Compile newer published prices, show the diff, and (accept) store them: gateways price
        with them within their cache TTL, no redeploy. Removing models needs `allow_removals`."""
        from meterline.store.prices import PriceCatalogStore

        out = self.prices_diff(source)
        diff = out["diff"]
        out["accepted"] = False
        if accept:
            if diff["removed"] and not allow_removals:
                raise OpError(f"the new data drops {len(diff['removed'])} priced models (e.g. "
                              f"{', '.join(diff['removed'][:3])}): requests to them would be refused. "
                              "Accept with allow_removals (--allow-removals) if that is intended.", status=409)
            head = PriceCatalogStore(self.settings).put(out["catalog"], out["source"],
                                                        datetime.now(UTC).isoformat(timespec="seconds"))
            out["accepted"] = True
            out["digest"] = head.digest
            self._audit("prices.sync", None, source=out["source"], digest=head.digest, new=len(diff["new"]),
                        changed=len(diff["changed"]), removed=len(diff["removed"]))
        del out["catalog"]
        return out

    # prices
    def set_price(self, workspace: str, model: str, prices: dict[str, str]) -> None:
        config = self._require_workspace(workspace)
        try:
            validate_override(prices)
        except ValueError as exc:
            raise OpError(f"invalid price: {exc}") from exc
        if "/" not in model:
            raise OpError("the model is provider/model, e.g. openai/gpt-4o or sim/gpt-4o-mini")
        if model.startswith("sim/"):
            # The simulator's models are the catalog's: an override for one keeps its output limit.
            from meterline.admin.reports import pricing_for
            from meterline.pricing.catalog import default_catalog

            named = pricing_for(default_catalog(), model)
            if named is None:
                raise OpError(f"{model} names no catalog model; the simulator serves sim/<catalog model>")
            prices = {**prices, "max_output_tokens": named.max_output_tokens}
        WorkspaceStore(self.settings).update_settings(workspace,
                                                      price_overrides={**config.price_overrides, model: prices})
        self._audit("price.set", workspace, model=model, before=config.price_overrides.get(model), after=prices)

    # spend
    def spend(self, workspace: str, by: str, period: str) -> dict[str, Any]:
        """Spend by an attribution dimension (or session) over a period (see admin/periods.py)."""
        from meterline.admin.reports import ReportError, Reports

        self._require_workspace(workspace)
        self._audit_read("spend", workspace, by=by, period=period)
        try:
            return Reports(self.settings).spend(workspace, by, period)
        except ReportError as exc:
            raise OpError(str(exc)) from exc

    def unit_costs(self, workspace: str, period: str) -> dict[str, Any]:
        """Unit economics of a period: $ per request, per customer, per session, per request by feature,
        the daily spend (local days) and, for the current month, the month-end projection."""
        from meterline.admin import periods
        from meterline.admin.reports import ReportError, Reports

        config = self._require_workspace(workspace)
        self._audit_read("spend.units", workspace, period=period)
        reports = Reports(self.settings)
        try:
            by = {dim: reports.spend(workspace, dim, period)["rows"] for dim in ("workspace", "customer", "session",
                                                                                  "feature")}
            span = periods.parse(period, datetime.now(UTC).astimezone(ZoneInfo(config.timezone)))
        except (ReportError, periods.PeriodError) as exc:
            raise OpError(str(exc)) from exc
        total = sum(r["cost_micros"] for r in by["workspace"])
        requests = sum(r["requests"] for r in by["workspace"])
        customers = [r for r in by["customer"] if r["value"] != "-"]
        sessions = [r for r in by["session"] if r["value"] != "-"]
        rollups = RollupStore(self.settings)
        days: list[dict[str, Any]] = []
        day = span.start.date()
        while day < span.end.date() and day <= datetime.now(UTC).astimezone(ZoneInfo(config.timezone)).date():
            rows = rollups.by_dimension(workspace, f"D#{day.isoformat()}", "total")
            days.append({"day": day.isoformat(), "cost_micros": sum(int(r.get("cost_micros", 0)) for r in rows)})
            day += timedelta(days=1)
        out: dict[str, Any] = {
            "workspace": workspace, "period": span.label, "timezone": config.timezone, "cost_micros": total,
            "requests": requests, "per_request_micros": total // requests if requests else None,
            "customers": len(customers),
            "per_customer_micros": sum(r["cost_micros"] for r in customers) // len(customers) if customers else None,
            "sessions": len(sessions),
            "per_session_micros": sum(r["cost_micros"] for r in sessions) // len(sessions) if sessions else None,
            "per_request_by_feature": [{"feature": r["value"], "requests": r["requests"],
                                        "per_request_micros": r["cost_micros"] // r["requests"] if r["requests"]
                                        else None} for r in by["feature"]],
            "daily": days,
        }
        this_month = datetime.now(UTC).astimezone(ZoneInfo(config.timezone)).strftime("%Y-%m")
        if span.label in ("month", this_month) or span.start.strftime("%Y-%m") == this_month:
            forecast = self.forecast_month_end(workspace)
            out["projection"] = {**forecast, "cap_reached_on": cap_reached_on(
                forecast.get("spent_micros", 0), forecast.get("daily_rate_micros", 0),
                forecast.get("monthly_cap_micros"), datetime.now(UTC).astimezone(ZoneInfo(config.timezone)).date())}
        return out

    # waste scores
    def waste(self, workspace: str, period: str = "today", by: str | None = None) -> dict[str, Any]:
        """Waste signals and grades for a period (scored on demand; closed days read back when stored)."""
        from meterline.waste import DIMENSIONS
        from meterline.waste.job import period_days, score_period

        self._require_workspace(workspace)
        if by is not None and by not in DIMENSIONS:
            raise OpError(f"by must be one of {list(DIMENSIONS)}")
        try:
            period_days(period)
        except ValueError as exc:
            raise OpError(str(exc)) from exc
        self._audit_read("waste", workspace, period=period, by=by)
        return score_period(self.settings, workspace, period).as_dict(by)

    # FOCUS 1.2 export
    def export_focus(self, workspace: str, month: str, by: str = "all") -> Any:
        """A month's FOCUS 1.2 rows (validated and reconciled with the ledger before it is returned)."""
        from meterline.focus.export import ExportError, export, month_days

        self._require_workspace(workspace)
        self._audit_read("export.focus", workspace, month=month, by=by)
        try:
            return export(self.settings, workspace, month_days(month), by)
        except ExportError as exc:
            raise OpError(str(exc)) from exc

    # budgets and limits
    def set_budget(self, workspace: str, budget: Budget) -> dict[str, Any]:
        self._require_workspace(workspace)
        try:
            budget.validate()
        except ValueError as exc:
            raise OpError(str(exc)) from exc
        store = BudgetStore(self.settings)
        old = next((b for b in store.definitions(workspace).budgets if b.scope == budget.scope), None)
        store.put_budget(workspace, budget)
        self._seed_from_rollups(workspace, budget, store)
        self._audit("budget.set", workspace, before=_plain(old), after=_plain(budget), scope=budget.scope,
                    monthly=budget.monthly_micros,
                    daily=budget.daily_micros, on_exhaust=budget.on_exhaust, downgrade_at=budget.downgrade_at,
                    downgrade_to=budget.downgrade_to)
        return {"scope": budget.scope}

    def _seed_from_rollups(self, workspace: str, budget: Budget, store: BudgetStore) -> None:
        """A budget created mid-month starts from the month's (and the day's) spend so far, as the
        rollups have it (they trail the ledger by the aggregation lag, seconds)."""
        config = self._require_workspace(workspace)
        now = datetime.now(UTC).astimezone(_zone(config.timezone))
        month, day = f"{now:%Y-%m}", f"{now:%Y-%m-%d}"
        sk = ("total#all" if budget.scope_type == "workspace"
              else f"{budget.scope_type}#{bound_value(budget.scope_value)}")
        rollups = RollupStore(self.settings)
        spent_month = rollups.scope_totals(workspace, f"M#{month}", sk).get("cost_micros", 0)
        spent_day = rollups.scope_totals(workspace, f"D#{day}", sk).get("cost_micros", 0)
        store.seed_counter(workspace, budget.scope, month, day, spent_month, spent_day)

    def list_budgets(self, workspace: str) -> list[dict[str, Any]]:
        config = self._require_workspace(workspace)
        tz = ZoneInfo(config.timezone)
        now = datetime.now(UTC).astimezone(tz)
        month, day = f"{now:%Y-%m}", f"{now:%Y-%m-%d}"
        store = BudgetStore(self.settings)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        next_day = midnight + timedelta(days=1)
        next_month = (midnight.replace(day=28) + timedelta(days=4)).replace(day=1)
        rows = []
        for b in store.definitions(workspace).budgets:
            counter = store.counter(workspace, b.scope, month)
            spent, reserved = int(counter.get("spent", 0)), int(counter.get("reserved", 0))
            day_spent = int(counter.get(f"ds_{day}", 0))
            stage_day = _stage(b, day_spent, b.daily_micros)
            rows.append({
                "scope": b.scope, "on_exhaust": b.on_exhaust,
                "monthly_cap_micros": b.monthly_micros, "daily_cap_micros": b.daily_micros,
                "spent_month_micros": spent, "spent_today_micros": day_spent, "reserved_micros": reserved,
                "stage": stage_day if stage_day not in ("ok", "-") else _stage(b, spent, b.monthly_micros),
                "alerts": list(b.alerts), "throttle_at": b.throttle_at, "throttle_rpm": b.throttle_rpm,
                "clamp": b.clamp, "downgrade_at": b.downgrade_at, "downgrade_to": b.downgrade_to,
                "resets": (next_day if b.daily_micros and not b.monthly_micros else next_month).isoformat(),
            })
        return rows

    def delete_budget(self, workspace: str, scope: str) -> None:
        self._require_workspace(workspace)
        store = BudgetStore(self.settings)
        old = next((b for b in store.definitions(workspace).budgets if b.scope == scope), None)
        if not store.delete_budget_if_exists(workspace, scope):
            raise OpError(f"no budget for scope {scope!r} in workspace {workspace}", status=404)
        self._audit("budget.delete", workspace, scope=scope, before=_plain(old), after={})

    def set_limit(self, workspace: str, limit: RateLimit) -> dict[str, Any]:
        self._require_workspace(workspace)
        try:
            limit.validate()
        except ValueError as exc:
            raise OpError(str(exc)) from exc
        if limit.subject_type == "key" and limit.subject_value != "*" and limit.subject_value not in {
                k.key_id for k in KeyStore(self.settings).list(workspace)}:
            raise OpError(f"no key {limit.subject_value} in workspace {workspace}", status=404)
        BudgetStore(self.settings).put_limit(workspace, limit)
        self._audit("limit.set", workspace, subject=limit.subject, rpm=limit.rpm, rph=limit.rph,
                    burst=limit.burst, tpm=limit.tpm)
        return {"subject": limit.subject}

    def delete_limit(self, workspace: str, subject: str) -> None:
        self._require_workspace(workspace)
        if not BudgetStore(self.settings).delete_limit(workspace, subject):
            raise OpError(f"no rate limit for {subject!r} in workspace {workspace}", status=404)
        self._audit("limit.delete", workspace, subject=subject)

    def set_policy(self, workspace: str, **changes: Any) -> dict[str, Any]:
        self._require_workspace(workspace)
        store = BudgetStore(self.settings)
        previous = store.definitions(workspace).policy
        try:
            policy = replace(previous, **changes)
            policy.validate()
        except TypeError as exc:
            raise OpError(f"unknown policy setting: {exc}") from exc
        except ValueError as exc:
            raise OpError(str(exc)) from exc
        store.put_policy(workspace, policy)
        self._audit("policy.set", workspace, before=_plain(previous), after=_plain(policy), **changes)
        return dict(policy.__dict__)

    # cost levers: cache rules and savings
    def set_cache_rule(self, workspace: str, scope: str, **fields: Any) -> dict[str, Any]:
        """Turn the response cache (and prompt caching) on or off for a scope: `workspace`,
        `feature:<name>` or `key:<key id>`. The rule replaces any earlier one for that scope."""
        from meterline.cache.rules import make_rule, parse_ttl

        self._require_workspace(workspace)
        if "ttl_s" in fields and fields["ttl_s"] is not None:
            try:
                fields["ttl_s"] = parse_ttl(fields["ttl_s"])
            except ValueError as exc:
                raise OpError(str(exc)) from exc
        try:
            rule = make_rule(scope, **fields)
        except (ValueError, TypeError) as exc:
            raise OpError(str(exc)) from exc
        stored = {k: v for k, v in rule.as_dict().items() if k != "scope"}
        WorkspaceStore(self.settings).put_cache_rule(workspace, rule.scope, stored)
        self._audit("cache.set", workspace, **rule.as_dict())
        return rule.as_dict()

    def list_cache_rules(self, workspace: str) -> list[dict[str, Any]]:
        from meterline.cache.rules import from_stored

        config = self._require_workspace(workspace)
        rules = [from_stored(scope, stored) for scope, stored in sorted(config.cache_rules.items())]
        return [r.as_dict() for r in rules if r is not None]

    def delete_cache_rule(self, workspace: str, scope: str) -> None:
        if not WorkspaceStore(self.settings).delete_cache_rule(workspace, scope):
            raise OpError(f"no cache rule for {scope} in workspace {workspace}", status=404)
        self._audit("cache.delete", workspace, scope=scope)

    # prompt templates
    def put_template(self, workspace: str, name: str, document: Any) -> dict[str, Any]:
        """Publish the next version of a template (versions are immutable)."""
        from meterline.levers.templates import TemplateError, parse
        from meterline.store.templates import TemplateStore

        self._require_workspace(workspace)
        store = TemplateStore(self.settings)
        try:
            parse(name, document)  # validate before choosing a version
            latest = max((t.version for t in store.versions(workspace, name)), default=0)
            template = parse(name, document, latest + 1)
        except TemplateError as exc:
            raise OpError(str(exc)) from exc
        try:
            store.put(workspace, template)
        except Exception as exc:
            raise OpError(f"version {template.version} of {name} was published concurrently; try again",
                          status=409) from exc
        self._audit("template.put", workspace, template=template.ref)
        return {"template": template.ref, "name": name, "version": template.version}

    def list_templates(self, workspace: str) -> list[dict[str, Any]]:
        from meterline.store.templates import TemplateStore

        self._require_workspace(workspace)
        return TemplateStore(self.settings).list(workspace)

    def get_template(self, workspace: str, name: str, version: int | None = None) -> dict[str, Any]:
        from meterline.store.templates import TemplateStore

        self._require_workspace(workspace)
        versions = TemplateStore(self.settings).versions(workspace, name)
        found = [t for t in versions if version is None or t.version == version]
        if not found:
            raise OpError(f"no template {name}{'@' + str(version) if version else ''}", status=404)
        return max(found, key=lambda t: t.version).as_dict()

    def savings(self, workspace: str, by: str, period: str) -> dict[str, Any]:
        """What the cost levers saved: per lever (from the workspace total), or per value of a rollup
        dimension (feature, key, model, ...), with spend beside it. Exact micro-dollars from the rollups."""
        from meterline.levers import LEVERS
        from meterline.store.rollups import ROLLUP_DIMENSIONS

        config = self._require_workspace(workspace)
        key = self._period_key(config.timezone, period)
        store = RollupStore(self.settings)
        if by == "lever":
            totals = store.by_dimension(workspace, key, "total")
            total = totals[0] if totals else {}
            spent = int(total.get("cost_micros", 0))
            rows = [{"value": lever, "saved_micros": int(total.get(f"saved_{lever}", 0))} for lever in LEVERS]
            rows.sort(key=lambda r: -r["saved_micros"])
        elif by in ROLLUP_DIMENSIONS:
            rows = []
            for r in store.by_dimension(workspace, key, by):
                row = {"value": r["value"], "cost_micros": int(r.get("cost_micros", 0)),
                       "requests": int(r.get("requests", 0)), "saved_micros": int(r.get("saved_micros", 0))}
                row.update({f"saved_{lever}": int(r.get(f"saved_{lever}", 0)) for lever in LEVERS})
                rows.append(row)
            rows.sort(key=lambda r: (-r["saved_micros"], -r["cost_micros"]))
            spent = sum(r["cost_micros"] for r in rows)
        else:
            raise OpError(f"by must be 'lever' or one of {ROLLUP_DIMENSIONS}")
        saved = sum(r["saved_micros"] for r in rows)
        return {"workspace": workspace, "period": key[2:], "timezone": config.timezone, "by": by,
                "spent_micros": spent, "saved_micros": saved, "rows": rows}

    @staticmethod
    def _period_key(timezone: str, period: str) -> str:
        """today | month | YYYY-MM-DD | YYYY-MM -> the rollup period key ("D#..." or "M#...")."""
        now = datetime.now(UTC).astimezone(ZoneInfo(timezone))
        if period == "today":
            return f"D#{now:%Y-%m-%d}"
        if period == "month":
            return f"M#{now:%Y-%m}"
        for fmt, prefix in (("%Y-%m-%d", "D#"), ("%Y-%m", "M#")):
            try:
                datetime.strptime(period, fmt)
            except ValueError:
                continue
            return prefix + period
        raise OpError("period must be 'today', 'month', YYYY-MM-DD or YYYY-MM")

    # request policies (policies/)
    def set_request_policy(self, workspace: str, data: dict[str, Any]) -> dict[str, Any]:
        """Create or replace one policy (validated; the gateways apply it within the config cache TTL)."""
        self._require_workspace(workspace)
        try:
            spec = PolicySpec.from_dict(data)
        except PolicyError as exc:
            raise OpError(f"invalid policy: {exc}") from exc
        stored = spec.to_dict()
        WorkspaceStore(self.settings).put_policy(workspace, stored)
        self._audit("request_policy.set", workspace, policy=spec.id, kind=spec.kind, attach=spec.attach,
                    mode=spec.mode)
        return stored

    def list_request_policies(self, workspace: str) -> list[dict[str, Any]]:
        """In evaluation order (workspace, department, member, key, feature; then id)."""
        config = self._require_workspace(workspace)
        order = {"workspace": 0, "department": 1, "member": 2, "key": 3, "feature": 4}
        rows = []
        for group in config.policies.by_attach.values():
            for compiled in group:
                row = compiled.spec.to_dict() if compiled.broken is None else {
                    "id": compiled.id, "attach": compiled.spec.attach, "error": compiled.broken}
                rows.append(row)
        rows.sort(key=lambda r: (order.get(str(r.get("attach", "")).partition(":")[0], 9), r.get("attach", ""),
                                 r["id"]))
        return rows

    def delete_request_policy(self, workspace: str, policy_id: str) -> None:
        self._require_workspace(workspace)
        if not WorkspaceStore(self.settings).delete_policy(workspace, policy_id):
            raise OpError(f"no policy {policy_id!r} in workspace {workspace}", status=404)
        self._audit("request_policy.delete", workspace, policy=policy_id)

    def test_request_policies(self, workspace: str, sample: dict[str, Any]) -> dict[str, Any]:
        """Evaluate the workspace's stored policies against a sample request, as the gateway would.

        sample: model (required), endpoint (default chat.completions), key (a key id: its member and
        department are looked up), member, department, feature, ip, at (ISO 8601, default now),
        max_tokens, bytes, messages, or body (a request body: messages, max tokens and bytes from it).
        """
        import json

        from meterline.gateway.addressing import target_of

        config = self._require_workspace(workspace)
        if not isinstance(sample, dict):
            raise OpError("a sample request is a JSON object")
        for name in ("bytes", "messages", "max_tokens"):
            value = sample.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value <= 10**12):
                raise OpError(f"{name} is a whole number from 0 to 10^12")
        for name in ("endpoint", "model", "key", "member", "department", "feature", "ip", "at"):
            if sample.get(name) is not None and not isinstance(sample[name], str):
                raise OpError(f"{name} is a string")
        endpoint = str(sample.get("endpoint") or "chat.completions")
        body = sample.get("body")
        if body is not None and not isinstance(body, dict):
            raise OpError("body is a JSON object (a request body)")
        model = sample.get("model") or (body or {}).get("model")
        if not isinstance(model, str) or not model:
            raise OpError("a sample request needs a model")
        member, department = sample.get("member") or "", sample.get("department") or ""
        key_id = sample.get("key") or ""
        if key_id:
            found = next((k for k in KeyStore(self.settings).list(workspace) if k.key_id == key_id), None)
            if found is None:
                raise OpError(f"no key {key_id} in workspace {workspace}", status=404)
            member, department = member or found.member, department or found.department
        at = sample.get("at")
        try:
            now = datetime.fromisoformat(at).timestamp() if at else time.time()
        except (TypeError, ValueError) as exc:
            raise OpError("at is an ISO 8601 time, e.g. 2026-12-01T09:30:00+01:00") from exc
        provider, name = target_of(model, config, endpoint)
        facts = Facts(endpoint=endpoint, model=f"{provider}/{name}", key=key_id, member=member, department=department,
                      feature=sample.get("feature") or None, client_ip=sample.get("ip") or None,
                      body_bytes=int(sample.get("bytes") or (len(json.dumps(body).encode()) if body else 0)),
                      messages=int(sample.get("messages") or (message_count(body) if body else 0)),
                      max_tokens=sample.get("max_tokens") or (requested_max_tokens(endpoint, body)[1]
                                                              if body else None),
                      now=now)
        verdict = evaluate(config.policies, facts)
        return {
            "allowed": verdict.allowed, "model": facts.model,
            "denied_by": verdict.denied.policy if verdict.denied else None,
            "reason": verdict.denied.reason if verdict.denied else None,
            "decisions": [{"policy": o.policy, "kind": o.kind, "result": o.result, "reason": o.reason}
                          for o in verdict.outcomes],
            "max_tokens": verdict.max_tokens,
            "pii": sorted(verdict.pii_entities), "pii_restore": verdict.pii_restore,
        }

    # reports for drill-downs (the MCP server's tools). `scope` = (dimension, value) narrows every
    # answer to one slice of the workspace (a key, member or department); None = the whole workspace.
    def period(self, workspace: str, period: str) -> Period:
        return resolve_period(period, self._require_workspace(workspace).timezone)

    def ledger_records(self, workspace: str, period: str, scope: tuple[str, str] | None = None,
                       filters: dict[str, str] | None = None, limit: int = 50_000) -> tuple[list[dict], bool]:
        """The ledger records of a period (workspace time zone) in the slice and matching the filters;
        (records, truncated). Reads the UTC-day partitions that overlap the period."""
        from meterline.store.ledger import LedgerStore

        config = self._require_workspace(workspace)
        p = resolve_period(period, config.timezone)
        wanted = dict(filters or {})
        if scope is not None:
            wanted[scope[0]] = scope[1]
        store, out = LedgerStore(self.settings), []
        for day in p.utc_days():
            for record in store.query_day(workspace, day):
                if not p.contains(record) or any(str(record.get(k)) != v for k, v in wanted.items()):
                    continue
                out.append(record)
                if len(out) >= limit:
                    return out, True
        return out, False

    def breakdown(self, workspace: str, period: str, group_by: str, scope: tuple[str, str] | None = None,
                  filters: dict[str, str] | None = None, top: int = 10) -> dict[str, Any]:
        """Spend of a period grouped by one dimension: the top rows by cost, the rest summed as `(other)`.
        The whole workspace by a rollup dimension reads the rollups; anything narrower reads the ledger."""
        if group_by not in REPORT_DIMENSIONS:
            raise OpError(f"group_by must be one of {', '.join(REPORT_DIMENSIONS)}")
        for name in filters or {}:
            if name not in REPORT_DIMENSIONS:
                raise OpError(f"filters apply to {', '.join(REPORT_DIMENSIONS)}")
        config = self._require_workspace(workspace)
        p = resolve_period(period, config.timezone)
        truncated = False
        if scope is None and not filters and group_by in (*ROLLUP_DIMENSIONS, "workspace"):
            dimension = "total" if group_by == "workspace" else group_by
            rows = [{"value": r["value"], **{c: int(r.get(c, 0)) for c in REPORT_COUNTERS}}
                    for r in RollupStore(self.settings).by_dimension(workspace, p.rollup_key, dimension)]
            source = "rollups"
        else:
            records, truncated = self.ledger_records(workspace, period, scope, filters)
            groups: dict[str, dict[str, int]] = {}
            for record in records:
                value = "all" if group_by == "workspace" else str(record.get(group_by) or "-")
                row = groups.setdefault(value, dict.fromkeys(REPORT_COUNTERS, 0))
                for name, amount in counters_of(record).items():
                    if name in row:
                        row[name] += amount
            rows = [{"value": v, **c} for v, c in groups.items()]
            source = "ledger"
        rows.sort(key=lambda r: (-r["cost_micros"], r["value"]))
        total = {c: sum(r[c] for r in rows) for c in REPORT_COUNTERS}
        shown, rest = rows[:max(1, top)], rows[max(1, top):]
        if rest:
            shown.append({"value": "(other)", **{c: sum(r[c] for r in rest) for c in REPORT_COUNTERS}})
        return {"period": p.label, "timezone": config.timezone, "group_by": group_by, "rows": shown,
                "total": total, "source": source, "truncated": truncated}

    def recent_requests(self, workspace: str, limit: int = 10, scope: tuple[str, str] | None = None,
                        outcome: str | None = None, max_days: int = 7) -> list[dict[str, Any]]:
        """The newest ledger records (in the slice), newest first, searching back at most `max_days`."""
        from meterline.store.ledger import LedgerStore

        config = self._require_workspace(workspace)
        store, out = LedgerStore(self.settings), []
        today = datetime.now(UTC).date()
        for back in range(max_days):
            day = (today - timedelta(days=back)).isoformat()
            for record in store.query_day(workspace, day, newest_first=True):
                if scope is not None and str(record.get(scope[0])) != scope[1]:
                    continue
                if outcome is not None and record.get("outcome") != outcome:
                    continue
                out.append(request_view(record, config.timezone))
                if len(out) >= limit:
                    return out
        return out

    def find_request(self, workspace: str, request_id: str, scope: tuple[str, str] | None = None,
                     max_days: int = 7) -> list[dict[str, Any]]:
        """A request's ledger records (its own and any failed-over attempts'), if it is in the slice."""
        from meterline.store.ledger import LedgerStore

        config = self._require_workspace(workspace)
        store = LedgerStore(self.settings)
        today = datetime.now(UTC).date()
        # An id that carries its start time is read from that window only (a bounded Query, whatever
        # the day's traffic); an older id is searched day by day, newest first.
        found = store.query_request(workspace, request_id)
        if found is None:
            days = ((today - timedelta(days=back)).isoformat() for back in range(max_days))
            found = next((hit for day in days if (hit := list(store.query_day(workspace, day, request_id=request_id)))),
                         [])
        if scope is not None:
            found = [r for r in found if str(r.get(scope[0])) == scope[1]]
        return [request_view(r, config.timezone, full=True) for r in found]

    def forecast_month_end(self, workspace: str, scope: tuple[str, str] | None = None) -> dict[str, Any]:
        """Month-to-date spend plus the recent daily run rate (the last up-to-7 complete days) over the
        rest of the month, in the workspace's time zone."""
        config = self._require_workspace(workspace)
        tz = ZoneInfo(config.timezone)
        now = datetime.now(UTC).astimezone(tz)
        month = resolve_period("month", config.timezone)
        if scope is None:
            rollups = RollupStore(self.settings)
            mtd = _cost(rollups.by_dimension(workspace, month.rollup_key, "total"))
            by_day = {d: _cost(rollups.by_dimension(workspace, f"D#{d}", "total")) for d in month.days[-8:]}
        else:
            records, _ = self.ledger_records(workspace, "month", scope)
            mtd = sum(int(r.get("cost_micros", 0)) for r in records)
            by_day = {}
            for r in records:
                by_day[r["day"]] = by_day.get(r["day"], 0) + int(r.get("cost_micros", 0))
        complete = [d for d in month.days if d < now.date().isoformat()][-7:]
        rate = sum(by_day.get(d, 0) for d in complete) // len(complete) if complete else 0
        if not complete:  # the first day of the month: today's pace so far
            elapsed = (now.hour * 3600 + now.minute * 60 + now.second) / 86400 or 1 / 86400
            rate = int(mtd / elapsed)
        days_in_month = (now.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        remaining = days_in_month.day - now.day + 1 - (now.hour * 3600 + now.minute * 60) / 86400
        projected = mtd + int(rate * remaining)
        out: dict[str, Any] = {"month": month.label, "timezone": config.timezone, "spent_micros": mtd,
                               "daily_rate_micros": rate, "rate_basis_days": len(complete),
                               "projected_micros": projected}
        budget_scope = f"{scope[0]}:{scope[1]}" if scope else f"workspace:{workspace}"
        for b in BudgetStore(self.settings).definitions(workspace).budgets:
            if b.scope == budget_scope and b.monthly_micros:
                out["monthly_cap_micros"] = b.monthly_micros
                out["projected_pct_of_cap"] = projected * 100 // b.monthly_micros
        return out

    # admin grants (store/admins.py; who may do what, admin/access.py)
    def grant_admin(self, principal: str, role: str, workspace: str | None = None) -> dict[str, Any]:
        """Give a principal a role: `read` or `admin` on one workspace, or `platform` (no workspace)."""
        from meterline.admin.access import ALL_WORKSPACES, normalize_principal
        from meterline.store.admins import AdminGrantStore, Grant

        try:
            principal = normalize_principal(principal)
        except ValueError as exc:
            raise OpError(str(exc)) from exc
        if role == "platform":
            if workspace not in (None, "", ALL_WORKSPACES):
                raise OpError("the platform role covers every workspace: name none")
            workspace = ALL_WORKSPACES
        elif role in ("read", "admin"):
            if not workspace:
                raise OpError(f"the {role} role is on one workspace: name it")
            self._require_workspace(workspace)
        else:
            raise OpError("role must be read, admin or platform")
        store = AdminGrantStore(self.settings)
        before = next((g.role for g in store.grants_of([principal]) if g.workspace == workspace), None)
        grant = Grant(principal, workspace, role, granted_by=self.actor, granted_at=int(time.time()))
        store.put(grant)
        self._audit("admin.grant", None if workspace == ALL_WORKSPACES else workspace, principal=principal,
                    before={"role": before} if before else None, after={"role": role})
        return grant.as_dict()

    def revoke_admin(self, principal: str, workspace: str | None = None) -> dict[str, Any]:
        from meterline.admin.access import ALL_WORKSPACES, normalize_principal
        from meterline.store.admins import AdminGrantStore

        try:
            principal = normalize_principal(principal)
        except ValueError as exc:
            raise OpError(str(exc)) from exc
        workspace = workspace or ALL_WORKSPACES
        removed = AdminGrantStore(self.settings).delete(principal, workspace)
        if removed is None:
            raise OpError(f"{principal} has no grant on {'the platform' if workspace == ALL_WORKSPACES else workspace}",
                          status=404)
        self._audit("admin.revoke", None if workspace == ALL_WORKSPACES else workspace, principal=principal,
                    before={"role": removed.role}, after={})
        return removed.as_dict()

    def list_admins(self, workspace: str | None = None, principal: str | None = None) -> list[dict[str, Any]]:
        from meterline.store.admins import AdminGrantStore

        return [g.as_dict() for g in AdminGrantStore(self.settings).list()
                if (workspace is None or g.workspace in (workspace, "*"))
                and (principal is None or g.principal == principal)]

    def whoami(self) -> dict[str, Any]:
        """The caller's principal and roles, as this deployment resolved them."""
        assert self.access is not None
        return self.access.describe()


# The role each operation needs (admin/access.py). "any": every known principal (nothing tenant's);
# "list": answered per workspace the caller may read. An operation missing here cannot be called
# (tests/unit/test_access.py fails), so a new one is never ungated by accident.
OP_ROLES: dict[str, str] = {
    # platform: what belongs to no single workspace
    "create_workspace": "platform", "prices_diff": "platform", "prices_sync": "platform",
    "grant_admin": "platform", "revoke_admin": "platform", "list_admins": "platform",
    "list_workspaces": "list", "whoami": "any", "catalog_in_force": "any",
    # admin: changes to one workspace
    **dict.fromkeys((
        "update_workspace", "create_key", "revoke_key", "put_provider", "delete_provider", "set_alias",
        "delete_alias", "set_key_fallbacks", "set_route", "delete_route", "set_lever", "delete_lever", "set_price",
        "set_budget", "delete_budget", "set_limit", "delete_limit", "set_policy", "set_cache_rule",
        "delete_cache_rule", "put_template", "set_request_policy", "delete_request_policy"), "admin"),
    # read: the GET side of one workspace (test_request_policies evaluates a sample; it changes nothing)
    **dict.fromkeys((
        "list_keys", "list_providers", "list_aliases", "list_routes", "list_levers", "spend", "unit_costs", "waste",
        "export_focus", "list_budgets", "list_cache_rules", "list_templates", "get_template", "savings",
        "list_request_policies", "test_request_policies", "period", "ledger_records", "breakdown",
        "recent_requests", "find_request", "forecast_month_end"), "read"),
}


def _plain_args(bound: inspect.BoundArguments) -> dict[str, Any]:
    """An operation's scalar arguments, for the read audit (never a body or a secret)."""
    return {k: v for k, v in bound.arguments.items()
            if k not in ("self", "workspace") and isinstance(v, str | int | bool) and v is not None}


def _guarded(name: str, need: str, fn: Any) -> Any:
    signature = inspect.signature(fn)
    takes_workspace = "workspace" in signature.parameters

    @functools.wraps(fn)
    def guarded(self: Ops, *args: Any, **kwargs: Any) -> Any:
        assert self.access is not None
        workspace = None
        if takes_workspace:
            bound = signature.bind(self, *args, **kwargs)
            workspace = bound.arguments.get("workspace")
            if workspace is not None and not isinstance(workspace, str):
                raise OpError("workspace must be a workspace id")
        if need == "any" or need == "list":
            if not self.access.known:
                raise OpError(f"{self.access.principal} holds no Meterline admin grant", status=403)
        else:
            try:
                self.access.require(workspace, need)
            except AccessDenied as exc:
                # A refused attempt is audited too (who tried what on which workspace).
                AuditStore(self.settings).record(self.actor, f"denied.{name}", workspace if isinstance(
                    workspace, str) and WORKSPACE_ID.fullmatch(workspace) else None, target={"need": need})
                raise OpError(str(exc), status=403) from exc
        outermost = self._depth == 0
        if outermost:
            self._read_audited = False
        self._depth += 1
        try:
            result = fn(self, *args, **kwargs)
        finally:
            self._depth -= 1
        if outermost and need in ("read", "list") and not self._read_audited:
            target = _plain_args(signature.bind(self, *args, **kwargs)) if takes_workspace else {}
            self._audit_read(name, workspace, **target)
        return result

    return guarded


for _name, _need in OP_ROLES.items():
    setattr(Ops, _name, _guarded(_name, _need, getattr(Ops, _name)))


REPORT_DIMENSIONS = ("workspace", "key", "member", "department", "agent", "session", "feature", "customer",
                     "provider", "model", "endpoint", "outcome")
REPORT_COUNTERS = ("cost_micros", "requests", "rejections", "input_tokens", "cache_read_tokens",
                   "cache_write_tokens", "output_tokens", "saved_micros", *(f"saved_{lever}" for lever in LEVERS))


@dataclass(frozen=True)
class Period:
    """A reporting period in a workspace's time zone: `D` (a day) or `M` (a month)."""

    kind: str
    label: str  # yyyy-mm-dd or yyyy-mm
    days: tuple[str, ...]  # its local days, up to today

    @property
    def rollup_key(self) -> str:
        return f"{self.kind}#{self.label}"

    def contains(self, record: dict[str, Any]) -> bool:
        return record.get("day") == self.label if self.kind == "D" else record.get("month") == self.label

    def utc_days(self) -> list[str]:
        """The ledger's UTC-day partitions that can hold this period's records (±1 day for the zone)."""
        out: set[str] = set()
        for day in self.days:
            d = date.fromisoformat(day)
            out.update((d + timedelta(days=k)).isoformat() for k in (-1, 0, 1))
        today = datetime.now(UTC).date().isoformat()
        return sorted(d for d in out if d <= today)


def resolve_period(period: str, timezone: str) -> Period:
    """today | yesterday | month | last_month | yyyy-mm-dd | yyyy-mm, in the workspace's time zone."""
    import re

    now = datetime.now(UTC).astimezone(ZoneInfo(timezone)).date()
    if period in ("today", "yesterday"):
        d = now - timedelta(days=1 if period == "yesterday" else 0)
        return Period("D", d.isoformat(), (d.isoformat(),))
    if period in ("month", "last_month") or re.fullmatch(r"\d{4}-\d{2}", period or ""):
        if period == "month":
            first = now.replace(day=1)
        elif period == "last_month":
            first = (now.replace(day=1) - timedelta(days=1)).replace(day=1)
        else:
            try:
                first = date.fromisoformat(period + "-01")
            except ValueError as exc:
                raise OpError(f"no month {period!r}") from exc
        try:
            nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
        except OverflowError as exc:  # 9999-12: the month after it is no date
            raise OpError(f"{period!r} is out of range") from exc
        days = tuple((first + timedelta(days=i)).isoformat() for i in range((nxt - first).days)
                     if first + timedelta(days=i) <= now)
        return Period("M", f"{first:%Y-%m}", days)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", period or ""):
        try:
            d = date.fromisoformat(period)
        except ValueError as exc:
            raise OpError(f"no day {period!r}") from exc
        return Period("D", d.isoformat(), (d.isoformat(),) if d <= now else ())
    raise OpError("period: today, yesterday, month, last_month, yyyy-mm-dd or yyyy-mm")


def request_view(record: dict[str, Any], timezone: str, full: bool = False) -> dict[str, Any]:
    """A ledger record, small: what a person (or an agent paying per token) needs to read."""
    ts = datetime.fromtimestamp(int(record.get("ts", 0)) / 1000, tz=ZoneInfo(timezone))
    view: dict[str, Any] = {
        "request_id": record.get("request_id"), "time": ts.isoformat(timespec="seconds"),
        "model": record.get("model"), "outcome": record.get("outcome"),
        "cost_micros": int(record.get("cost_micros", 0)),
        "input_tokens": int(record.get("input_uncached", 0)), "cached_tokens": int(record.get("cache_read", 0)),
        "output_tokens": int(record.get("output", 0)), "key": record.get("key"), "member": record.get("member"),
    }
    for name in ("feature", "agent", "error_code", "policy_denied"):
        if record.get(name):
            view[name] = record[name]
    if full:
        for name in ("endpoint", "provider", "upstream_model", "department", "session", "customer", "status",
                     "latency_ms", "ttfb_ms", "stream", "estimated", "unpriced", "price_source", "service_tier",
                     "cache_write_5m", "cache_write_1h", "reasoning", "attempt", "parent_request_id", "savings",
                     "policies", "pii_redacted", "clamped_max_tokens", "enforcement"):
            if record.get(name) not in (None, "", False):
                view[name] = record[name]
    return view


def _cost(rows: list[dict[str, Any]]) -> int:
    return sum(int(r.get("cost_micros", 0)) for r in rows)


def _cidrs(values: Any) -> list[str]:
    import ipaddress

    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    if not isinstance(values, list | tuple):
        raise OpError("trusted_proxies is a list of CIDRs")
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(str(value).strip(), strict=False)))
        except ValueError as exc:
            raise OpError(f"trusted proxy {value!r}: {exc}") from exc
    return out


def cap_reached_on(spent: int, daily_rate: int, cap: int | None, today: date) -> str | None:
    """The local day a monthly cap is reached at the current daily rate; None if not this month."""
    if cap is None:
        return None
    if spent >= cap:
        return today.isoformat()
    if daily_rate <= 0:
        return None
    # ceil(remaining / rate) days of spend from the start of today: the last of them is the day.
    offset = (cap - spent - 1) // daily_rate
    month_end = (today.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    if offset > (month_end - today).days:
        return None
    return (today + timedelta(days=offset)).isoformat()


def _plain(value: Any) -> Any:
    """A JSON-able snapshot for the audit trail (dataclasses as dicts, tuples as lists)."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _stage(budget: Budget, spent: int, cap: int | None) -> str:
    """A budget's stage for one period, as `budgets list` shows it."""
    if cap is None:
        return "-"
    pct = spent * 100 // cap
    if spent >= cap:
        return "exhausted" if budget.on_exhaust == "reject" else ("throttled" if budget.throttle_rpm else "over cap")
    if budget.throttle_at is not None and pct >= budget.throttle_at:
        return "throttled"
    if budget.downgrade_at is not None and pct >= budget.downgrade_at:
        return f"downgraded to {budget.downgrade_to}"
    crossed = [a for a in budget.alerts if pct >= a]
    return f"alerted {max(crossed)}%" if crossed else "ok"


# -- the audit trail ----------------------------------------------------------------------------
# Ledger fields that hold a request's policy and budget decisions (written once by the data plane).
DECISION_FIELDS = ("policies", "policy_denied", "budget_scope", "budget_period", "budget_committed", "budget_cap",
                   "worst_case_micros", "clamped_max_tokens", "loop_count", "enforcement")
MAX_DECISION_DAYS = 31


def decision_query(ops: Ops, workspace: str, *, since_ms: int = 0, limit: int = 200,
                   now_ms: int | None = None) -> list[dict[str, Any]]:
    """Per-request policy and budget decisions, newest first, in the audit trail's row shape.

    They are not copied into the audit table: the ledger record of every request (rejections
    included) already holds them, immutably, so this reads the workspace's ledger day partitions
    from today back to `since_ms` (at most 31 UTC days; never a Scan) and keeps the records that
    carry a decision."""
    from meterline.store.ledger import LedgerStore

    _require(ops, workspace, "read")
    ops._require_workspace(workspace)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    today = datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()
    first = datetime.fromtimestamp(max(since_ms, now_ms - MAX_DECISION_DAYS * 86_400_000) / 1000, tz=UTC).date()
    ledger, out = LedgerStore(ops.settings), []
    day = today
    while day >= first and len(out) < limit:
        for record in ledger.query_day(workspace, day.isoformat(), newest_first=True):
            if int(record["ts"]) < since_ms:
                break
            decision = {k: record[k] for k in DECISION_FIELDS if k in record}
            if not decision:
                continue
            action = ("request.policy_denied" if "policy_denied" in record else
                      "request.rejected" if record.get("outcome") == "rejected" else "request.decided")
            out.append({"ts": int(record["ts"]), "actor": f"key:{record.get('key')}", "action": action,
                        "workspace": workspace, "before": None, "after": None,
                        "target": {"request_id": record["request_id"], "model": record.get("model"),
                                   "outcome": record.get("outcome"), "status": record.get("status"),
                                   "member": record.get("member"), **decision}})
            if len(out) >= limit:
                break
        day -= timedelta(days=1)
    ops._audit_read("audit.decisions", workspace, since_ms=since_ms)
    return out


MAX_AUDIT_SCAN = 5000  # records read to answer a non-platform caller's query across workspaces


def _require(ops: Ops, workspace: str | None, need: str) -> None:
    assert ops.access is not None
    if need == "any":
        if not ops.access.known:
            raise OpError(f"{ops.access.principal} holds no Meterline admin grant", status=403)
        return
    try:
        ops.access.require(workspace, need)
    except AccessDenied as exc:
        raise OpError(str(exc), status=403) from exc


def audit_query(ops: Ops, workspace: str | None, *, since_ms: int = 0, actor: str | None = None,
                limit: int = 1000) -> list[dict[str, Any]]:
    """Audit records of one workspace (optionally one actor's), or everything one actor did."""
    if workspace is None and actor is None:
        raise OpError("name a workspace or an actor")
    store = AuditStore(ops.settings)
    if workspace is not None:
        _require(ops, workspace, "read")
        ops._require_workspace(workspace)
        rows = store.query(workspace, since_ms, actor, limit)
    else:
        assert actor is not None and ops.access is not None
        _require(ops, None, "any")
        # Across workspaces: only the records of workspaces the caller may read ("-", actions on no
        # workspace, are the platform's).
        access = ops.access
        rows = [r for r in store.by_actor(actor, since_ms, None, MAX_AUDIT_SCAN if not access.platform else limit)
                if access.platform or (r["workspace"] != "-" and access.readable(r["workspace"]))][:limit]
    ops._audit_read("audit", workspace, actor=actor, since_ms=since_ms)
    return rows
