"""`meterline policies set|list|delete|test`: the workspace's request policies (policies/)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meterline.admin.ops import OpError
from meterline.cli import target
from meterline.policies.model import ATTACH_TYPES, KINDS, MODES, PII_ENTITIES


def _csv(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def cmd_set(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    ws = target.workspace_of(args, context)
    if args.spec:
        try:
            data: dict[str, Any] = json.loads(args.spec)
        except ValueError:
            sys.exit("error: --spec is a JSON object")
        if not isinstance(data, dict):
            sys.exit("error: --spec is a JSON object")
        data.setdefault("id", args.id)
        if data["id"] != args.id:
            sys.exit("error: the id in --spec differs from the policy id argument")
    else:
        if not args.kind:
            sys.exit("error: --kind is required (or give the whole policy as --spec JSON)")
        data = {"id": args.id, "kind": args.kind, "attach": args.attach, "mode": args.mode,
                "description": args.description, "allow": _csv(args.allow), "deny": _csv(args.deny),
                "cidrs": _csv(args.cidr), "windows": args.window, "timezone": args.timezone,
                "max_tokens": args.max_tokens, "on_exceed": args.on_exceed, "max_bytes": args.max_bytes,
                "max_messages": args.max_messages, "entities": _csv(args.entities),
                "restore": True if args.restore else None}
    try:
        stored = ops.set_request_policy(ws, {k: v for k, v in data.items() if v is not None})
    except OpError as exc:
        sys.exit(f"error: {exc}")
    print(f"policy {stored['id']} ({stored['kind']}, {stored['attach']}, {stored['mode']}) stored "
          "(gateways apply it within the config cache TTL, 30 s by default)")


def _describe(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"UNREADABLE (denies every request it applies to): {row['error']}"
    parts = []
    for name in ("allow", "deny", "cidrs", "windows", "entities"):
        if row.get(name):
            parts.append(f"{name}={','.join(row[name]) if name != 'windows' else '; '.join(row[name])}")
    for name in ("timezone", "max_tokens", "on_exceed", "max_bytes", "max_messages", "restore"):
        if row.get(name) not in (None, ""):
            parts.append(f"{name}={row[name]}")
    return " ".join(parts)


def cmd_list(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    try:
        rows = ops.list_request_policies(target.workspace_of(args, context))
    except OpError as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no policies (every request is allowed; budgets and rate limits still apply)")
        return
    table = [{"id": r["id"], "kind": r.get("kind", "?"), "attach": r.get("attach", ""), "mode": r.get("mode", ""),
              "settings": _describe(r)} for r in rows]
    cols = ["id", "kind", "attach", "mode", "settings"]
    widths = {c: max(len(c), *(len(str(t[c])) for t in table)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for t in table:
        print("  ".join(str(t[c]).ljust(widths[c]) for c in cols))


def cmd_delete(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    try:
        ops.delete_request_policy(target.workspace_of(args, context), args.id)
    except OpError as exc:
        sys.exit(f"error: {exc}")
    print(f"policy {args.id} deleted")


def cmd_test(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    sample: dict[str, Any] = {k: v for k, v in {
        "model": args.model, "endpoint": args.endpoint, "key": args.key, "member": args.member,
        "department": args.department, "feature": args.feature, "ip": args.ip, "at": args.at,
        "max_tokens": args.max_tokens, "bytes": args.bytes, "messages": args.messages}.items() if v is not None}
    if args.body:
        try:
            with open(args.body) as fh:
                sample["body"] = json.load(fh)
        except (OSError, ValueError) as exc:
            sys.exit(f"error: --body: {exc}")
    try:
        result = ops.test_request_policies(target.workspace_of(args, context), sample)
    except OpError as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for d in result["decisions"]:
        print(f"  {d['policy']:<24} {d['kind']:<10} {d['result']:<16} {d['reason']}")
    if not result["decisions"]:
        print("  (no policy applies to this request)")
    if result["allowed"]:
        extra = f"; max tokens set to {result['max_tokens']}" if result["max_tokens"] is not None else ""
        extra += f"; PII redacted: {', '.join(result['pii'])}" if result["pii"] else ""
        print(f"ALLOWED ({result['model']}){extra}")
    else:
        print(f"DENIED by {result['denied_by']}: {result['reason']}")
        sys.exit(1)


def register(sub: Any) -> None:
    policies = sub.add_parser("policies", help="request policies: models, IPs, schedules, max_tokens, size, PII"
                              ).add_subparsers(dest="action", required=True)
    p = policies.add_parser("set", help="create or replace a policy")
    p.add_argument("id")
    p.add_argument("--workspace")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--attach", default="workspace",
                   help=f"workspace, or <type>:<value> with type one of {', '.join(ATTACH_TYPES[1:])}")
    p.add_argument("--mode", choices=MODES, default="enforce", help="monitor: record decisions, deny nothing")
    p.add_argument("--description")
    p.add_argument("--allow", action="append", help="models: provider/model globs (* does not cross /)")
    p.add_argument("--deny", action="append", help="models: provider/model globs denied (deny wins)")
    p.add_argument("--cidr", action="append", help="ip: allowed networks, e.g. 10.0.0.0/8")
    p.add_argument("--window", action="append", help="schedule: e.g. 'mon-fri 08:00-20:00' (repeatable)")
    p.add_argument("--timezone", help="schedule: time zone (default: the workspace's)")
    p.add_argument("--max-tokens", type=int, help="max_tokens: the cap on requested output tokens")
    p.add_argument("--on-exceed", choices=["clamp", "reject"], help="max_tokens: lower the request's cap (default) "
                                                                    "or deny it")
    p.add_argument("--max-bytes", type=int, help="size: request body bytes")
    p.add_argument("--max-messages", type=int, help="size: messages per request")
    p.add_argument("--entities", action="append", help=f"pii: any of {', '.join(PII_ENTITIES)} (default: all)")
    p.add_argument("--restore", action="store_true", help="pii: put the originals back into responses")
    p.add_argument("--spec", help="the whole policy as JSON instead of the flags")
    p.set_defaults(func=cmd_set)
    p = policies.add_parser("list", help="the workspace's policies in evaluation order")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = policies.add_parser("delete")
    p.add_argument("id")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_delete)
    p = policies.add_parser("test", help="evaluate the stored policies against a sample request (exit 1 if denied)")
    p.add_argument("--workspace")
    p.add_argument("--model", help="as the request names it (alias, provider/model, or bare)")
    p.add_argument("--endpoint", choices=["chat.completions", "messages", "responses", "embeddings"])
    p.add_argument("--key", help="a key id: its member and department apply")
    p.add_argument("--member")
    p.add_argument("--department")
    p.add_argument("--feature")
    p.add_argument("--ip")
    p.add_argument("--at", help="ISO 8601 time (default: now)")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--bytes", type=int)
    p.add_argument("--messages", type=int)
    p.add_argument("--body", help="a JSON request body file (model, messages and max tokens from it)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_test)
