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


class SSEParser:
    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events = []
        while True:
            cut = -1
            for sep in (b"\n\n", b"\r\n\r\n"):
                at = self._buffer.find(sep)
                if at != -1 and (cut == -1 or at < cut[0]):
                    cut = (at, len(sep))
            if cut == -1:
                return events
            at, size = cut
            raw, self._buffer = self._buffer[: at + size], self._buffer[at + size:]
            if raw.strip():
                events.append(_parse(raw))

    def pending(self) -> bytes:
        """Bytes of an event that never got its terminator (a stream cut mid-event)."""
        return self._buffer


def encode(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()
