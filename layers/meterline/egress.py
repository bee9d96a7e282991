"""Where the gateway may send a provider request (SSRF guard). Pure checks plus an aiohttp resolver.

A provider base URL is set by a workspace admin and then fetched by the data plane with the
function's network position (and, on Bedrock, its role). So:
- the scheme is https; http only to hosts the owner explicitly allows (`METERLINE_EGRESS_ALLOW`,
  e.g. a local vLLM; `meterline dev` allows loopback);
- no loopback, link-local (169.254.0.0/16: the EC2/ECS metadata endpoints; fe80::/10), the AWS
  IPv6 metadata address (fd00:ec2::254), unspecified, multicast or reserved address - as a literal,
  as a known metadata host name, or as what a name resolves to *when the request is sent*
  (`GuardedResolver`: the addresses checked are the addresses connected to, so DNS rebinding
  between a check and the connection cannot slip through);
- no credentials in the URL, no other scheme (`file:`, `gopher:`, ...), and it must parse as a URL.
Checked when a provider is stored (ops.put_provider) and again on every send.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.com"})
_AWS_IMDS_V6 = ipaddress.ip_network("fd00:ec2::/32")


class EgressError(ValueError):
    """A provider URL or address the gateway must not send to."""


def forbidden_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why the address is off limits, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local (cloud metadata) address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _AWS_IMDS_V6:
        return "the cloud metadata address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "a reserved address"
    return None


# URLs already found allowed, by (url, allow_hosts): the data plane checks its few provider URLs on
# every send, and the answer for a URL never changes (names are checked again at connect time).
_ALLOWED: dict[tuple[str, tuple[str, ...]], str] = {}


def check_url(url: Any, allow_hosts: Iterable[str] = ()) -> str:
    """The URL, if the gateway may send provider requests to it; raises EgressError otherwise."""
    if isinstance(url, str):
        key = (url, allow_hosts if isinstance(allow_hosts, tuple) else tuple(allow_hosts))
        found = _ALLOWED.get(key)
        if found is None:
            found = _check_url(url, key[1])
            if len(_ALLOWED) >= 1024:  # bounded: any number of workspaces may each name a URL
                _ALLOWED.clear()
            _ALLOWED[key] = found
        return found
    return _check_url(url, allow_hosts)


def _check_url(url: Any, allow_hosts: Iterable[str]) -> str:
    if not isinstance(url, str) or not url.strip():
        raise EgressError("a provider base URL must be an https:// URL")
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise EgressError(f"not a valid URL: {exc}") from exc
    allowed = {h.lower() for h in allow_hosts}
    if parts.scheme not in ("https", "http") or not host:
        raise EgressError("a provider base URL must be an https:// URL")
    if parts.username or parts.password:
        raise EgressError("credentials do not belong in a provider URL (store the key as the provider's secret)")
    if host in allowed:
        return url
    if parts.scheme == "http":
        raise EgressError(f"plain http is only allowed to hosts the owner allows (METERLINE_EGRESS_ALLOW): {host}")
    if host in METADATA_HOSTS or host == "localhost" or host.endswith(".localhost"):
        raise EgressError(f"{host} is not a provider address")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return url  # a name: checked again, on what it resolves to, when the request is sent
    reason = forbidden_address(ip)
    if reason:
        raise EgressError(f"{host} is {reason}")
    return url


def filter_resolved(host: str, addresses: list[dict[str, Any]], allow_hosts: Iterable[str]) -> list[dict[str, Any]]:
    """Resolved addresses the gateway may connect to (all of them for an allowed host)."""
    if host.rstrip(".").lower() in {h.lower() for h in allow_hosts}:
        return addresses
    kept = [a for a in addresses if forbidden_address(ipaddress.ip_address(a["host"])) is None]
    if not kept:
        raise OSError(f"egress to {host} refused: it resolves only to addresses the gateway may not reach")
    return kept


def guarded_resolver(allow_hosts: Iterable[str]) -> Any:
    """An aiohttp resolver that refuses forbidden addresses at connection time."""
    from aiohttp.abc import AbstractResolver
    from aiohttp.resolver import DefaultResolver

    allowed = tuple(allow_hosts)

    class GuardedResolver(AbstractResolver):
        def __init__(self) -> None:
            self._inner = DefaultResolver()

        async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
            return filter_resolved(host, await self._inner.resolve(host, port, family), allowed)

        async def close(self) -> None:
            await self._inner.close()

    return GuardedResolver()
