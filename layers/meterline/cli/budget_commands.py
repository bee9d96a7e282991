"""`meterline budgets …`, `meterline limits …` and `meterline enforcement …`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from meterline.admin.ops import OpError, Ops
from meterline.budgets.model import DEFAULT_ALERTS, SCOPE_TYPES, STRATEGIES, Budget, RateLimit
from meterline.cli import target, views
from meterline.money import MoneyFormatError, micros_to_usd, usd_to_micros


def _ops(args: argparse.Namespace) -> tuple[Ops, str]:
    ops, context = target.ops(args)
    return ops, target.workspace_of(args, context)


def _usd(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return usd_to_micros(value)
    except MoneyFormatError as exc:
        sys.exit(f"error: {exc}")


def cmd_budgets_set(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    scope_type, _, scope_value = args.scope.partition(":")
    if scope_type == "workspace" and not scope_value:
        scope_value = ws
    alerts = tuple(int(a) for a in args.alerts.split(",") if a) if args.alerts else DEFAULT_ALERTS
    throttle_at = args.throttle_at
    if args.on_exhaust == "throttle" and throttle_at is None:
        throttle_at = 100  # throttle strategy without an earlier threshold: throttle at the cap
    budget = Budget(scope_type, scope_value, _usd(args.monthly), _usd(args.daily), alerts, throttle_at,
                    args.throttle_rpm, args.on_exhaust, args.clamp, args.downgrade_at, args.downgrade_to)
    try:
        ops.set_budget(ws, budget)
    except OpError as exc:
        sys.exit(f"error: {exc}")
    print(f"budget {budget.scope} set (applies within the config cache TTL, 30 s by default)")


def cmd_budgets_list(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    rows = ops.list_budgets(ws)
    if args.json:
        views.print_json(rows)
        return
    cols = ["scope", "strategy", "monthly", "daily", "spent_month", "spent_today", "reserved", "stage", "resets"]
    table = [{"scope": r["scope"], "strategy": r["on_exhaust"],
              "monthly": micros_to_usd(r["monthly_cap_micros"]) if r["monthly_cap_micros"] else "-",
              "daily": micros_to_usd(r["daily_cap_micros"]) if r["daily_cap_micros"] else "-",
              "spent_month": micros_to_usd(r["spent_month_micros"]),
              "spent_today": micros_to_usd(r["spent_today_micros"]),
              "reserved": micros_to_usd(r["reserved_micros"]), "stage": r["stage"], "resets": r["resets"]}
             for r in rows]
    widths = {c: max(len(c), *(len(str(t[c])) for t in table)) if table else len(c) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for t in table:
        print("  ".join(str(t[c]).ljust(widths[c]) for c in cols))


def cmd_budgets_delete(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    try:
        ops.delete_budget(ws, args.scope)
    except OpError as exc:
        sys.exit(f"error: {exc}")
    print(f"budget {args.scope} deleted")


def cmd_limits_set(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    subjects = [(t, v) for t, v in (("key", args.key), ("member", args.member), ("agent", args.agent)) if v]
    if len(subjects) != 1:
        sys.exit("error: give exactly one of --key, --member, --agent (a value, or * for the workspace default)")
    (subject_type, subject_value), = subjects
    try:
        ops.set_limit(ws, RateLimit(subject_type, subject_value, args.rpm, args.rph, args.burst, args.tpm))
    except OpError as exc:
        sys.exit(f"error: {exc}")
    print(f"limit for {subject_type}:{subject_value} set")


def cmd_enforcement_set(args: argparse.Namespace) -> None:
    ops, ws = _ops(args)
    changes = {k: v for k, v in {
        "fail_open": {"open": True, "closed": False}.get(args.store_unavailable) if args.store_unavailable else None,
        "loop_throttle_after": args.loop_throttle_after, "loop_reject_after": args.loop_reject_after,
        "loop_window_s": args.loop_window, "key_rpm_default": args.key_rpm_default}.items() if v is not None}
    if not changes:
        sys.exit("error: nothing to change")
    print(ops.set_policy(ws, **changes))


def register(sub: Any) -> None:
    budgets = sub.add_parser("budgets", help="spend budgets per scope").add_subparsers(dest="action", required=True)
    p = budgets.add_parser("set", help="create or replace the budget of a scope")
    p.add_argument("--workspace")
    p.add_argument("--scope", required=True, help=f"<type>:<value>, type one of {', '.join(SCOPE_TYPES)}")
    p.add_argument("--monthly", help="monthly cap, USD")
    p.add_argument("--daily", help="daily cap, USD (a hard stop on top of the monthly cap)")
    p.add_argument("--alerts", help="alert thresholds in percent, default 50,75,90,100")
    p.add_argument("--throttle-at", type=int, help="percent spent from which the scope is throttled")
    p.add_argument("--throttle-rpm", type=int, help="requests per minute while throttled")
    p.add_argument("--downgrade-at", type=int,
                   help="percent spent from which requests are routed to --downgrade-to (before any throttle)")
    p.add_argument("--downgrade-to", help="the cheaper provider/model the scope downgrades to")
    p.add_argument("--on-exhaust", choices=STRATEGIES, default="reject")
    p.add_argument("--clamp", action="store_true",
                   help="instead of rejecting, lower max output tokens to what the remaining budget pays for")
    p.set_defaults(func=cmd_budgets_set)
    p = budgets.add_parser("list", help="each budget's spend, reservations, stage and reset time")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_budgets_list)
    p = budgets.add_parser("delete")
    p.add_argument("--workspace")
    p.add_argument("--scope", required=True)
    p.set_defaults(func=cmd_budgets_delete)

    limits = sub.add_parser("limits", help="rate limits per key, member or agent").add_subparsers(
        dest="action", required=True)
    p = limits.add_parser("set")
    p.add_argument("--workspace")
    p.add_argument("--key", help="a key id (key_...), or * for every key of the workspace")
    p.add_argument("--member")
    p.add_argument("--agent")
    p.add_argument("--rpm", type=int)
    p.add_argument("--rph", type=int)
    p.add_argument("--burst", type=int, help="requests per second")
    p.add_argument("--tpm", type=int, help="tokens per minute (estimated input + max output)")
    p.set_defaults(func=cmd_limits_set)
    views.register_limits(limits)

    enforcement = sub.add_parser("enforcement", help="workspace enforcement policy").add_subparsers(
        dest="action", required=True)
    p = enforcement.add_parser("set")
    p.add_argument("--workspace")
    p.add_argument("--store-unavailable", choices=["closed", "open"],
                   help="when budgets cannot be checked: reject with 503 (closed, default) or forward (open)")
    p.add_argument("--loop-throttle-after", type=int)
    p.add_argument("--loop-reject-after", type=int)
    p.add_argument("--loop-window", type=int, help="seconds")
    p.add_argument("--key-rpm-default", type=int, help="the per-key requests-per-minute floor (default 100)")
    p.set_defaults(func=cmd_enforcement_set)
    views.register_enforcement(enforcement)
