"""Rollups table: spend counters per attribution scope and period.

Keys (see schema.ROLLUPS):
    pk = "<workspace>#D#<yyyy-mm-dd>[#<shard>]" | "<workspace>#M#<yyyy-mm>[#<shard>]"
                                        (workspace time zone; shard 1..WRITE_SHARDS-1, none for 0)
    sk = "<dimension>#<value>"          dimension in ROLLUP_DIMENSIONS; "total#all" for the workspace;
                                        value bounded to MAX_VALUE_BYTES (see bound_value)
    pk = "applied#<stream event id>", sk = "run"   run marker (TTL 7 days): the first record of a
                                        committed run of stream records; `last` names its last record
    pk = "poison", sk = "<stream event id>"        a ledger record that cannot be rolled up (TTL 30 d)

Access patterns:
    commit_run(run)                     one TransactWriteItems: the run marker (condition: new), one
                                        ADD per (scope, period) the run's records touch, summed in
                                        memory, and a poison item per unusable record
    by_dimension(ws, period, dim)       Query each write shard's pk, begins_with(sk, "<dim>#"),
                                        counters summed per value

Why write shards: every request of a workspace adds to the same `total#all` item of the same two
partition keys. Each committed run picks one of WRITE_SHARDS partition keys at random (and another
one when a concurrent run holds the same items), so a hot workspace spreads its writes and its
concurrent batches rarely contend; reads sum the shards (WRITE_SHARDS queries per report).

Extension points: a new counter goes into COUNTERS and `counters_of`; a new dimension into
ROLLUP_DIMENSIONS (the record field of the same name is its value).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meterline.config import Settings
from meterline.levers import LEVERS
from meterline.store import aws
from meterline.store.codec import from_item, paginate
from meterline.store.schema import ROLLUPS

ROLLUP_DIMENSIONS = ("key", "member", "department", "agent", "feature", "customer", "provider", "model", "template")
UNATTRIBUTED = "-"
# Sparse dimensions: most requests have no value, so no "-" row is kept for them (it would cost a
# write per request and say nothing the total does not).
SPARSE_DIMENSIONS = ("template",)
COUNTERS = ("cost_micros", "requests", "rejections", "input_tokens", "cache_read_tokens",
            "cache_write_tokens", "output_tokens", "estimated", "unpriced", "saved_micros",
            *(f"saved_{lever}" for lever in LEVERS),
            # Billed classes beyond the five token classes (#8): audio input and output tokens,
            # server-tool calls, tokens of extra iterations (Anthropic compaction / advisor), images
            # made by an image-generation tool.
            "billed_audio_tokens", "billed_tool_calls", "billed_iteration_tokens", "billed_images")
# Counters written even when zero, so every scope item carries them.
BASE_COUNTERS = tuple(n for n in COUNTERS if not n.startswith(("saved_", "billed_")))
MARKER_TTL_S = 7 * 86400  # > the stream's 24 h retention: a redelivery always finds its marker
POISON_TTL_S = 30 * 86400
WRITE_SHARDS = 4
# DynamoDB: a sort key is at most 1,024 bytes and a partition key 2,048. A dimension value is cut to
# MAX_VALUE_BYTES (keeping a hash of the whole value, so distinct long values stay distinct).
MAX_VALUE_BYTES = 256
MAX_WORKSPACE_BYTES = 512
MAX_TRANSACT_ITEMS = 100  # TransactWriteItems limit


def bound_value(value: str, limit: int = MAX_VALUE_BYTES) -> str:
    """`value` if it fits in `limit` UTF-8 bytes, else a prefix + "~" + 16 hex of its SHA-256."""
    raw = value.encode("utf-8")
    if len(raw) <= limit:
        return value
    digest = hashlib.sha256(raw).hexdigest()[:16]
    prefix = raw[: limit - 17].decode("utf-8", errors="ignore")
    return f"{prefix}~{digest}"


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
        "billed_audio_tokens": (int(record.get("input_audio", 0)) + int(record.get("cache_read_audio", 0))
                                + int(record.get("output_audio", 0))),
        "billed_images": sum(int(v) for v in (record.get("images") or {}).values()),
        "billed_tool_calls": sum(int(v) for v in (record.get("tool_calls") or {}).values()),
        "billed_iteration_tokens": int(record.get("iteration_tokens", 0)),
    }


def scopes_of(record: dict[str, Any]) -> list[str]:
    scopes = ["total#all"]
    for dim in ROLLUP_DIMENSIONS:
        value = record.get(dim)
        if not value and dim in SPARSE_DIMENSIONS:
            continue
        scopes.append(f"{dim}#{bound_value(str(value)) if value else UNATTRIBUTED}")
    return scopes


def period_pk(workspace_period: str, shard: int) -> str:
    """Shard 0 is the bare key (the layout before write shards existed), so old counters still count."""
    return workspace_period if shard == 0 else f"{workspace_period}#{shard}"


@dataclass(frozen=True)
class Contribution:
    """One ledger record's share of the rollups: which items it adds to, and what."""

    event_id: str
    periods: tuple[str, ...]  # "<workspace>#D#<day>", "<workspace>#M#<month>"
    scopes: tuple[str, ...]
    counters: dict[str, int]


