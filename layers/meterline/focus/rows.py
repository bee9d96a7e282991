"""Ledger records -> FOCUS 1.2 rows (pure, integers until the last step).

One row per (charge day (UTC), provider account, workspace, SKU price, token class, attribution).
A record's cost is split over its token classes by the largest-remainder method, weighted by
tokens x the unit price it was metered at, so the classes of every record add up to exactly its
ledger cost and an export's total equals the ledger's to the micro-dollar (validate.reconcile).

    BilledCost = ContractedCost = EffectiveCost   the ledger's cost (workspace price overrides are
                                                  the contracted price; pay-as-you-go: no commitments)
    ListCost                                      the public catalog price (no override, standard
                                                  tier) x tokens, rounded once per row
    PricingUnit "1000000 Tokens", PricingQuantity tokens / 1e6; ConsumedUnit "Tokens", ConsumedQuantity
    SkuId        "<catalog>:<model>:<token class>"       (e.g. openai:gpt-4o:input-cache-read)
    SkuPriceId   "<SkuId>:<price effective date>:<service tier>:<micro-USD per 1M tokens>"
    BillingPeriod the calendar month (UTC) of the charge day; BillingAccountId "<workspace>/<provider>"
    x_AvoidedCost the levers' savings (cache, routing, compression), on the request's input row
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from meterline.money import micros_to_usd, round_scaled
from meterline.pricing.catalog import Catalog, PriceGap, Rates

# (class, ledger field, Rates attribute, SkuMeter)
TOKEN_CLASSES = (
    ("input", "input_uncached", "input", "Input Tokens"),
    ("input-cache-read", "cache_read", "cache_read", "Cached Input Tokens"),
    ("input-cache-write-5m", "cache_write_5m", "cache_write_5m", "Cache Write Tokens (5 minutes)"),
    ("input-cache-write-1h", "cache_write_1h", "cache_write_1h", "Cache Write Tokens (1 hour)"),
    ("output", "output", "output", "Output Tokens"),
)
ATTRIBUTION = ("member", "department", "feature", "customer", "agent")
GROUPINGS = {"all": ATTRIBUTION, "department": ("department",), "customer": ("customer",), "none": ()}
# catalog namespace -> (InvoiceIssuerName, ProviderName, PublisherName, ServiceName)
PROVIDERS = {
    "openai": ("OpenAI", "OpenAI", "OpenAI", "OpenAI API"),
    "anthropic": ("Anthropic", "Anthropic", "Anthropic", "Claude API"),
    "gemini": ("Google", "Google", "Google", "Gemini API"),
    "bedrock": ("Amazon Web Services", "Amazon Web Services", "Amazon", "Amazon Bedrock"),
    "azure": ("Microsoft", "Microsoft", "OpenAI", "Azure OpenAI"),
    "sim": ("Meterline", "Meterline", "Meterline", "Meterline Simulator"),
}


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split `total` into integer parts proportional to `weights` that sum exactly to `total`
    (largest remainder; ties to the earlier part). All weight 0: everything on the first part."""
    s = sum(weights)
    if s == 0:
        return [total] + [0] * (len(weights) - 1)
    parts = [total * w // s for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % s), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _ts(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _quantity(tokens: int) -> str:
    whole, frac = divmod(tokens, 1_000_000)
    return f"{whole}.{frac:06d}"


@dataclass
class _Row:
    key: tuple[Any, ...]
    fields: dict[str, Any]
    tokens: int = 0
    effective: int = 0
    list_scaled: int = 0  # tokens x list rate, rounded once per row
    list_rate: int | None = None
    rate: int | None = None
    requests: int = 0
    cache_hits: int = 0
    estimated: int = 0
    avoided: int = 0


@dataclass
class FocusBuilder:
    """Feed ledger records with `add`, then `rows()`. `catalog`: the workspace's (overrides applied),
    `list_catalog`: the public list prices."""

    catalog: Catalog
    list_catalog: Catalog
    by: str = "all"
    _rows: dict[tuple[Any, ...], _Row] = field(default_factory=dict)
    ledger_micros: int = 0
    ledger_saved: int = 0
    records: int = 0

    def _pricing(self, catalog: Catalog, model: str) -> Any:
        return catalog.resolve(model) or catalog.find_by_name(model.rsplit("/", 1)[-1])

    def add(self, r: dict[str, Any]) -> None:
        self.records += 1
        cost = int(r.get("cost_micros", 0))
        saved = int(r.get("saved_micros", 0) or 0)
        self.ledger_micros += cost
        self.ledger_saved += saved
        day = datetime.fromtimestamp(int(r["ts"]) / 1000, tz=UTC).date()  # the ledger partition's UTC day
        model = str(r.get("priced_as") or r.get("model") or "unknown/unknown")
        namespace, _, name = model.partition("/")
        provider = str(r.get("provider") or namespace)
        pricing = self._pricing(self.catalog, model)
        list_pricing = self._pricing(self.list_catalog, model)
        prompt = sum(int(r.get(f, 0)) for f in ("input_uncached", "cache_read", "cache_write_5m", "cache_write_1h"))
        tier = r.get("service_tier")
        point = pricing.at(day) if pricing else None
        rates: Rates | None = None
        if point is not None:
            try:
                rates = point.rates_for(prompt, tier)
            except PriceGap:  # no price for that tier: standard rates weigh the split (the cost is the ledger's)
                rates = point.rates_for(prompt, None)
        list_point = list_pricing.at(day) if list_pricing else None
        list_rates = list_point.rates_for(prompt, None) if list_point else None
        tokens = [int(r.get(f, 0)) for _, f, _, _ in TOKEN_CLASSES]
        weights = [t * (getattr(rates, attr) if rates else 1) for t, (_, _, attr, _) in zip(tokens, TOKEN_CLASSES,
                                                                                           strict=True)]
        shares = allocate(cost, weights)
        attribution = tuple(str(r.get(d) or "") for d in GROUPINGS[self.by])
        sku_base = f"{namespace}:{name}"
        for i, (cls, _, attr, meter) in enumerate(TOKEN_CLASSES):
            carries_savings = i == 0 and saved
            if not tokens[i] and not shares[i] and not carries_savings:
                continue
            rate = getattr(rates, attr) if rates else None
            list_rate = getattr(list_rates, attr) if list_rates else None
            sku = f"{sku_base}:{cls}"
            price_id = (f"{sku}:{point.effective.isoformat()}:{tier or 'standard'}:{rate}" if point
                        else f"{sku}:unpriced")
            key = (day, r["workspace"], provider, price_id, attribution)
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = _Row(key, {
                    "day": day, "workspace": r["workspace"], "provider": provider, "namespace": namespace,
                    "model": model, "class": cls, "meter": meter, "sku": sku, "price_id": price_id, "tier": tier,
                    "effective_date": point.effective.isoformat() if point else None,
                    "source": point.source if point else None,
                    "attribution": dict(zip(GROUPINGS[self.by], attribution, strict=True)),
                }, rate=rate, list_rate=list_rate)
            row.tokens += tokens[i]
            row.effective += shares[i]
            row.requests += 1
            row.cache_hits += 1 if r.get("outcome") == "cache_hit" else 0
            row.estimated += 1 if r.get("estimated") else 0
            if carries_savings:
                row.avoided += saved

    def rows(self) -> list[dict[str, str]]:
        out = []
        for row in sorted(self._rows.values(), key=lambda x: tuple(str(k) for k in x.key)):
            f = row.fields
            day: date = f["day"]
            month = day.replace(day=1)
            next_month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
            issuer, provider_name, publisher, service = PROVIDERS.get(
                f["provider"], PROVIDERS.get(f["namespace"], (f["provider"], f["provider"], f["provider"],
                                                              f"{f['provider']} API")))
            if f["namespace"] == "bedrock" and "anthropic" in f["model"]:
                publisher = "Anthropic"
            list_cost = round_scaled(row.tokens * row.list_rate) if row.list_rate is not None else row.effective
            attribution = f["attribution"]
            details = {"TokenClass": f["class"], "ServiceTier": f["tier"] or "standard", "PriceSource": f["source"],
                       "PriceEffective": f["effective_date"]}
            out.append({
                "BilledCost": micros_to_usd(row.effective),
                "BillingAccountId": f"{f['workspace']}/{f['provider']}",
                "BillingAccountName": f"{f['provider']} ({f['workspace']})",
                "BillingCurrency": "USD",
                "BillingPeriodEnd": _ts(next_month),
                "BillingPeriodStart": _ts(month),
                "ChargeCategory": "Usage",
                "ChargeClass": "",
                "ChargeDescription": f"{f['model']} {f['meter'].lower()}",
                "ChargeFrequency": "Usage-Based",
                "ChargePeriodEnd": _ts(day + timedelta(days=1)),
                "ChargePeriodStart": _ts(day),
                "ConsumedQuantity": str(row.tokens),
                "ConsumedUnit": "Tokens",
                "ContractedCost": micros_to_usd(row.effective),
                "ContractedUnitPrice": micros_to_usd(row.rate) if row.rate is not None else "",
                "EffectiveCost": micros_to_usd(row.effective),
                "InvoiceIssuerName": issuer,
                "ListCost": micros_to_usd(list_cost),
                "ListUnitPrice": micros_to_usd(row.list_rate) if row.list_rate is not None else "",
                "PricingCategory": "Standard",
                "PricingQuantity": _quantity(row.tokens),
                "PricingUnit": "1000000 Tokens",
                "ProviderName": provider_name,
                "PublisherName": publisher,
                "ServiceCategory": "AI and Machine Learning",
                "ServiceName": service,
                "ServiceSubcategory": "Generative AI",
                "SkuId": f["sku"],
                "SkuMeter": f["meter"],
                "SkuPriceDetails": json.dumps(details, sort_keys=True),
                "SkuPriceId": f["price_id"],
                "SubAccountId": f["workspace"],
                "SubAccountName": f["workspace"],
                "Tags": json.dumps({f"meterline:{k}": v for k, v in sorted(attribution.items()) if v},
                                   sort_keys=True),
                "x_Member": attribution.get("member", ""),
                "x_Department": attribution.get("department", ""),
                "x_Feature": attribution.get("feature", ""),
                "x_Customer": attribution.get("customer", ""),
                "x_Agent": attribution.get("agent", ""),
                "x_Model": f["model"],
                "x_TokenClass": f["class"],
                "x_RequestCount": str(row.requests),
                "x_CacheHits": str(row.cache_hits),
                "x_EstimatedRequests": str(row.estimated),
                "x_AvoidedCost": micros_to_usd(row.avoided),
            })
        return out


def build(records: Iterable[dict[str, Any]], catalog: Catalog, list_catalog: Catalog, by: str = "all",
          ) -> FocusBuilder:
    builder = FocusBuilder(catalog, list_catalog, by)
    for record in records:
        builder.add(record)
    return builder
