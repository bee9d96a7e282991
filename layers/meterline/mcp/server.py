"""The MCP tools: spend questions over the control-plane operations (admin/ops.py).

Every tool resolves the caller first (`auth.CURRENT`): the workspace and, for a non-admin key, the
slice (key, member or department) come from the credential, and every answer is confined to them;
no tool takes a workspace argument. Read-only unless said (`set_budget` needs an admin credential).
Answers are small (they cost the caller tokens): money as USD strings, the top rows only.
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from meterline.admin.access import Access
from meterline.admin.ops import REPORT_DIMENSIONS, OpError, Ops
from meterline.budgets.model import Budget
from meterline.config import Settings
from meterline.levers import LEVERS
from meterline.mcp.auth import CURRENT, Principal
from meterline.money import MoneyFormatError, micros_to_usd, usd_to_micros

READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
INSTRUCTIONS = ("Meterline answers questions about this workspace's AI spend: by model, member, department, "
                "feature and more; budgets; forecasts; savings; single requests. Periods: today, yesterday, month, "
                "last_month, yyyy-mm-dd, yyyy-mm (the workspace's time zone). Money is in USD.")


def _usd(row: dict[str, Any]) -> dict[str, Any]:
    """Micro-dollar fields as USD strings (`cost_micros` -> `cost_usd`); zero savings dropped."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name.endswith("_micros") and isinstance(value, int):
            if name.startswith("saved_") and not value:
                continue
            out[name[: -len("_micros")] + "_usd"] = micros_to_usd(value)
        elif name.startswith("saved_") and isinstance(value, int):
            if value:
                out[name + "_usd"] = micros_to_usd(value)
        elif isinstance(value, dict):
            out[name] = _usd(value)
        else:
            out[name] = value
    return out


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("value", "cost_micros", "requests", "rejections", "input_tokens", "cache_read_tokens", "output_tokens",
            "saved_micros")
    return _usd({k: row[k] for k in keep if k in row and (row[k] or k in ("value", "cost_micros", "requests"))})


