"""`meterline audit`: who did what, before and after, when (the immutable audit trail)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from meterline.cli import target

_RELATIVE = re.compile(r"^(\d+)([mhd])$")


def since_ms(value: str | None, now: float | None = None) -> int:
    """`30m`, `24h`, `7d`, an ISO date or datetime (UTC unless it says otherwise); None = everything."""
    if not value:
        return 0
    now = time.time() if now is None else now
    found = _RELATIVE.match(value)
    if found:
        n, unit = int(found.group(1)), found.group(2)
        return int((now - n * {"m": 60, "h": 3600, "d": 86400}[unit]) * 1000)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("--since takes 30m, 24h, 7d, or an ISO date/datetime") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def cmd_audit(args: argparse.Namespace) -> None:
    from meterline.admin.ops import OpError, audit_query, decision_query

    ops, context = target.ops(args)
    workspace = None if (args.actor and not args.workspace and args.all_workspaces) else \
        target.workspace_of(args, context)
    try:
        if args.decisions:
            if workspace is None:
                raise OpError("--decisions needs a workspace")
            rows = decision_query(ops, workspace, since_ms=since_ms(args.since), limit=args.limit)
        else:
            rows = audit_query(ops, workspace, since_ms=since_ms(args.since), actor=args.actor, limit=args.limit)
    except (OpError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        when = datetime.fromtimestamp(row["ts"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        change = ""
        if row.get("before") is not None or (row.get("after") and not row["action"].startswith("read.")):
            change = f" before={json.dumps(row.get('before'))} after={json.dumps(row.get('after'))}"
        print(f"{when}Z  {row['workspace']:<12} {row['actor']:<40} {row['action']:<18} "
              f"{json.dumps(row.get('target')) if row.get('target') else ''}{change}")


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="the audit trail: admin actions and reads (immutable)")
    p.add_argument("--since", help="30m, 24h, 7d, or an ISO date/datetime (UTC)")
    p.add_argument("--actor", help="an IAM principal ARN, cli:<user> or mcp:key:<id>")
    p.add_argument("--workspace")
    p.add_argument("--all-workspaces", action="store_true", help="with --actor: everything that actor did")
    p.add_argument("--decisions", action="store_true",
                   help="per-request policy and budget decisions (read from the ledger), newest first")
    p.add_argument("--limit", type=int, default=200, help="at most this many records")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)
