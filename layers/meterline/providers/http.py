"""HTTP upstream: one pooled httpx client per process, on aiohttp's transport by default.

bench/overhead.py measures both transports; aiohttp's added ~3x less latency than httpx's
default here, so it is the default (METERLINE_UPSTREAM_TRANSPORT=httpx switches back).
httpx exceptions are mapped to gateway errors at this boundary.
"""

from __future__ import annotations

import httpx

from meterline.errors import UpstreamTimeout, UpstreamUnavailable
from meterline.providers.base import UpstreamRequest, UpstreamResponse


class HttpUpstream:
    def __init__(self, *, connect_timeout: float, read_timeout: float, transport: str = "aiohttp"):
        timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout)
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=64, keepalive_expiry=60)
        if transport == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            self._client = httpx.AsyncClient(
                transport=AiohttpTransport(limits=limits), timeout=timeout, trust_env=False
            )
        else:
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        built = self._client.build_request(request.method, request.url, headers=request.headers,
                                           content=request.body)
        try:
            return await self._client.send(built, stream=True)
        except httpx.TimeoutException as exc:
            if _refused(exc):
                raise UpstreamUnavailable("The provider could not be reached.") from exc
            raise UpstreamTimeout("The provider did not respond in time.") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable("The provider could not be reached.") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def _refused(exc: Exception) -> bool:
    """httpx-aiohttp maps aiohttp's ClientConnectorError (connection refused, DNS failure) to
    httpx.ConnectTimeout; the original cause tells a refusal (an OSError) from a real timeout."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and not isinstance(cause, TimeoutError)
