"""Virtual keys: generated once, shown once, stored only as a SHA-256 hash.

A key is `mlk_` + 32 random bytes (url-safe base64), so a plain SHA-256 is a safe lookup hash:
with 256 bits of entropy there is nothing to brute-force, and no pepper has to be distributed.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "mlk_"


def generate() -> tuple[str, str]:
    """(plaintext key, key id). The id is public (listing, revocation); the key is a secret."""
    key = PREFIX + secrets.token_urlsafe(32)
    return key, key_id_of(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str:
    # A short public handle derived from the hash: identifies a key without revealing it.
    return "key_" + hash_key(key)[:16]


def looks_like_key(value: str) -> bool:
    return value.startswith(PREFIX) and 20 <= len(value) <= 100
