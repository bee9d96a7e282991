"""The lean HTTP/1.1 provider transport (providers/http1.py) against real loopback servers: raw
asyncio servers that write exactly the bytes a case needs (splits, cuts, stalls, closes), and a TLS
server with a self-signed certificate. Timeouts here are short only where the server never
answers, so load cannot make them fire early; everything else waits on events, not on time."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from meterline.errors import UpstreamTimeout, UpstreamUnavailable
from meterline.providers.base import UpstreamRequest
from meterline.providers.http import http_upstream
from meterline.providers.http1 import Http1Upstream

LOOPBACK = ("127.0.0.1", "localhost")


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request):
    """Every case on asyncio's loop and on uvloop's (uvicorn runs the gateway on uvloop when installed)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    yield request.param
    asyncio.set_event_loop_policy(None)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw loopback server: counts connections, records each request (head, body)."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.closed: list[asyncio.Event] = []

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            gone = asyncio.Event()
            self.closed.append(gone)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self.open -= 1
                writer.close()
                gone.set()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def read(self, reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((head[0], headers, body))
        return head[0], headers, body

    def run(self, scenario: Callable[[str, Http1Upstream], Awaitable[None]],
            server_ssl: ssl.SSLContext | None = None, **client_kw: object) -> None:
        """Serve, run `scenario(url, client)` with a fresh client, then close both, whatever happens."""

        async def go() -> None:
            url = await self.start(server_ssl)
            client = upstream(**client_kw)
            try:
                await scenario(url, client)
            finally:
                await client.aclose()
                await self.stop()

        asyncio.run(go())

    async def stop(self) -> None:
        """Stop listening; wait for every handler to see its connection end (the client closed them)."""
        self.server.close()
        await asyncio.wait_for(asyncio.gather(*(gone.wait() for gone in self.closed)), 30)


def upstream(**kw) -> Http1Upstream:
    return Http1Upstream(connect_timeout=kw.pop("connect_timeout", 30.0), read_timeout=kw.pop("read_timeout", 30.0),
                         allow_hosts=kw.pop("allow_hosts", LOOPBACK), **kw)


def post(url: str, body: bytes = b"{}", path: str = "/v1/x", **headers: str) -> UpstreamRequest:
    return UpstreamRequest("POST", url + path, {"content-type": "application/json", **headers}, body, True)


async def collect(response) -> tuple[list[bytes], BaseException | None]:
    chunks: list[bytes] = []
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
    except Exception as exc:
        return chunks, exc
    finally:
        await response.aclose()
    return chunks, None


def test_keep_alive_framings_headers_and_the_request_head():
    """Content-Length, chunked, close-delimited and body-less answers; one connection while kept alive."""

    async def handler(reader, writer):
        while True:
            line, _, body = await server.read(reader)
            if body == b"length":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: r1\r\n"
                             b"Content-Length: 6\r\n\r\nlength")
            elif body == b"chunked":
                writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n")
            elif line.startswith("HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")  # a HEAD answer has no body
            elif body == b"204":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            elif body == b"304":
                writer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
            elif body == b"302":
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n")
            else:  # framed by the connection closing
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close")
                await writer.drain()
                return
            await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        response = await client.send(post(url, b"length", path="/v1/chat/completions?api-version=1"))
        assert response.status_code == 200 and await response.aread() == b"length"
        assert response.headers["content-type"] == "application/json"
        assert response.headers.get("X-REQUEST-ID") == "r1" and "x-request-id" in response.headers
        assert response.headers.get("missing") is None and "missing" not in response.headers
        await response.aclose()
        line, headers, _ = server.requests[0]
        assert line == "POST /v1/chat/completions?api-version=1 HTTP/1.1"
        assert headers["host"] == url.removeprefix("http://") and headers["content-length"] == "6"
        assert headers["accept-encoding"] == "gzip, deflate" and headers["content-type"] == "application/json"

        response = await client.send(post(url, b"chunked"))
        assert response.status_code == 201 and b"".join((await collect(response))[0]) == b"abcde"
        response = await client.send(UpstreamRequest("HEAD", url + "/", {}, b"", False))
        assert await response.aread() == b""
        for status in (204, 304, 302):  # a redirect is returned as is, never followed
            response = await client.send(post(url, str(status).encode()))
            assert response.status_code == status and await response.aread() == b""
        assert server.connections == 1  # every answer above left the connection reusable

        response = await client.send(post(url, b"close"))
        assert await response.aread() == b"until-close"
        response = await client.send(post(url, b"length"))
        assert await response.aread() == b"length"
        assert server.connections == 2  # a close-delimited answer ends its connection

    server = Server(handler)
    server.run(run)


