"""What the simulator hands back: httpx.Response's streaming surface (the proxy cannot tell it
from a real provider's), with JSON bodies, SSE streams and provider-shaped errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any


class SimResponse:
    def __init__(self, status_code: int, payload: bytes | None = None,
                 chunks: list[bytes] | None = None, delay_s: float = 0.0):
        self.status_code = status_code
        self.headers = {"content-type": "text/event-stream" if chunks is not None else "application/json",
                        "x-request-id": "sim-" + hashlib.sha256(payload or b"".join(chunks or [])).hexdigest()[:16]}
        self._payload = payload
        self._chunks = chunks
        self._delay_s = delay_s

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            yield self._payload or b""
            return
        for chunk in self._chunks:
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            yield chunk

    async def aread(self) -> bytes:
        return b"".join([c async for c in self.aiter_bytes()])

    async def aclose(self) -> None:
        return None


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def ok(payload: dict[str, Any]) -> SimResponse:
    return SimResponse(200, dumps(payload))


def stream(chunks: list[bytes], delay_s: float) -> SimResponse:
    return SimResponse(200, None, chunks, delay_s)


class SimError(Exception):
    """A provider error, raised anywhere in a dialect module and answered as that provider would."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def openai(self) -> SimResponse:
        return SimResponse(self.status, dumps({"error": {"message": self.message, "type": self.kind,
                                                         "param": self.param, "code": self.code}}))

    def anthropic(self) -> SimResponse:
        kind = {404: "not_found_error", 429: "rate_limit_error"}.get(self.status, "invalid_request_error")
        return SimResponse(self.status, dumps({"type": "error", "error": {"type": kind, "message": self.message}}))
