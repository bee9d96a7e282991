"""`meterline cost-estimate`: what the stack itself costs on AWS (meterline.costs), no AWS call."""

from __future__ import annotations

import argparse
import json
from typing import Any

from meterline.costs import DEFAULTS, estimate


def _positive_int(raw: str) -> int:
    value = int(raw.replace("_", "").replace(",", ""))
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 900:
        raise argparse.ArgumentTypeError("must be between 0 and 900 (the gateway's timeout)")
    return value


def cmd_cost_estimate(args: argparse.Namespace) -> None:
    e = estimate(args.requests_per_month, args.stream_seconds, compute=args.compute, budgets=args.budgets,
                 memory_mb=args.memory)
    if args.json:
        print(json.dumps(e.as_dict(), indent=2))
        return
    print(f"Meterline's own AWS cost (us-east-1 list prices) for {e.requests_per_month:,} requests/month, "
          f"{e.stream_seconds:g} s each, {e.compute}"
          + (f" at {e.memory_mb} MB" if e.compute == "on-demand" else "")
          + f", {e.budgets} budget(s) per request:\n")
    width = max(len(k) for k in e.lines)
    for name, usd in e.lines.items():
        print(f"  {name:<{width}}  ${usd:>12,.2f}/month  ${usd / e.requests_per_month * 1e6:>8.2f} per 1M")
    print(f"  {'total':<{width}}  ${e.monthly:>12,.2f}/month  ${e.per_million:>8.2f} per 1M requests")
    print(f"\n  ledger storage at {DEFAULTS.ledger_retention_days}-day retention (steady state, + PITR): "
          f"${e.storage:,.2f}/month (${e.storage_per_million:.2f} per 1M requests of monthly traffic)")
    print(f"  for comparison, a hosted gateway's 5 % fee on $0.002 requests: ${e.hosted_fee_per_million:.2f} per 1M")


def register(sub: Any) -> None:
    p = sub.add_parser("cost-estimate", help="estimate the stack's own AWS cost per month and per 1M requests")
    p.add_argument("--requests-per-month", type=_positive_int, required=True)
    p.add_argument("--stream-seconds", type=_seconds, default=2.0,
                   help="wall time of a request through the gateway (Lambda bills the provider wait)")
    p.add_argument("--compute", choices=["on-demand", "managed-instances"], default="on-demand")
    p.add_argument("--budgets", type=int, default=0, choices=range(0, 11), metavar="K",
                   help="budgets each request is checked against (0-10)")
    p.add_argument("--memory", type=int, choices=[256, 512, 1024, 2048], default=None,
                   help=f"gateway memory in MB (default: the stack's {DEFAULTS.gateway_memory_mb})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cost_estimate)
