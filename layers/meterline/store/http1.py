"""A minimal pooled HTTP/1.1 client for AWS JSON APIs (DynamoDB) on the request path.

Why not httpx (on aiohttp): measured on this machine against a keep-alive endpoint, one DynamoDB
call costs ~0.58 ms of CPU through httpx + aiohttp and ~0.13 ms over plain asyncio streams
(bench/overhead.py, /docs/ARCHITECTURE.md); with budgets a request makes several such calls.
The surface is deliberately tiny: POST with a Content-Length body; responses framed by
Content-Length or chunked encoding; keep-alive with an idle pool; `Connection: close` honoured.
A pooled connection the server closed while idle shows up as EOF before any response byte: the
request is sent again once on a new connection (every caller's write is idempotent).
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
    headers: dict[str, str]
    body: bytes


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


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
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self._ssl,
                                        server_hostname=self.host if self.tls else None),
                self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise HttpError(f"cannot connect to {self.authority}: {reason}", sent=False) from exc
        return _Conn(reader, writer)

    async def post(self, path: str, headers: dict[str, str], body: bytes,
                   read_timeout: float | None = None) -> Response:
        head = [f"POST {path} HTTP/1.1", f"host: {self.authority}", f"content-length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        payload = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for reused in (True, False):
            conn = self._idle.pop() if reused and self._idle else None
            if conn is None:
                reused = False
                conn = await self._connect()
            try:
                conn.writer.write(payload)
                async with asyncio.timeout(read_timeout or self.read_timeout):
                    response, keep = await self._read(conn.reader)
            except _StaleConnection as exc:
                conn.close()
                if reused:
                    continue  # the server closed it while idle: once more on a fresh connection
                raise HttpError(f"connection to {self.authority} closed before a response") from exc
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                raise HttpError(f"request to {self.authority} failed: {str(exc) or type(exc).__name__}") from exc
            if keep and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                conn.close()
            return response
        raise HttpError("unreachable")

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:  # the status line and headers in one read (one await, not one per line)
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _StaleConnection from None
            raise
        except asyncio.LimitOverrunError as exc:
            raise ValueError("response headers too large") from exc
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readline()
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            body = b"".join(chunks)
        else:
            body = await reader.read()  # framed by the connection closing
            headers["connection"] = "close"
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return Response(int(status), headers, body), keep

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()


class _StaleConnection(Exception):
    pass
