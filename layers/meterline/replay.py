"""Ledger replay: `ledger_write_failed` log lines back into the ledger, exactly once.

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
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meterline.store.codec import to_item

MESSAGE = "ledger_write_failed"
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


def record_of(message: str) -> dict[str, Any]:
    """The ledger record a `ledger_write_failed` line carries (Powertools JSON: extra keys at top level)."""
    try:
        line = json.loads(message)
    except (TypeError, ValueError) as exc:
        raise Unreplayable("not a JSON log line (truncated or not from the gateway's logger)") from exc
    if not isinstance(line, dict) or line.get("message") != MESSAGE:
        raise Unreplayable(f"not a {MESSAGE} line")
    record = line.get("ledger_record")
    if not isinstance(record, dict):
        raise Unreplayable("the line carries no ledger_record")
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
           dead_letter: Callable[[dict[str, Any]], None]) -> ReplayResult:
    """Replay every log event of a subscription payload.

    `write(record)` writes a record if its key is new: True if written, False if it was already there;
    it raises Unreplayable for a record the store refuses as invalid, anything else for a store failure
    (which propagates: the event is retried whole). `dead_letter(letter)` keeps an unreplayable line."""
    result = ReplayResult()
    if payload.get("messageType") != "DATA_MESSAGE":
        return result  # CONTROL_MESSAGE: CloudWatch Logs checking that the destination is reachable
    for event in payload.get("logEvents") or []:
        if not isinstance(event, dict):
            event = {"message": event}
        try:
            written = write(record_of(event.get("message", "")))
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
