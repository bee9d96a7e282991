"""Workspaces table: settings and provider credentials, one item collection per workspace.

Keys (see schema.WORKSPACES):
    pk = <workspace id>, sk = "settings"           workspace settings
    pk = <workspace id>, sk = "provider#<name>"    provider entry + KMS ciphertext of its key
    pk = <workspace id>, sk = "alias#<name>"       model alias: target model + ordered fallbacks
    pk = <workspace id>, sk = "keyroute#<key id>"  a virtual key's ordered fallbacks
    pk = <workspace id>, sk = "cache#<scope>"      a cache rule (cache/rules.py): scope "workspace",
                                                    "feature:<name>" or "key:<key id>"
    pk = <workspace id>, sk = "route#<scope>"      a model-routing rule (levers/routing.py)
    pk = <workspace id>, sk = "lever#<name>#<scope>"  a lever's settings on a scope (compression, semantic)
    pk = <workspace id>, sk = "policy#<id>"        a request policy (policies/model.py), JSON `spec`

Access patterns:
    load(workspace)          Query pk = workspace  -> settings + all providers, one round trip
    put_settings / put_provider / delete_provider / put_alias / delete_alias /
    put_key_fallbacks / put_cache_rule / delete_cache_rule / put_route / delete_route /
    put_lever / delete_lever / put_policy / delete_policy   (control plane / CLI only)
    list_workspaces          Scan of "settings" items (CLI, small)

The data plane only reads this table; writes are the control plane's (IAM enforces it on AWS).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from meterline.config import Settings
from meterline.levers.routing import DEFAULT_THRESHOLD, RouteRule
from meterline.policies.engine import PolicySet
from meterline.store import aws
from meterline.store.codec import paginate, to_item
from meterline.store.schema import WORKSPACES

SETTINGS_SK = "settings"
PROVIDER_PREFIX = "provider#"
ALIAS_PREFIX = "alias#"
KEYROUTE_PREFIX = "keyroute#"
CACHE_PREFIX = "cache#"
ROUTE_PREFIX = "route#"
LEVER_PREFIX = "lever#"
POLICY_PREFIX = "policy#"
PROVIDER_KINDS = ("openai", "openai_compatible", "anthropic", "gemini", "bedrock", "azure")


@dataclass(frozen=True)
class ProviderEntry:
    name: str
    kind: str  # one of PROVIDER_KINDS
    base_url: str
    ciphertext: bytes | None
    # Catalog namespace used to price this provider's models (e.g. "openai", or the entry name).
    catalog: str
    # Kind-specific settings: Azure {"api_version", "deployments": {deployment: catalog model}},
    # Bedrock {"region"}.
    options: dict[str, Any] = field(default_factory=dict)

    def catalog_model(self, model: str) -> str:
        """The catalog model a provider model is priced as (an Azure deployment maps to its model)."""
        deployments = self.options.get("deployments") or {}
        return f"{self.catalog}/{deployments.get(model, model)}"


@dataclass(frozen=True)
class Alias:
    """`model` for requests naming the alias; `fallbacks` tried in order on 429, 5xx and timeouts."""

    name: str
    model: str
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkspaceConfig:
    workspace: str
    name: str
    default_provider: str | None = None
    # "reject" (default): a model with no price is refused; "forward": forwarded, flagged unpriced.
    unpriced: str = "reject"
    timezone: str = "UTC"
    price_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    alert_recipients: tuple[str, ...] = ()
    providers: dict[str, ProviderEntry] = field(default_factory=dict)
    aliases: dict[str, Alias] = field(default_factory=dict)
    # Per virtual key (key id): ordered fallback models for any request made with that key.
    key_fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Cache rules by scope ("workspace", "feature:<name>", "key:<key id>"), as stored (cache/rules.py
    # validates and resolves them): they ride along with the config, so no extra read per request.
    cache_rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Model-routing rules by scope ("feature:summarize", "workspace:*"), see levers/routing.py.
    routes: dict[str, RouteRule] = field(default_factory=dict)
    # Lever settings by lever name, then scope ("feature:chat", "workspace:*"): plain dicts that each
    # lever validates (levers/compression.py, cache/semantic.py).
    levers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # Request policies, compiled when the config loads (evaluation adds no round trip).
    policies: PolicySet = field(default_factory=PolicySet)


class WorkspaceStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(WORKSPACES)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    def load(self, workspace: str) -> WorkspaceConfig | None:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :ws",
            "ExpressionAttributeValues": {":ws": {"S": workspace}},
            "ConsistentRead": True,
        }
        items = list(paginate(self._ddb.query, **kwargs))
        settings = next((i for i in items if i["sk"] == SETTINGS_SK), None)
        if settings is None:
            return None
        providers, aliases, key_fallbacks, cache_rules, routes = {}, {}, {}, {}, {}
        levers: dict[str, dict[str, dict[str, Any]]] = {}
        policies: list[dict[str, Any]] = []
        for item in items:
            if item["sk"].startswith(PROVIDER_PREFIX):
                name = item["sk"][len(PROVIDER_PREFIX):]
                providers[name] = ProviderEntry(
                    name=name,
                    kind=item["kind"],
                    base_url=item["base_url"],
                    ciphertext=item.get("ciphertext"),
                    catalog=item.get("catalog", name),
                    options=json.loads(item.get("options") or "{}"),
                )
            elif item["sk"].startswith(ALIAS_PREFIX):
                name = item["sk"][len(ALIAS_PREFIX):]
                aliases[name] = Alias(name, item["model"], tuple(item.get("fallbacks") or ()))
            elif item["sk"].startswith(KEYROUTE_PREFIX):
                key_fallbacks[item["sk"][len(KEYROUTE_PREFIX):]] = tuple(item.get("fallbacks") or ())
            elif item["sk"].startswith(CACHE_PREFIX):
                cache_rules[item["sk"][len(CACHE_PREFIX):]] = json.loads(item.get("rule") or "{}")
            elif item["sk"].startswith(ROUTE_PREFIX):
                rule = _route_from_item(item)
                routes[rule.scope] = rule
            elif item["sk"].startswith(LEVER_PREFIX):
                lever, _, scope = item["sk"][len(LEVER_PREFIX):].partition("#")
                levers.setdefault(lever, {})[scope] = json.loads(item.get("config") or "{}")
            elif item["sk"].startswith(POLICY_PREFIX):
                try:
                    policies.append(json.loads(item.get("spec") or "{}"))
                except ValueError:
                    policies.append({"id": item["sk"][len(POLICY_PREFIX):], "broken": True})
        timezone = settings.get("timezone", "UTC")
        return WorkspaceConfig(
            workspace=workspace,
            name=settings.get("name", workspace),
            default_provider=settings.get("default_provider"),
            unpriced=settings.get("unpriced", "reject"),
            timezone=timezone,
            price_overrides=json.loads(settings.get("price_overrides", "{}")),
            alert_recipients=tuple(settings.get("alert_recipients", [])),
            providers=providers,
            aliases=aliases,
            key_fallbacks=key_fallbacks,
            cache_rules=cache_rules,
            routes=routes,
            levers=levers,
            policies=PolicySet.build(policies, timezone, tuple(settings.get("trusted_proxies") or ())),
        )

    def create(self, workspace: str, name: str, *, default_provider: str | None = None,
               unpriced: str = "reject", timezone: str = "UTC") -> None:
        self._ddb.put_item(
            TableName=self.table,
            Item=to_item({
                "pk": workspace, "sk": SETTINGS_SK, "name": name, "default_provider": default_provider,
                "unpriced": unpriced, "timezone": timezone, "price_overrides": "{}",
                "created_at": int(time.time()),
            }),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def update_settings(self, workspace: str, **changes: Any) -> None:
        names, values, sets = {}, {}, []
        for i, (field_name, value) in enumerate(changes.items()):
            if field_name == "price_overrides":
                value = json.dumps(value, sort_keys=True)
            names[f"#f{i}"] = field_name
            values[f":v{i}"] = to_item({"v": value})["v"]
            sets.append(f"#f{i} = :v{i}")
        self._ddb.update_item(
            TableName=self.table,
            Key=to_item({"pk": workspace, "sk": SETTINGS_SK}),
            UpdateExpression="SET " + ", ".join(sets),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ConditionExpression="attribute_exists(pk)",
        )

    def put_provider(self, workspace: str, entry: ProviderEntry) -> None:
        self._ddb.put_item(
            TableName=self.table,
            Item=to_item({
                "pk": workspace, "sk": PROVIDER_PREFIX + entry.name, "kind": entry.kind,
                "base_url": entry.base_url, "ciphertext": entry.ciphertext, "catalog": entry.catalog,
                "options": json.dumps(entry.options, sort_keys=True), "updated_at": int(time.time()),
            }),
        )

    def delete_provider(self, workspace: str, name: str) -> None:
        self._ddb.delete_item(TableName=self.table, Key=to_item({"pk": workspace, "sk": PROVIDER_PREFIX + name}))

    def put_alias(self, workspace: str, alias: Alias) -> None:
        self._ddb.put_item(TableName=self.table, Item=to_item({
            "pk": workspace, "sk": ALIAS_PREFIX + alias.name, "model": alias.model,
            "fallbacks": list(alias.fallbacks), "updated_at": int(time.time())}))

    def delete_alias(self, workspace: str, name: str) -> None:
        self._ddb.delete_item(TableName=self.table, Key=to_item({"pk": workspace, "sk": ALIAS_PREFIX + name}))

    def put_key_fallbacks(self, workspace: str, key_id: str, fallbacks: tuple[str, ...]) -> None:
        key = {"pk": workspace, "sk": KEYROUTE_PREFIX + key_id}
        if not fallbacks:
            self._ddb.delete_item(TableName=self.table, Key=to_item(key))
            return
        self._ddb.put_item(TableName=self.table, Item=to_item({
            **key, "fallbacks": list(fallbacks), "updated_at": int(time.time())}))

    def put_cache_rule(self, workspace: str, scope: str, rule: dict[str, Any]) -> None:
        self._ddb.put_item(TableName=self.table, Item=to_item({
            "pk": workspace, "sk": CACHE_PREFIX + scope, "rule": json.dumps(rule, sort_keys=True),
            "updated_at": int(time.time())}))

    def delete_cache_rule(self, workspace: str, scope: str) -> bool:
        result = self._ddb.delete_item(TableName=self.table, Key=to_item({"pk": workspace, "sk": CACHE_PREFIX + scope}),
                                       ReturnValues="ALL_OLD")
        return bool(result.get("Attributes"))

    def put_policy(self, workspace: str, spec: dict[str, Any]) -> None:
        self._ddb.put_item(TableName=self.table, Item=to_item({
            "pk": workspace, "sk": POLICY_PREFIX + spec["id"], "spec": json.dumps(spec, sort_keys=True),
            "updated_at": int(time.time())}))

    def delete_policy(self, workspace: str, policy_id: str) -> bool:
        """False if there was no such policy."""
        key = to_item({"pk": workspace, "sk": POLICY_PREFIX + policy_id})
        out = self._ddb.delete_item(TableName=self.table, Key=key, ReturnValues="ALL_OLD")
        return bool(out.get("Attributes"))

    def put_route(self, workspace: str, rule: RouteRule) -> None:
        self._ddb.put_item(TableName=self.table, Item=to_item({
            "pk": workspace, "sk": ROUTE_PREFIX + rule.scope, "models": list(rule.models), "cheap": rule.cheap,
            "strong": rule.strong, "threshold": rule.threshold, "mode": rule.mode, "updated_at": int(time.time())}))

    def delete_route(self, workspace: str, scope: str) -> bool:
        """True if a rule was there."""
        out = self._ddb.delete_item(TableName=self.table, Key=to_item({"pk": workspace, "sk": ROUTE_PREFIX + scope}),
                                    ReturnValues="ALL_OLD")
        return bool(out.get("Attributes"))

    def put_lever(self, workspace: str, lever: str, scope: str, config: dict[str, Any]) -> None:
        self._ddb.put_item(TableName=self.table, Item=to_item({
            "pk": workspace, "sk": f"{LEVER_PREFIX}{lever}#{scope}", "config": json.dumps(config, sort_keys=True),
            "updated_at": int(time.time())}))

    def delete_lever(self, workspace: str, lever: str, scope: str) -> bool:
        out = self._ddb.delete_item(TableName=self.table,
                                    Key=to_item({"pk": workspace, "sk": f"{LEVER_PREFIX}{lever}#{scope}"}),
                                    ReturnValues="ALL_OLD")
        return bool(out.get("Attributes"))

    def list_workspaces(self) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "sk = :s",
            "ExpressionAttributeValues": {":s": {"S": SETTINGS_SK}},
        }
        return list(paginate(self._ddb.scan, **kwargs))


def _route_from_item(item: dict[str, Any]) -> RouteRule:
    scope_type, _, scope_value = item["sk"][len(ROUTE_PREFIX):].partition(":")
    return RouteRule(scope_type=scope_type, scope_value=scope_value, models=tuple(item.get("models") or ()),
                     cheap=item.get("cheap"), strong=item.get("strong"),
                     threshold=int(item.get("threshold", DEFAULT_THRESHOLD)), mode=item.get("mode", "shadow"))
