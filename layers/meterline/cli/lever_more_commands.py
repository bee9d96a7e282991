"""`meterline routes …` (model routing), `meterline compression …` and `meterline semantic …`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meterline.admin.ops import OpError, Ops
from meterline.cli import target
from meterline.levers.routing import DEFAULT_THRESHOLD, MODES, RouteRule

SCOPE_FLAGS = ("key", "member", "customer", "feature", "agent")


def _ops(args: argparse.Namespace) -> tuple[Ops, str]:
    ops, context = target.ops(args)
    return ops, target.workspace_of(args, context)


def _scope(args: argparse.Namespace) -> tuple[str, str]:
    chosen = [(name, getattr(args, name)) for name in SCOPE_FLAGS if getattr(args, name)]
    if args.all:
        chosen.append(("workspace", "*"))
    if len(chosen) != 1:
        sys.exit("error: name exactly one scope: --feature, --key, --member, --customer, --agent or --all")
    return chosen[0]


def _add_scope_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feature", help="requests with this Meterline-Feature header")
    p.add_argument("--key", help="requests made with this virtual key (key id)")
    p.add_argument("--member", help="requests by this member (from the key)")
    p.add_argument("--customer", help="requests with this Meterline-Customer header")
    p.add_argument("--agent", help="requests with this Meterline-Agent header")
    p.add_argument("--all", action="store_true", help="every request of the workspace (least specific)")
    p.add_argument("--workspace")


def _run(action: Any) -> Any:
    try:
        return action()
    except OpError as exc:
        sys.exit(f"error: {exc}")


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


# -- routes ---------------------------------------------------------------------------------------
def cmd_routes_set(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    scope_type, scope_value = _scope(args)
    models = tuple(m.strip() for value in (args.model or []) for m in value.split(",") if m.strip())
    rule = RouteRule(scope_type, scope_value, models, args.cheap, args.strong, args.threshold, args.mode)
    out = _run(lambda: ops.set_route(ws, rule))
    target_text = f"auto: cheap {out['cheap']}, strong {out['strong']} at score >= {out['threshold']}" \
        if out["cheap"] else " -> ".join(out["models"])
    print(f"route {out['scope']} ({out['mode']}): {target_text} (gateways pick it up within 30 s)")
    if out["mode"] == "shadow":
        print("shadow mode: requests are not switched; the ledger records the would-be model and the projected "
              "saving. Switch with --mode on.")


def cmd_routes_list(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    rows = _run(lambda: ops.list_routes(ws))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = [{"scope": r["scope"], "mode": r["mode"],
              "route": (f"auto {r['cheap']} | {r['strong']} (>= {r['threshold']})" if r["cheap"]
                        else " -> ".join(r["models"]))} for r in rows]
    _print_table(table, ["scope", "mode", "route"])


def cmd_routes_delete(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    scope_type, scope_value = _scope(args)
    _run(lambda: ops.delete_route(ws, f"{scope_type}:{scope_value}"))
    print(f"route {scope_type}:{scope_value} deleted")


# -- compression ----------------------------------------------------------------------------------
def cmd_compression_set(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    scope_type, scope_value = _scope(args)
    config = {"tool_output_max_tokens": args.tool_output_max_tokens, "history_budget_tokens": args.history_budget}
    out = _run(lambda: ops.set_lever(ws, "compression", f"{scope_type}:{scope_value}", config))
    lossy = [f"tool output above {out['tool_output_max_tokens']} tokens cut to head/tail"
             if out["tool_output_max_tokens"] else None,
             f"history above {out['history_budget_tokens']} tokens drops the oldest turns"
             if out["history_budget_tokens"] else None]
    lossy_text = "; lossy: " + ", ".join(x for x in lossy if x) if any(lossy) else " (safe transformations only)"
    print(f"compression on for {out['scope']}{lossy_text} (gateways pick it up within 30 s)")


def cmd_semantic_set(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    scope_type, scope_value = _scope(args)
    config = {"mode": args.mode, "threshold": args.threshold, "embedding_model": args.embedding_model,
              "dimensions": args.dimensions, "ttl_s": args.ttl}
    out = _run(lambda: ops.set_lever(ws, "semantic", f"{scope_type}:{scope_value}",
                                     {k: v for k, v in config.items() if v is not None}))
    what = ("near-duplicates are recorded, never served" if out["mode"] == "detect" else
            f"near-duplicates at cosine >= {out['threshold']} that pass the guards are served from the cache")
    print(f"semantic dedup {out['mode']} for {out['scope']}: {what}; embeddings by {out['embedding_model']} "
          f"({out['dimensions']} dims), entries kept {out['ttl_s']} s")
    if out["mode"] == "serve":
        print("serve mode adds an embeddings call and a DynamoDB lookup before every covered request")


def cmd_lever_list(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    rows = _run(lambda: ops.list_levers(ws, args.lever))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    columns = ["scope", *sorted({k for r in rows for k in r if k != "scope"})]
    _print_table(rows, columns)


def cmd_lever_delete(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    scope_type, scope_value = _scope(args)
    _run(lambda: ops.delete_lever(ws, args.lever, f"{scope_type}:{scope_value}"))
    print(f"{args.lever} off for {scope_type}:{scope_value}")


def _register_lever_list_delete(parsers: Any, lever: str) -> None:
    p = parsers.add_parser("list")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lever_list, lever=lever)
    p = parsers.add_parser("delete", help=f"turn {lever} off for a scope")
    _add_scope_flags(p)
    p.set_defaults(func=cmd_lever_delete, lever=lever)


def register(sub: Any) -> None:
    routes = sub.add_parser("routes", help="model routing rules (lever 3): by rule or by difficulty, shadow first"
                            ).add_subparsers(dest="action", required=True)
    p = routes.add_parser("set", help="route a scope's requests to a model (ordered list) or to cheap/strong tiers")
    _add_scope_flags(p)
    p.add_argument("--model", action="append", help="provider/model (repeat or comma-separate for an ordered list)")
    p.add_argument("--cheap", help="auto tiers: the model for easy requests")
    p.add_argument("--strong", help="auto tiers: the model for hard requests")
    p.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD,
                   help=f"auto tiers: difficulty score (0-100) from which the strong model serves "
                        f"(default {DEFAULT_THRESHOLD})")
    p.add_argument("--mode", choices=list(MODES), default="shadow",
                   help="shadow (default): record the would-be model and saving only; on: switch")
    p.set_defaults(func=cmd_routes_set)
    p = routes.add_parser("list")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_routes_list)
    p = routes.add_parser("delete")
    _add_scope_flags(p)
    p.set_defaults(func=cmd_routes_delete)

    comp = sub.add_parser("compression", help="prompt compression (lever 4): deterministic, measured, opt-in"
                          ).add_subparsers(dest="action", required=True)
    p = comp.add_parser("set", help="turn compression on for a scope (safe transformations; lossy ones opt-in)")
    _add_scope_flags(p)
    p.add_argument("--tool-output-max-tokens", type=int,
                   help="lossy: cut tool results above this many tokens to head/tail, keeping error lines")
    p.add_argument("--history-budget", type=int,
                   help="lossy: drop the oldest turns above this many tokens (changes the cached prefix)")
    p.set_defaults(func=cmd_compression_set)
    _register_lever_list_delete(comp, "compression")

    sem = sub.add_parser("semantic", help="semantic dedup (lever 6): detect near-duplicates, or serve them (opt-in)"
                         ).add_subparsers(dest="action", required=True)
    p = sem.add_parser("set", help="turn semantic dedup on for a scope")
    _add_scope_flags(p)
    p.add_argument("--mode", choices=["detect", "serve"], default="detect",
                   help="detect (default): record near-duplicates for waste scoring; serve: answer them")
    p.add_argument("--threshold", type=float, help="cosine similarity (default 0.95; serve needs >= 0.95)")
    p.add_argument("--embedding-model", help="provider/model on this workspace (default openai/text-embedding-3-small)")
    p.add_argument("--dimensions", type=int, help="embedding dimensions requested (default 256)")
    p.add_argument("--ttl", type=int, help="seconds an entry is kept (default 86400)")
    p.set_defaults(func=cmd_semantic_set)
    _register_lever_list_delete(sem, "semantic")
