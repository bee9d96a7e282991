"""A lean async DynamoDB client for the request path.

botocore spends ~1 ms of CPU per call (request serialization, event hooks, signing, response
parsing: measured in bench/overhead.py) and is synchronous, so each call also costs a thread hop.
The gateway's hot path makes one DynamoDB call per request, so it speaks DynamoDB's JSON protocol
directly: SigV4 signing with hmac/hashlib (checked against botocore's signer in the tests), a
minimal pooled HTTP/1.1 client (store/http1.py), retries with jittered backoff on throttling, 5xx
and transport errors (every request-path write is idempotent, so a retry is safe).
Credentials come from botocore's provider chain, resolved once and refreshed by botocore when
they are temporary. Everything off the hot path keeps using boto3.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from datetime import UTC, datetime
from typing import Any

from meterline.config import Settings
from meterline.store.http1 import Http1Pool, HttpError

SERVICE = "dynamodb"
RETRYABLE = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
             "InternalServerError", "ServiceUnavailable", "TransactionInProgressException"}


class DynamoError(Exception):
    """DynamoDB refused a request; `code` is the short error type (e.g. ConditionalCheckFailedException)."""

    def __init__(self, code: str, message: str, status: int, body: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.body = body or {}


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign(*, method: str, host: str, path: str, headers: dict[str, str], body: bytes, region: str,
         access_key: str, secret_key: str, session_token: str | None, now: datetime) -> dict[str, str]:
    """SigV4 headers for a request (no query string), as AWS specifies them."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = amz_date
    if session_token:
        signed["x-amz-security-token"] = session_token
    names = sorted(signed)
    canonical = "\n".join([
        method, path, "", "".join(f"{n}:{signed[n]}\n" for n in names), ";".join(names),
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{date}/{region}/{SERVICE}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), date), region), SERVICE), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in signed.items() if k != "host"}
    out["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out


class DynamoHttp:
    def __init__(self, settings: Settings, max_attempts: int = 4, read_timeout: float = 5.0):
        self.settings = settings
        self.url = settings.aws_endpoint or f"https://dynamodb.{settings.region}.amazonaws.com"
        self.max_attempts = max_attempts
        self._credentials: Any = None
        self._pool = Http1Pool(self.url, max_idle=128, read_timeout=read_timeout)
        self.host = self._pool.authority
        self.calls = 0
        # Wall time with at least one call in flight (bench/overhead.py subtracts it from the added
        # latency, so the gateway's own overhead shows apart from the store's round trips).
        self.busy_s = 0.0
        self._in_flight = 0
        self._busy_since = 0.0

    def _creds(self) -> Any:
        if self._credentials is None:
            import botocore.session

            self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise DynamoError("MissingCredentials", "no AWS credentials found", 0)
        # Cheap for static credentials; botocore refreshes temporary ones shortly before expiry.
        return self._credentials.get_frozen_credentials()

    async def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        base = {"content-type": "application/x-amz-json-1.0", "x-amz-target": f"DynamoDB_20120810.{operation}"}
        for attempt in range(1, self.max_attempts + 1):
            creds = self._creds()
            headers = sign(method="POST", host=self.host, path="/", headers=base, body=body,
                           region=self.settings.region, access_key=creds.access_key, secret_key=creds.secret_key,
                           session_token=creds.token, now=datetime.now(UTC))
            headers.update(base)
            self.calls += 1
            try:
                response = await self._post(headers, body)
            except HttpError as exc:
                if attempt == self.max_attempts:
                    raise DynamoError("TransportError", str(exc), 0) from exc
            else:
                if response.status == 200:
                    return json.loads(response.body) if response.body else {}
                try:
                    error = json.loads(response.body) if response.body else {}
                except ValueError:
                    error = {}
                code = str(error.get("__type", "Unknown")).rsplit("#", 1)[-1]
                if (code not in RETRYABLE and response.status < 500) or attempt == self.max_attempts:
                    raise DynamoError(code, error.get("message") or error.get("Message") or "", response.status,
                                      error)
            await asyncio.sleep(random.uniform(0, 0.025 * 2 ** attempt))  # full jitter
        raise AssertionError("unreachable")

    async def _post(self, headers: dict[str, str], body: bytes) -> Any:
        if not self._in_flight:
            self._busy_since = time.perf_counter()
        self._in_flight += 1
        try:
            return await self._pool.post("/", headers, body)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self.busy_s += time.perf_counter() - self._busy_since

    async def aclose(self) -> None:
        await self._pool.aclose()
