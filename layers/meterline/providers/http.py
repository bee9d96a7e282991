"""HTTP upstream: one pooled client per process, chosen by METERLINE_UPSTREAM_TRANSPORT.

`http1` (the default, providers/http1.py) is a lean asyncio-protocol HTTP/1.1 client with aiohttp's
pooling, timeouts, SSRF-guarded DNS and error mapping but none of its request/response machinery:
~0.1-0.2 ms less gateway CPU per request (bench/upstream_transports.py, docs/ARCHITECTURE.md).
`aiohttp` drives aiohttp directly (the httpx API over aiohttp's transport spent about half the
gateway's CPU per request building httpx requests, merging URLs and extracting cookies);
`httpx-aiohttp` (the httpx API on aiohttp's transport) and `httpx` (httpx's own transport) remain
selectable too.
Transport exceptions are mapped to gateway errors at this boundary; errors while reading a body are
raised as httpx's read errors, the types the proxy handles for every transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from meterline.egress import EgressError, check_url, guarded_resolver
from meterline.errors import UpstreamTimeout, UpstreamUnavailable
from meterline.providers.base import UpstreamRequest, UpstreamResponse


def http_upstream(*, connect_timeout: float, read_timeout: float, transport: str = "http1",
                  allow_hosts: tuple[str, ...] = ()) -> Any:
    """The upstream for METERLINE_UPSTREAM_TRANSPORT: http1 (default), aiohttp, httpx-aiohttp or httpx."""
    if transport == "http1":
        from meterline.providers.http1 import Http1Upstream  # imports this module's egress_check

        return Http1Upstream(connect_timeout=connect_timeout, read_timeout=read_timeout, allow_hosts=allow_hosts)
    if transport == "aiohttp":
        return AiohttpUpstream(connect_timeout=connect_timeout, read_timeout=read_timeout, allow_hosts=allow_hosts)
    return HttpUpstream(connect_timeout=connect_timeout, read_timeout=read_timeout, transport=transport,
                        allow_hosts=allow_hosts)


def egress_check(url: str, allow_hosts: tuple[str, ...]) -> None:
    """SSRF guard on every send (meterline.egress); names are checked again at connect time."""
    try:
        check_url(url, allow_hosts)
    except EgressError as exc:
        raise UpstreamUnavailable(f"The provider URL is not allowed: {exc}", code="egress_refused") from exc


class HttpUpstream:
    """The httpx API, on aiohttp's transport (`httpx-aiohttp`) or httpx's own (`httpx`)."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, transport: str = "httpx",
                 allow_hosts: tuple[str, ...] = ()):
        self.allow_hosts = allow_hosts
        timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout)
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=64, keepalive_expiry=60)
        if transport == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            self._client = httpx.AsyncClient(
                transport=AiohttpTransport(limits=limits), timeout=timeout, trust_env=False
            )
        else:
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        egress_check(request.url, self.allow_hosts)
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


def _received(content: Any) -> bytes:
    """What aiohttp had already received when the body broke off. Its StreamReader raises the
    connection's error before handing over buffered bytes, so under load (when the last events and
    the break arrive in one read) a cut stream would lose complete events the provider did send,
    and the caller would see, and be metered for, less than it got. aiohttp is pinned
    (layers/constraints.txt); if its internals change this returns nothing, as before."""
    try:
        return bytes(content._read_nowait(-1)) if getattr(content, "_buffer", None) else b""
    except Exception:
        return b""


class _AiohttpResponse:
    """An aiohttp response behind the UpstreamResponse protocol."""

    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: Any):
        self._response = response
        self.status_code: int = response.status
        self.headers = response.headers  # case-insensitive, like httpx's

    async def aread(self) -> bytes:
        import aiohttp

        try:
            return bytes(await self._response.read())
        except TimeoutError as exc:
            raise httpx.ReadTimeout("the provider stopped sending") from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError("the provider's response broke off") from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        import aiohttp

        content = self._response.content
        try:
            async for chunk in content.iter_any():
                yield chunk
        except TimeoutError as exc:
            if rest := _received(content):
                yield rest
            raise httpx.ReadTimeout("the provider stopped sending") from exc
        except aiohttp.ClientError as exc:
            if rest := _received(content):
                yield rest
            raise httpx.ReadError("the provider's response broke off") from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpUpstream:
    """aiohttp directly: pooled keep-alive connections, no cookies, no proxy from the environment."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, allow_hosts: tuple[str, ...] = ()):
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.allow_hosts = allow_hosts
        self._session: Any = None  # created on the first request, inside the running event loop

    def _client(self) -> Any:
        if self._session is None or self._session.closed:
            import aiohttp

            # The resolver drops metadata/loopback/link-local addresses at connect time (no DNS rebinding).
            connector = aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300,
                                             resolver=guarded_resolver(self.allow_hosts))
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                              sock_connect=self.connect_timeout, sock_read=self.read_timeout))
        return self._session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        import aiohttp

        egress_check(request.url, self.allow_hosts)
        try:
            response = await self._client().request(request.method, request.url, headers=request.headers,
                                                     data=request.body, allow_redirects=False)
        except aiohttp.ClientConnectorError as exc:  # refused, DNS failure, TLS handshake
            raise UpstreamUnavailable("The provider could not be reached.") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout("The provider did not respond in time.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable("The provider could not be reached.") from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
