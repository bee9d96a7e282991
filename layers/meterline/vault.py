"""The BYO-KEY vault: provider keys envelope-encrypted under KMS with aws-encryption-sdk.

Every ciphertext is bound to an encryption context {purpose, workspace, provider}. KMS refuses to
unwrap the data key under any other context, and decrypt also requires the context we expect, so a
ciphertext of workspace A can never decrypt as workspace B (or as another provider of A).

The encryption SDK costs ~0.5 s to import and the KMS keyring makes one KMS call per operation, so
the SDK is imported on first use and decrypted keys are kept in memory for a short TTL: a warm
request makes no KMS call. Plaintext keys are never logged, returned, or written anywhere.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from meterline.config import Settings
from meterline.store import aws
from meterline.store.schema import ENCRYPTION_PURPOSE


class VaultError(Exception):
    """A ciphertext could not be decrypted under the expected context (tampered, wrong tenant)."""


def encryption_context(workspace: str, provider: str) -> dict[str, str]:
    return {"meterline:purpose": ENCRYPTION_PURPOSE, "workspace": workspace, "provider": provider}


class Vault:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._sdk: Any = None
        self._keyring: Any = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        if self._keyring is None:
            with self._lock:
                if self._keyring is None:
                    import aws_encryption_sdk
                    from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
                    from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
                    from aws_cryptographic_material_providers.mpl.models import CreateAwsKmsKeyringInput
                    from aws_encryption_sdk import CommitmentPolicy

                    if not self.settings.kms_key_id:
                        raise VaultError("no KMS key configured (METERLINE_KMS_KEY_ID)")
                    providers = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
                    keyring = providers.create_aws_kms_keyring(
                        input=CreateAwsKmsKeyringInput(
                            kms_key_id=self.settings.kms_key_id,
                            kms_client=aws.client("kms", self.settings),
                        )
                    )
                    self._sdk = aws_encryption_sdk.EncryptionSDKClient(
                        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
                    )
                    self._keyring = keyring
        return self._sdk, self._keyring

    def encrypt(self, plaintext: str, workspace: str, provider: str) -> bytes:
        sdk, keyring = self._load()
        ciphertext, _header = sdk.encrypt(
            source=plaintext.encode(), keyring=keyring, encryption_context=encryption_context(workspace, provider)
        )
        return bytes(ciphertext)

    def decrypt(self, ciphertext: bytes, workspace: str, provider: str) -> str:
        sdk, keyring = self._load()
        expected = encryption_context(workspace, provider)
        try:
            plaintext, header = sdk.decrypt(source=ciphertext, keyring=keyring, encryption_context=expected)
        except Exception as exc:  # the SDK raises several unrelated types; none may leak details
            raise VaultError(f"provider key for {provider!r} could not be decrypted for this workspace") from exc
        # Belt and braces: the stored context must be exactly ours, not a superset we ignored.
        stored = {k: v for k, v in header.encryption_context.items() if not k.startswith("aws-crypto-")}
        if stored != expected:
            raise VaultError(f"provider key for {provider!r} is bound to another context")
        return plaintext.decode()


class SecretCache:
    """Decrypted provider keys, per (workspace, provider, ciphertext), for a bounded time."""

    def __init__(self, vault: Vault, ttl_s: float):
        self.vault = vault
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str, bytes], tuple[float, str]] = {}
        self._locks: dict[tuple[str, str, bytes], threading.Lock] = {}
        self._guard = threading.Lock()
        self.kms_decrypts = 0  # observable in tests and the benchmark

    def peek(self, ciphertext: bytes, workspace: str, provider: str) -> str | None:
        """The cached plaintext, or None (then `get`, off the event loop: it may call KMS). Lets a
        warm request skip the thread hop `get` needs."""
        hit = self._entries.get((workspace, provider, ciphertext))
        return hit[1] if hit and hit[0] > time.monotonic() else None

    def get(self, ciphertext: bytes, workspace: str, provider: str) -> str:
        cache_key = (workspace, provider, ciphertext)
        hit = self._entries.get(cache_key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        # A burst of cold requests for one key waits on a single KMS call instead of making one each.
        with self._guard:
            lock = self._locks.setdefault(cache_key, threading.Lock())
        with lock:
            hit = self._entries.get(cache_key)
            if hit and hit[0] > time.monotonic():
                return hit[1]
            plaintext = self.vault.decrypt(ciphertext, workspace, provider)
            self.kms_decrypts += 1
            self._entries[cache_key] = (time.monotonic() + self.ttl_s, plaintext)
            return plaintext
