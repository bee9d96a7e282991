"""Who an MCP caller is, as a value. The workspace and the slice come from the credential only."""

from __future__ import annotations

import contextvars
import hashlib
import time
from dataclasses import dataclass

from meterline.config import Settings
from meterline.store.keys import KeyRecord, KeyStore

SLICES = ("key", "member", "department")


@dataclass(frozen=True)
class Principal:
    workspace: str
    admin: bool  # the whole workspace, budget changes included
    scope: tuple[str, str] | None  # (dimension, value) a non-admin caller is confined to
    actor: str  # for the audit log

    def describe(self) -> dict[str, str]:
        if self.admin:
            return {"workspace": self.workspace, "access": "admin (whole workspace)"}
        assert self.scope is not None
        return {"workspace": self.workspace, "access": f"{self.scope[0]} {self.scope[1]} only"}


class AuthError(Exception):
    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


# The caller of the current MCP request (set by the HTTP middleware per request, once for stdio).
CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("meterline_mcp_principal", default=None)


def principal_of_key(record: KeyRecord | None, now: float) -> Principal:
    if record is None:
        raise AuthError("Incorrect API key provided.")
    if not record.usable(now):
        raise AuthError("This API key has been revoked or has expired.")
    scopes = [s for s in record.scopes if s.startswith("mcp:")]
    if not scopes:
        raise AuthError("This key has no MCP scope (create one with `meterline keys create --scopes mcp`).", 403)
    kind = scopes[0].split(":", 1)[1]
    actor = f"key:{record.key_id}"
    if kind == "admin":
        return Principal(record.workspace, True, None, actor)
    if kind not in SLICES:
        raise AuthError("This key's MCP scope is not recognised.", 403)
    value = {"key": record.key_id, "member": record.member, "department": record.department}[kind]
    return Principal(record.workspace, False, (kind, value), actor)


class KeyAuthenticator:
    """Bearer virtual keys → principals, with key records cached briefly (a revoked key stops
    working within `ttl` seconds, as on the data plane)."""

    def __init__(self, settings: Settings, ttl: float = 30.0):
        self.keys = KeyStore(settings)
        self.ttl = ttl
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise AuthError("Send a Meterline virtual key with an MCP scope as 'Authorization: Bearer <key>'.")
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is None or now - cached[0] > self.ttl:
            if len(self._cache) > 10_000:
                self._cache.clear()
            cached = self._cache[digest] = (now, self.keys.get(digest))
        return principal_of_key(cached[1], time.time())


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None
