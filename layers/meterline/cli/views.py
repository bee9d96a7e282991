"""`meterline requests`, `meterline requests show`, `meterline prices list|show`, `meterline limits
list|delete`, `meterline enforcement show`: what people reach for to see what happened and why.
Every list and show takes --json (machine-readable, the same fields as the admin API)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from meterline.cli import target
from meterline.money import micros_to_usd


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _reports(args: argparse.Namespace) -> tuple[Any, str | None]:
    from meterline.admin.reports import Reports

    settings, context = target.resolve(getattr(args, "stack", None))
    return Reports(settings), target.workspace_of(args, context)


def _run(action: Any) -> Any:
    from meterline.admin.ops import OpError
    from meterline.admin.reports import ReportError

    try:
        return action()
    except (ReportError, OpError) as exc:
        sys.exit(f"error: {exc}")


def _when(ts_ms: Any) -> str:
    return datetime.fromtimestamp(int(ts_ms or 0) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _flags(record: dict[str, Any]) -> str:
    flags = [name for name in ("estimated", "unpriced", "stream") if record.get(name)]
    if record.get("saved_micros"):
        flags.append("saved")
    if int(record.get("attempt", 0) or 0) > 0:
        flags.append(f"attempt{record['attempt']}")
    return ",".join(flags) or "-"


# -- requests --------------------------------------------------------------------------------------
def cmd_requests(args: argparse.Namespace) -> None:
    reports, ws = _reports(args)
    records = _run(lambda: reports.requests(ws, args.last, args.feature, args.session))
    if args.json:
        print_json(records)
        return
    rows = [{"time_utc": _when(r.get("ts")), "request_id": r.get("request_id"), "model": r.get("model", "-"),
             "outcome": r.get("outcome"), "status": r.get("status"),
             "in": int(r.get("input_uncached", 0)) + int(r.get("cache_read", 0)) + int(r.get("cache_write_5m", 0))
             + int(r.get("cache_write_1h", 0)), "cached": r.get("cache_read", 0), "out": r.get("output", 0),
             "cost_usd": micros_to_usd(int(r.get("cost_micros", 0))), "ms": r.get("latency_ms", ""),
             "feature": r.get("feature", "-"), "session": r.get("session", "-"), "flags": _flags(r)}
            for r in records]
    print_table(rows, ["time_utc", "request_id", "model", "outcome", "status", "in", "cached", "out", "cost_usd",
                       "ms", "feature", "session", "flags"])


def cmd_requests_show(args: argparse.Namespace) -> None:
    reports, ws = _reports(args)
    found = _run(lambda: reports.request(ws, args.request_id))
    if args.json:
        print_json(found)
        return
    r = found["record"]
    print(f"request    {r.get('request_id')}  ({_when(r.get('ts'))} UTC, {r.get('endpoint')}"
          f"{', streamed' if r.get('stream') else ''})")
    print(f"model      {r.get('model')}  (provider answered as {r.get('upstream_model', '-')}, "
          f"service tier {r.get('service_tier', '-')})")
    print(f"outcome    {r.get('outcome')}  status {r.get('status')}"
          f"{'  error ' + str(r['error_code']) if r.get('error_code') else ''}")
    print(f"cost       ${micros_to_usd(int(r.get('cost_micros', 0)))}"
          f"{'  (estimated usage)' if r.get('estimated') else ''}{'  (unpriced)' if r.get('unpriced') else ''}"
          f"{'  saved $' + micros_to_usd(int(r['saved_micros'])) if r.get('saved_micros') else ''}")
    attribution = {k: r[k] for k in ("workspace", "key", "member", "department", "feature", "agent", "session",
                                     "customer") if r.get(k)}
    print("attributed " + "  ".join(f"{k}={v}" for k, v in attribution.items()))
    print(f"latency    {r.get('latency_ms', '-')} ms (first byte {r.get('ttfb_ms', '-')} ms)")
    print(f"flags      {_flags(r)}")
    if found["lines"]:
        print()
        rows = []
        for line in found["lines"]:
            rate = line["usd_per_million_micros"]
            if line.get("usd_per_thousand_micros") is not None:
                unit = f"{micros_to_usd(line['usd_per_thousand_micros'])} /1K calls"
            elif line.get("usd_per_image_micros") is not None:
                unit = f"{micros_to_usd(line['usd_per_image_micros'])} /image"
            else:
                unit = micros_to_usd(rate) if rate is not None else ""
            rows.append({"tokens_class": line["class"], "tokens": line["tokens"], "usd_per_1m": unit,
                         "cost_usd": f"{line['cost_micros_exact'] / 1_000_000:.8f}".rstrip("0").rstrip(".")
                         if line["class"] != "total" else micros_to_usd(int(line["cost_micros_exact"]))})
        print_table(rows, ["tokens_class", "tokens", "usd_per_1m", "cost_usd"])
        total = found["lines"][-1]
        print(f"priced as {total.get('priced_as')} (source: {total.get('price_source')})")
    if found["attempts"]:
        print("\nfailed-over attempts:")
        print_table([{"request_id": a.get("request_id"), "attempt": a.get("attempt"), "model": a.get("model"),
                      "outcome": a.get("outcome"), "status": a.get("status"),
                      "cost_usd": micros_to_usd(int(a.get("cost_micros", 0)))} for a in found["attempts"]],
                    ["request_id", "attempt", "model", "outcome", "status", "cost_usd"])


# -- prices ----------------------------------------------------------------------------------------
def _catalog(args: argparse.Namespace) -> Any:
    from meterline.admin.reports import Reports
    from meterline.pricing.catalog import default_catalog

    if not args.workspace and not target.running_instances() and not os.environ.get("METERLINE_WORKSPACE"):
        return default_catalog(), None  # list prices need no running Meterline
    settings, context = target.resolve(getattr(args, "stack", None))
    ws = target.workspace_of(args, context)
    return _run(lambda: Reports(settings).catalog(ws)), ws


def _price_row(pricing: Any) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    point = pricing.at(today) or pricing.points[-1]
    r = point.rates
    return {"model": pricing.model_id, "input": micros_to_usd(r.input), "cached": micros_to_usd(r.cache_read),
            "write_5m": micros_to_usd(r.cache_write_5m), "write_1h": micros_to_usd(r.cache_write_1h),
            "output": micros_to_usd(r.output), "max_output": pricing.max_output_tokens,
            "override": "yes" if pricing.overridden else "", "source": point.source,
            "effective": str(point.effective)}


def cmd_prices_list(args: argparse.Namespace) -> None:
    catalog, _ = _catalog(args)
    rows = []
    for model_id in catalog.model_ids():
        if args.provider and model_id.split("/", 1)[0] != args.provider:
            continue
        if args.search and args.search.lower() not in model_id.lower():
            continue
        rows.append(_price_row(catalog.resolve(model_id)))
    if args.json:
        print_json(rows)
        return
    print_table(rows, ["model", "input", "cached", "write_5m", "write_1h", "output", "max_output", "override"])
    print(f"{len(rows)} models; USD per 1M tokens", file=sys.stderr)


def _base(rates: Any) -> Any:
    """Rates, or a rate table's base rates (service tiers may carry their own long-context tiers)."""
    return getattr(rates, "rates", rates)


