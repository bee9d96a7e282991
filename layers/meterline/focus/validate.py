"""A FOCUS 1.2 checker for our exports, and the reconciliation of an export with the ledger.

The official focus-validator 2.x needs Python >= 3.12 (1.0.0 knows FOCUS 1.0 only), so the rules
that apply to token-usage rows are checked here (LEVERS.md §E):
    - every mandatory column present; no unknown column unless `x_`-prefixed; custom columns after
      the FOCUS ones
    - nulls only where the spec allows them (empty CSV cell = null)
    - value formats: decimals, ISO 8601 UTC datetimes, ISO 4217 currency, the enumerations,
      UnitFormat ("<qty> <Plural Units>" or "<Units>"), JSON objects
    - PricingUnit null iff PricingQuantity null; ConsumedQuantity/Unit only for Usage rows
    - SkuId and SkuPriceId non-null on Usage rows (token prices are published)
    - charge period inside the billing period; starts before ends
    - ListCost = ListUnitPrice x PricingQuantity, rounded to the micro-dollar
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from meterline.focus.columns import (
    CHARGE_CATEGORIES,
    CHARGE_FREQUENCIES,
    DATETIME_COLUMNS,
    DECIMAL_COLUMNS,
    FOCUS_COLUMNS,
    JSON_COLUMNS,
    MANDATORY,
    NULLABLE_MANDATORY,
    PRICING_CATEGORIES,
    SERVICE_CATEGORIES,
)

_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_UNIT = re.compile(r"^(\d+ )?[A-Z][A-Za-z]*( [A-Z][A-Za-z]*)*$")
_MICRO = Decimal("0.000001")


def validate(columns: Sequence[str], rows: Iterable[dict[str, str]]) -> list[str]:
    """Every violation found, as `row N: message` (row 0 = the header)."""
    errors: list[str] = []
    for name in MANDATORY:
        if name not in columns:
            errors.append(f"row 0: mandatory column {name} is missing")
    seen_custom = False
    for name in columns:
        if name.startswith("x_"):
            seen_custom = True
        elif name not in FOCUS_COLUMNS:
            errors.append(f"row 0: column {name} is neither a FOCUS column nor x_-prefixed")
        elif seen_custom:
            errors.append(f"row 0: FOCUS column {name} comes after a custom column")
    for n, row in enumerate(rows, 1):
        errors.extend(f"row {n}: {e}" for e in _row_errors(row))
    return errors


def _row_errors(row: dict[str, str]) -> list[str]:
    errors = []

    def null(name: str) -> bool:
        return row.get(name, "") in ("", None)

    for name in MANDATORY:
        if name not in NULLABLE_MANDATORY and null(name):
            errors.append(f"{name} must not be null")
    for name in DECIMAL_COLUMNS:
        if not null(name) and not _DECIMAL.match(row[name]):
            errors.append(f"{name} is not a decimal: {row[name]!r}")
    for name in DATETIME_COLUMNS:
        if not null(name) and not _DATETIME.match(row[name]):
            errors.append(f"{name} is not an ISO 8601 UTC datetime: {row[name]!r}")
    for name in JSON_COLUMNS:
        if not null(name):
            try:
                if not isinstance(json.loads(row[name]), dict):
                    errors.append(f"{name} is not a JSON object")
            except ValueError:
                errors.append(f"{name} is not JSON")
    if not null("BillingCurrency") and not _CURRENCY.match(row["BillingCurrency"]):
        errors.append("BillingCurrency is not an ISO 4217 code")
    category = row.get("ChargeCategory", "")
    for name, allowed in (("ChargeCategory", CHARGE_CATEGORIES), ("ChargeFrequency", CHARGE_FREQUENCIES),
                          ("PricingCategory", PRICING_CATEGORIES), ("ServiceCategory", SERVICE_CATEGORIES)):
        if not null(name) and row[name] not in allowed:
            errors.append(f"{name} {row[name]!r} is not an allowed value")
    if not null("ChargeClass") and row["ChargeClass"] != "Correction":
        errors.append("ChargeClass must be null or 'Correction'")
    for name in ("PricingUnit", "ConsumedUnit"):
        if not null(name) and not _UNIT.match(row[name]):
            errors.append(f"{name} {row[name]!r} does not follow UnitFormat")
    if null("PricingUnit") != null("PricingQuantity"):
        errors.append("PricingUnit must be null exactly when PricingQuantity is null")
    if category != "Usage" and not (null("ConsumedQuantity") and null("ConsumedUnit")):
        errors.append("ConsumedQuantity/ConsumedUnit must be null unless ChargeCategory is Usage")
    if category == "Usage":
        for name in ("SkuId", "SkuPriceId", "ConsumedQuantity", "ConsumedUnit"):
            if null(name):
                errors.append(f"{name} must not be null on a Usage row")
    if not errors:
        if not row["ChargePeriodStart"] < row["ChargePeriodEnd"]:
            errors.append("ChargePeriodStart must be before ChargePeriodEnd")
        if not row["BillingPeriodStart"] < row["BillingPeriodEnd"]:
            errors.append("BillingPeriodStart must be before BillingPeriodEnd")
        if not (row["BillingPeriodStart"] <= row["ChargePeriodStart"]
                and row["ChargePeriodEnd"] <= row["BillingPeriodEnd"]):
            errors.append("the charge period is outside the billing period")
        if not null("ListUnitPrice") and not null("PricingQuantity"):
            expected = (Decimal(row["ListUnitPrice"]) * Decimal(row["PricingQuantity"])).quantize(
                _MICRO, rounding=ROUND_HALF_UP)
            if Decimal(row["ListCost"]) != expected:
                errors.append(f"ListCost {row['ListCost']} != ListUnitPrice x PricingQuantity ({expected})")
    return errors


def to_micros(value: str) -> int:
    amount = Decimal(value or "0") * 1_000_000
    if amount != amount.to_integral_value():
        raise ValueError(f"{value} is finer than a micro-dollar")
    return int(amount)


def totals(rows: Iterable[dict[str, str]]) -> dict[str, int]:
    """Billed micro-dollars, avoided micro-dollars and tokens per token class of an export."""
    out: dict[str, int] = {"billed_micros": 0, "avoided_micros": 0}
    for row in rows:
        out["billed_micros"] += to_micros(row["BilledCost"])
        out["avoided_micros"] += to_micros(row.get("x_AvoidedCost", "0"))
        key = f"tokens:{row.get('x_TokenClass', '')}"
        out[key] = out.get(key, 0) + int(row["ConsumedQuantity"] or 0)
    return out


_FIELDS = {"input": "input_uncached", "input-cache-read": "cache_read", "input-cache-write-5m": "cache_write_5m",
           "input-cache-write-1h": "cache_write_1h", "output": "output"}


class LedgerTotals:
    """The same totals computed straight from ledger records (the reconciliation's other side),
    accumulated record by record so an export reads the ledger once."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {"billed_micros": 0, "avoided_micros": 0}

    def add(self, r: dict[str, Any]) -> None:
        t = self.totals
        t["billed_micros"] += int(r.get("cost_micros", 0))
        t["avoided_micros"] += int(r.get("saved_micros", 0) or 0)
        for cls, f in _FIELDS.items():
            tokens = int(r.get(f, 0))
            if tokens:
                t[f"tokens:{cls}"] = t.get(f"tokens:{cls}", 0) + tokens


def ledger_totals(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    acc = LedgerTotals()
    for r in records:
        acc.add(r)
    return acc.totals


def compare(exported_rows: Sequence[dict[str, str]], ledger: dict[str, int]) -> list[str]:
    """Differences between an export's totals and the ledger's (empty = reconciled exactly)."""
    exported = {k: v for k, v in totals(exported_rows).items() if v or not k.startswith("tokens:")}
    return [f"{k}: export {exported.get(k, 0)} != ledger {ledger.get(k, 0)}"
            for k in sorted(set(exported) | set(ledger)) if exported.get(k, 0) != ledger.get(k, 0)]


def reconcile(rows: Sequence[dict[str, str]], records: Iterable[dict[str, Any]]) -> list[str]:
    return compare(rows, ledger_totals(records))
