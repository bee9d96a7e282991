"""The `meterline` command line: run locally, manage workspaces, keys and providers, read spend."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from meterline.attribution import DIMENSIONS
from meterline.cli import (
    admin_commands,
    audit_commands,
    budget_commands,
    cost_commands,
    dev,
    export_commands,
    lever_commands,
    lever_more_commands,
    policy_commands,
    target,
    views,
    waste_commands,
)
from meterline.cli.helptext import describe_everything
from meterline.money import micros_to_usd


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


# -- workspaces -----------------------------------------------------------------------------------
def _run(action: Callable[[], Any]) -> Any:
    """Control-plane refusals (bad input, unknown workspace or key) end as `error: ...`, not a traceback."""
    from meterline.admin.ops import OpError

    try:
        return action()
    except OpError as exc:
        sys.exit(f"error: {exc}")


def cmd_workspaces_create(args: argparse.Namespace) -> None:
    from meterline.devenv import new_workspace_id

    ops, _ = target.ops(args)
    ws = args.id or new_workspace_id()
    _run(lambda: ops.create_workspace(ws, args.name, default_provider=args.default_provider, unpriced=args.unpriced,
                                      timezone=args.timezone))
    print(f"workspace: {ws}")


def cmd_workspaces_list(args: argparse.Namespace) -> None:
    ops, _ = target.ops(args)
    rows = ops.list_workspaces()
    if args.json:
        views.print_json(rows)
        return
    _print_table(rows, ["id", "name", "default_provider", "unpriced", "timezone"])


def cmd_workspaces_set(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    changes = {k: v for k, v in {"default_provider": args.default_provider, "unpriced": args.unpriced,
                                 "timezone": args.timezone}.items() if v is not None}
    if args.alert_recipients is not None:
        changes["alert_recipients"] = [r for r in args.alert_recipients.split(",") if r]
    if args.trusted_proxies is not None:
        changes["trusted_proxies"] = [c for c in args.trusted_proxies.split(",") if c.strip()]
    _run(lambda: ops.update_workspace(target.workspace_of(args, context), **changes))
    print("updated (gateways pick it up within the cache TTL, 30 s by default)")


# -- keys -----------------------------------------------------------------------------------------
def cmd_keys_create(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    created = _run(lambda: ops.create_key(target.workspace_of(args, context), args.member, args.department,
                                          _models(args.models), args.expires_in_days, args.name or "",
                                          _models(args.scopes)))
    print(f"key_id: {created['key_id']}")
    print(f"api_key: {created['api_key']}")
    print("This key is shown once; only its hash is stored.", file=sys.stderr)


def cmd_keys_list(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    found = ops.list_keys(target.workspace_of(args, context))
    if args.json:
        views.print_json(found)
        return
    rows = [{**k, "models": ",".join(k["models"]) or "*"} for k in found]
    _print_table(rows, ["key_id", "name", "member", "department", "models", "status"])


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    _run(lambda: ops.revoke_key(target.workspace_of(args, context), args.key_id))
    print(f"revoked {args.key_id} (stops working within the key cache TTL, 30 s by default)")


# -- providers ------------------------------------------------------------------------------------
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
    from meterline.admin.ops import PROVIDER_KINDS

    ops, context = target.ops(args)
    ws = target.workspace_of(args, context)
    kind = args.kind or (args.name if args.name in PROVIDER_KINDS else "openai_compatible")
    if kind == "bedrock" and args.key_env:
        sys.exit("error: bedrock uses the function's IAM role (locally your AWS credentials), never a stored key")
    secret = None
    if kind != "bedrock" and not args.no_key:
        secret = _read_secret(args)
        if not secret:
            sys.exit("error: empty key (pass it on stdin, at the prompt, or with --key-env VAR)")
    stored = _run(lambda: ops.put_provider(ws, args.name, secret=secret, kind=kind, base_url=args.base_url,
                                           catalog=args.catalog, region=args.region, api_version=args.api_version,
                                           deployments=_pairs(args.deployment, "--deployment") or None))
    how = "key encrypted with KMS" if stored["key_stored"] else ("AWS credentials of the gateway" if kind == "bedrock"
                                                                 else "no key")
    print(f"provider {args.name} ({kind}) stored for workspace {ws} ({how})")


def cmd_providers_list(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    if args.json:
        views.print_json(_run(lambda: ops.list_providers(target.workspace_of(args, context))))
        return
    rows = [{**p, "key": "stored (encrypted)" if p["key_stored"] else
             ("aws credentials" if p["kind"] == "bedrock" else "none"),
             "options": ",".join(f"{k}={v}" for k, v in sorted(p["options"].items()) if k != "deployments")
             + "".join(f" {d}->{m}" for d, m in sorted((p["options"].get("deployments") or {}).items()))}
            for p in _run(lambda: ops.list_providers(target.workspace_of(args, context)))]
    _print_table(rows, ["name", "kind", "base_url", "priced_as", "key", "options"])


def cmd_providers_remove(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    _run(lambda: ops.delete_provider(target.workspace_of(args, context), args.name))
    print(f"removed {args.name}")


# -- aliases and fallbacks -----------------------------------------------------------------------
def cmd_aliases_set(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    alias = _run(lambda: ops.set_alias(target.workspace_of(args, context), args.name, args.model,
                                       _models(args.fallbacks)))
    chain = " -> ".join([alias.model, *alias.fallbacks])
    print(f"alias {alias.name}: {chain} (gateways pick it up within the cache TTL, 30 s by default)")


def cmd_aliases_list(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    if args.json:
        views.print_json(_run(lambda: ops.list_aliases(target.workspace_of(args, context))))
        return
    rows = [{**a, "fallbacks": ",".join(a["fallbacks"])}
            for a in _run(lambda: ops.list_aliases(target.workspace_of(args, context)))]
    _print_table(rows, ["alias", "model", "fallbacks"])


def cmd_aliases_remove(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    _run(lambda: ops.delete_alias(target.workspace_of(args, context), args.name))
    print(f"removed alias {args.name}")


def cmd_keys_fallbacks(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    fallbacks = _models(args.fallbacks)
    _run(lambda: ops.set_key_fallbacks(target.workspace_of(args, context), args.key_id, fallbacks))
    print(f"key {args.key_id} falls back to: {', '.join(fallbacks) or '(none)'}")


# -- prices ---------------------------------------------------------------------------------------
def cmd_prices_set(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    override = {k: v for k, v in {"input": args.input, "cache_read": args.cache_read,
                                  "cache_write_5m": args.cache_write_5m, "cache_write_1h": args.cache_write_1h,
                                  "output": args.output}.items() if v is not None}
    _run(lambda: ops.set_price(target.workspace_of(args, context), args.model, override))
    print(f"price override for {args.model} stored (USD per 1M tokens)")


def cmd_prices_diff(args: argparse.Namespace) -> None:
    ops, _ = target.ops(args)
    out = _run(lambda: ops.prices_diff(args.source))
    out.pop("catalog", None)
    if args.json:
        views.print_json(out)
        return
    from meterline.pricing.sync import render_diff

    print(f"{out['source']} vs the catalog in force ({out['current']}):")
    print(render_diff(out["diff"]))


def cmd_prices_sync(args: argparse.Namespace) -> None:
    ops, _ = target.ops(args)
    out = _run(lambda: ops.prices_sync(args.source, accept=args.yes, allow_removals=args.allow_removals))
    if args.json:
        views.print_json(out)
        return
    from meterline.pricing.sync import render_diff

    print(f"{out['source']} vs the catalog in force ({out['current']}):")
    print(render_diff(out["diff"]))
    if out["accepted"]:
        print(f"accepted: catalog {out['digest']} stored; gateways price with it within their cache TTL "
              "(30 s by default), no redeploy")
    else:
        print("not stored: run again with --yes to accept these prices")


def register_sync(prices: Any) -> None:
    for action, helptext in (("diff", "compare newer published prices (genai-prices data) with the catalog in force"),
                             ("sync", "fetch newer published prices, show the diff, and with --yes store them so "
                                      "deployed gateways use them without a redeploy")):
        p = prices.add_parser(action, help=helptext)
        p.add_argument("--from", dest="source",
                       help="price data URL or file (default: genai-prices' published data.json)")
        p.add_argument("--json", action="store_true")
        if action == "sync":
            p.add_argument("--yes", action="store_true", help="accept and store the new prices")
            p.add_argument("--allow-removals", action="store_true",
                           help="accept even if some models would lose their price")
        p.set_defaults(func=cmd_prices_diff if action == "diff" else cmd_prices_sync)


# -- spend ----------------------------------------------------------------------------------------
def bars(days: list[dict[str, Any]], width: int = 40) -> list[str]:
    """Daily spend as terminal bars, scaled to the largest day (a non-zero day shows at least one cell)."""
    peak = max((d["cost_micros"] for d in days), default=0)
    out = []
    for d in days:
        cells = 0 if peak == 0 else max(d["cost_micros"] * width // peak, 1 if d["cost_micros"] else 0)
        out.append(f"{d['day']}  {'█' * cells}{' ' * (width - cells)}  ${micros_to_usd(d['cost_micros'])}")
    return out


def _usd_or_dash(micros: int | None) -> str:
    return "-" if micros is None else "$" + micros_to_usd(micros)


def cmd_spend_units(args: argparse.Namespace, ops: Any, ws: str) -> None:
    units = _run(lambda: ops.unit_costs(ws, args.period))
    if args.json:
        print(json.dumps(units, indent=2))
        return
    print(f"Unit costs for workspace {ws}, {args.period} ({units['period']}, {units['timezone']}):")
    print(f"  ${micros_to_usd(units['cost_micros'])} over {units['requests']} requests: "
          f"{_usd_or_dash(units['per_request_micros'])} per request")
    print(f"  {_usd_or_dash(units['per_customer_micros'])} per customer ({units['customers']} customers), "
          f"{_usd_or_dash(units['per_session_micros'])} per session ({units['sessions']} sessions)")
    projection = units.get("projection")
    if projection:
        line = (f"  On track for ${micros_to_usd(projection['projected_micros'])} this month "
                f"(${micros_to_usd(projection['daily_rate_micros'])} a day)")
        if projection.get("monthly_cap_micros"):
            reached = projection.get("cap_reached_on")
            line += (f"; cap ${micros_to_usd(projection['monthly_cap_micros'])} reached on {reached}" if reached
                     else f"; cap ${micros_to_usd(projection['monthly_cap_micros'])} not reached this month")
        print(line)
    rows = [{"feature": f["feature"], "requests": f["requests"],
             "usd_per_request": _usd_or_dash(f["per_request_micros"])} for f in units["per_request_by_feature"]]
    if rows:
        _print_table(rows, ["feature", "requests", "usd_per_request"])
    if args.chart:
        print()
        for line in bars(units["daily"]):
            print(line)


def cmd_spend(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    ws = target.workspace_of(args, context)
    if args.units or args.chart:
        cmd_spend_units(args, ops, ws)
        return
    report = _run(lambda: ops.spend(ws, args.by, args.period))
    if args.json:
        print(json.dumps(report["rows"], indent=2))
        return
    table = [{args.by: r["value"], "cost_usd": micros_to_usd(r["cost_micros"]), "requests": r["requests"],
              "rejected": r["rejections"], "input_tok": r["input_tokens"], "cached_tok": r["cache_read_tokens"],
              "output_tok": r["output_tokens"], "estimated": r["estimated"]} for r in report["rows"]]
    print(f"Spend for workspace {ws}, {args.period} ({report['period']}, {report['timezone']}), by {args.by}:")
    if not table:
        print("(no spend recorded in this period)")
        return
    _print_table(table, [args.by, "cost_usd", "requests", "rejected", "input_tok", "cached_tok", "output_tok",
                         "estimated"])


# -- mcp ------------------------------------------------------------------------------------------
def cmd_mcp(args: argparse.Namespace) -> None:
    """The MCP server on stdio (for desktop clients). With --key-env it answers as that virtual key
    (its mcp scope's slice); without, as the operator of the workspace (the local AWS credentials
    can read the tables anyway)."""
    from meterline.mcp.auth import CURRENT, AuthError, KeyAuthenticator, Principal
    from meterline.mcp.server import build_server

    settings, context = target.resolve(getattr(args, "stack", None))
    if args.key_env:
        try:
            principal = KeyAuthenticator(settings).authenticate(os.environ.get(args.key_env, "").strip())
        except AuthError as exc:
            sys.exit(f"error: {exc}")
    else:
        ws = target.workspace_of(args, context)
        _run(lambda: target.ops(args)[0].period(ws, "today"))  # the workspace must exist
        principal = Principal(ws, True, None, f"cli:{os.environ.get('USER', 'unknown')}")
    CURRENT.set(principal)
    build_server(settings).run("stdio")


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
    from meterline.admin.ops import PROVIDER_KINDS

    # No prefix matching: `--key sk-...` must fail, not be taken for `--key-env`.
    parser = argparse.ArgumentParser(prog="meterline", description=__doc__, allow_abbrev=False)
    parser.add_argument("--stack", help="a deployed stack's name (or METERLINE_STACK)")
    sub = parser.add_subparsers(dest="command", required=True)
    _no_abbrev(sub)

    dev.register(sub)

    ws = sub.add_parser("workspaces", help="create and list workspaces").add_subparsers(dest="action", required=True)
    p = ws.add_parser("create")
    p.add_argument("name")
    p.add_argument("--id")
    p.add_argument("--default-provider")
    p.add_argument("--unpriced", choices=["reject", "forward"], default="reject")
    p.add_argument("--timezone", default="UTC")
    p.set_defaults(func=cmd_workspaces_create)
    p = ws.add_parser("list", help="every workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workspaces_list)
    p = ws.add_parser("set")
    p.add_argument("--workspace")
    p.add_argument("--default-provider")
    p.add_argument("--unpriced", choices=["reject", "forward"])
    p.add_argument("--timezone")
    p.add_argument("--alert-recipients", help="comma-separated e-mail addresses")
    p.add_argument("--trusted-proxies", help="comma-separated CIDRs of proxies in front of the gateway: only then "
                                              "is X-Forwarded-For read for IP policies (empty: never)")
    p.set_defaults(func=cmd_workspaces_set)

    keys = sub.add_parser("keys", help="virtual keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser("create")
    p.add_argument("--workspace")
    p.add_argument("--member", required=True)
    p.add_argument("--department", default="default")
    p.add_argument("--models", help="comma-separated allowlist, e.g. openai/gpt-4o-mini,sim/*")
    p.add_argument("--expires-in-days", type=float)
    p.add_argument("--name")
    p.add_argument("--scopes", help="mcp (= mcp:key), mcp:member, mcp:department: the MCP server answers about that "
                                    "slice; mcp:admin: the whole workspace, budget changes included")
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("list", help="the workspace's keys (never the keys themselves: only ids)")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
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
    p.add_argument("--kind", choices=list(PROVIDER_KINDS),
                   help="default: the name if it is a kind, else openai_compatible")
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
    p = prov.add_parser("list", help="the workspace's providers (keys are never shown)")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
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
    p = aliases.add_parser("list", help="the workspace's aliases and per-key fallbacks")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
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
    views.register_prices(prices)
    register_sync(prices)

    budget_commands.register(sub)
    lever_commands.register(sub)
    cost_commands.register(sub)
    lever_more_commands.register(sub)
    policy_commands.register(sub)

    p = sub.add_parser("mcp", help="the MCP server on stdio, for AI clients (Claude Desktop, Cursor, ...)")
    p.add_argument("--workspace", help="answer as the operator of this workspace (default)")
    p.add_argument("--key-env", help="answer as the virtual key in this environment variable (needs an mcp scope)")
    p.set_defaults(func=cmd_mcp)
    waste_commands.register(sub)
    audit_commands.register(sub)
    admin_commands.register(sub)
    export_commands.register(sub)

    spend = sub.add_parser("spend", help="spend by attribution dimension")
    spend.add_argument("--by", default="feature", choices=list(DIMENSIONS),
                       help="the attribution dimension to group by (default feature)")
    spend.add_argument("--period", default="today",
                       help="today (default), yesterday, month, last-month, YYYY-MM, YYYY-MM-DD or "
                            "YYYY-MM-DD..YYYY-MM-DD, in the workspace's time zone")
    spend.add_argument("--workspace")
    spend.add_argument("--json", action="store_true")
    spend.add_argument("--units", action="store_true",
                       help="unit economics: $ per request, per customer, per session, per request by feature, "
                            "and (this month) the month-end projection and the day the cap is reached")
    spend.add_argument("--chart", action="store_true", help="daily spend bars in the terminal (with --units' figures)")
    spend.set_defaults(func=cmd_spend)
    views.register(sub)
    describe_everything(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # `meterline spend | head`: the reader left. Exit quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except target.TargetError as exc:
        sys.exit(f"error: {exc}")
    except Exception as exc:
        from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

        if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
            sys.exit(f"error: cannot reach {target.describe(target.resolved)}: {exc}")
        raise


if __name__ == "__main__":
    main()
