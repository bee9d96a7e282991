"""The upstream seam: everything that talks to a provider implements `Upstream`.

`http_upstream()` (one pooled HTTP client, providers/http.py) serves real providers and any OpenAI-compatible URL;
`SimUpstream` answers in-process for `sim/<model>`. Both return an object with httpx.Response's
streaming surface, so the proxy code cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    # Secrets in this request (provider key): redacted from anything passed back to a caller.
    secrets: tuple[str, ...] = field(default_factory=tuple)
    # (service, region) when the request must be signed with AWS SigV4 (Bedrock): the upstream signs it.
    signing: tuple[str, str] | None = None


class UpstreamResponse(Protocol):
    status_code: int

    @property
    def headers(self) -> dict[str, str] | object: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...
