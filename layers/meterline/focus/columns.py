"""The export's columns (FOCUS 1.2, FinOps-Open-Cost-and-Usage-Spec tag v1.2, specification/columns).

Mandatory in 1.2 (all 21 present; the five in NULLABLE_MANDATORY may hold nulls). The conditional
columns we always fill for token usage (SkuId, SkuPriceId, ConsumedQuantity, ...) follow, then the
custom `x_` columns, after every FOCUS column as the spec recommends.
"""

from __future__ import annotations

MANDATORY = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
)
NULLABLE_MANDATORY = frozenset({"BillingAccountName", "ChargeClass", "ChargeDescription", "PricingQuantity",
                                "PricingUnit"})
CONDITIONAL = (
    "ChargeFrequency", "ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice", "ListUnitPrice",
    "PricingCategory", "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId",
    "SubAccountId", "SubAccountName", "Tags",
)
FOCUS_COLUMNS = frozenset(MANDATORY) | frozenset(CONDITIONAL)
CUSTOM = (
    "x_Member", "x_Department", "x_Feature", "x_Customer", "x_Agent", "x_Model", "x_TokenClass",
    "x_RequestCount", "x_CacheHits", "x_EstimatedRequests", "x_AvoidedCost",
)
COLUMNS = (*sorted((*MANDATORY, *CONDITIONAL)), *CUSTOM)

COST_COLUMNS = ("BilledCost", "ContractedCost", "EffectiveCost", "ListCost")
DECIMAL_COLUMNS = (*COST_COLUMNS, "ConsumedQuantity", "ContractedUnitPrice", "ListUnitPrice", "PricingQuantity",
                   "x_AvoidedCost")
DATETIME_COLUMNS = ("BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart")
JSON_COLUMNS = ("SkuPriceDetails", "Tags")
CHARGE_CATEGORIES = frozenset({"Usage", "Purchase", "Tax", "Credit", "Adjustment"})
CHARGE_FREQUENCIES = frozenset({"One-Time", "Recurring", "Usage-Based"})
PRICING_CATEGORIES = frozenset({"Standard", "Dynamic", "Committed", "Other"})
SERVICE_CATEGORIES = frozenset({
    "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases", "Developer Tools",
    "Multicloud", "Identity", "Integration", "Internet of Things", "Management and Governance", "Media",
    "Migration", "Mobile", "Networking", "Security", "Storage", "Web", "Other",
})
