"""`meterline waste`: was the spend worth it? Signals, grades and where to look first."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meterline.cli import target
from meterline.money import micros_to_usd


def _usd(micros: int) -> str:
    return "$" + micros_to_usd(micros)


def _pct(bp: int) -> str:
    return f"{bp // 100}.{bp % 100:02d}%"


def _print_rows(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def render(report: dict[str, Any], by: str | None, limit: int = 20) -> None:
    total = report["total"]
    first, last = report["period"]
    span = first if first == last else f"{first} .. {last}"
    print(f"Waste report for workspace {report['workspace']}, {span} (UTC days)")
    print(f"Grade {total['grade']} (score {total['score']}, {total['rating']}): {_usd(total['waste_micros'])} of "
          f"{_usd(total['spend_micros'])} spent was avoidable ({_pct(total['waste_pct_bp'])}), "
          f"{total['requests']} requests")
    signals = total["signals"]
    if total["look_first"]:
        print("Where to look first:")
        for code in total["look_first"]:
            s = signals[code]
            note = " (capacity held, not billed)" if code == "W4" else ""
            print(f"  {code} {s['name']}: {_usd(s['micros'])}{note} over {s['count']} requests, "
                  f"e.g. {', '.join(s['examples'][:3])}")
    rows = [{"signal": f"{code} {s['name']}", "usd": _usd(s["micros"]), "count": s["count"],
             "examples": ", ".join(s["examples"][:2])} for code, s in signals.items()]
    if rows:
        print()
        _print_rows(rows, ["signal", "usd", "count", "examples"])
    for dim, scopes in report["by"].items():
        if not scopes:
            continue
        print(f"\nBy {dim}:")
        table = [{dim: s["value"], "grade": s["grade"], "score": s["score"], "rating": s["rating"],
                  "spend": _usd(s["spend_micros"]), "waste": _usd(s["waste_micros"]), "waste%": _pct(s["waste_pct_bp"]),
                  "look_first": ",".join(s["look_first"])} for s in scopes[:limit]]
        _print_rows(table, [dim, "grade", "score", "rating", "spend", "waste", "waste%", "look_first"])
        if len(scopes) > limit:
            print(f"... {len(scopes) - limit} more (use --json)")


def cmd_waste(args: argparse.Namespace) -> None:
    from meterline.admin.ops import OpError

    ops, context = target.ops(args)
    ws = target.workspace_of(args, context)
    try:
        report = ops.waste(ws, args.period, args.by)
    except OpError as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    render(report, args.by)


def register(sub: Any) -> None:
    from meterline.waste import DIMENSIONS

    p = sub.add_parser("waste", help="waste signals, grades and where to look first (scores and stores the period)",
                       description="Scores the workspace's ledger for the period (W1-W8 waste, V1-V3 value), "
                                   "grades each scope S/A/B/C/D and stores the scores (what the scheduled job does).")
    p.add_argument("--period", default="today",
                   help="today (default), yesterday, month, 7d, 30d, YYYY-MM or YYYY-MM-DD (UTC days)")
    p.add_argument("--by", choices=list(DIMENSIONS), help="one dimension (default: all of them)")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_waste)
