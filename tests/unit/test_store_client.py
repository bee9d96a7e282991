"""The request-path store client under a slow or failing store (store/ddb_http.py), against a real
HTTP/1.1 server on loopback that answers like DynamoDB (JSON 1.0, `__type` errors).

- at most `max_in_flight` calls on the wire, however many callers;
- a write that may still apply (timed out after sending, 5xx) is never sent twice unless the caller
  says it is idempotent; throttling (refused before applying) is retried either way;
- errors say whether the write may have applied, so the caller can undo it by its own key.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field

import pytest

from meterline.config import Settings
from meterline.store.ddb_http import DynamoError, DynamoHttp


@dataclass
class FakeStore:
    delay_s: float = 0.0
    # Answers in order (status, __type or None); then 200 {}.
    script: list[tuple[int, str | None]] = field(default_factory=list)
    received: int = 0
    active: int = 0
    peak: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                await reader.readexactly(length)
                self.received += 1
                self.active += 1
                self.peak = max(self.peak, self.active)
                try:
                    await asyncio.sleep(self.delay_s)
                finally:
                    self.active -= 1
                status, kind = self.script.pop(0) if self.script else (200, None)
                body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{kind}", "message": "x"}
                                  if kind else {}).encode()
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\n"
                             f"content-length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


def run(store: FakeStore, scenario, **client_kwargs):
    async def main():
        server = await asyncio.start_server(store.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = DynamoHttp(Settings(aws_endpoint=f"http://127.0.0.1:{port}"), **client_kwargs)
        try:
            return await scenario(client)
        finally:
            await client.aclose()
            server.close()
    return asyncio.run(main())


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_in_flight_calls_are_bounded_and_all_complete():
    store = FakeStore(delay_s=0.02)

    async def scenario(client):
        return await asyncio.gather(*(client.call("UpdateItem", {"i": i}) for i in range(120)))

    results = run(store, scenario, max_in_flight=4)
    assert results == [{}] * 120
    assert store.received == 120 and store.peak <= 4


def test_a_counter_write_that_timed_out_is_not_sent_again():
    store = FakeStore(delay_s=0.6)

    async def scenario(client):
        with pytest.raises(DynamoError) as err:
            await client.call("UpdateItem", {}, idempotent=False)
        return err.value

    error = run(store, scenario, attempt_timeout_s=0.1, deadline_s=5)
    assert error.maybe_applied and store.received == 1


def test_an_idempotent_write_that_timed_out_is_retried_within_the_deadline():
    store = FakeStore(delay_s=0.4)

    async def scenario(client):
        with pytest.raises(DynamoError) as err:
            await client.call("UpdateItem", {})
        return err.value

    error = run(store, scenario, attempt_timeout_s=0.1, deadline_s=5, max_attempts=3)
    assert error.maybe_applied and store.received == 3


@pytest.mark.parametrize("idempotent", [True, False])
def test_throttling_is_retried_and_a_5xx_only_for_idempotent_writes(idempotent):
    store = FakeStore(script=[(400, "ThrottlingException"), (500, "InternalServerError")])

    async def scenario(client):
        try:
            return await client.call("UpdateItem", {}, idempotent=idempotent)
        except DynamoError as exc:
            return exc

    outcome = run(store, scenario)
    if idempotent:
        assert outcome == {} and store.received == 3
    else:
        assert isinstance(outcome, DynamoError) and outcome.code == "InternalServerError"
        assert outcome.maybe_applied and store.received == 2


def test_an_unreachable_store_is_reported_as_not_applied():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here

    async def main():
        client = DynamoHttp(Settings(aws_endpoint=f"http://127.0.0.1:{port}"), deadline_s=2)
        try:
            await client.call("UpdateItem", {}, idempotent=False)
        except DynamoError as exc:
            return exc
        finally:
            await client.aclose()

    error = asyncio.run(main())
    assert error.code == "TransportError" and not error.maybe_applied