def build_server(settings: Settings) -> MCPServer:
    """The server and its tools (global per process; the HTTP app is rebuilt per invocation)."""
    server = MCPServer("meterline", instructions=INSTRUCTIONS, version="1")

    def caller() -> Principal:
        principal = CURRENT.get()
        if principal is None:
            raise ToolError("not authenticated")
        return principal

    async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
        except OpError as exc:
            raise ToolError(str(exc)) from exc

    def ops(principal: Principal) -> Ops:
        # The ops layer enforces the credential's workspace and role too (admin/access.py): a tool
        # that passed another workspace, or wrote with a read-only key, would get a 403.
        actor = f"mcp:{principal.actor}"
        return Ops(settings, actor=actor, access=Access(actor, roles={
            principal.workspace: "admin" if principal.admin else "read"}))

    @server.tool(annotations=READ_ONLY)
    async def whoami() -> dict[str, Any]:
        """Which workspace and which slice of it this credential can see."""
        return caller().describe()

    @server.tool(annotations=READ_ONLY)
    async def get_spend(period: str = "month", group_by: str = "model", top: int = 10) -> dict[str, Any]:
        """Spend in a period grouped by one dimension (workspace, key, member, department, agent, session,
        feature, customer, provider, model, endpoint, outcome): the top rows by cost and the total."""
        p = caller()
        report = await run(ops(p).breakdown, p.workspace, period, group_by, p.scope, None, _top(top))
        return {"period": report["period"], "group_by": group_by, "rows": [_compact(r) for r in report["rows"]],
                "total": _compact({"value": "total", **report["total"]}), "truncated": report["truncated"]}

    @server.tool(annotations=READ_ONLY)
    async def drill_down(dimension: str, value: str, group_by: str = "model", period: str = "month",
                         top: int = 10) -> dict[str, Any]:
        """Spend of one dimension value (e.g. feature=search) in a period, split by another dimension."""
        p = caller()
        if dimension not in REPORT_DIMENSIONS or dimension == "workspace":
            raise ToolError(f"dimension must be one of {', '.join(REPORT_DIMENSIONS[1:])}")
        report = await run(ops(p).breakdown, p.workspace, period, group_by, p.scope, {dimension: value}, _top(top))
        return {"period": report["period"], "filter": {dimension: value}, "group_by": group_by,
                "rows": [_compact(r) for r in report["rows"]], "total": _compact({"value": "total", **report["total"]})}

    @server.tool(annotations=READ_ONLY)
    async def compare_periods(period_a: str = "last_month", period_b: str = "month", group_by: str = "model",
                              top: int = 10) -> dict[str, Any]:
        """Spend in two periods side by side by one dimension, with the change; biggest changes first."""
        p = caller()
        a = await run(ops(p).breakdown, p.workspace, period_a, group_by, p.scope, None, 1000)
        b = await run(ops(p).breakdown, p.workspace, period_b, group_by, p.scope, None, 1000)
        costs_a = {r["value"]: r["cost_micros"] for r in a["rows"]}
        costs_b = {r["value"]: r["cost_micros"] for r in b["rows"]}
        rows = []
        for value in set(costs_a) | set(costs_b):
            before, after = costs_a.get(value, 0), costs_b.get(value, 0)
            row: dict[str, Any] = {"value": value, "a_usd": micros_to_usd(before), "b_usd": micros_to_usd(after),
                                   "change_usd": micros_to_usd(after - before)}
            if before:
                row["change_pct"] = round((after - before) * 100 / before, 1)
            rows.append((abs(after - before), value, row))
        rows.sort(key=lambda r: (-r[0], r[1]))
        return {"a": a["period"], "b": b["period"], "group_by": group_by, "rows": [r[2] for r in rows[:_top(top)]],
                "total_a_usd": micros_to_usd(a["total"]["cost_micros"]),
                "total_b_usd": micros_to_usd(b["total"]["cost_micros"])}

    @server.tool(annotations=READ_ONLY)
    async def get_budget_status() -> dict[str, Any]:
        """Each budget this credential may see: caps, spend this month and today, reservations, stage."""
        p = caller()
        rows = await run(ops(p).list_budgets, p.workspace)
        if p.scope is not None:
            rows = [r for r in rows if r["scope"] == f"{p.scope[0]}:{p.scope[1]}"]
        keep = ("scope", "stage", "on_exhaust", "monthly_cap_micros", "daily_cap_micros", "spent_month_micros",
                "spent_today_micros", "reserved_micros", "resets")
        return {"budgets": [_usd({k: r[k] for k in keep if r.get(k) is not None}) for r in rows]}

    @server.tool(annotations=READ_ONLY)
    async def forecast_month_end() -> dict[str, Any]:
        """Month-end spend projected from month-to-date spend and the recent daily run rate, against the
        monthly cap if there is one."""
        p = caller()
        return _usd(await run(ops(p).forecast_month_end, p.workspace, p.scope))

    @server.tool(annotations=READ_ONLY)
    async def get_savings(period: str = "month") -> dict[str, Any]:
        """What Meterline's cost levers saved in a period, by lever, beside what was spent."""
        p = caller()
        report = await run(ops(p).breakdown, p.workspace, period, "workspace", p.scope, None, 1)
        total = report["total"]
        return {"period": report["period"], "spent_usd": micros_to_usd(total["cost_micros"]),
                "saved_usd": micros_to_usd(total["saved_micros"]),
                "by_lever_usd": {lever: micros_to_usd(total[f"saved_{lever}"]) for lever in LEVERS
                                 if total.get(f"saved_{lever}")}}

    @server.tool(annotations=READ_ONLY)
    async def get_waste_report(period: str = "today", top: int = 5) -> dict[str, Any]:
        """Waste grade (S best .. D) and the dollars at risk by signal (duplicates, model overkill, agent
        thrashing, low max_tokens use, off-hours bursts, cache misses, oversized prompts, wasteful
        retries), with where to look first. Periods: today, yesterday, 7d, 30d, month, yyyy-mm, yyyy-mm-dd."""
        p = caller()
        if p.scope is not None and p.scope[0] == "department":
            raise ToolError("waste is scored per member, key, agent, feature and customer, not per department")
        report = await run(ops(p).waste, p.workspace, period, p.scope[0] if p.scope else None)
        if p.scope is not None:
            rows = [r for r in report["by"].get(p.scope[0], []) if r["value"] == p.scope[1]]
            return {"period": report["period"], "scope": f"{p.scope[0]}:{p.scope[1]}",
                    "report": _waste(rows[0]) if rows else None}
        return {"period": report["period"], "total": _waste(report["total"]),
                "worst": {dim: [_waste(r, brief=True) for r in rows[:_top(top)] if r.get("waste_micros")]
                          for dim, rows in report["by"].items()}}

    @server.tool(annotations=READ_ONLY)
    async def recent_requests(limit: int = 10, outcome: str | None = None) -> dict[str, Any]:
        """The newest requests (optionally only one outcome: ok, rejected, upstream_error, ...)."""
        p = caller()
        rows = await run(ops(p).recent_requests, p.workspace, max(1, min(int(limit), 50)), p.scope, outcome)
        return {"requests": [_usd(r) for r in rows]}

    @server.tool(annotations=READ_ONLY)
    async def explain_request(request_id: str) -> dict[str, Any]:
        """One request's full record: model, tokens by class, cost, outcome, policies, savings, attempts."""
        p = caller()
        records = await run(ops(p).find_request, p.workspace, request_id.strip()[:80], p.scope)
        if not records:
            raise ToolError(f"no request {request_id!r} in the last 7 days that this credential can see")
        return {"records": [_usd(r) for r in records]}

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True,
                                             openWorldHint=False))
    async def set_budget(scope: str, monthly_usd: str | None = None, daily_usd: str | None = None,
                         on_exhaust: str = "reject") -> dict[str, Any]:
        """Create or replace a budget (admin credential only). scope: workspace, or key:<id>, member:<name>,
        department:<name>, agent:<name>, feature:<name>, customer:<name>. on_exhaust: reject, throttle,
        alert-only."""
        p = caller()
        if not p.admin:
            raise ToolError("changing budgets needs an admin credential (a key with the mcp:admin scope)")
        scope_type, _, scope_value = scope.partition(":")
        if scope_type == "workspace":
            scope_value = p.workspace
        try:
            monthly = usd_to_micros(monthly_usd) if monthly_usd else None
            daily = usd_to_micros(daily_usd) if daily_usd else None
        except (MoneyFormatError, ValueError) as exc:
            raise ToolError(str(exc)) from exc
        throttle_at = 100 if on_exhaust == "throttle" else None
        budget = Budget(scope_type, scope_value, monthly, daily, on_exhaust=on_exhaust, throttle_at=throttle_at,
                        throttle_rpm=10 if throttle_at else None)
        await run(ops(p).set_budget, p.workspace, budget)
        return {"scope": budget.scope, "set": True, "applies_within_s": 30}

    return server


def _waste(row: dict[str, Any], brief: bool = False) -> dict[str, Any]:
    """A waste scope report, small: grade, dollars, and the signals that cost something."""
    out = {k: row[k] for k in ("value", "grade", "rating", "spend_micros", "waste_micros", "requests") if k in row}
    out["waste_pct"] = round(int(row.get("waste_pct_bp", 0)) / 100, 2)
    if not brief:
        out["look_first"] = row.get("look_first")
        out["signals"] = {s["name"]: {"usd": micros_to_usd(int(s["micros"])), "count": s["count"]}
                          for s in (row.get("signals") or {}).values()}
    return _usd(out)


def _top(top: int) -> int:
    return max(1, min(int(top), 50))
