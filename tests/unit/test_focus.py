"""FOCUS 1.2 rows: the validator's rules (each violation caught), exact allocation, reconciliation."""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal

import pytest

from meterline.focus.columns import COLUMNS, MANDATORY
from meterline.focus.rows import allocate, build
from meterline.focus.validate import reconcile, to_micros, totals, validate
from meterline.pricing.catalog import default_catalog
from tests.waste_ledger import TOTAL_SPEND, planted


def rows_of(records, by="all", overrides=None):
    catalog = default_catalog().with_overrides(overrides)
    return build(records, catalog, default_catalog(), by).rows()


def test_planted_ledger_exports_valid_rows_that_reconcile_exactly():
    records = planted()
    rows = rows_of(records)
    assert validate(list(COLUMNS), rows) == []
    assert reconcile(rows, records) == []
    assert totals(rows)["billed_micros"] == TOTAL_SPEND
    assert totals(rows)["avoided_micros"] == 10_000 + 2000 + 700
    assert all(r["SkuId"] and r["SkuPriceId"] for r in rows)
    # Every FOCUS column before every custom column.
    assert [c for c in COLUMNS if c.startswith("x_")] == list(COLUMNS[-11:])


def test_a_row_carries_exact_quantities_prices_and_attribution():
    rows = rows_of(planted())
    (row,) = [r for r in rows if r["x_Feature"] == "chat" and r["x_TokenClass"] == "output"]
    # 4 requests x 100 output tokens at USD 10.00 / 1M.
    assert (row["ConsumedQuantity"], row["PricingQuantity"]) == ("400", "0.000400")
    assert row["PricingUnit"] == "1000000 Tokens"
    assert (row["ListUnitPrice"], row["ListCost"], row["BilledCost"]) == ("10.000000", "0.004000", "0.004000")
    assert row["SkuId"] == "openai:gpt-4o:output"
    effective = default_catalog().resolve("openai/gpt-4o").at(date(2026, 11, 10)).effective.isoformat()
    assert row["SkuPriceId"] == f"openai:gpt-4o:output:{effective}:standard:10000000"
    assert (row["x_Member"], row["x_Department"], row["x_RequestCount"]) == ("dave", "eng", "4")
    assert (row["ProviderName"], row["ServiceName"], row["BillingAccountId"]) == ("OpenAI", "OpenAI API",
                                                                                   "ws_planted/openai")
    assert (row["ChargePeriodStart"], row["BillingPeriodStart"], row["BillingPeriodEnd"]) == (
        "2026-11-10T00:00:00Z", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    # The cache hit (billed 0) is in the dup feature's input row, with what it avoided.
    (hit,) = [r for r in rows if r["x_Feature"] == "dup" and r["x_TokenClass"] == "input"]
    assert (hit["x_AvoidedCost"], hit["x_CacheHits"], hit["x_RequestCount"]) == ("0.010000", "1", "4")
    assert hit["BilledCost"] == "0.015000"  # 3 billed requests x 2000 tokens at USD 2.50 / 1M


def test_negotiated_prices_are_effective_list_prices_stay_public():
    records = [r for r in planted() if r["feature"] == "chat"]
    for r in records:  # re-metered at the override: 500 x 2.00 + 100 x 8.00 = 1800 each
        r["cost_micros"] = 1800
    rows = rows_of(records, overrides={"openai/gpt-4o": {"input": "2.00", "output": "8.00"}})
    assert validate(list(COLUMNS), rows) == [] and reconcile(rows, records) == []
    (out,) = [r for r in rows if r["x_TokenClass"] == "output"]
    assert (out["ContractedUnitPrice"], out["ListUnitPrice"]) == ("8.000000", "10.000000")
    assert (out["EffectiveCost"], out["ListCost"]) == ("0.003200", "0.004000")


def test_grouping_by_department_or_customer_keeps_the_totals():
    records = planted()
    for by in ("department", "customer", "none"):
        rows = rows_of(records, by)
        assert validate(list(COLUMNS), rows) == [] and reconcile(rows, records) == []
        assert all(r["x_Member"] == "" for r in rows)
    assert {r["x_Department"] for r in rows_of(records, "department")} == {"eng"}
    assert len(rows_of(records, "department")) < len(rows_of(records))


def test_allocation_always_sums_to_the_record_cost():
    rnd = random.Random(3)
    for _ in range(2000):
        weights = [rnd.choice((0, rnd.randrange(1, 10**9))) for _ in range(5)]
        total = rnd.randrange(0, 10**6)
        parts = allocate(total, weights)
        assert sum(parts) == total and all(p >= 0 for p in parts)
        assert all(p == 0 for p, w in zip(parts, weights, strict=True) if w == 0) or not any(weights)
    assert allocate(7, [0, 0]) == [7, 0]
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]


@pytest.fixture
def good():
    return rows_of(planted())[0]


@pytest.mark.parametrize(("change", "message"), [
    ({"BilledCost": ""}, "BilledCost must not be null"),
    ({"BilledCost": "1e-3"}, "BilledCost is not a decimal"),
    ({"ChargePeriodStart": "2026-11-10 00:00"}, "not an ISO 8601 UTC datetime"),
    ({"BillingCurrency": "usd"}, "ISO 4217"),
    ({"ChargeCategory": "Usages"}, "ChargeCategory 'Usages' is not an allowed value"),
    ({"ChargeClass": "Refund"}, "ChargeClass must be null or 'Correction'"),
    ({"PricingQuantity": ""}, "PricingUnit must be null exactly when PricingQuantity is null"),
    ({"PricingUnit": "per million tokens"}, "does not follow UnitFormat"),
    ({"ChargeCategory": "Credit"}, "ConsumedQuantity/ConsumedUnit must be null unless ChargeCategory is Usage"),
    ({"SkuPriceId": ""}, "SkuPriceId must not be null on a Usage row"),
    ({"ListCost": "9.000000"}, "ListCost 9.000000 != ListUnitPrice x PricingQuantity"),
    ({"Tags": "[1]"}, "Tags is not a JSON object"),
    ({"ChargePeriodEnd": "2026-12-02T00:00:00Z"}, "outside the billing period"),
])
def test_the_validator_catches_each_rule(good, change, message):
    assert validate(list(COLUMNS), [good]) == []
    errors = validate(list(COLUMNS), [{**good, **change}])
    assert any(message in e for e in errors), errors


def test_the_validator_checks_columns():
    columns = [c for c in COLUMNS if c != "ServiceName"]
    assert "row 0: mandatory column ServiceName is missing" in validate(columns, [])
    assert any("neither a FOCUS column nor x_-prefixed" in e for e in validate([*COLUMNS, "TeamName"], []))
    assert any("comes after a custom column" in e for e in validate(["x_Team", *COLUMNS], []))
    assert len(MANDATORY) == 21


def test_reconciliation_catches_a_lost_micro_dollar():
    records = planted()
    rows = rows_of(records)
    rows[3] = {**rows[3], "BilledCost": str(Decimal(rows[3]["BilledCost"]) + Decimal("0.000001"))}
    assert reconcile(rows, records) == [f"billed_micros: export {TOTAL_SPEND + 1} != ledger {TOTAL_SPEND}"]
    with pytest.raises(ValueError):
        to_micros("0.0000001")
