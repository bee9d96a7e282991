"""Ledger table: one immutable record per request that reached a provider, and per rejection.

Keys (see schema.LEDGER):
    pk = "<workspace>#<yyyy-mm-dd>"   the request's day in UTC: spreads a workspace over partitions
    sk = "<epoch ms, 13 digits>#<request id>"
    expires_at                          TTL: retention (METERLINE_LEDGER_RETENTION_DAYS)

Access patterns:
    put(record)                PutItem, condition: new (a retried write never duplicates; the
                               ledger replay of `ledger_write_failed` lines relies on it: meterline.replay)
    query_day(workspace, day)  Query pk, time-ordered either way, optionally filtered to one request
                               (reports, `meterline requests`, the MCP server's drill-downs, waste scoring, exports)
    query_request(ws, id)      Query pk AND sk BETWEEN the id's start time -60 s / +900 s (the id
                               carries it), filtered to the request: `requests show`, bounded reads
    recent(workspace, day, n)  Query pk, newest first, at most n records (alert e-mails)
    stream_day(workspace, day) the same Query on the lean client (ddb_http): a whole partition for
                               waste scoring, ~10x less CPU per record than boto3's parser

The table's NEW_IMAGE stream feeds the rollup aggregator (meterline.rollup), so the request
path pays for exactly one write however many scopes a request is attributed to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import from_item, paginate, to_item
from meterline.store.ddb_http import DynamoError, DynamoHttp
from meterline.store.schema import LEDGER

_day_memo: tuple[int, str] = (-1, "")  # (epoch second, its UTC day): the requests of a second share it


# A request id carries its start time: "req_" + 11 hex digits of epoch milliseconds + 16 random hex
# digits. A lookup by id then reads the ledger only around that time (`LedgerStore.query_request`),
# not whole day partitions. Ids from before (24 random hex digits) are still found, by day.
REQUEST_ID_PREFIX = "req_"
_TS_HEX, _RANDOM_HEX = 11, 16
# Every record of a request (its own, failed-over attempts', side calls') is stamped at or after its
# start and before the data plane's 900 s ceiling; the margin before covers a clock stepped back.
REQUEST_WINDOW_MS = (-60_000, 900_000)
# A record's {budget pool id: cost} for the budgets it settled through the ledger (store/budgets.py).
POOLS_FIELD = "budget_pools"


def new_request_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{REQUEST_ID_PREFIX}{ms:0{_TS_HEX}x}{os.urandom(_RANDOM_HEX // 2).hex()}"


def request_id_ms(request_id: str) -> int | None:
    """The start time a request id carries, or None (an older id, or not one of ours)."""
    digits = request_id[len(REQUEST_ID_PREFIX):]
    if not request_id.startswith(REQUEST_ID_PREFIX) or len(digits) != _TS_HEX + _RANDOM_HEX:
        return None
    try:
        int(digits, 16)
    except ValueError:
        return None
    return int(digits[:_TS_HEX], 16)


def ledger_keys(workspace: str, ts_ms: int, request_id: str) -> dict[str, str]:
    global _day_memo
    second = ts_ms // 1000
    memo = _day_memo  # one read: a tuple swapped whole, safe across threads
    if memo[0] != second:
        memo = _day_memo = (second, datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%d"))
    return {"pk": f"{workspace}#{memo[1]}", "sk": f"{ts_ms:013d}#{request_id}"}


class LedgerStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(LEDGER)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    def _put_request(self, record: dict[str, Any]) -> dict[str, Any]:
        item = {**record, **ledger_keys(record["workspace"], record["ts"], record["request_id"])}
        item["expires_at"] = record["ts"] // 1000 + self.settings.ledger_retention_days * 86400
        # Condition: new. A retried write of the same record is a no-op, never a duplicate.
        return {"TableName": self.table, "Item": to_item(item), "ConditionExpression": "attribute_not_exists(sk)"}

    def put(self, record: dict[str, Any]) -> None:
        self.put_new(record)

    def put_new(self, record: dict[str, Any]) -> bool:
        """Write a record if its key is new: True if written now, False if it was already there (a
        retried write, or a replay of a write that had in fact applied: meterline.replay)."""
        try:
            self._ddb.put_item(**self._put_request(record))
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    async def put_async(self, record: dict[str, Any], client: DynamoHttp) -> None:
        """The request path's write: the lean async client, no thread hop (see ddb_http)."""
        try:
            await client.call("PutItem", self._put_request(record))
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise

    def query_day(self, workspace: str, day: str, *, newest_first: bool = False,
                  request_id: str | None = None) -> Iterator[dict[str, Any]]:
        """One UTC day of a workspace, time-ordered; `request_id` keeps only that request's records
        (its own and its failed-over attempts')."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"{workspace}#{day}"}},
            "ScanIndexForward": not newest_first,
        }
        if request_id is not None:
            kwargs["FilterExpression"] = "request_id = :r OR parent_request_id = :r"
            kwargs["ExpressionAttributeValues"][":r"] = {"S": request_id}
        yield from paginate(self._ddb.query, **kwargs)

    def pool_costs(self, workspace: str, pool_id: str, start_ms: int, end_ms: int) -> list[tuple[str, int]]:
        """(request id, cost) of each record from `start_ms` to `end_ms` that names budget pool
        `pool_id` (a request settled through the ledger: store/budgets.py `defer`); the sweeper
        folds an expired pool from them. Reads only that range of the workspace's ledger."""
        days = sorted({datetime.fromtimestamp(t // 1000, tz=UTC).strftime("%Y-%m-%d") for t in (start_ms, end_ms)})
        out = []
        for day in days:
            kwargs: dict[str, Any] = {
                "TableName": self.table, "ConsistentRead": True,
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :a AND :b",
                "FilterExpression": "attribute_exists(#bp.#p)",
                "ProjectionExpression": "request_id, #bp.#p",
                "ExpressionAttributeNames": {"#bp": POOLS_FIELD, "#p": pool_id},
                "ExpressionAttributeValues": {":pk": {"S": f"{workspace}#{day}"}, ":a": {"S": f"{start_ms:013d}"},
                                              ":b": {"S": f"{end_ms + 1:013d}"}},
            }
            for item in paginate(self._ddb.query, **kwargs):
                out.append((item["request_id"], int(item[POOLS_FIELD][pool_id])))
        return out

    def query_request(self, workspace: str, request_id: str) -> list[dict[str, Any]] | None:
        """A request's records (its own and its attempts') read from the time window its id carries:
        one bounded Query per UTC day the window touches. None for an id that carries no time."""
        started = request_id_ms(request_id)
        if started is None:
            return None
        lo, hi = started + REQUEST_WINDOW_MS[0], started + REQUEST_WINDOW_MS[1]
        days = sorted({datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%d") for t in (lo, started, hi)})
        found: list[dict[str, Any]] = []
        for day in days:
            found.extend(paginate(
                self._ddb.query, TableName=self.table,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                FilterExpression="request_id = :r OR parent_request_id = :r",
                ExpressionAttributeValues={":pk": {"S": f"{workspace}#{day}"}, ":lo": {"S": f"{lo:013d}"},
                                           ":hi": {"S": f"{hi:013d}~"}, ":r": {"S": request_id}}))
        return found

    def recent(self, workspace: str, day: str, limit: int) -> Iterator[dict[str, Any]]:
        """The day's newest `limit` records, newest first: a bounded read whatever the traffic."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"{workspace}#{day}"}},
            "ScanIndexForward": False,
        }
        seen = 0
        while seen < limit:
            page = self._ddb.query(**kwargs, Limit=min(1000, limit - seen))
            for item in page.get("Items", []):
                seen += 1
                yield from_item(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    def stream_day(self, workspace: str, day: str, read_timeout: float = 60.0) -> Iterator[dict[str, Any]]:
        """Every record of a workspace-day, page by page, in time order: the lean client on a private
        event loop (callers are synchronous batch jobs). Never a Scan."""
        import asyncio

        client = DynamoHttp(self.settings, read_timeout=read_timeout)
        loop = asyncio.new_event_loop()
        payload: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"{workspace}#{day}"}},
        }
        try:
            while True:
                page = loop.run_until_complete(client.call("Query", payload))
                for item in page.get("Items", []):
                    yield from_item(item)
                if "LastEvaluatedKey" not in page:
                    return
                payload["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        finally:
            loop.run_until_complete(client.aclose())
            loop.close()
