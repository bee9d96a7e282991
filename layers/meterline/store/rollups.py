"""Rollups table: spend counters per attribution scope and period.

Keys (see schema.ROLLUPS):
    pk = "<workspace>#D#<yyyy-mm-dd>" | "<workspace>#M#<yyyy-mm>"   (workspace time zone)
    sk = "<dimension>#<value>"   dimension in ROLLUP_DIMENSIONS; "total#all" for the workspace
    pk = "applied#<request id>", sk = "marker"   idempotency marker (TTL 7 days)

Access patterns:
    apply(record)                       one TransactWriteItems: the marker (condition: new) and an
                                        ADD per scope and period; a redelivered stream record
                                        fails the marker condition and changes nothing
    by_dimension(ws, period, dim)       Query pk, begins_with(sk, "<dim>#")
"""

from __future__ import annotations

import time
from typing import Any

from meterline.config import Settings
from meterline.levers import LEVERS
from meterline.store import aws
from meterline.store.codec import paginate
from meterline.store.schema import ROLLUPS

ROLLUP_DIMENSIONS = ("key", "member", "department", "agent", "feature", "customer", "provider", "model")
UNATTRIBUTED = "-"
COUNTERS = ("cost_micros", "requests", "rejections", "input_tokens", "cache_read_tokens",
            "cache_write_tokens", "output_tokens", "estimated", "unpriced", "saved_micros",
            *(f"saved_{lever}" for lever in LEVERS))
MARKER_TTL_S = 7 * 86400


def counters_of(record: dict[str, Any]) -> dict[str, int]:
    rejected = record.get("outcome") == "rejected"
    return {
        "cost_micros": int(record.get("cost_micros", 0)),
        "requests": 0 if rejected else 1,
        "rejections": 1 if rejected else 0,
        "input_tokens": int(record.get("input_uncached", 0)),
        "cache_read_tokens": int(record.get("cache_read", 0)),
        "cache_write_tokens": int(record.get("cache_write_5m", 0)) + int(record.get("cache_write_1h", 0)),
        "output_tokens": int(record.get("output", 0)),
        "estimated": 1 if record.get("estimated") else 0,
        "unpriced": 1 if record.get("unpriced") else 0,
        "saved_micros": int(record.get("saved_micros", 0)),
        **{f"saved_{lever}": int((record.get("savings") or {}).get(lever, 0)) for lever in LEVERS},
    }


def scopes_of(record: dict[str, Any]) -> list[str]:
    scopes = ["total#all"]
    for dim in ROLLUP_DIMENSIONS:
        value = record.get(dim)
        scopes.append(f"{dim}#{value if value else UNATTRIBUTED}")
    return scopes


class RollupStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(ROLLUPS)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    def apply(self, record: dict[str, Any]) -> bool:
        """Add one ledger record to every rollup it belongs to. False if it was applied before."""
        counters = counters_of(record)
        workspace = record["workspace"]
        periods = [f"{workspace}#D#{record['day']}", f"{workspace}#M#{record['month']}"]
        # Savings counters are added only when non-zero: most requests use no lever.
        names = [n for n in COUNTERS if counters[n] or not n.startswith("saved_")]
        add_expr = "ADD " + ", ".join(f"{name} :{name}" for name in names)
        add_values = {f":{name}": {"N": str(counters[name])} for name in names}
        items: list[dict[str, Any]] = [{
            "Put": {
                "TableName": self.table,
                "Item": {
                    "pk": {"S": f"applied#{record['request_id']}"},
                    "sk": {"S": "marker"},
                    "expires_at": {"N": str(int(time.time()) + MARKER_TTL_S)},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }]
        for period in periods:
            for scope in scopes_of(record):
                items.append({
                    "Update": {
                        "TableName": self.table,
                        "Key": {"pk": {"S": period}, "sk": {"S": scope}},
                        "UpdateExpression": add_expr,
                        "ExpressionAttributeValues": add_values,
                    }
                })
        try:
            self._ddb.transact_write_items(TransactItems=items)
        except self._ddb.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons", [])
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            raise
        return True

    def by_dimension(self, workspace: str, period: str, dimension: str) -> list[dict[str, Any]]:
        """period: "D#yyyy-mm-dd" or "M#yyyy-mm"."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": {"S": f"{workspace}#{period}"}, ":p": {"S": f"{dimension}#"}},
        }
        out = []
        for row in paginate(self._ddb.query, **kwargs):
            row["value"] = row["sk"].split("#", 1)[1]
            out.append(row)
        return out