def cmd_prices_show(args: argparse.Namespace) -> None:
    from meterline.admin.reports import pricing_for

    catalog, ws = _catalog(args)
    pricing = pricing_for(catalog, args.model)
    if pricing is None:
        near = [m for m in catalog.model_ids() if args.model.split("/")[-1] in m][:5]
        hint = f"; did you mean {', '.join(near)}?" if near else "; see `meterline prices list --search <text>`"
        sys.exit(f"error: {args.model} is not in the catalog{hint}")
    points = [{"effective": str(p.effective), "source": p.source,
               **{k: micros_to_usd(v) for k, v in zip(("input", "cached", "write_5m", "write_1h", "output"),
                                                       p.rates.as_tuple(), strict=True)},
               "tiers": [{"above_prompt_tokens": t, "input": micros_to_usd(r.input), "output": micros_to_usd(r.output)}
                         for t, r in p.tiers],
               "service_tiers": {n: {"input": micros_to_usd(_base(r).input), "output": micros_to_usd(_base(r).output)}
                                 for n, r in p.service_tiers.items()}} for p in pricing.points]
    shown = {"model": args.model, "priced_as": pricing.model_id, "overridden": pricing.overridden,
             "workspace": ws, "max_output_tokens": pricing.max_output_tokens, "prices": points}
    if args.json:
        print_json(shown)
        return
    origin = f" (workspace {ws} override)" if pricing.overridden else ""
    alias = f" priced as {pricing.model_id}" if pricing.model_id != args.model else ""
    print(f"{args.model}{alias}{origin}; max output {pricing.max_output_tokens} tokens; USD per 1M tokens:")
    print_table([{k: v for k, v in p.items() if k not in ("tiers", "service_tiers")} for p in points],
                ["effective", "input", "cached", "write_5m", "write_1h", "output", "source"])
    for p in points:
        for tier in p["tiers"]:
            print(f"  above {tier['above_prompt_tokens']} prompt tokens: input {tier['input']} output {tier['output']}")
        for name, rates in p["service_tiers"].items():
            print(f"  service tier {name}: input {rates['input']} output {rates['output']}")


