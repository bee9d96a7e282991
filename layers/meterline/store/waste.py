"""Waste table: the scores of one workspace-day, one item per scope.

Keys (see schema.WASTE):
    pk = "<workspace>#<yyyy-mm-dd>"   the scored ledger partition (UTC day)
    sk = "total#all"                  the workspace as a whole
         "<dimension>#<value>"        member, agent, feature, customer, key ("-" = unattributed)
         "baseline#p95"               prompt-token p95 per route that day (tomorrow's W7 baseline)
    expires_at                        TTL (METERLINE_WASTE_RETENTION_DAYS, default 400)

Attributes of a scope item: grade, score, spend_micros, waste_micros (numbers, for reading without
decoding) and `report` (the scope's full report: signals with $, count and example request ids).

Access patterns:
    put_day(workspace, day, items)   BatchWriteItem puts (a re-score of the day replaces its items)
    day(workspace, day)              Query pk (a day's scores)
    baseline(workspace, day)         GetItem pk, "baseline#p95"
Only the scoring job (scheduled function, `meterline waste`) writes; the admin API reads.
"""

from __future__ import annotations

import json
import time
from typing import Any

from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import from_item, paginate, to_item
from meterline.store.schema import WASTE

RETENTION_DAYS = 400
BASELINE_SK = "baseline#p95"


class WasteStore:
    def __init__(self, settings: Settings, retention_days: int = RETENTION_DAYS):
        self.settings = settings
        self.table = settings.table(WASTE)
        self.retention_days = retention_days

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    def put_day(self, workspace: str, day: str, scopes: dict[str, dict[str, Any]],
                baseline: dict[str, int]) -> int:
        """Write a day's scope reports (sk -> report dict) and its p95 baseline; returns the write calls."""
        pk = f"{workspace}#{day}"
        expires = int(time.time()) + self.retention_days * 86400
        items = [{"pk": pk, "sk": sk, "grade": r["grade"], "score": r["score"], "spend_micros": r["spend_micros"],
                  "waste_micros": r["waste_micros"], "report": json.dumps(r, separators=(",", ":")),
                  "expires_at": expires} for sk, r in scopes.items()]
        items.append({"pk": pk, "sk": BASELINE_SK, "p95": json.dumps(baseline, sort_keys=True), "expires_at": expires})
        calls = 0
        for start in range(0, len(items), 25):
            request = {self.table: [{"PutRequest": {"Item": to_item(i)}} for i in items[start:start + 25]]}
            while request:
                calls += 1
                response = self._ddb.batch_write_item(RequestItems=request)
                request = response.get("UnprocessedItems") or {}
                if request:
                    time.sleep(0.05)
        return calls

    def day(self, workspace: str, day: str) -> dict[str, dict[str, Any]]:
        """sk -> report dict for every scope of the day (empty when the day was never scored)."""
        out: dict[str, dict[str, Any]] = {}
        for item in paginate(self._ddb.query, TableName=self.table, KeyConditionExpression="pk = :pk",
                             ExpressionAttributeValues={":pk": {"S": f"{workspace}#{day}"}}):
            if item["sk"] != BASELINE_SK:
                out[item["sk"]] = json.loads(item["report"])
        return out

    def baseline(self, workspace: str, day: str) -> dict[str, int] | None:
        found = self._ddb.get_item(TableName=self.table, Key={"pk": {"S": f"{workspace}#{day}"},
                                                              "sk": {"S": BASELINE_SK}}).get("Item")
        return {k: int(v) for k, v in json.loads(from_item(found)["p95"]).items()} if found else None
