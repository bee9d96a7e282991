"""A minimal pooled HTTP/1.1 client for AWS JSON APIs (DynamoDB) on the request path.

Why not httpx (on aiohttp): measured on this machine against a keep-alive endpoint, one DynamoDB
call costs ~0.58 ms of CPU through httpx + aiohttp and ~0.13 ms over asyncio streams, less again
over a bare asyncio protocol that parses the answer when it is complete (bench/overhead.py,
docs/ARCHITECTURE.md); with budgets a request makes several such calls.
The surface is deliberately tiny: POST with a Content-Length body; responses framed by
Content-Length or chunked encoding; keep-alive with an idle pool; `Connection: close` honoured.
A pooled connection the server closed while idle is dropped when it is taken; one that shows EOF
before any response byte is sent again once on a new connection (every caller's write is idempotent).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpError(Exception):
    """Transport failure: could not connect, connection lost, timed out, or a malformed response.
    `sent` says whether any byte of the request may have reached the server (then it may still be
    applied, even though no response came back)."""

    def __init__(self, message: str, *, sent: bool = True):
        super().__init__(message)
        self.sent = sent


@dataclass
class Response:
    status: int
    head: bytes  # the raw head: status line and headers, without the final CRLF CRLF
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Every header by lower-case name: parsed when asked for (a DynamoDB caller never does)."""
        return _head(self.head)[2]


class _Conn(asyncio.Protocol):
    """One connection as a protocol: bytes are appended as they arrive and the response is parsed
    when it is complete (no stream reader, no coroutine per line or read; a DynamoDB answer is
    usually one `data_received`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[Response, bool]] | None = None
        self.closed = False
        # The head once complete: (raw head, status, content length, chunked, keep-alive, body start).
        self._head: tuple[bytes, int, int | None, bool, bool, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            self._parse(eof=False)

    def eof_received(self) -> bool:
        self._ended()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()

    def _ended(self) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self._parse(eof=True)

    def send(self, payload: bytes) -> asyncio.Future[tuple[Response, bool]]:
        assert self.transport is not None
        self.buffer.clear()
        self._head = None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiter

    def _parse(self, eof: bool) -> None:
        assert self.waiter is not None
        try:
            parsed = self._response(eof)
        except ValueError as exc:
            self.waiter.set_exception(exc)
            return
        if parsed is not None:
            self.buffer.clear()  # bytes arriving from here on, while idle, were never asked for
            self._head = None
            self.waiter.set_result(parsed)
        elif eof:
            self.waiter.set_exception(_StaleConnection() if not self.buffer
                                      else asyncio.IncompleteReadError(bytes(self.buffer), None))

    def _response(self, eof: bool) -> tuple[Response, bool] | None:
        buffer = self.buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise ValueError("response headers too large")
                return None
            raw = bytes(buffer[:end])
            self._head = (raw, *_framing(raw), end + 4)
        raw, status, length, chunked, keep, start = self._head
        if length is not None:
            if len(buffer) - start < length:
                return None
            body = bytes(buffer[start:start + length])
            extra = len(buffer) > start + length
        elif chunked:
            found = _dechunk(buffer, start)
            if found is None:
                return None
            body, end = found
            extra = len(buffer) > end
        else:
            if not eof:
                return None  # framed by the connection closing
            body = bytes(buffer[start:])
            keep = extra = False
        # Bytes beyond the answer were never asked for: that connection is not used again.
        return Response(status, raw, body), keep and not self.closed and not extra

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


MAX_HEAD = 64 * 1024


def _head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """(version, status, headers by lower-case name) of a response head (no final CRLF CRLF).
    One decode and one split: a DynamoDB answer's head has ~8 headers, parsed on every call."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return version, int(status), headers


def _framing(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content length, chunked, keep-alive) of a response head: three substring searches
    in the lower-cased head, not a parse of every header (~9 from DynamoDB, on every store call)."""
    line_end = head.find(b"\r\n")
    version, status, *_ = (head if line_end < 0 else head[:line_end]).split(b" ", 2)
    lowered = head.lower()
    length = _value(lowered, b"content-length")
    connection = _value(lowered, b"connection")
    return (int(status), int(length) if length is not None else None,
            _value(lowered, b"transfer-encoding") == b"chunked", version == b"HTTP/1.1" and connection != b"close")


def _value(lowered: bytes, name: bytes) -> bytes | None:
    """The first value of header `name` (lower case) in a lower-cased head, stripped; None if absent."""
    at = lowered.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    end = lowered.find(b"\r\n", start)
    return (lowered[start:] if end < 0 else lowered[start:end]).strip()


def _dechunk(buffer: bytearray, pos: int) -> tuple[bytes, int] | None:
    """(body, end) of a complete chunked response starting at `pos`, or None while incomplete."""
    chunks = []
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buffer[pos:line_end]).split(b";")[0].strip(), 16)
        pos = line_end + 2
        if size == 0:
            end = buffer.find(b"\r\n", pos)
            return (b"".join(chunks), end + 2) if end >= 0 else None
        if len(buffer) < pos + size + 2:
            return None
        chunks.append(bytes(buffer[pos:pos + size]))
        pos += size + 2


class Http1Pool:
    def __init__(self, url: str, *, max_idle: int = 64, connect_timeout: float = 2.0, read_timeout: float = 5.0):
        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.authority = parts.netloc
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: list[_Conn] = []
        self._ssl = ssl.create_default_context() if self.tls else None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Conn, self.host, self.port, ssl=self._ssl,
                                                       server_hostname=self.host if self.tls else None)
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise HttpError(f"cannot connect to {self.authority}: {reason}", sent=False) from exc
        return conn

    def _pooled(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.buffer:  # closed while idle, or sent unasked-for bytes
                return conn
            conn.close()
        return None

    async def post(self, path: str, headers: dict[str, str], body: bytes,
                   read_timeout: float | None = None) -> Response:
        head = [f"POST {path} HTTP/1.1", f"host: {self.authority}", f"content-length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        payload = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for reused in (True, False):
            conn = self._pooled() if reused else None
            if conn is None:
                reused = False
                conn = await self._connect()
            waiter = conn.send(payload)
            # A timer on the answer's future, not asyncio.timeout (no context object, no task lookup
            # or uncancel per call); a cancelled caller still cancels the await as usual.
            timer = asyncio.get_running_loop().call_later(read_timeout or self.read_timeout, _expire, waiter)
            try:
                response, keep = await waiter
            except _StaleConnection as exc:
                conn.close()
                if reused:
                    continue  # the server closed it while idle: once more on a fresh connection
                raise HttpError(f"connection to {self.authority} closed before a response") from exc
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                raise HttpError(f"request to {self.authority} failed: {str(exc) or type(exc).__name__}") from exc
            except BaseException:  # cancelled: the answer would arrive on a connection nobody reads
                conn.close()
                raise
            finally:
                timer.cancel()
            if keep and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                conn.close()
            return response
        raise HttpError("unreachable")

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()


class _StaleConnection(Exception):
    pass


def _expire(waiter: asyncio.Future[tuple[Response, bool]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
