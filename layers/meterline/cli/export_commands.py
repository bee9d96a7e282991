"""`meterline export focus`: a month's FOCUS 1.2 chargeback file (CSV)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from meterline.cli import target
from meterline.money import micros_to_usd


def cmd_export_focus(args: argparse.Namespace) -> None:
    from meterline.admin.ops import OpError

    ops, context = target.ops(args)
    ws = target.workspace_of(args, context)
    try:
        result = ops.export_focus(ws, args.month, args.by)
    except OpError as exc:
        sys.exit(f"error: {exc}")
    text = result.csv()
    if args.out == "-":
        sys.stdout.write(text)
        return
    out = Path(args.out)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(out)  # all or nothing: a reader never sees half a file
    print(f"{out}: {len(result.rows)} FOCUS 1.2 rows from {result.records} ledger records; billed "
          f"${micros_to_usd(result.billed_micros)} (= the ledger, to the micro-dollar), avoided "
          f"${micros_to_usd(result.avoided_micros)}", file=sys.stderr)


def register(sub: Any) -> None:
    export = sub.add_parser("export", help="exports (FOCUS 1.2 chargeback)").add_subparsers(
        dest="action", required=True)
    p = export.add_parser("focus", help="a month's FOCUS 1.2 rows as CSV, validated and reconciled with the ledger")
    p.add_argument("--month", required=True, help="YYYY-MM (UTC)")
    p.add_argument("--by", default="all", choices=["all", "department", "customer", "none"],
                   help="attribution columns to split rows by (default all: member, department, feature, "
                        "customer, agent)")
    p.add_argument("--out", required=True, help="file to write (- for stdout)")
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_export_focus)