# -- limits and enforcement ------------------------------------------------------------------------
def cmd_limits_list(args: argparse.Namespace) -> None:
    reports, ws = _reports(args)
    rows = _run(lambda: reports.limits(ws))
    if args.json:
        print_json(rows)
        return
    print_table([{k: ("-" if v is None else v) for k, v in r.items()} for r in rows],
                ["subject", "rpm", "rph", "burst", "tpm"])


def cmd_limits_delete(args: argparse.Namespace) -> None:
    ops, context = target.ops(args)
    ws = target.workspace_of(args, context)
    subject = args.subject if ":" in args.subject else None
    if subject is None:
        sys.exit("error: the subject is <type>:<value>, e.g. key:key_abc, member:alice, agent:*")
    _run(lambda: ops.delete_limit(ws, subject))
    print(f"limit for {subject} deleted (applies within the config cache TTL, 30 s by default)")


def cmd_enforcement_show(args: argparse.Namespace) -> None:
    reports, ws = _reports(args)
    shown = _run(lambda: reports.enforcement(ws))
    if args.json:
        print_json(shown)
        return
    policy = shown["policy"]
    print(f"enforcement for workspace {ws}:")
    print(f"  budget store unavailable: {'forward (fail open)' if policy['fail_open'] else 'refuse (fail closed)'}")
    print(f"  agent loops: throttle after {policy['loop_throttle_after']}, reject after "
          f"{policy['loop_reject_after']} near-identical requests per session in {policy['loop_window_s']} s")
    print(f"  per-key default: {policy['key_rpm_default']} requests per minute")
    print(f"  budgets: {', '.join(shown['budgets']) or '(none)'}")
    print(f"  rate limits: {', '.join(shown['limits']) or '(none)'}")


def register(sub: Any) -> None:
    p = sub.add_parser("requests", help="recent requests from the ledger, newest first; `requests show <id>`",
                       description="Recent requests (ledger records), newest first. `meterline requests show "
                                   "<request id>` explains one: tokens by class with prices, cost, attribution, "
                                   "outcome, flags and failed-over attempts.")
    p.add_argument("--last", type=_positive, default=20, metavar="N", help="how many (default 20)")
    p.add_argument("--feature", help="only requests attributed to this feature")
    p.add_argument("--session", help="only requests of this session (Meterline-Session-Id)")
    p.add_argument("--workspace", help="the workspace (default: the running `meterline dev`'s)")
    p.add_argument("--json", action="store_true", help="print the ledger records as JSON")
    p.set_defaults(func=cmd_requests)
    actions = p.add_subparsers(dest="action")
    show = actions.add_parser("show", help="one request in full, by its Meterline-Request-Id")
    show.add_argument("request_id", help="the Meterline-Request-Id response header, e.g. req_…")
    show.add_argument("--workspace", help="the workspace (default: the running `meterline dev`'s)")
    show.add_argument("--json", action="store_true", help="print the record, attempts and cost lines as JSON")
    show.set_defaults(func=cmd_requests_show)


def register_prices(prices: Any) -> None:
    p = prices.add_parser("list", help="catalog prices (with the workspace's overrides when one is known)")
    p.add_argument("--provider", help="only this catalog namespace: openai, anthropic, gemini, bedrock")
    p.add_argument("--search", help="only models whose id contains this text")
    p.add_argument("--workspace", help="apply this workspace's overrides (default: the running `meterline dev`'s)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_prices_list)
    p = prices.add_parser("show", help="one model's prices: overrides applied, sim/<model> resolved")
    p.add_argument("model", help="provider/model as requests name it, e.g. openai/gpt-4o or sim/gpt-4o-mini")
    p.add_argument("--workspace", help="apply this workspace's overrides (default: the running `meterline dev`'s)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_prices_show)


def register_limits(limits: Any) -> None:
    p = limits.add_parser("list", help="the workspace's rate limits")
    p.add_argument("--workspace", help="the workspace (default: the running `meterline dev`'s)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_limits_list)
    p = limits.add_parser("delete", help="remove a rate limit")
    p.add_argument("subject", help="<type>:<value> as `limits list` shows it, e.g. key:*, member:alice")
    p.add_argument("--workspace", help="the workspace (default: the running `meterline dev`'s)")
    p.set_defaults(func=cmd_limits_delete)


def register_enforcement(enforcement: Any) -> None:
    p = enforcement.add_parser("show", help="the workspace's enforcement policy, budgets and limits")
    p.add_argument("--workspace", help="the workspace (default: the running `meterline dev`'s)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_enforcement_show)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
