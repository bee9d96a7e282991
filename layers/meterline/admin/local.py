"""Local admin tokens: who may use the admin API that `meterline dev` serves on loopback.

There is no IAM locally, and loopback is not a boundary (any local process or a web page's DNS
rebinding can reach it), so the local admin app accepts only a bearer token. Two files, owner-only
(0600), in the dev server's data dir (`<state dir>/data-<port>/`):

    admin-token         the operator's token (the dev server's owner: every workspace), generated
                        at the first start and kept across restarts; the CLI reads it to call the
                        local admin API, so nobody has to copy it
    admin-tokens.json   {"<sha-256 of a token>": "local:<name>"}: every accepted token, only hashed.
                        Tokens for other local principals (`meterline admins token --principal
                        local:<name>`) act with that principal's grants, as an IAM ARN does deployed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from pathlib import Path

OPERATOR = "local:operator"
TOKEN_FILE = "admin-token"
HASHES_FILE = "admin-tokens.json"
PREFIX = "mla_"  # Meterline local admin


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _write_private(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, never readable by anyone but the owner (even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


class LocalTokens:
    operator = OPERATOR

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._hashes: dict[str, str] = {}
        self._mtime = -1.0

    @classmethod
    def ensure(cls, directory: Path) -> LocalTokens:
        """The token set of a dev data dir, with an operator token generated if there is none yet."""
        tokens = cls(directory)
        if not (tokens.directory / TOKEN_FILE).exists():
            token = PREFIX + secrets.token_urlsafe(32)
            tokens._add(_digest(token), OPERATOR)
            _write_private(tokens.directory / TOKEN_FILE, token + "\n")
        return tokens

    def operator_token(self) -> str:
        return (self.directory / TOKEN_FILE).read_text().strip()

    def mint(self, principal: str) -> str:
        """A new token for a local principal (it acts with that principal's grants)."""
        if principal == OPERATOR:
            return self.operator_token()
        token = PREFIX + secrets.token_urlsafe(32)
        self._add(_digest(token), principal)
        return token

    def _add(self, digest: str, principal: str) -> None:
        with self._lock:
            hashes = self._read()
            hashes[digest] = principal
            _write_private(self.directory / HASHES_FILE, json.dumps(hashes, indent=2, sort_keys=True))

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads((self.directory / HASHES_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def principal_of(self, authorization: str | None) -> str | None:
        """The principal of a bearer token, or None. Reloads the file when it changed (a token minted
        while the server runs works at once)."""
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        token = authorization[7:].strip()
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        try:
            mtime = (self.directory / HASHES_FILE).stat().st_mtime
        except OSError:
            return None
        if mtime != self._mtime:
            with self._lock:
                self._hashes, self._mtime = self._read(), mtime
        digest = _digest(token)
        for known, principal in self._hashes.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None
