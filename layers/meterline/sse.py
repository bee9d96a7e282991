"""Incremental Server-Sent Events framing: bytes in, whole events out, nothing buffered longer
than one event, so a stream's first byte is forwarded as soon as its event is complete."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    raw: bytes  # the event exactly as received, terminator included
    event: str | None
    data: str | None


def _parse(raw: bytes) -> Event:
    event = None
    data_lines: list[str] = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if line.startswith("data:"):
            data_lines.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
        elif line.startswith("event:"):
            event = line[6:].strip()
    return Event(raw=raw, event=event, data="\n".join(data_lines) if data_lines else None)


class SSEError(ValueError):
    """The upstream sent an event larger than the gateway buffers (`MAX_EVENT_BYTES`)."""


MAX_EVENT_BYTES = 32 * 1024 * 1024
_SEPARATORS = (b"\n\n", b"\r\n\r\n")


class SSEParser:
    """Linear in the bytes fed, however they are chunked: every byte is searched for a separator
    once (a 16 MB event in 1-byte chunks costs the same as in one chunk), and consumed bytes are
    dropped in place."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched without a complete separator
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        buffer, start = self._buffer, 0
        origin = max(self._scanned - 3, 0)  # a separator may straddle the previous chunk's end
        # Next position of each separator at or after `origin` (-1: none before the end): each is
        # searched again only once consumed, so a chunk with many events is scanned once per separator.
        found = [buffer.find(sep, origin) for sep in _SEPARATORS]
        while True:
            candidates = [(at, len(sep)) for at, sep in zip(found, _SEPARATORS, strict=True) if at != -1]
            if not candidates:
                break
            at, size = min(candidates)
            raw = bytes(buffer[start: at + size])
            start = at + size
            if raw.strip():
                events.append(_parse(raw))
            found = [f if f >= start else buffer.find(sep, start) for f, sep in zip(found, _SEPARATORS, strict=True)]
        if start:
            del buffer[:start]
        self._scanned = len(buffer)
        if len(buffer) > self.max_event_bytes:
            raise SSEError(f"an upstream event exceeded {self.max_event_bytes} bytes")
        return events

    def pending(self) -> bytes:
        """Bytes of an event that never got its terminator (a stream cut mid-event)."""
        return bytes(self._buffer)


def encode(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()
