"""The caller's source IP, as IP policies see it. Pure.

On Lambda the data plane runs behind the AWS Lambda Web Adapter, so the socket peer is the adapter
on loopback; the adapter passes the function URL's request context as JSON in the
`x-amzn-request-context` header, whose `http.sourceIp` (or `identity.sourceIp` for API Gateway v1)
is the address AWS saw. That header is trusted only when the gateway runs behind the adapter (the
adapter sets it, replacing any the client sent) and the peer is loopback; anywhere else a client
could forge it.

`X-Forwarded-For` is used only when the workspace lists trusted proxies (e.g. its CloudFront or
load balancer ranges) and the address so far is one of them: the list is walked from the right and
the first address that is not a trusted proxy is the client. Without trusted proxies the header is
ignored, so no client can choose its own address. (uvicorn runs with proxy headers off everywhere
we start it, or it would itself rewrite the peer from X-Forwarded-For when the peer is loopback.)
"""

from __future__ import annotations

import ipaddress
import json
import socket
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4096)
def parse_ip(value: str | None) -> tuple[int, int] | None:
    """(version, integer value) of an address, or None. C-speed (inet_pton) and memoized: a warm
    request's addresses repeat. IPv4-mapped IPv6 (::ffff:a.b.c.d) is the IPv4 address."""
    if not value:
        return None
    value = value.strip()
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, value), "big")
    except OSError:
        pass
    try:
        number = int.from_bytes(socket.inet_pton(socket.AF_INET6, value.split("%", 1)[0]), "big")
    except OSError:
        return None
    if number >> 32 == 0xFFFF:
        return 4, number & 0xFFFFFFFF
    return 6, number


def network(cidr: str) -> tuple[int, int, int]:
    """(version, network value, mask) for `in_networks`. Raises ValueError on a bad CIDR."""
    net = ipaddress.ip_network(cidr.strip(), strict=False)
    bits = 32 if net.version == 4 else 128
    mask = ((1 << bits) - 1) ^ ((1 << (bits - net.prefixlen)) - 1)
    return net.version, int(net.network_address), mask


def in_networks(ip: tuple[int, int] | None, networks: tuple[tuple[int, int, int], ...]) -> bool:
    if ip is None:
        return False
    version, value = ip
    return any(v == version and value & mask == net for v, net, mask in networks)


def _is_loopback(peer: str | None) -> bool:
    ip = parse_ip(peer)
    return ip is not None and ((ip[0] == 4 and ip[1] >> 24 == 127) or (ip[0] == 6 and ip[1] == 1))


def lambda_source_ip(request_context: str | None) -> str | None:
    if not request_context:
        return None
    try:
        ctx = json.loads(request_context)
    except ValueError:
        return None
    if not isinstance(ctx, dict):
        return None
    for path in (("http", "sourceIp"), ("identity", "sourceIp")):
        node: Any = ctx
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and parse_ip(node) is not None:
            return node
    return None


def source_ip(peer: str | None, headers: dict[str, str], *, behind_lambda_adapter: bool,
              trusted_proxies: tuple[tuple[int, int, int], ...] = ()) -> str | None:
    """The client's address. `trusted_proxies` come from `network()`; `headers` are lower-cased."""
    address = peer
    if behind_lambda_adapter and _is_loopback(peer):
        address = lambda_source_ip(headers.get("x-amzn-request-context"))
    if not trusted_proxies or address is None:
        return address
    forwarded = headers.get("x-forwarded-for")
    if not forwarded:
        return address
    current = parse_ip(address)
    for hop in reversed([h.strip() for h in forwarded.split(",")]):
        if not in_networks(current, trusted_proxies):
            break
        parsed = parse_ip(hop)
        if parsed is None:
            return None  # a malformed chain from a trusted proxy: unknown, so IP policies deny
        address, current = hop, parsed
    return address
