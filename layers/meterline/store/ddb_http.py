"""A lean async DynamoDB client for the request path.

botocore spends ~1 ms of CPU per call (request serialization, event hooks, signing, response
parsing: measured in bench/overhead.py) and is synchronous, so each call also costs a thread hop.
The gateway's hot path makes one DynamoDB call per request, so it speaks DynamoDB's JSON protocol
directly: SigV4 signing with hmac/hashlib (checked against botocore's signer in the tests) over a
minimal pooled HTTP/1.1 client (store/http1.py).
Credentials come from botocore's provider chain, resolved once and refreshed by botocore when
they are temporary. Everything off the hot path keeps using boto3.

Under a slow store (the bounds that keep a slow store from storming itself):
- at most `max_in_flight` calls are on the wire at once; the others wait for a slot here, where
  waiting costs nothing, instead of queueing at the server as requests nobody waits for;
- a call has one deadline (`deadline_s`, slot wait included); once sent, an attempt waits at most
  `attempt_timeout_s` for its answer (time spent waiting for a slot does not eat into it, so a
  queue never turns into timeouts of requests the server is about to answer);
- retries: a failure that certainly did not apply (could not connect, no slot, throttled) is retried
  with jittered backoff; one that may still apply (timed out or lost after sending, 5xx) is retried
  only when the caller says the write is idempotent (conditional on the request's own lease, record
  key or marker). Counters (rate windows, loop counts) are not: they are never sent twice;
- a `DynamoError` says whether the write may still apply (`maybe_applied`), so a caller can undo it
  by its own key (the enforcement stage cancels a reservation's lease: store/budgets.py `cancel`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from typing import Any

from meterline import jsonc
from meterline.config import Settings
from meterline.store.http1 import Http1Pool, HttpError

SERVICE = "dynamodb"
RETRYABLE = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
             "InternalServerError", "ServiceUnavailable", "TransactionInProgressException"}


# Throttling is refused before anything is applied: always safe to retry.
THROTTLED = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}


class DynamoError(Exception):
    """DynamoDB refused a request (or could not be reached); `code` is the short error type (e.g.
    ConditionalCheckFailedException); `maybe_applied` is True when the write may have been, or may
    still be, applied by the server although no success came back."""

    def __init__(self, code: str, message: str, status: int, body: dict[str, Any] | None = None,
                 maybe_applied: bool = False):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.body = body or {}
        self.maybe_applied = maybe_applied


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


# The SigV4 signing key depends only on (secret, day, region): derived once a day, not per call.
_signing_keys: dict[tuple[str, str, str], bytes] = {}


def _signing_key(secret_key: str, date: str, region: str) -> bytes:
    found = _signing_keys.get((secret_key, date, region))
    if found is None:
        found = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), date), region), SERVICE), "aws4_request")
        if len(_signing_keys) >= 8:  # rotated credentials, a new day: keep only a few
            _signing_keys.clear()
        _signing_keys[(secret_key, date, region)] = found
    return found


JSON_CONTENT_TYPE = "application/x-amz-json-1.0"


def signed_headers(*, target: str, body: bytes, host: str, region: str, access_key: str, secret_key: str,
                   session_token: str | None, amz_date: str) -> dict[str, str]:
    """The headers of a signed DynamoDB JSON call (POST /, no query string): SigV4 as AWS specifies
    it, written out for this one header set (sorted: content-type, host, x-amz-date,
    [x-amz-security-token,] x-amz-target), since a generic signer costs more CPU than the call."""
    date = amz_date[:8]
    if session_token:
        names = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        token_line = f"x-amz-security-token:{session_token}\n"
    else:
        names = "content-type;host;x-amz-date;x-amz-target"
        token_line = ""
    canonical = (f"POST\n/\n\ncontent-type:{JSON_CONTENT_TYPE}\nhost:{host}\nx-amz-date:{amz_date}\n{token_line}"
                 f"x-amz-target:{target}\n\n{names}\n{hashlib.sha256(body).hexdigest()}")
    scope = f"{date}/{region}/{SERVICE}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(_signing_key(secret_key, date, region), to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {"content-type": JSON_CONTENT_TYPE, "x-amz-target": target, "x-amz-date": amz_date,
               "authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={names}, "
                                f"Signature={signature}"}
    if session_token:
        headers["x-amz-security-token"] = session_token
    return headers


class DynamoHttp:
    def __init__(self, settings: Settings, max_attempts: int = 3, max_in_flight: int = 16, deadline_s: float = 30.0,
                 attempt_timeout_s: float = 10.0, read_timeout: float | None = None):
        if read_timeout is not None:  # batch readers (ledger.stream_day) wait longer per page
            attempt_timeout_s = read_timeout
            deadline_s = max(deadline_s, read_timeout * max_attempts)
        self.settings = settings
        self.url = settings.aws_endpoint or f"https://dynamodb.{settings.region}.amazonaws.com"
        self.max_attempts = max_attempts
        self.max_in_flight = max_in_flight
        self.deadline_s = deadline_s
        self.attempt_timeout_s = attempt_timeout_s
        self._credentials: Any = None
        self._pool = Http1Pool(self.url, max_idle=max_in_flight)
        self.host = self._pool.authority
        self.calls = 0
        # Wall time with at least one call in flight (bench/overhead.py subtracts it from the added
        # latency, so the gateway's own overhead shows apart from the store's round trips).
        self.busy_s = 0.0
        self._in_flight = 0
        self._busy_since = 0.0
        self.in_flight = 0
        self.peak_in_flight = 0
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._date_second = -1
        self._date_text = ""
        self._frozen: Any = None
        self._frozen_second = -1

    def _creds(self, second: int) -> Any:
        """The signing credentials, frozen once per second: botocore refreshes temporary ones
        minutes before they expire, so a second-old copy is always valid, and freezing them (a
        refresh check under a lock, a new tuple) is not paid by every call."""
        if second != self._frozen_second:
            if self._credentials is None:
                import botocore.session

                self._credentials = botocore.session.get_session().get_credentials()
                if self._credentials is None:
                    raise DynamoError("MissingCredentials", "no AWS credentials found", 0)
            self._frozen = self._credentials.get_frozen_credentials()
            self._frozen_second = second
        return self._frozen

    def _amz_date(self, second: int) -> str:
        """The signing time (ISO basic, UTC), formatted once per second."""
        if second != self._date_second:
            self._date_second = second
            self._date_text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        return self._date_text

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.max_in_flight))
        return self._slots[1]

    async def call(self, operation: str, payload: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        """One DynamoDB operation. `idempotent=False` for writes that must never be sent twice (a
        counter's ADD): a failure after sending is then raised at once, with `maybe_applied`."""
        body = jsonc.dumps(payload)
        target = f"DynamoDB_20120810.{operation}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        slots = self._semaphore()
        maybe_applied = False
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            remaining = deadline - loop.time()
            try:
                if slots.locked():  # wait for a slot, within the deadline (a free one is taken at once)
                    async with asyncio.timeout(max(remaining, 0.001)):
                        await slots.acquire()
                else:
                    await slots.acquire()
            except TimeoutError:
                raise DynamoError("StoreBusy", f"no store connection free within {self.deadline_s:g} s", 0,
                                  maybe_applied=maybe_applied) from None
            try:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                second = int(time.time())
                creds = self._creds(second)
                headers = signed_headers(target=target, body=body, host=self.host, region=self.settings.region,
                                         access_key=creds.access_key, secret_key=creds.secret_key,
                                         session_token=creds.token, amz_date=self._amz_date(second))
                self.calls += 1
                response = await self._post(headers, body, max(min(self.attempt_timeout_s, deadline - loop.time()),
                                                               0.001))
            except HttpError as exc:
                maybe_applied = maybe_applied or exc.sent
                out_of_time = deadline - loop.time() <= 0
                if last or out_of_time or (exc.sent and not idempotent):
                    raise DynamoError("TransportError", str(exc), 0, maybe_applied=maybe_applied) from exc
                response = None
            finally:
                self.in_flight -= 1
                slots.release()
            if response is not None:
                if response.status == 200:
                    return jsonc.loads(response.body) if response.body else {}
                try:
                    error = jsonc.loads(response.body) if response.body else {}
                except ValueError:
                    error = {}
                code = str(error.get("__type", "Unknown")).rsplit("#", 1)[-1]
                server_side = response.status >= 500 or (code in RETRYABLE and code not in THROTTLED)
                maybe_applied = maybe_applied or server_side
                retry = code in THROTTLED or (server_side and idempotent)
                if not retry or last:
                    raise DynamoError(code, error.get("message") or error.get("Message") or "", response.status,
                                      error, maybe_applied=maybe_applied)
            pause = random.uniform(0, 0.025 * 2 ** attempt)  # full jitter
            if loop.time() + pause >= deadline:
                raise DynamoError("Timeout", f"no answer within {self.deadline_s:g} s", 0, maybe_applied=maybe_applied)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def _post(self, headers: dict[str, str], body: bytes, read_timeout: float | None = None) -> Any:
        if not self._in_flight:
            self._busy_since = time.perf_counter()
        self._in_flight += 1
        try:
            return await self._pool.post("/", headers, body, read_timeout=read_timeout)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self.busy_s += time.perf_counter() - self._busy_since

    async def aclose(self) -> None:
        await self._pool.aclose()
