"""Read-only views for the CLI (and the admin API): recent requests, one request in full, spend by
session or over any period, prices as a workspace pays them, limits and the enforcement policy.

Requests come from the ledger (time-ordered per workspace and UTC day); spend by attribution from
the rollups, summed over the period's keys (see periods.py); spend by session from the ledger
(sessions are not a rollup dimension: their number is unbounded).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from meterline.admin import periods
from meterline.config import Settings
from meterline.pricing.catalog import Catalog, ModelPricing, default_catalog
from meterline.pricing.cost import cost_of
from meterline.store.budgets import BudgetStore
from meterline.store.ledger import LedgerStore
from meterline.store.rollups import COUNTERS, RollupStore, counters_of
from meterline.store.workspaces import WorkspaceConfig, WorkspaceStore
from meterline.usage import Usage

LOOKBACK_DAYS = 31  # how far back `requests` and `requests show` look
TOKEN_CLASSES = ("input_uncached", "cache_read", "cache_write_5m", "cache_write_1h", "output")
EXTRA_TOKENS = ("input_audio", "cache_read_audio", "output_audio", "iteration_tokens")
RATE_OF = {"input_uncached": "input", "cache_read": "cache_read", "cache_write_5m": "cache_write_5m",
           "cache_write_1h": "cache_write_1h", "output": "output"}


class ReportError(ValueError):
    pass


class Reports:
    def __init__(self, settings: Settings):
        self.settings = settings

    def _workspace(self, workspace: str) -> WorkspaceConfig:
        config = WorkspaceStore(self.settings).load(workspace)
        if config is None:
            raise ReportError(f"no workspace {workspace!r}")
        return config

    def catalog(self, workspace: str | None) -> Catalog:
        """List prices, with the workspace's overrides applied when one is given."""
        if workspace is None:
            return default_catalog()
        return default_catalog().with_overrides(self._workspace(workspace).price_overrides)

    # -- requests ------------------------------------------------------------------------------
    def _days_back(self, today: date) -> Iterator[str]:
        for i in range(LOOKBACK_DAYS):
            yield (today - timedelta(days=i)).isoformat()

    def requests(self, workspace: str, last: int = 20, feature: str | None = None,
                 session: str | None = None) -> list[dict[str, Any]]:
        """The newest `last` ledger records (attempt records included), newest first."""
        self._workspace(workspace)
        ledger = LedgerStore(self.settings)
        out: list[dict[str, Any]] = []
        for day in self._days_back(datetime.now(UTC).date()):
            for record in ledger.query_day(workspace, day, newest_first=True):
                if feature is not None and record.get("feature") != feature:
                    continue
                if session is not None and record.get("session") != session:
                    continue
                out.append(record)
                if len(out) >= last:
                    return out
        return out

    def request(self, workspace: str, request_id: str) -> dict[str, Any]:
        """One request in full: its record, its failed-over attempts, and its cost by token class."""
        config = self._workspace(workspace)
        ledger = LedgerStore(self.settings)
        for day in self._days_back(datetime.now(UTC).date()):
            found = [r for r in ledger.query_day(workspace, day)
                     if r.get("request_id") == request_id or r.get("parent_request_id") == request_id]
            main = next((r for r in found if r.get("request_id") == request_id), None)
            if main is not None:
                attempts = sorted((r for r in found if r is not main), key=lambda r: r.get("attempt", 0))
                return {"record": main, "attempts": attempts, "lines": cost_lines(main, config)}
        raise ReportError(f"no request {request_id!r} in workspace {workspace!r} in the last {LOOKBACK_DAYS} days")

    # -- spend ---------------------------------------------------------------------------------
    def spend(self, workspace: str, by: str, period: str) -> dict[str, Any]:
        config = self._workspace(workspace)
        now = datetime.now(UTC).astimezone(ZoneInfo(config.timezone))
        try:
            span = periods.parse(period, now)
        except periods.PeriodError as exc:
            raise ReportError(str(exc)) from exc
        if by == "session":
            rows = self._spend_by_session(workspace, span)
        else:
            dimension = "total" if by == "workspace" else by
            totals: dict[str, dict[str, int]] = {}
            store = RollupStore(self.settings)
            for key in span.rollup_keys:
                for row in store.by_dimension(workspace, key, dimension):
                    acc = totals.setdefault(row["value"], dict.fromkeys(COUNTERS, 0))
                    for counter in COUNTERS:
                        acc[counter] += int(row.get(counter, 0))
            rows = [{"value": value, **counters} for value, counters in totals.items()]
        rows.sort(key=lambda r: (-r["cost_micros"], r["value"]))
        return {"workspace": workspace, "period": span.label, "timezone": config.timezone, "by": by, "rows": rows}

    def _spend_by_session(self, workspace: str, span: periods.Period) -> list[dict[str, Any]]:
        ledger = LedgerStore(self.settings)
        totals: dict[str, dict[str, int]] = {}
        for day in span.utc_days():
            for record in ledger.query_day(workspace, day):
                if not span.contains_ms(int(record.get("ts", 0))):
                    continue
                acc = totals.setdefault(record.get("session") or "-", dict.fromkeys(COUNTERS, 0))
                for counter, value in counters_of(record).items():
                    acc[counter] += value
        return [{"value": value, **counters} for value, counters in totals.items()]

    # -- enforcement ---------------------------------------------------------------------------
    def limits(self, workspace: str) -> list[dict[str, Any]]:
        self._workspace(workspace)
        definitions = BudgetStore(self.settings).definitions(workspace)
        return [{"subject": s, "subject_type": limit.subject_type, "subject_value": limit.subject_value,
                 "rpm": limit.rpm, "rph": limit.rph, "burst": limit.burst, "tpm": limit.tpm}
                for s, limit in sorted(definitions.limits.items())]

    def enforcement(self, workspace: str) -> dict[str, Any]:
        self._workspace(workspace)
        definitions = BudgetStore(self.settings).definitions(workspace)
        return {"policy": dict(definitions.policy.__dict__), "budgets": [b.scope for b in definitions.budgets],
                "limits": sorted(definitions.limits)}