@dataclass(frozen=True)
class Poison:
    """A ledger record that cannot be rolled up; kept (with its ledger keys) instead of blocking."""

    event_id: str
    ledger_keys: dict[str, str]
    error: str


Entry = Contribution | Poison


def contribution_of(event_id: str, record: dict[str, Any]) -> Contribution:
    """Raises (KeyError, ValueError, TypeError) for a record that cannot be rolled up."""
    workspace = str(record["workspace"])
    if not workspace or len(workspace.encode("utf-8")) > MAX_WORKSPACE_BYTES:
        raise ValueError("workspace id is empty or too long for a key")
    day, month = str(record["day"]), str(record["month"])
    if len(day) != 10 or len(month) != 7:
        raise ValueError("day/month are not yyyy-mm-dd / yyyy-mm")
    return Contribution(event_id, (f"{workspace}#D#{day}", f"{workspace}#M#{month}"),
                        tuple(scopes_of(record)), counters_of(record))


def poison_of(event_id: str, record: dict[str, Any], error: BaseException | str) -> Poison:
    keys = {k: bound_value(str(record[k]), 900) for k in ("pk", "sk", "request_id", "workspace") if k in record}
    return Poison(event_id, keys, bound_value(str(error) or type(error).__name__, 512))


@dataclass
class RunTotals:
    """A run's writes, summed in memory: one ADD per (period, scope)."""

    adds: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    poison: list[Poison] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        if isinstance(entry, Poison):
            self.poison.append(entry)
            return
        # Only the non-zero counters are summed (a record has a handful of ~20); every item still
        # carries all BASE_COUNTERS (0 when nothing added to them). 18 items per record: this loop is
        # the aggregator's hot spot (bench/rollups.py).
        nonzero = [(name, value) for name, value in entry.counters.items() if value]
        adds = self.adds
        for period in entry.periods:
            for scope in entry.scopes:
                totals = adds.get((period, scope))
                if totals is None:
                    totals = adds[(period, scope)] = dict.fromkeys(BASE_COUNTERS, 0)
                for name, value in nonzero:
                    totals[name] = totals.get(name, 0) + value

    def items_with(self, entry: Entry) -> int:
        """Transaction items this run would need with `entry` added (marker included)."""
        new = 1 if isinstance(entry, Poison) else sum(
            1 for p in entry.periods for s in entry.scopes if (p, s) not in self.adds)
        return 1 + len(self.adds) + len(self.poison) + new


def run_end(entries: Sequence[Entry], start: int = 0, max_items: int = MAX_TRANSACT_ITEMS) -> int:
    """End of the longest run from `start` whose writes fit in one transaction (at least one entry)."""
    totals = RunTotals()
    for i in range(start, len(entries)):
        if i > start and totals.items_with(entries[i]) > max_items:
            return i
        totals.add(entries[i])
    return len(entries)


class AlreadyApplied(Exception):
    """The run's first record was committed before: `last` is the last record of that commit."""

    def __init__(self, last: str):
        super().__init__(last)
        self.last = last


