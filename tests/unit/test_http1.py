"""The minimal HTTP/1.1 client behind the lean DynamoDB client, against raw asyncio servers."""

from __future__ import annotations

import asyncio

import pytest

from meterline.store.http1 import Http1Pool, HttpError


async def serve(handler) -> tuple[asyncio.base_events.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    return await reader.readexactly(length)


def test_keep_alive_reuses_one_connection_and_reads_both_framings():
    connections = []

    async def handler(reader, writer):
        connections.append(writer)
        try:
            while True:
                body = await read_request(reader)
                if body == b"chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                                 b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> None:
        server, url = await serve(handler)
        pool = Http1Pool(url)
        assert (await pool.post("/", {}, b"one")).body == b"one"
        assert (await pool.post("/", {}, b"chunked")).body == b"abcde"
        assert (await pool.post("/", {}, b"three")).body == b"three"
        assert len(connections) == 1
        await pool.aclose()
        server.close()

    asyncio.run(run())


def test_connection_close_and_a_stale_pooled_connection_are_handled():
    served = []

    async def handler(reader, writer):
        body = await read_request(reader)
        served.append(body)
        if body == b"close-me":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        else:
            # Answers keep-alive but closes right after: the next request on it finds EOF (stale).
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def run() -> None:
        server, url = await serve(handler)
        pool = Http1Pool(url)
        assert (await pool.post("/", {}, b"close-me")).status == 200
        assert pool._idle == []  # not pooled
        assert (await pool.post("/", {}, b"a")).body == b"ok"
        await asyncio.sleep(0.05)
        assert (await pool.post("/", {}, b"b")).body == b"ok"  # stale connection: sent again, once
        assert served == [b"close-me", b"a", b"b"]
        await pool.aclose()
        server.close()

    asyncio.run(run())


def test_timeouts_and_refusals_are_http_errors():
    async def silent(reader, writer):
        await asyncio.sleep(5)

    async def run() -> None:
        server, url = await serve(silent)
        with pytest.raises(HttpError):
            await Http1Pool(url, read_timeout=0.2).post("/", {}, b"x")
        server.close()
        await server.wait_closed()
        with pytest.raises(HttpError, match="cannot connect"):
            await Http1Pool(url).post("/", {}, b"x")

    asyncio.run(run())


def test_an_answer_in_fragments_is_parsed_once_complete():
    """The client parses as bytes arrive: a head and body split at every byte, both framings."""

    async def handler(reader, writer):
        try:
            while True:
                body = await read_request(reader)
                if body == b"chunked":
                    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                else:
                    answer = b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\nx-a: b\r\n\r\n%s" % (len(body), body)
                for i in range(len(answer)):
                    writer.write(answer[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(0)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> None:
        server, url = await serve(handler)
        pool = Http1Pool(url)
        first = await pool.post("/", {}, b"payload")
        assert (first.status, first.body, first.headers["x-a"]) == (201, b"payload", "b")
        assert (await pool.post("/", {}, b"chunked")).body == b"abcde"
        assert len(pool._idle) == 1
        await pool.aclose()
        server.close()

    asyncio.run(run())


def test_a_pooled_connection_that_sent_unasked_bytes_is_not_reused():
    connections = []

    async def handler(reader, writer):
        connections.append(writer)
        try:
            while True:
                body = await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                if body == b"and-garbage":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> None:
        server, url = await serve(handler)
        pool = Http1Pool(url)
        assert (await pool.post("/", {}, b"and-garbage")).body == b"and-garbage"
        await asyncio.sleep(0.05)
        assert (await pool.post("/", {}, b"next")).body == b"next"  # never the stale answer
        assert len(connections) == 2
        await pool.aclose()
        server.close()

    asyncio.run(run())