def _chunked_answer() -> tuple[bytes, bytes]:
    events = [b"data: {\"i\": %d}\n\n" % i for i in range(3)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + body, \
        b"".join(events)


def test_a_chunked_answer_split_across_reads_at_every_boundary():
    """The answer arrives in two reads, split at each byte in turn (head and chunk framing included);
    one keep-alive connection carries all of them."""
    answer, expected = _chunked_answer()

    async def handler(reader, writer):
        for split in range(1, len(answer)):
            await server.read(reader)
            writer.write(answer[:split])
            await writer.drain()
            await asyncio.sleep(0.001)  # the client's loop reads the first part on its own
            writer.write(answer[split:])
            await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        for _ in range(1, len(answer)):
            response = await client.send(post(url))
            chunks, error = await collect(response)
            assert error is None and b"".join(chunks) == expected
        assert server.connections == 1

    server = Server(handler)
    server.run(run)


def test_a_stream_is_yielded_as_each_chunk_arrives():
    """No buffering: the server sends the next event only after the reader has the previous one."""
    got: list[asyncio.Event] = []  # made inside the test's loop

    async def handler(reader, writer):
        await server.read(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(3):
            event = b"data: %d\n\n" % i
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await got[i].wait()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        got.extend(asyncio.Event() for _ in range(3))
        response = await client.send(post(url))
        seen = b""
        async for chunk in response.aiter_bytes():
            seen += chunk
            for i in range(3):
                if b"data: %d\n\n" % i in seen:
                    got[i].set()
        await response.aclose()
        assert seen == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"

    server = Server(handler)
    server.run(run)


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_a_stream_cut_mid_body_yields_what_came_then_a_read_error(framing):
    async def handler(reader, writer):
        await server.read(reader)
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nabc")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhelloabc")
        await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        response = await client.send(post(url))
        chunks, error = await collect(response)
        assert b"".join(chunks) == b"helloabc"
        assert isinstance(error, httpx.ReadError)
        assert client._open == set()  # the broken connection is gone, not pooled

    server = Server(handler)
    server.run(run)


def test_read_timeouts_between_bytes_and_before_the_head():
    async def handler(reader, writer):
        _, _, body = await server.read(reader)
        if body == b"stall-body":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
        await stop.wait()  # never sends more

    async def run(url: str, client: Http1Upstream) -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            response = await client.send(post(url, b"stall-body"))
            chunks, error = await collect(response)
            assert chunks == [b"first"] and isinstance(error, httpx.ReadTimeout)
            with pytest.raises(UpstreamTimeout):
                await client.send(post(url, b"stall-head"))
            assert client._open == set()
        finally:
            stop.set()  # the handlers return, so the server can stop

    stop: asyncio.Event
    server = Server(handler)
    # Long enough that a loaded machine pausing this process cannot expire it before the head
    # arrives (the stalls above are real: the server never sends more).
    server.run(run, read_timeout=1.0)


def test_a_pooled_connection_the_server_dropped_is_retried_once_only_when_nothing_came_back():
    """The keep-alive race: the server closes a reused connection as the request arrives. Sent again
    on a fresh connection when no byte of an answer came; never when part of one did, never for a
    fresh connection."""

    async def handler(reader, writer):
        number = server.connections
        while True:
            _, _, body = await server.read(reader)
            if body == b"drop" and number == 1:
                return  # closes without a byte
            if body == b"partial":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-")
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        assert await (await client.send(post(url, b"warm"))).aread() == b"ok"
        assert await (await client.send(post(url, b"drop"))).aread() == b"ok"
        assert [r[2] for r in server.requests] == [b"warm", b"drop", b"drop"] and server.connections == 2

        with pytest.raises(UpstreamUnavailable):  # reused, but part of an answer came: not resent
            await client.send(post(url, b"partial"))
        assert [r[2] for r in server.requests][3:] == [b"partial"]

        await client.aclose()
        fresh = upstream()  # nothing pooled: a fresh connection that drops is not resent
        server.connections = 0
        try:
            with pytest.raises(UpstreamUnavailable):
                await fresh.send(post(url, b"drop"))
        finally:
            await fresh.aclose()
        assert [r[2] for r in server.requests][4:] == [b"drop"]

    server = Server(handler)
    server.run(run)


def test_connection_close_and_idle_expiry_end_a_connection():
    async def handler(reader, writer):
        while True:
            _, _, body = await server.read(reader)
            close = b"Connection: close\r\n" if body == b"close" else b""
            writer.write(b"HTTP/1.1 200 OK\r\n%scontent-length: 2\r\n\r\nok" % close)
            await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        await (await client.send(post(url, b"close"))).aread()
        await server.closed[0].wait()  # the client closed it: not pooled
        await (await client.send(post(url, b"a"))).aread()
        assert server.connections == 2
        await asyncio.sleep(0.5)  # idle past the keep-alive expiry (at least: load only adds to it)
        await (await client.send(post(url, b"c"))).aread()
        assert server.connections == 3
        await server.closed[1].wait()  # the expired one was closed

    server = Server(handler)
    server.run(run, keepalive_s=0.2)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_bodies_are_decoded(encoding):
    text = b'{"choices": [' + b'{"text": "hello"},' * 400 + b"{}]}"
    if encoding == "gzip":
        packed = gzip.compress(text)
    elif encoding == "deflate":
        packed = zlib.compress(text)
    else:
        raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed = raw.compress(text) + raw.flush()
    name = encoding.removeprefix("raw-").encode()

    cut: list[bool] = []

    async def handler(reader, writer):
        while True:
            await server.read(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: %s\r\ntransfer-encoding: chunked\r\n\r\n" % name)
            sent = packed[:-20] if cut else packed
            for i in range(0, len(sent), 50):  # compressed bytes in small chunks, one read each
                piece = sent[i:i + 50]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        response = await client.send(post(url))
        assert await response.aread() == text
        assert response.headers["content-encoding"] == name.decode()  # as received, like aiohttp's
        response = await client.send(post(url))
        assert b"".join((await collect(response))[0]) == text
        assert server.connections == 1
        cut.append(True)  # the next answer's compressed stream stops short, its framing does not
        chunks, error = await collect(await client.send(post(url)))
        assert isinstance(error, httpx.DecodingError) and text.startswith(b"".join(chunks))

    server = Server(handler)
    server.run(run)


def test_an_unread_or_cancelled_answer_never_goes_back_to_the_pool():
    async def handler(reader, writer):
        while True:
            _, _, body = await server.read(reader)
            if body == b"silent":
                continue  # never answers: the sender is cancelled while waiting
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            if body == b"stream":
                await reader.read()  # the rest never comes: until the client closes the connection
                return
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        response = await client.send(post(url, b"stream"))
        async for chunk in response.aiter_bytes():
            assert chunk == b"first"
            break
        await response.aclose()  # read in part: its connection is closed
        await server.closed[0].wait()

        sending = asyncio.ensure_future(client.send(post(url, b"silent")))
        while len(server.requests) < 2:
            await asyncio.sleep(0.01)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        await server.closed[1].wait()  # cancelled before the head: closed, not pooled

        response = await client.send(post(url, b"whole"))
        assert await response.aread() == b"first"
        assert server.connections == 3 and len(client._open) == 1

    server = Server(handler)
    server.run(run)


def test_the_pool_bounds_open_connections_under_concurrency():
    async def handler(reader, writer):
        while True:
            await server.read(reader)
            await asyncio.sleep(0.02)  # holds the connection a little while answering
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        async def one() -> bytes:
            response = await client.send(post(url))
            return await response.aread()

        assert await asyncio.gather(*(one() for _ in range(40))) == [b"ok"] * 40
        assert server.most_open <= 4 and server.connections <= 4
        assert len(client._open) <= 4

    server = Server(handler)
    server.run(run, limit=4)


def test_refused_unresolvable_and_guarded_addresses_are_unavailable():
    async def run() -> None:
        client = upstream(connect_timeout=30.0)
        try:
            with pytest.raises(UpstreamUnavailable):  # nothing listens on port 1
                await client.send(post("http://127.0.0.1:1"))
            for _ in range(2):  # the egress check on every send (a refused URL is never remembered)
                with pytest.raises(UpstreamUnavailable) as refused:
                    await client.send(post("http://127.0.0.2:8080"))
                assert refused.value.code == "egress_refused"
            with pytest.raises(UpstreamUnavailable) as injected:  # no header can add a line to the request
                await client.send(post("http://127.0.0.1:1", **{"x-beta": "a\r\nx-injected: 1"}))
            assert injected.value.code == "invalid_upstream_header"
        finally:
            await client.aclose()
        # DNS answers pass the SSRF guard: a name resolving only to loopback is refused at connect.
        guarded = upstream(allow_hosts=())
        with pytest.raises(OSError, match="egress"):
            await guarded._resolve("localhost", 443)
        assert [a["host"] for a in await upstream()._resolve("localhost", 443)] in (["127.0.0.1"], ["::1", "127.0.0.1"],
                                                                                    ["127.0.0.1", "::1"])

    asyncio.run(run())


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meterline-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


def test_tls_with_sni_keep_alive_and_an_untrusted_certificate_refused(tmp_path):
    server_context, client_context = _self_signed(tmp_path)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: names.append(name)

    async def handler(reader, writer):
        while True:
            await server.read(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
            await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        url = url.replace("127.0.0.1", "localhost")
        for _ in range(2):
            response = await client.send(post(url))
            assert response.status_code == 200 and await response.aread() == b"ok"
        assert server.connections == 1 and names == ["localhost"]
        assert server.requests[0][1]["host"] == url.removeprefix("https://")
        default = upstream()  # the system and certifi roots: a self-signed certificate is refused
        try:
            with pytest.raises(UpstreamUnavailable):
                await default.send(post(url))
        finally:
            await default.aclose()

    server = Server(handler)
    server.run(run, server_context, ssl_context=client_context)


def test_bedrock_sigv4_signature_survives_the_transport(monkeypatch):
    """The server recomputes the SigV4 signature from the bytes it received (method, path as sent,
    Host, the signed headers, the body): the transport must send what was signed, unchanged."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from meterline.providers.bedrock import SigV4Upstream

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    verdicts: list[bool] = []

    async def handler(reader, writer):
        line, headers, body = await server.read(reader)
        method, path, _ = line.split(" ")
        auth = headers["authorization"]
        signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
        request = AWSRequest(method=method, url=f"http://{headers['host']}{path}", data=body,
                             headers={h: headers[h] for h in signed if h != "host"})
        signer = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "bedrock",
                           "us-east-1")
        request.context["timestamp"] = headers["x-amz-date"]
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        verdicts.append(auth.endswith(f"Signature={expected}"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()

    async def run() -> None:
        url = await server.start()
        signing = SigV4Upstream(http_upstream(connect_timeout=30, read_timeout=30, transport="http1",
                                              allow_hosts=LOOPBACK))
        request = UpstreamRequest("POST", url + "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
                                  {"content-type": "application/json"}, b'{"messages": []}', False,
                                  signing=("bedrock", "us-east-1"))
        try:
            response = await signing.send(request)
            assert response.status_code == 200 and await response.aread() == b"{}"
        finally:
            await signing._http.aclose()
            await server.stop()

    server = Server(handler)
    asyncio.run(run())
    assert server.requests[0][0].startswith("POST /model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse ")
    assert verdicts == [True]


def test_a_pooled_connection_the_server_closed_while_idle_is_not_reused():
    """The server answers, then closes the idle connection: the next request goes out once, on a new
    connection (whether the client saw the close before sending or only after)."""

    async def handler(reader, writer):
        await server.read(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async def run(url: str, client: Http1Upstream) -> None:
        assert await (await client.send(post(url, b"a"))).aread() == b"ok"
        await server.closed[0].wait()
        assert await (await client.send(post(url, b"b"))).aread() == b"ok"
        assert [r[2] for r in server.requests] == [b"a", b"b"] and server.connections == 2

    server = Server(handler)
    server.run(run)