class RollupStore:
    def __init__(self, settings: Settings, shards: int = WRITE_SHARDS, max_items: int = MAX_TRANSACT_ITEMS):
        self.settings = settings
        self.max_items = max_items
        self.table = settings.table(ROLLUPS)
        self.shards = shards
        self.units = 0  # write units this store consumed (TransactWriteItems: 2 per item <= 1 KB)
        self.transactions = 0

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    @staticmethod
    def totals_of(run: Sequence[Entry]) -> RunTotals:
        totals = RunTotals()
        for entry in run:
            totals.add(entry)
        return totals

    def transact_items(self, run: Sequence[Entry], shard: int, now: float | None = None,
                       totals: RunTotals | None = None) -> list[dict[str, Any]]:
        totals = totals or self.totals_of(run)
        now = time.time() if now is None else now
        items: list[dict[str, Any]] = [{
            "Put": {
                "TableName": self.table,
                "Item": {
                    "pk": {"S": f"applied#{run[0].event_id}"},
                    "sk": {"S": "run"},
                    "last": {"S": run[-1].event_id},
                    "count": {"N": str(len(run))},
                    "expires_at": {"N": str(int(now) + MARKER_TTL_S)},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }]
        for (period, scope), counters in totals.adds.items():
            names = sorted(counters)
            items.append({
                "Update": {
                    "TableName": self.table,
                    "Key": {"pk": {"S": period_pk(period, shard)}, "sk": {"S": scope}},
                    "UpdateExpression": "ADD " + ", ".join(f"#{n} :{n}" for n in names),
                    "ExpressionAttributeNames": {f"#{n}": n for n in names},
                    "ExpressionAttributeValues": {f":{n}": {"N": str(counters[n])} for n in names},
                }
            })
        for poison in totals.poison:
            items.append({
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": "poison"},
                        "sk": {"S": poison.event_id},
                        "error": {"S": poison.error},
                        "ledger": {"M": {k: {"S": v} for k, v in poison.ledger_keys.items()}},
                        "expires_at": {"N": str(int(now) + POISON_TTL_S)},
                    },
                }
            })
        return items

    def commit_run(self, run: Sequence[Entry], attempts: int = 6) -> None:
        """Apply a run of stream records atomically, once. Raises AlreadyApplied if its first record
        was the first of an earlier commit; raises the DynamoDB error if it cannot be written."""
        ddb = self._ddb
        totals = self.totals_of(run)  # summed once; a retry only moves to another shard
        for attempt in range(attempts):
            shard = random.randrange(self.shards)
            items = self.transact_items(run, shard, totals=totals)
            try:
                ddb.transact_write_items(TransactItems=items)
                self.units += 2 * len(items)
                self.transactions += 1
                return
            except ddb.exceptions.TransactionCanceledException as exc:
                reasons = exc.response.get("CancellationReasons", [])
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    raise AlreadyApplied(self._marker_last(run[0].event_id)) from exc
                codes = {r.get("Code") for r in reasons}
                # A concurrent run holds one of the items: another shard, after a short pause.
                if not codes & {"TransactionConflict", "ThrottlingError"} or attempt == attempts - 1:
                    raise
            except ddb.exceptions.TransactionInProgressException:
                if attempt == attempts - 1:
                    raise
            time.sleep(min(0.02 * 2**attempt, 0.5) * random.random())

    def _marker_last(self, event_id: str) -> str:
        item = self._ddb.get_item(TableName=self.table, Key={"pk": {"S": f"applied#{event_id}"}, "sk": {"S": "run"}},
                                  ConsistentRead=True).get("Item")
        return item["last"]["S"] if item else event_id

    def by_dimension(self, workspace: str, period: str, dimension: str) -> list[dict[str, Any]]:
        """period: "D#yyyy-mm-dd" or "M#yyyy-mm". One row per value, counters summed over shards."""
        rows: dict[str, dict[str, Any]] = {}
        for shard in range(self.shards):
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
                "ExpressionAttributeValues": {":pk": {"S": period_pk(f"{workspace}#{period}", shard)},
                                              ":p": {"S": f"{dimension}#"}},
            }
            for item in paginate(self._ddb.query, **kwargs):
                row = rows.setdefault(item["sk"], {"pk": f"{workspace}#{period}", "sk": item["sk"],
                                                   "value": item["sk"].split("#", 1)[1]})
                for name, value in item.items():
                    if name not in ("pk", "sk") and isinstance(value, int):
                        row[name] = row.get(name, 0) + value
        return list(rows.values())

    def scope_totals(self, workspace: str, period: str, scope: str) -> dict[str, int]:
        """One scope's counters ("<dimension>#<value>"), summed over shards: one BatchGetItem."""
        keys = [{"pk": {"S": period_pk(f"{workspace}#{period}", shard)}, "sk": {"S": scope}}
                for shard in range(self.shards)]
        request: dict[str, Any] = {self.table: {"Keys": keys}}
        totals: dict[str, int] = {}
        while request:
            page = self._ddb.batch_get_item(RequestItems=request)
            for item in page.get("Responses", {}).get(self.table, []):
                for name, value in from_item(item).items():
                    if name not in ("pk", "sk") and isinstance(value, int):
                        totals[name] = totals.get(name, 0) + value
            request = page.get("UnprocessedKeys") or {}
        return totals

    def poisoned(self, limit: int = 100) -> list[dict[str, Any]]:
        """Ledger records that could not be rolled up (newest stream position last)."""
        response = self._ddb.query(TableName=self.table, KeyConditionExpression="pk = :pk",
                                   ExpressionAttributeValues={":pk": {"S": "poison"}}, Limit=limit)
        return [from_item(item) for item in response.get("Items", [])]