def pricing_for(catalog: Catalog, model_id: str) -> ModelPricing | None:
    """A ledger or CLI model id to its pricing: `sim/<model>` is priced as the model it names, unless
    the workspace overrides `sim/<model>` itself (as the gateway's addressing does)."""
    if model_id.startswith("sim/"):
        name = model_id[4:]
        if catalog.resolve(model_id) is not None:
            return catalog.resolve(model_id)
        return catalog.resolve(name) if "/" in name else catalog.find_by_name(name)
    return catalog.resolve(model_id)


def recorded_lines(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every billed class from the record's own `prices` (units and the unit price the meter used):
    token classes per 1M tokens, `tool:*` per 1K calls, `image:*` per image, `iteration:*` with the
    iteration's own cost. Exact per class before the one rounding."""
    lines = []
    for name, pair in (record.get("prices") or {}).items():
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            continue
        units, rate = int(pair[0]), int(pair[1])
        line: dict[str, Any] = {"class": "input_uncached" if name == "input" else name, "tokens": units,
                                "usd_per_million_micros": None}
        if name.startswith("iteration:"):
            line["cost_micros_exact"] = rate  # the iteration's own cost, priced at its model's rates
        elif name.startswith("tool:"):
            line.update(usd_per_thousand_micros=rate, cost_micros_exact=units * rate / 1_000)
        elif name.startswith("image:"):
            line.update(usd_per_image_micros=rate, cost_micros_exact=units * rate)
        else:
            line.update(usd_per_million_micros=rate, cost_micros_exact=units * rate / 1_000_000)
        lines.append(line)
    return lines


def cost_lines(record: dict[str, Any], config: WorkspaceConfig) -> list[dict[str, Any]]:
    """Tokens by class with the rate each was priced at and its share of the cost (micro-dollars).
    The lines are exact per class before rounding; their sum is the recorded cost (rounded once).
    A record that lists its billed classes (`prices`: audio, tool calls, images, iterations, a tier's
    rates) is shown from them, as metered; an older one is re-priced from its token classes."""
    catalog = default_catalog().with_overrides(config.price_overrides)
    model = str(record.get("model") or "")
    workspace_entry = config.providers.get(model.split("/", 1)[0]) if "/" in model else None
    lookup = workspace_entry.catalog_model(model.split("/", 1)[1]) if workspace_entry else model
    pricing = pricing_for(catalog, lookup)
    if pricing is None:
        return []
    day = datetime.fromtimestamp(int(record.get("ts", 0)) / 1000, tz=UTC).date()
    point = pricing.at(day)
    if point is None:
        return []
    if record.get("prices"):
        lines = recorded_lines(record)
        lines.append({"class": "total", "tokens": sum(int(record.get(c, 0)) for c in (*TOKEN_CLASSES, *EXTRA_TOKENS)),
                      "usd_per_million_micros": None, "cost_micros_exact": int(record.get("cost_micros", 0)),
                      "price_source": record.get("price_source") or point.source, "priced_as": pricing.model_id})
        return lines
    usage = Usage(**{c: int(record.get(c, 0)) for c in TOKEN_CLASSES})
    rates = point.rates_for(usage.prompt_total, record.get("service_tier"))
    lines = []
    for token_class in TOKEN_CLASSES:
        tokens = int(record.get(token_class, 0))
        rate = getattr(rates, RATE_OF[token_class])
        lines.append({"class": token_class, "tokens": tokens, "usd_per_million_micros": rate,
                      "cost_micros_exact": tokens * rate / 1_000_000})
    lines.append({"class": "total", "tokens": usage.total, "usd_per_million_micros": None,
                  "cost_micros_exact": cost_of(usage, rates), "price_source": point.source,
                  "priced_as": pricing.model_id})
    return lines
