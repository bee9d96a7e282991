"""Replay of what the gateway could not write: `ledger_write_failed` log lines back into the ledger,
exactly once, and `budget_settle_failed` lines back onto the budget counters.

When the gateway cannot write a ledger record after the provider answered (store unavailable past
the client's retries), it logs one structured line, `message = "ledger_write_failed"`, carrying the
whole record (gateway/pipeline.py, proxy.py, semantic.py). On AWS a CloudWatch Logs subscription
filter on the gateway's log group sends exactly those lines to the replay function
(functions/replay/handler.py; infra_cdk/replay.py), which calls `replay` below.

Idempotent by construction: a record's ledger key is a function of the record (workspace, ts,
request id: store/ledger.py `ledger_keys`) and the write is conditional on that key being new. So
a *spurious* failure, where the gateway timed out but the store applied its write anyway, replays as
a duplicate (nothing written), and a replayed or redelivered line is written at most once. Rollups
come from the ledger table's stream, which sees only the one write that created the item, so they
count each request once too.

Outcomes, counted per log line: `replayed` (written now), `duplicates` (already in the ledger) and
`unreplayable` (not a record we can write: malformed line, missing key fields, a value DynamoDB
refuses); each unreplayable line goes to the dead-letter sink with its reason and its CloudWatch
coordinates, never silently dropped. A store failure (throttled, unavailable) raises: the whole
event is retried by Lambda (safe, see above) and, once retries are exhausted, lands on the same
dead-letter queue as an on-failure record.

Settlements: when every attempt to settle a reservation fails (the store client's whole deadline),
the gateway logs `budget_settle_failed` with the reservation (`settlement`: workspace, scope, month,
day, worst, lease_expires, request_id, actual). Replayed through `BudgetStore.settle`, keyed by the
request's lease like the gateway's own settle: while the lease exists it is replaced by the actual
cost (exactly once: the update is conditional on the lease); a lease already gone before its expiry
was settled by the gateway after all (a spurious failure: nothing more is added); after its expiry
the sweeper released the worst case, so the actual cost is added on its own. The one case counted
twice: a settlement that had in fact applied, replayed only after its lease expired (900 s) - the
counter then overstates the spend (never understates it). A request carved from a reservation pool
(budgets/pool.py; the line names the `pool`) is replayed under a settlement marker instead: added
unless the marker is there, and, when its failed write was one of the pool's counted writes (the
line's `pool_seq`), unless that write did land (the pool's count moved past it). After the pool's
lease expired and was swept, the same one case as above can count twice.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meterline.budgets.model import Budget
from meterline.config import Settings
from meterline.store.budgets import BudgetStore, Reservation
from meterline.store.codec import to_item
from meterline.store.ddb_http import DynamoHttp
from meterline.store.ledger import POOLS_FIELD

MESSAGE = "ledger_write_failed"
SETTLE_MESSAGE = "budget_settle_failed"
MESSAGES = (MESSAGE, SETTLE_MESSAGE)  # the lines the subscription filter delivers
# A settlement's fields and their types (gateway/enforcement.py settle_all logs them).
SETTLEMENT_FIELDS = {"workspace": str, "scope": str, "month": str, "day": str, "request_id": str,
                     "worst": int, "actual": int, "lease_expires": int}
# The fields the ledger key is made of (store/ledger.py ledger_keys); the rest of the record is data.
KEY_FIELDS = {"request_id": str, "workspace": str, "ts": int}
# A letter must fit an SQS message (256 KiB) with its envelope; a longer line is referred to by its
# CloudWatch coordinates (log group, stream, event id), where it is kept for the log retention.
MAX_LETTER_MESSAGE = 200_000
EARLIEST_TS_MS = 1_577_836_800_000  # 2020-01-01: a ts before that is not a Meterline record


class Unreplayable(ValueError):
    """This log line cannot become a ledger record (the reason is the message)."""


@dataclass
class ReplayResult:
    replayed: int = 0
    duplicates: int = 0
    settled: int = 0  # settlements applied now
    settle_duplicates: int = 0  # settlements the gateway's own (spuriously failed) attempt had applied
    unreplayable: list[dict[str, Any]] = field(default_factory=list)


def decode_subscription(event: dict[str, Any]) -> dict[str, Any]:
    """A CloudWatch Logs subscription event to its payload: `awslogs.data` is base64 of gzip of JSON."""
    try:
        data = event["awslogs"]["data"]
        payload = json.loads(gzip.decompress(base64.b64decode(data, validate=True)))
    except (KeyError, TypeError, ValueError, OSError, EOFError) as exc:
        raise Unreplayable(f"not a CloudWatch Logs subscription event ({type(exc).__name__})") from exc
    if not isinstance(payload, dict):
        raise Unreplayable("not a CloudWatch Logs subscription event (payload is not an object)")
    return payload


def parse_line(message: str) -> dict[str, Any]:
    """A gateway log line (Powertools JSON: extra keys at top level) that the subscription delivers."""
    try:
        line = json.loads(message)
    except (TypeError, ValueError) as exc:
        raise Unreplayable("not a JSON log line (truncated or not from the gateway's logger)") from exc
    if not isinstance(line, dict) or line.get("message") not in MESSAGES:
        raise Unreplayable(f"not a {MESSAGE} or {SETTLE_MESSAGE} line")
    return line


def record_of(message: str | dict[str, Any]) -> dict[str, Any]:
    """The ledger record a `ledger_write_failed` line carries."""
    line = parse_line(message) if isinstance(message, str) else message
    if line.get("message") != MESSAGE:
        raise Unreplayable(f"not a {MESSAGE} line")
    record = line.get("ledger_record")
    if not isinstance(record, dict):
        raise Unreplayable("the line carries no ledger_record")
    # A replayed record never names a budget pool: the gateway added those costs when the write
    # failed, so a pool's sweeper fold must not find them here again.
    record = {k: v for k, v in record.items() if k != POOLS_FIELD}
    for name, kind in KEY_FIELDS.items():
        value = record.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or not value:
            raise Unreplayable(f"ledger_record.{name} is missing or not a {kind.__name__}")
    if "#" in record["workspace"] or len(record["workspace"]) > 64:
        raise Unreplayable("ledger_record.workspace is not a workspace id")
    if record["ts"] < EARLIEST_TS_MS or record["ts"] >= 10**13:
        raise Unreplayable("ledger_record.ts is not an epoch-millisecond time")
    try:
        to_item(record)  # floats (money-unsafe) and other non-DynamoDB values are refused here, not half-written
    except TypeError as exc:
        raise Unreplayable(f"ledger_record holds a value the ledger cannot store: {exc}") from exc
    return record


def settlement_of(line: dict[str, Any]) -> dict[str, Any]:
    """The reservation and actual cost a `budget_settle_failed` line carries, validated."""
    settlement = line.get("settlement")
    if not isinstance(settlement, dict):
        raise Unreplayable("the line carries no settlement")
    for name, kind in SETTLEMENT_FIELDS.items():
        value = settlement.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
            raise Unreplayable(f"settlement.{name} is missing or not a {kind.__name__}")
    if "#" in settlement["workspace"] or len(settlement["workspace"]) > 64 or ":" not in settlement["scope"]:
        raise Unreplayable("settlement.workspace or .scope is not a Meterline id")
    if settlement["worst"] < 0 or not 0 <= settlement["actual"] < 10**15:
        raise Unreplayable("settlement amounts are not micro-dollars")
    pool = settlement.get("pool", "")
    if not isinstance(pool, str) or len(pool) > 64 or (pool and not pool.isalnum()):
        raise Unreplayable("settlement.pool is not a pool id")
    seq = settlement.get("pool_seq")
    if seq is not None and (not pool or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0):
        raise Unreplayable("settlement.pool_seq is not a pool's settlement count")
    return settlement


def letter_of(reason: str, event: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    message = event.get("message")
    letter: dict[str, Any] = {
        "reason": reason, "logGroup": payload.get("logGroup"), "logStream": payload.get("logStream"),
        "id": event.get("id"), "timestamp": event.get("timestamp"),
    }
    if isinstance(message, str) and len(message.encode()) <= MAX_LETTER_MESSAGE:
        letter["message"] = message
    else:
        letter["message_truncated"] = True
    return letter


def ledger_writer(ledger: Any) -> Callable[[dict[str, Any]], bool]:
    """`write` for `replay` over a store.ledger.LedgerStore: DynamoDB's refusal of the item itself
    (ValidationException: a key or an item over its size limits) is unreplayable, not a store failure."""
    from botocore.exceptions import ClientError

    def write(record: dict[str, Any]) -> bool:
        try:
            return bool(ledger.put_new(record))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ValidationException":
                reason = exc.response["Error"].get("Message", "")[:300]
                raise Unreplayable(f"the ledger refused the record: {reason}") from exc
            raise

    return write


def replay(payload: dict[str, Any], write: Callable[[dict[str, Any]], bool],
           dead_letter: Callable[[dict[str, Any]], None],
           settle: Callable[[dict[str, Any]], bool] | None = None) -> ReplayResult:
    """Replay every log event of a subscription payload.

    `write(record)` writes a record if its key is new: True if written, False if it was already there;
    it raises Unreplayable for a record the store refuses as invalid, anything else for a store failure
    (which propagates: the event is retried whole). `settle(settlement)` applies a failed settlement:
    True if applied now, False if the gateway's own attempt had applied it (same failure rules).
    `dead_letter(letter)` keeps an unreplayable line."""
    result = ReplayResult()
    if payload.get("messageType") != "DATA_MESSAGE":
        return result  # CONTROL_MESSAGE: CloudWatch Logs checking that the destination is reachable
    for event in payload.get("logEvents") or []:
        if not isinstance(event, dict):
            event = {"message": event}
        try:
            line = parse_line(event.get("message", ""))
            if line["message"] == SETTLE_MESSAGE:
                if settle is None:
                    raise Unreplayable("settlements are not replayed here")
                if settle(settlement_of(line)):
                    result.settled += 1
                else:
                    result.settle_duplicates += 1
                continue
            written = write(record_of(line))
        except Unreplayable as exc:
            letter = letter_of(str(exc), event, payload)
            dead_letter(letter)
            result.unreplayable.append(letter)
            continue
        if written:
            result.replayed += 1
        else:
            result.duplicates += 1
    return result


def budget_settler(settings: Settings) -> Callable[[dict[str, Any]], bool]:
    """`settle` for `replay` over store.budgets.BudgetStore (the gateway's own settle, lease-keyed)."""
    store = BudgetStore(settings)

    def settle(s: dict[str, Any]) -> bool:
        scope_type, _, scope_value = s["scope"].partition(":")
        reservation = Reservation(Budget(scope_type, scope_value), s["worst"], s["month"], s["day"], {},
                                  s["lease_expires"], s.get("pool", ""))
        now = time.time()

        async def run() -> bool:
            client = DynamoHttp(settings)
            try:
                state = await store.settle(client, s["workspace"], reservation, s["request_id"], s["actual"],
                                           now=now, pool_seq=s.get("pool_seq"))
            finally:
                await client.aclose()
            # Applied now: the update's UPDATED_NEW figures, which never name the key; already applied
            # (the lease gone before its expiry): the whole old item, key included.
            return bool(state) and "pk" not in state

        return asyncio.run(run())

    return settle
