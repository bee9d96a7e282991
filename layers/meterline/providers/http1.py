"""A lean pooled HTTP/1.1 client for provider calls (`METERLINE_UPSTREAM_TRANSPORT=http1`).

Why: aiohttp's client (request/response objects, stream reader, cookie jar, payload registry, the
timer and tracing machinery) was ~15-20 % of the gateway's CPU per warm request (bench/overhead.py
--profile). A provider call needs far less: one write of head + body, a response head parsed once,
and body bytes handed to the reader as they arrive. Same design as the store's client
(store/http1.py: an asyncio.Protocol, no stream reader), plus what a provider call needs on top:
- http and https (TLS with the system trust store plus certifi's, SNI, ALPN http/1.1);
- keep-alive connections pooled per (scheme, host, port), at most `limit` open in all (a request
  waits for a slot within the connect timeout, as aiohttp's does), idle ones closed after 60 s;
- bodies framed by Content-Length, chunked encoding (decoded incrementally: an SSE stream's bytes
  reach the reader as they arrive, with no added buffering) or the connection closing; no body
  for HEAD, 1xx, 204 and 304; `Connection: close` honoured; gzip/deflate decoded (the request asks
  for them, as aiohttp does by default; the response headers stay as received);
- DNS through the SSRF guard (meterline.egress.filter_resolved): the addresses connected to are the
  addresses checked, cached for 300 s like aiohttp's ttl_dns_cache;
- timeouts: connect (slot wait, DNS, TCP and TLS) and read, between bytes (like aiohttp's sock_read);
- a response's connection goes back to the pool only once its whole body has arrived: a response
  closed early, a read cut by cancellation or a broken body closes its connection;
- a pooled connection the server closed while idle is sent on again once, on a fresh connection,
  only when not one byte of an answer came back (the keep-alive race: the server closed before it
  read the request). aiohttp would not resend a POST there; it fails the call instead.
Errors map like AiohttpUpstream's: while sending, UpstreamUnavailable / UpstreamTimeout; while
reading a body, httpx.ReadError / httpx.ReadTimeout, raised only after every byte received before
the break has been yielded (so a cut stream's complete events are relayed and metered).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import socket
import ssl
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohappyeyeballs
import httpx

from meterline.egress import filter_resolved
from meterline.errors import UpstreamTimeout, UpstreamUnavailable
from meterline.providers.base import UpstreamRequest, UpstreamResponse
from meterline.providers.http import egress_check

MAX_HEAD = 64 * 1024  # response head (status line + headers)
MAX_LINE = 8 * 1024  # one chunk-size or trailer line
PAUSE_AT = 1024 * 1024  # body bytes buffered unread before the socket stops being read
_NO_BODY_STATUS = frozenset({204, 304})
_DEFAULT_PORT = {"http": 80, "https": 443}
_SKIP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "host"})

# Body framing states of a connection's current response.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class Headers(dict):  # type: ignore[type-arg]
    """Response headers: names stored lower-cased, looked up case-insensitively (like httpx's and
    aiohttp's); a repeated header's values are joined with ", "."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, key.lower(), default)


class _ProtocolError(Exception):
    """The server sent something that is not HTTP/1.1."""


class _Closed(Exception):
    """The connection ended before a complete response head; `received`: any byte of one came."""

    def __init__(self, message: str, received: bool):
        super().__init__(message)
        self.received = received


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Exchange:
    """One request's answer on a connection: the head when parsed, then body bytes as they arrive."""

    __slots__ = ("chunks", "conn", "done", "error", "head", "head_method", "received", "size", "waiter")

    def __init__(self, conn: _Conn, method: str):
        self.conn = conn
        self.head_method = method
        self.head: asyncio.Future[tuple[int, Headers]] = conn.loop.create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.waiter: asyncio.Future[None] | None = None
        self.done = False  # the whole body arrived
        self.error: BaseException | None = None
        self.received = False  # any byte of the answer

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > PAUSE_AT:
            self.conn.pause()
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if self.done or self.error is not None:
            return
        self.error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: a cancelled sender never awaits it
        self._wake()

    async def read(self, timeout: float) -> bytes:
        """Every body byte received so far (b"" at the end); the error only once nothing is left."""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.done:
                return b""
            loop = self.conn.loop
            waiter = self.waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self.waiter = None
        if len(self.chunks) == 1:
            data = self.chunks.popleft()
        else:
            data = b"".join(self.chunks)
            self.chunks.clear()
        self.size = 0
        if self.conn.exchange is self:
            self.conn.resume()
        return data

    def drop(self) -> None:
        """Close the connection if it still carries this answer (once complete, it may be another's)."""
        if self.conn.exchange is self:
            self.conn.close()


class _Conn(asyncio.Protocol):
    """One connection: parses the current answer's head, then frames its body bytes as they arrive."""

    def __init__(self, pool: Http1Upstream, key: tuple[str, str, int]):
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.paused = False
        self.exchange: _Exchange | None = None
        self.state = _DONE
        self.remaining = 0
        self.keep = False
        self.buffer = bytearray()  # an incomplete head or chunk line
        self.idle_since = 0.0

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.close()
            return
        exchange.received = True
        try:
            if self.state == _HEAD:
                self.buffer += data
                self._head()
            else:
                self._body(data)
        except (_ProtocolError, ValueError, UnicodeError) as exc:
            exchange.fail(httpx.RemoteProtocolError(f"the provider sent a malformed response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        exchange = self.exchange
        if exchange is not None and self.state == _UNTIL_CLOSE and exc is None:
            self._complete()  # a body framed by the connection closing: this is its end
        elif exchange is not None:
            self.exchange = None
            if not exchange.head.done():
                exchange.fail(_Closed(f"the provider closed the connection ({exc or 'EOF'})", exchange.received))
            else:
                exchange.fail(ConnectionError(f"the provider closed the connection mid-body ({exc or 'EOF'})"))
        self.closed = True
        self.pool._forget(self)

    # parsing

    def _head(self) -> None:
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise _ProtocolError("response head too large")
                return
            status_line, *lines = buffer[:end].decode("latin-1").split("\r\n")
            rest = bytes(buffer[end + 4:])
            buffer.clear()
            version, _, tail = status_line.partition(" ")
            if not version.startswith("HTTP/1."):
                raise _ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
            status = int(tail[:3])
            if 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): the answer follows
                buffer += rest
                continue
            break
        headers = Headers()
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name, value = name.strip().lower(), value.strip()
            old = dict.get(headers, name)
            dict.__setitem__(headers, name, value if old is None else f"{old}, {value}")
        connection = dict.get(headers, "connection", "").lower()
        self.keep = ("close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection)
        exchange = self.exchange
        assert exchange is not None
        encoding = dict.get(headers, "transfer-encoding", "").lower()
        if exchange.head_method == "HEAD" or status in _NO_BODY_STATUS:
            self.state = _LENGTH
            self.remaining = 0
        elif encoding:
            if not encoding.endswith("chunked"):
                raise _ProtocolError(f"unsupported transfer-encoding {encoding!r}")
            self.state = _CHUNK_SIZE
        elif "content-length" in headers:
            self.remaining = int(dict.__getitem__(headers, "content-length").split(",")[0])
            if self.remaining < 0:
                raise _ProtocolError("negative content-length")
            self.state = _LENGTH
        else:
            self.state = _UNTIL_CLOSE
            self.keep = False
        if not exchange.head.done():  # not timed out or cancelled meanwhile
            exchange.head.set_result((status, headers))
        if self.state == _LENGTH and self.remaining == 0:
            self._complete(extra=bool(rest))
        elif rest:
            self._body(rest)

    def _body(self, data: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        state = self.state
        if state == _LENGTH:
            take = self.remaining
            if len(data) <= take:
                exchange.push(data)
                self.remaining -= len(data)
                if self.remaining == 0:
                    self._complete()
            else:
                if take:
                    exchange.push(data[:take])
                self._complete(extra=True)
            return
        if state == _UNTIL_CLOSE:
            exchange.push(data)
            return
        # Chunked: the data of every chunk in this read goes to the reader at once, as one piece.
        if self.buffer:  # a size or end line split across reads
            data = bytes(self.buffer) + data
            self.buffer.clear()
        pieces: list[bytes] = []
        pos, size, remaining = 0, len(data), self.remaining
        while pos < size:
            if state == _CHUNK_DATA:
                take = min(remaining, size - pos)
                pieces.append(data[pos:pos + take] if take < size else data)
                pos += take
                remaining -= take
                if remaining == 0:
                    state = _CHUNK_END
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self.buffer += data[pos:]
                if len(self.buffer) > MAX_LINE:
                    raise _ProtocolError("chunk line too long")
                break
            line = data[pos:newline]  # with its "\r": int() ignores it, the checks below allow it
            pos = newline + 1
            if state == _CHUNK_SIZE:
                remaining = int(line.split(b";", 1)[0] if b";" in line else line, 16)
                if remaining < 0:
                    raise _ProtocolError("negative chunk size")
                state = _CHUNK_DATA if remaining else _TRAILER
            elif state == _CHUNK_END:
                if line and line != b"\r":
                    raise _ProtocolError("chunk data longer than its size")
                state = _CHUNK_SIZE
            elif line and line != b"\r":  # a trailer field: ignored
                continue
            else:  # the empty line after the last chunk (and trailers): the answer is complete
                if pieces:
                    exchange.push(b"".join(pieces))
                self._complete(extra=pos < size)
                return
        self.state, self.remaining = state, remaining
        if pieces:
            exchange.push(b"".join(pieces) if len(pieces) > 1 else pieces[0])

    def _complete(self, extra: bool = False) -> None:
        """The whole answer arrived: the reader gets the end, the connection goes back to the pool
        unless it must not be used again (Connection: close, bytes past the answer, closed)."""
        exchange = self.exchange
        assert exchange is not None
        self.exchange = None
        self.state = _DONE
        exchange.finish()
        self.resume()  # paused for a slow reader of this answer: the next one must be read
        if self.keep and not extra and not self.closed:
            self.pool._release(self)
        else:
            self.close()

    # use

    def start(self, method: str, payload: bytes) -> _Exchange:
        assert self.transport is not None
        exchange = self.exchange = _Exchange(self, method)
        self.state = _HEAD
        self.buffer.clear()
        self.transport.write(payload)
        return exchange

    def usable(self, loop: asyncio.AbstractEventLoop, expiry: float) -> bool:
        return (not self.closed and self.loop is loop and self.transport is not None
                and not self.transport.is_closing() and loop.time() - self.idle_since < expiry)

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closed and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Drop the connection now (an unread or broken answer is never read by anyone)."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.fail(ConnectionError("the connection was closed"))
        self.pool._forget(self)


class Http1Response:
    """A provider answer behind the UpstreamResponse protocol; the body is read as it arrives."""

    __slots__ = ("_exchange", "_read_timeout", "headers", "status_code")

    def __init__(self, status: int, headers: Headers, exchange: _Exchange, read_timeout: float):
        self.status_code = status
        self.headers = headers
        self._exchange = exchange
        self._read_timeout = read_timeout

    def _decoder(self) -> Any:
        encoding = dict.get(self.headers, "content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            return _Deflate()
        return None

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        exchange, timeout = self._exchange, self._read_timeout
        decoder = self._decoder()
        fed = False
        while True:
            try:
                data = await exchange.read(timeout)
            except TimeoutError as exc:
                exchange.drop()
                raise httpx.ReadTimeout("the provider stopped sending") from exc
            except httpx.HTTPError:
                raise
            except Exception as exc:
                raise httpx.ReadError("the provider's response broke off") from exc
            if not data:
                break
            if decoder is not None:
                fed = True
                try:
                    data = decoder.decompress(data)
                except zlib.error as exc:
                    exchange.drop()
                    raise httpx.DecodingError(f"the provider's body could not be decoded: {exc}") from exc
                if not data:
                    continue
            yield data
        if decoder is not None:
            try:
                rest = decoder.flush()
            except zlib.error as exc:
                raise httpx.DecodingError(f"the provider's body could not be decoded: {exc}") from exc
            if rest:
                yield rest
            if fed and not decoder.eof:  # framing complete, compressed stream not (as aiohttp raises)
                raise httpx.DecodingError("the provider's compressed body ended early")

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        self._exchange.drop()  # an answer not read to its end: its connection is not reused


class _Deflate:
    """`Content-Encoding: deflate`: zlib-wrapped as the RFC says, or raw deflate as some servers send
    (aiohttp accepts both the same way: by the first byte)."""

    __slots__ = ("_inner",)

    def __init__(self) -> None:
        self._inner: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS)
        return self._inner.decompress(data)

    def flush(self) -> bytes:
        return self._inner.flush() if self._inner is not None else b""

    @property
    def eof(self) -> bool:
        return self._inner is not None and self._inner.eof


def _tls_context() -> ssl.SSLContext:
    """aiohttp's (the system trust store), with certifi's roots added (httpx's) where installed."""
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    context.set_alpn_protocols(["http/1.1"])
    return context


class Http1Upstream:
    """Provider calls over pooled HTTP/1.1 connections (see the module docstring)."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, allow_hosts: tuple[str, ...] = (),
                 limit: int = 512, keepalive_s: float = 60.0, dns_ttl_s: float = 300.0,
                 ssl_context: ssl.SSLContext | None = None):
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.allow_hosts = allow_hosts
        self.limit = limit
        self.keepalive_s = keepalive_s
        self.dns_ttl_s = dns_ttl_s
        # Built at init (the trust store is read from disk): before a SnapStart snapshot, not on a request.
        self._ssl = ssl_context or _tls_context()
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._open: set[_Conn] = set()
        self._connecting = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._dns: dict[tuple[str, int], tuple[float, list[dict[str, Any]]]] = {}
        self._targets: dict[str, tuple[tuple[str, str, int], str, str]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    # the Upstream protocol

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        target = self._targets.get(request.url)
        if target is None:
            target = self._target(request.url)
        key, path, authority = target
        payload = self._payload(request, path, authority)
        fresh = False
        while True:
            conn, reused = await self._acquire(key, fresh)
            try:
                exchange = conn.start(request.method, payload)
                status, headers = await self._head(exchange)
            except _Closed as exc:
                conn.close()
                if reused and not exc.received:
                    fresh = True  # the server closed it while idle: once more, on a new connection
                    continue
                raise UpstreamUnavailable("The provider closed the connection without answering.") from exc
            except TimeoutError as exc:
                conn.close()
                raise UpstreamTimeout("The provider did not respond in time.") from exc
            except (OSError, httpx.HTTPError) as exc:
                conn.close()
                raise UpstreamUnavailable("The provider could not be reached.") from exc
            except BaseException:  # cancelled: the answer would arrive on a connection nobody reads
                conn.close()
                raise
            return Http1Response(status, headers, exchange, self.read_timeout)

    async def aclose(self) -> None:
        """Close every connection; like AiohttpUpstream, the client stays usable (it opens new ones)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn.close()
        self._idle.clear()

    # the request

    def _target(self, url: str) -> tuple[tuple[str, str, int], str, str]:
        """(pool key, request target, Host header) of a URL that passes the SSRF guard. The guard is a
        pure function of the URL (and of allow_hosts, fixed per client), so a URL that passed is
        remembered (bounded); a refused one raises and is checked again on its next send."""
        egress_check(url, self.allow_hosts)
        parts = urlsplit(url)
        scheme = parts.scheme
        host = (parts.hostname or "").rstrip(".")
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        port = parts.port or _DEFAULT_PORT[scheme]
        # The Host header as SigV4 signs it (botocore's _host_from_url) and aiohttp sends it: no default port.
        authority = f"[{host}]" if ":" in host else host
        if parts.port is not None and parts.port != _DEFAULT_PORT[scheme]:
            authority = f"{authority}:{port}"
        target = ((scheme, host, port), (parts.path or "/") + ("?" + parts.query if parts.query else ""), authority)
        if len(self._targets) >= 1024:
            self._targets.clear()
        self._targets[url] = target
        return target

    @staticmethod
    def _payload(request: UpstreamRequest, path: str, authority: str) -> bytes:
        body = request.body or b""
        lines = [f"{request.method} {path} HTTP/1.1"]
        has = set()
        for name, value in request.headers.items():
            lower = name.lower()
            has.add(lower)
            if lower in _SKIP_HEADERS and lower != "host":
                continue
            lines.append(f"{name}: {value}")
        if "host" not in has:
            lines.append(f"host: {authority}")
        if body or request.method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(body)}")
        if "accept" not in has:
            lines.append("accept: */*")
        if "accept-encoding" not in has:
            lines.append("accept-encoding: gzip, deflate")
        if "user-agent" not in has:
            lines.append("user-agent: meterline")
        head = "\r\n".join(lines)
        if head.count("\n") != len(lines) - 1 or head.count("\r") != len(lines) - 1:  # header injection
            raise UpstreamUnavailable("A header for the provider contains a line break.",
                                      code="invalid_upstream_header")
        return (head + "\r\n\r\n").encode() + body

    async def _head(self, exchange: _Exchange) -> tuple[int, Headers]:
        head = exchange.head
        if not head.done():
            timer = exchange.conn.loop.call_later(self.read_timeout, _expire, head)
            try:
                await head
            finally:
                timer.cancel()
        return head.result()

    # the pool

    async def _acquire(self, key: tuple[str, str, int], fresh: bool) -> tuple[_Conn, bool]:
        """A pooled connection to `key` (reused: True), or a new one within `limit` open in all; the
        wait for a slot, DNS, TCP and TLS all count against the connect timeout (as in aiohttp)."""
        if not fresh and (conn := self._take_idle(key)) is not None:
            return conn, True
        conn = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                while len(self._open) + self._connecting >= self.limit:
                    if not fresh and (idle := self._take_idle(key)) is not None:
                        return idle, True
                    if not self._close_oldest_idle():
                        await self._wait_for_slot()
                self._connecting += 1
                try:
                    conn = await self._connect(key)
                finally:
                    self._connecting -= 1
        except BaseException as exc:
            if conn is not None:
                conn.close()
            self._wake()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("The provider did not accept a connection in time.") from exc
            if isinstance(exc, OSError):  # refused, DNS failure, egress refused, TLS handshake
                raise UpstreamUnavailable("The provider could not be reached.") from exc
            raise
        return conn, False

    def _take_idle(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        if idle:
            loop = asyncio.get_running_loop()
            while idle:
                conn = idle.pop()  # the most recently used: the least likely to have been closed
                if conn.usable(loop, self.keepalive_s):
                    return conn
                conn.close()
        return None

    def _close_oldest_idle(self) -> bool:
        """At the limit: make room by closing the longest-idle connection, if any is idle."""
        oldest = None
        for conns in self._idle.values():
            if conns and (oldest is None or conns[0].idle_since < oldest.idle_since):
                oldest = conns[0]
        if oldest is None:
            return False
        oldest.close()
        return True

    async def _wait_for_slot(self) -> None:
        """Until a connection is released or closed."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # woken and gone: the turn passes to the next waiter
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, key: tuple[str, str, int]) -> _Conn:
        """TCP to the guarded addresses (Happy Eyeballs, RFC 8305, as aiohttp connects: a blackholed
        IPv6 route does not cost the whole connect timeout), then TLS with SNI for https."""
        scheme, host, port = key
        infos = [(a["family"], socket.SOCK_STREAM, a["proto"], "", a["sockaddr"])
                 for a in await self._resolve(host, port)]
        sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=0.25, interleave=1)
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                lambda: _Conn(self, key), sock=sock, ssl=self._ssl if scheme == "https" else None,
                server_hostname=host if scheme == "https" else None,
                ssl_handshake_timeout=self.connect_timeout if scheme == "https" else None)
        except BaseException:
            sock.close()
            raise
        self._open.add(conn)
        return conn

    async def _resolve(self, host: str, port: int) -> list[dict[str, Any]]:
        """The addresses to connect to, through the SSRF guard; cached `dns_ttl_s`."""
        loop = asyncio.get_running_loop()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
            found = [{"hostname": host, "host": info[4][0], "port": port, "family": info[0], "proto": info[2],
                      "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV, "sockaddr": info[4]}
                     for info in infos]
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            found = [{"hostname": host, "host": host, "port": port, "family": family, "proto": 0, "flags": 0,
                      "sockaddr": (host, port, 0, 0) if ip.version == 6 else (host, port)}]
        kept = filter_resolved(host, found, self.allow_hosts)  # raises OSError when nothing is left
        self._dns[(host, port)] = (loop.time() + self.dns_ttl_s, kept)
        return kept

    def _release(self, conn: _Conn) -> None:
        """A connection whose answer arrived whole, back to the pool."""
        loop = conn.loop
        conn.idle_since = loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.keepalive_s, self._sweep)
        self._wake()

    def _forget(self, conn: _Conn) -> None:
        """A connection closed: out of the pool and of the count."""
        if conn in self._open:
            self._open.discard(conn)
            idle = self._idle.get(conn.key)
            if idle and conn in idle:
                idle.remove(conn)
            self._wake()

    def _sweep(self) -> None:
        """Close connections idle longer than the keep-alive expiry."""
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for conns in list(self._idle.values()):
            for conn in [c for c in conns if now - c.idle_since >= self.keepalive_s]:
                conn.close()
        if any(self._idle.values()):
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_s / 2, self._sweep)
