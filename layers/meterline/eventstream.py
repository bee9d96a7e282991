"""Incremental AWS event-stream decoding (application/vnd.amazon.eventstream, Bedrock's
ConverseStream framing): bytes in, whole messages out as `sse.Event`s, so translators see one
event shape whatever the provider's framing.

An event message becomes Event(event=<:event-type>, data=<JSON payload>); an exception message
Event(event="exception:<:exception-type>", data=<payload>). The binary framing (prelude, headers,
CRCs) is parsed by botocore's EventStreamBuffer, imported on first use.
"""

from __future__ import annotations

import json
from typing import Any

from meterline.sse import Event


class EventStreamDecodeError(ValueError):
    """The byte stream is not valid event-stream framing (a bad CRC or prelude)."""


class EventStreamDecoder:
    def __init__(self) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._buffer: Any = EventStreamBuffer()
        self._pending = 0

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer.add_data(chunk)
        events = []
        try:
            for message in self._buffer:
                events.append(_event_of(message.headers, message.payload))
        except Exception as exc:  # botocore's parser errors (checksum, prelude) share no base we can name
            raise EventStreamDecodeError(str(exc)) from exc
        return events

    def pending(self) -> bytes:
        return bytes(getattr(self._buffer, "_data", b""))


def _event_of(headers: dict[str, Any], payload: bytes) -> Event:
    kind = headers.get(":message-type", "event")
    if kind == "exception":
        name = "exception:" + str(headers.get(":exception-type", "unknown"))
    elif kind == "error":
        name = "exception:" + str(headers.get(":error-code", "error"))
        payload = json.dumps({"message": headers.get(":error-message", "")}).encode()
    else:
        name = str(headers.get(":event-type", ""))
    return Event(raw=b"", event=name, data=payload.decode("utf-8", errors="replace"))
