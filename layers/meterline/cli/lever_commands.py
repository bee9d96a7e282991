"""`meterline cache …` (response cache and prompt-caching rules) and `meterline savings`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meterline.admin.ops import OpError, Ops
from meterline.cache.rules import PARTITIONS, PROMPT_CACHE_TTLS
from meterline.cli import target
from meterline.money import micros_to_usd


def _ops(args: argparse.Namespace) -> tuple[Ops, str]:
    ops, context = target.ops(args)
    return ops, target.workspace_of(args, context)


def _scope(args: argparse.Namespace) -> str:
    if args.feature:
        return f"feature:{args.feature}"
    if args.key:
        return f"key:{args.key}"
    return "workspace"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def _run(action: Any) -> Any:
    try:
        return action()
    except OpError as exc:
        sys.exit(f"error: {exc}")


def cmd_cache_set(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    fields = {"exact": not args.off, "ttl_s": args.ttl, "any_temperature": args.any_temperature or None,
              "partition": args.partition, "namespace": args.namespace,
              "prompt_cache": {"on": True, "off": False}.get(args.prompt_cache or ""),
              "prompt_cache_ttl": args.prompt_cache_ttl}
    rule = _run(lambda: ops.set_cache_rule(ws, _scope(args), **fields))
    state = "on" if rule["exact"] else "off"
    print(f"cache {state} for {rule['scope']}: ttl {rule['ttl_s']} s, partition {rule['partition']}, "
          f"any temperature {'yes' if rule['any_temperature'] else 'no'}, prompt caching "
          f"{'on (' + rule['prompt_cache_ttl'] + ')' if rule['prompt_cache'] else 'off'} "
          "(gateways pick it up within the config cache TTL, 30 s by default)")


def cmd_cache_list(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    rules = _run(lambda: ops.list_cache_rules(ws))
    if args.json:
        print(json.dumps(rules, indent=2))
        return
    _table([{**r, "exact": "on" if r["exact"] else "off", "prompt_cache": r["prompt_cache_ttl"] if r["prompt_cache"]
             else "off", "any_temperature": "yes" if r["any_temperature"] else "no"} for r in rules],
           ["scope", "exact", "ttl_s", "partition", "any_temperature", "namespace", "prompt_cache"])


def cmd_cache_remove(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    scope = _scope(args)
    _run(lambda: ops.delete_cache_rule(ws, scope))
    print(f"removed the cache rule for {scope}")


def cmd_savings(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    report = _run(lambda: ops.savings(ws, args.by, args.period))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    spent, saved = report["spent_micros"], report["saved_micros"]
    would = spent + saved
    pct = f"{saved * 100 / would:.1f}%" if would else "-"
    print(f"Savings for workspace {ws}, {report['period']} ({report['timezone']}), by {args.by}: "
          f"saved ${micros_to_usd(saved)} of ${micros_to_usd(would)} ({pct}); spent ${micros_to_usd(spent)}")
    if args.by == "lever":
        _table([{"lever": r["value"], "saved_usd": micros_to_usd(r["saved_micros"])} for r in report["rows"]],
               ["lever", "saved_usd"])
        return
    rows = []
    for r in report["rows"]:
        levers = sorted(((k[6:], v) for k, v in r.items() if k.startswith("saved_") and k != "saved_micros" and v),
                        key=lambda kv: -kv[1])
        rows.append({args.by: r["value"], "spent_usd": micros_to_usd(r["cost_micros"]),
                     "saved_usd": micros_to_usd(r["saved_micros"]), "requests": r["requests"],
                     "levers": ",".join(f"{k}={micros_to_usd(v)}" for k, v in levers) or "-"})
    _table(rows, [args.by, "spent_usd", "saved_usd", "requests", "levers"])


def cmd_templates_put(args: argparse.Namespace) -> None:
    import yaml

    ops, ws = _ops(args)
    try:
        with open(args.file, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        sys.exit(f"error: cannot read {args.file}: {exc}")
    result = _run(lambda: ops.put_template(ws, args.name, document))
    print(f"published {result['template']} (send Meterline-Template: {result['template']})")


def cmd_templates_list(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    rows = _run(lambda: ops.list_templates(ws))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    _table(rows, ["name", "version", "created_at"])


def cmd_templates_show(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    name, _, version = args.ref.partition("@")
    template = _run(lambda: ops.get_template(ws, name, int(version) if version.isdigit() else None))
    print(json.dumps(template, indent=2))


def register(sub: Any) -> None:
    cache = sub.add_parser("cache", help="the exact-match response cache and prompt caching, per scope").add_subparsers(
        dest="action", required=True)
    p = cache.add_parser("set", help="turn the cache on (or --off) for the workspace, a feature or a key")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--feature", help="requests sent with Meterline-Feature: NAME")
    where.add_argument("--key", help="requests made with this virtual key id")
    p.add_argument("--ttl", default=None, help="how long an answer is served: 90s, 15m, 1h, 7d (default 1h)")
    p.add_argument("--off", action="store_true", help="turn the response cache off for this scope")
    p.add_argument("--any-temperature", action="store_true",
                   help="also cache answers sampled with temperature > 0 (absent temperature counts as 1)")
    p.add_argument("--partition", choices=PARTITIONS, default=None,
                   help="who may share entries inside the workspace (default: the whole workspace)")
    p.add_argument("--namespace", default=None, help="change it to start afresh (old entries are never read)")
    p.add_argument("--prompt-cache", choices=["on", "off"], default=None,
                   help="help the provider's prompt cache hit (breakpoints, cache keys)")
    p.add_argument("--prompt-cache-ttl", choices=PROMPT_CACHE_TTLS, default=None)
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_cache_set)
    p = cache.add_parser("list", help="the cache rules of the workspace")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cache_list)
    p = cache.add_parser("remove", help="remove the rule of a scope (the next wider rule applies)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--feature")
    where.add_argument("--key")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_cache_remove)

    templates = sub.add_parser("templates", help="versioned prompt templates (Meterline-Template: NAME@VERSION)"
                               ).add_subparsers(dest="action", required=True)
    p = templates.add_parser("put", help="publish the next version of NAME from a YAML file (system, tools, "
                                         "examples, prompt, variables)")
    p.add_argument("name")
    p.add_argument("--file", required=True)
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_templates_put)
    p = templates.add_parser("list")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_templates_list)
    p = templates.add_parser("show", help="NAME (latest) or NAME@VERSION")
    p.add_argument("ref")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_templates_show)

    from meterline.store.rollups import ROLLUP_DIMENSIONS

    savings = sub.add_parser("savings", help="what the cost levers saved, by lever or by dimension")
    savings.add_argument("--by", default="lever", choices=["lever", *ROLLUP_DIMENSIONS])
    savings.add_argument("--period", default="month", help="today, month, YYYY-MM-DD or YYYY-MM")
    savings.add_argument("--workspace")
    savings.add_argument("--json", action="store_true")
    savings.set_defaults(func=cmd_savings)
