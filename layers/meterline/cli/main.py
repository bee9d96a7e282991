"""The `meterline` command line: run locally, manage workspaces, keys and providers, read spend."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from meterline.attribution import DIMENSIONS
from meterline.cli import budget_commands, target
from meterline.money import micros_to_usd


def _workspace(args: argparse.Namespace, context: dict[str, Any]) -> str:
    ws = getattr(args, "workspace", None) or os.environ.get("METERLINE_WORKSPACE") or context.get("workspace")
    if not ws:
        sys.exit("error: --workspace is required (or set METERLINE_WORKSPACE)")
    return ws


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


# -- dev ------------------------------------------------------------------------------------------
def cmd_dev(args: argparse.Namespace) -> None:
    import uvicorn

    from meterline.devenv import provision, seed_demo, start_moto
    from meterline.gateway.app import create_app
    from meterline.rollup import StreamPoller

    embedded = start_moto()
    settings = provision(embedded.endpoint)
    demo = seed_demo(settings)
    poller = StreamPoller(settings)
    poller.start()
    path = target.write_dev_state(settings, {"workspace": demo["workspace"], "port": args.port})
    print("Meterline dev: embedded AWS at", embedded.endpoint, flush=True)
    print(f"base_url: http://{args.host}:{args.port}/v1")
    print(f"api_key: {demo['api_key']}")
    print(f"workspace: {demo['workspace']}")
    print("Try: model='sim/gpt-4o-mini' (or any catalog model as sim/<model>); "
          "`meterline spend --by feature` in another shell.", flush=True)
    # uvicorn re-raises SIGTERM once it has shut down; exiting through SystemExit lets the cleanup
    # below run (stop the aggregator and embedded AWS, remove the state file).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    finally:
        poller.stop()
        embedded.stop()
        path.unlink(missing_ok=True)


# -- workspaces -----------------------------------------------------------------------------------
def cmd_workspaces_create(args: argparse.Namespace) -> None:
    from meterline.devenv import new_workspace_id
    from meterline.store.workspaces import WorkspaceStore

    settings, _ = target.resolve(args.stack)
    ws = args.id or new_workspace_id()
    WorkspaceStore(settings).create(ws, args.name, default_provider=args.default_provider,
                                    unpriced=args.unpriced, timezone=args.timezone)
    print(f"workspace: {ws}")


def cmd_workspaces_list(args: argparse.Namespace) -> None:
    from meterline.store.workspaces import WorkspaceStore

    settings, _ = target.resolve(args.stack)
    rows = [{"id": w["pk"], "name": w.get("name", ""), "default_provider": w.get("default_provider", ""),
             "unpriced": w.get("unpriced", "reject"), "timezone": w.get("timezone", "UTC")}
            for w in WorkspaceStore(settings).list_workspaces()]
    _print_table(rows, ["id", "name", "default_provider", "unpriced", "timezone"])


def cmd_workspaces_set(args: argparse.Namespace) -> None:
    from meterline.store.workspaces import WorkspaceStore

    settings, context = target.resolve(args.stack)
    changes = {k: v for k, v in {"default_provider": args.default_provider, "unpriced": args.unpriced,
                                 "timezone": args.timezone}.items() if v is not None}
    if args.alert_recipients is not None:
        changes["alert_recipients"] = [r for r in args.alert_recipients.split(",") if r]
    if not changes:
        sys.exit("error: nothing to change")
    WorkspaceStore(settings).update_settings(_workspace(args, context), **changes)
    print("updated (gateways pick it up within the cache TTL, 30 s by default)")


# -- keys -----------------------------------------------------------------------------------------
def cmd_keys_create(args: argparse.Namespace) -> None:
    from meterline.store.keys import KeyRecord, KeyStore
    from meterline.vkeys import generate, hash_key

    settings, context = target.resolve(args.stack)
    ws = _workspace(args, context)
    key, key_id = generate()
    expires = int(time.time() + args.expires_in_days * 86400) if args.expires_in_days else None
    models = tuple(m.strip() for m in (args.models or "").split(",") if m.strip())
    KeyStore(settings).create(KeyRecord(key_hash=hash_key(key), key_id=key_id, workspace=ws, member=args.member,
                                        department=args.department, models=models, expires_at=expires,
                                        name=args.name or ""))
    print(f"key_id: {key_id}")
    print(f"api_key: {key}")
    print("This key is shown once; only its hash is stored.", file=sys.stderr)


def cmd_keys_list(args: argparse.Namespace) -> None:
    from meterline.store.keys import KeyStore

    settings, context = target.resolve(args.stack)
    rows = []
    for k in KeyStore(settings).list(_workspace(args, context)):
        status = "revoked" if k.revoked else ("expired" if not k.usable(time.time()) else "active")
        rows.append({"key_id": k.key_id, "name": k.name, "member": k.member, "department": k.department,
                     "models": ",".join(k.models) or "*", "status": status})
    _print_table(rows, ["key_id", "name", "member", "department", "models", "status"])


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    from meterline.store.keys import KeyNotFound, KeyStore

    settings, context = target.resolve(args.stack)
    try:
        KeyStore(settings).revoke(_workspace(args, context), args.key_id)
    except KeyNotFound:
        sys.exit(f"error: no key {args.key_id} in this workspace")
    print(f"revoked {args.key_id} (stops working within the key cache TTL, 30 s by default)")


# -- providers ------------------------------------------------------------------------------------
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com",
                     "gemini": "https://generativelanguage.googleapis.com"}
KINDS = ("openai", "openai_compatible", "anthropic", "gemini", "bedrock", "azure")
# Where each kind's models are priced in the catalog (Azure deployments map onto OpenAI models).
DEFAULT_CATALOG = {"openai": "openai", "azure": "openai", "anthropic": "anthropic", "gemini": "gemini",
                   "bedrock": "bedrock"}


def _read_secret(args: argparse.Namespace) -> str:
    if args.key_env:
        if not args.key_env.replace("_", "a").isalnum() or args.key_env[0].isdigit():
            sys.exit("error: --key-env takes the NAME of an environment variable, not the key")
        value = os.environ.get(args.key_env, "")
        if not value:
            sys.exit(f"error: environment variable {args.key_env} is empty")
        return value.strip()
    if sys.stdin.isatty():
        return getpass.getpass(f"{args.name} API key (input hidden): ").strip()
    return sys.stdin.read().strip()


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        for item in value.split(","):
            name, sep, model = item.strip().partition("=")
            if not item.strip():
                continue
            if not sep or not name or not model:
                sys.exit(f"error: {flag} takes DEPLOYMENT=MODEL (e.g. prod-4o=gpt-4o), got {item!r}")
            out[name] = model
    return out


def _models(value: str | None) -> tuple[str, ...]:
    return tuple(m.strip() for m in (value or "").split(",") if m.strip())


def cmd_providers_add(args: argparse.Namespace) -> None:
    from meterline.store.workspaces import ProviderEntry, WorkspaceStore
    from meterline.vault import Vault

    settings, context = target.resolve(args.stack)
    ws = _workspace(args, context)
    kind = args.kind or (args.name if args.name in KINDS else "openai_compatible")
    options: dict[str, Any] = {}
    if kind == "bedrock":
        options["region"] = args.region or settings.region
    elif args.region:
        sys.exit("error: --region applies to bedrock only")
    if kind == "azure":
        options["api_version"] = args.api_version or "2024-10-21"
        options["deployments"] = _pairs(args.deployment, "--deployment")
        if not options["deployments"]:
            sys.exit("error: azure needs at least one --deployment NAME=MODEL (the catalog model it runs)")
    elif args.api_version or args.deployment:
        sys.exit("error: --api-version and --deployment apply to azure only")
    base_url = args.base_url or DEFAULT_BASE_URLS.get(kind)
    if kind == "bedrock" and not base_url:
        base_url = f"https://bedrock-runtime.{options['region']}.amazonaws.com"
    if not base_url:
        sys.exit("error: --base-url is required for this provider (for azure: https://<resource>.openai.azure.com)")
    ciphertext = None
    if kind == "bedrock":
        if args.key_env:
            sys.exit("error: bedrock uses the function's IAM role (locally your AWS credentials), never a stored key")
    elif not args.no_key:
        secret = _read_secret(args)
        if not secret:
            sys.exit("error: empty key (pass it on stdin, at the prompt, or with --key-env VAR)")
        ciphertext = Vault(settings).encrypt(secret, ws, args.name)
    catalog = args.catalog or DEFAULT_CATALOG.get(kind, args.name)
    WorkspaceStore(settings).put_provider(ws, ProviderEntry(args.name, kind, base_url, ciphertext, catalog, options))
    how = "key encrypted with KMS" if ciphertext else ("AWS credentials of the gateway" if kind == "bedrock"
                                                        else "no key")
    print(f"provider {args.name} ({kind}) stored for workspace {ws} ({how})")


def cmd_providers_list(args: argparse.Namespace) -> None:
    from meterline.store.workspaces import WorkspaceStore

    settings, context = target.resolve(args.stack)
    config = WorkspaceStore(settings).load(_workspace(args, context))
    if config is None:
        sys.exit("error: no such workspace")
    rows = [{"name": p.name, "kind": p.kind, "base_url": p.base_url, "priced_as": p.catalog,
             "key": "stored (encrypted)" if p.ciphertext else ("aws credentials" if p.kind == "bedrock" else "none"),
             "options": ",".join(f"{k}={v}" for k, v in sorted(p.options.items()) if k != "deployments")
             + "".join(f" {d}->{m}" for d, m in sorted((p.options.get("deployments") or {}).items()))}
            for p in config.providers.values()]
    _print_table(rows, ["name", "kind", "base_url", "priced_as", "key", "options"])


def cmd_providers_remove(args: argparse.Namespace) -> None:
    from meterline.store.workspaces import WorkspaceStore

    settings, context = target.resolve(args.stack)
    WorkspaceStore(settings).delete_provider(_workspace(args, context), args.name)
    print(f"removed {args.name}")


# -- aliases and fallbacks -----------------------------------------------------------------------
def cmd_aliases_set(args: argparse.Namespace) -> None:
    from meterline.store.workspaces import Alias, WorkspaceStore

    settings, context = target.resolve(args.stack)
    if "/" in args.name:
        sys.exit("error: an alias name has no '/' (it would shadow provider/model addressing)")
    if "/" not in args.model:
        sys.exit("error: the alias target is provider/model, e.g. anthropic/claude-haiku-4-5")
    alias = Alias(args.name, args.model, _models(args.fallbacks))
    WorkspaceStore(settings).put_alias(_workspace(args, context), alias)
    chain = " -> ".join([alias.model, *alias.fallbacks])
    print(f"alias {alias.name}: {chain} (gateways pick it up within the cache TTL, 30 s by default)")


def cmd_aliases_list(args: argparse.Namespace) -> None:
    from meterline.store.workspaces import WorkspaceStore

    settings, context = target.resolve(args.stack)
    config = WorkspaceStore(settings).load(_workspace(args, context))
    if config is None:
        sys.exit("error: no such workspace")
    rows = [{"alias": a.name, "model": a.model, "fallbacks": ",".join(a.fallbacks)} for a in config.aliases.values()]
    rows += [{"alias": f"(key {k})", "model": "*", "fallbacks": ",".join(f)} for k, f in config.key_fallbacks.items()]
    _print_table(rows, ["alias", "model", "fallbacks"])


def cmd_aliases_remove(args: argparse.Namespace) -> None:
    from meterline.store.workspaces import WorkspaceStore

    settings, context = target.resolve(args.stack)
    WorkspaceStore(settings).delete_alias(_workspace(args, context), args.name)
    print(f"removed alias {args.name}")


def cmd_keys_fallbacks(args: argparse.Namespace) -> None:
    from meterline.store.workspaces import WorkspaceStore

    settings, context = target.resolve(args.stack)
    fallbacks = _models(args.fallbacks)
    WorkspaceStore(settings).put_key_fallbacks(_workspace(args, context), args.key_id, fallbacks)
    print(f"key {args.key_id} falls back to: {', '.join(fallbacks) or '(none)'}")


# -- prices ---------------------------------------------------------------------------------------
def cmd_prices_set(args: argparse.Namespace) -> None:
    from meterline.pricing.catalog import validate_override
    from meterline.store.workspaces import WorkspaceStore

    settings, context = target.resolve(args.stack)
    ws = _workspace(args, context)
    store = WorkspaceStore(settings)
    config = store.load(ws)
    if config is None:
        sys.exit("error: no such workspace")
    override = {k: v for k, v in {"input": args.input, "cache_read": args.cache_read,
                                  "cache_write_5m": args.cache_write_5m, "cache_write_1h": args.cache_write_1h,
                                  "output": args.output}.items() if v is not None}
    validate_override(override)
    overrides = {**config.price_overrides, args.model: override}
    store.update_settings(ws, price_overrides=overrides)
    print(f"price override for {args.model} stored (USD per 1M tokens)")


def cmd_prices_show(args: argparse.Namespace) -> None:
    from meterline.pricing.catalog import default_catalog

    pricing = default_catalog().resolve(args.model)
    if pricing is None:
        sys.exit(f"error: {args.model} is not in the catalog")
    for point in pricing.points:
        r = point.rates
        print(f"{pricing.model_id} from {point.effective}: input {micros_to_usd(r.input)} cached "
              f"{micros_to_usd(r.cache_read)} write5m {micros_to_usd(r.cache_write_5m)} write1h "
              f"{micros_to_usd(r.cache_write_1h)} output {micros_to_usd(r.output)} per 1M tokens "
              f"(source: {point.source})")


# -- spend ----------------------------------------------------------------------------------------
def cmd_spend(args: argparse.Namespace) -> None:
    from meterline.store.rollups import RollupStore
    from meterline.store.workspaces import WorkspaceStore

    settings, context = target.resolve(args.stack)
    ws = _workspace(args, context)
    config = WorkspaceStore(settings).load(ws)
    tz = ZoneInfo(config.timezone if config else "UTC")
    now = datetime.now(UTC).astimezone(tz)
    period = f"D#{now:%Y-%m-%d}" if args.period == "today" else f"M#{now:%Y-%m}"
    dimension = "total" if args.by == "workspace" else args.by
    rows = RollupStore(settings).by_dimension(ws, period, dimension)
    rows.sort(key=lambda r: -int(r.get("cost_micros", 0)))
    if args.json:
        print(json.dumps([{"value": r["value"], **{k: int(r.get(k, 0)) for k in (
            "cost_micros", "requests", "rejections", "input_tokens", "cache_read_tokens",
            "cache_write_tokens", "output_tokens", "estimated", "unpriced")}} for r in rows], indent=2))
        return
    table = [{args.by: r["value"], "cost_usd": micros_to_usd(int(r.get("cost_micros", 0))),
              "requests": int(r.get("requests", 0)), "rejected": int(r.get("rejections", 0)),
              "input_tok": int(r.get("input_tokens", 0)), "cached_tok": int(r.get("cache_read_tokens", 0)),
              "output_tok": int(r.get("output_tokens", 0)), "estimated": int(r.get("estimated", 0))}
             for r in rows]
    print(f"Spend for workspace {ws}, {args.period} ({period[2:]}, {tz.key}), by {args.by}:")
    _print_table(table, [args.by, "cost_usd", "requests", "rejected", "input_tok", "cached_tok", "output_tok",
                         "estimated"])


def _no_abbrev(subparsers: Any) -> Any:
    original = subparsers.add_parser

    def add_parser(*args: Any, **kwargs: Any) -> argparse.ArgumentParser:
        parser = original(*args, allow_abbrev=False, **kwargs)
        real = parser.add_subparsers

        def add_subparsers(*a: Any, **k: Any) -> Any:
            return _no_abbrev(real(*a, **k))

        parser.add_subparsers = add_subparsers  # type: ignore[method-assign]
        return parser

    subparsers.add_parser = add_parser
    return subparsers


def build_parser() -> argparse.ArgumentParser:
    # No prefix matching: `--key sk-...` must fail, not be taken for `--key-env`.
    parser = argparse.ArgumentParser(prog="meterline", description=__doc__, allow_abbrev=False)
    parser.add_argument("--stack", help="a deployed stack's name (or METERLINE_STACK)")
    sub = parser.add_subparsers(dest="command", required=True)
    _no_abbrev(sub)

    dev = sub.add_parser("dev", help="run the gateway locally on embedded AWS and the simulated provider")
    dev.add_argument("--port", type=int, default=8787)
    dev.add_argument("--host", default="127.0.0.1")
    dev.set_defaults(func=cmd_dev)

    ws = sub.add_parser("workspaces", help="create and list workspaces").add_subparsers(dest="action", required=True)
    p = ws.add_parser("create")
    p.add_argument("name")
    p.add_argument("--id")
    p.add_argument("--default-provider")
    p.add_argument("--unpriced", choices=["reject", "forward"], default="reject")
    p.add_argument("--timezone", default="UTC")
    p.set_defaults(func=cmd_workspaces_create)
    ws.add_parser("list").set_defaults(func=cmd_workspaces_list)
    p = ws.add_parser("set")
    p.add_argument("--workspace")
    p.add_argument("--default-provider")
    p.add_argument("--unpriced", choices=["reject", "forward"])
    p.add_argument("--timezone")
    p.add_argument("--alert-recipients", help="comma-separated e-mail addresses")
    p.set_defaults(func=cmd_workspaces_set)

    keys = sub.add_parser("keys", help="virtual keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser("create")
    p.add_argument("--workspace")
    p.add_argument("--member", required=True)
    p.add_argument("--department", default="default")
    p.add_argument("--models", help="comma-separated allowlist, e.g. openai/gpt-4o-mini,sim/*")
    p.add_argument("--expires-in-days", type=float)
    p.add_argument("--name")
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("list")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("fallbacks", help="ordered fallback models for every request made with a key")
    p.add_argument("key_id")
    p.add_argument("--fallbacks", default="", help="comma-separated provider/model list; empty clears")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_keys_fallbacks)
    p = keys.add_parser("revoke")
    p.add_argument("key_id")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_keys_revoke)

    prov = sub.add_parser("providers", help="provider credentials (the vault)").add_subparsers(
        dest="action", required=True)
    p = prov.add_parser("add", help="store a provider key, read from stdin, a prompt, or --key-env")
    p.add_argument("name", help="openai, anthropic, gemini, bedrock, azure, or a name for an OpenAI-compatible "
                                "endpoint (groq, vllm, ...)")
    p.add_argument("--workspace")
    p.add_argument("--kind", choices=list(KINDS), help="default: the name if it is a kind, else openai_compatible")
    p.add_argument("--base-url", help="the provider's URL (proxies, regional endpoints, tests); "
                                      "for azure the resource endpoint https://<resource>.openai.azure.com")
    p.add_argument("--api-version", help="azure: the api-version query parameter (default 2024-10-21)")
    p.add_argument("--deployment", action="append",
                   help="azure: DEPLOYMENT=MODEL, the catalog model a deployment runs (repeatable)")
    p.add_argument("--region", help="bedrock: the AWS region (default: the gateway's)")
    p.add_argument("--catalog", help="price this provider's models as <catalog>/<model> (default: its name)")
    p.add_argument("--key-env", help="name of an environment variable holding the key (never the key itself)")
    p.add_argument("--no-key", action="store_true", help="the endpoint needs no key (local vLLM, Ollama)")
    p.set_defaults(func=cmd_providers_add)
    p = prov.add_parser("list")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_providers_list)
    p = prov.add_parser("remove")
    p.add_argument("name")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_providers_remove)

    aliases = sub.add_parser("aliases", help="workspace model aliases and their fallbacks").add_subparsers(
        dest="action", required=True)
    p = aliases.add_parser("set", help="NAME -> provider/model, with ordered fallbacks on 429/5xx/timeouts")
    p.add_argument("name")
    p.add_argument("model")
    p.add_argument("--fallbacks", help="comma-separated provider/model list, tried in order")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_aliases_set)
    p = aliases.add_parser("list")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_aliases_list)
    p = aliases.add_parser("remove")
    p.add_argument("name")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_aliases_remove)

    prices = sub.add_parser("prices", help="pricing catalog and overrides").add_subparsers(
        dest="action", required=True)
    p = prices.add_parser("set", help="a workspace's negotiated price for a model (USD per 1M tokens)")
    p.add_argument("--workspace")
    p.add_argument("--model", required=True, help="provider/model, e.g. openai/gpt-4o or groq/llama-3.3-70b")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--cache-read")
    p.add_argument("--cache-write-5m")
    p.add_argument("--cache-write-1h")
    p.set_defaults(func=cmd_prices_set)
    p = prices.add_parser("show")
    p.add_argument("model")
    p.set_defaults(func=cmd_prices_show)

    budget_commands.register(sub)

    spend = sub.add_parser("spend", help="spend by attribution dimension")
    spend.add_argument("--by", default="feature", choices=[d for d in DIMENSIONS if d != "session"])
    spend.add_argument("--period", default="today", choices=["today", "month"])
    spend.add_argument("--workspace")
    spend.add_argument("--json", action="store_true")
    spend.set_defaults(func=cmd_spend)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
