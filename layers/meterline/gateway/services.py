"""Everything a gateway process holds across requests: stores, caches, the vault, upstreams.

Built once per process (per Lambda execution environment). Nothing here is created at import time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from meterline.budgets.model import Enforcement
from meterline.config import Settings
from meterline.errors import ServiceUnavailable
from meterline.gateway.memo import RefreshingCache
from meterline.pricing.catalog import Catalog, default_catalog
from meterline.providers.base import Upstream
from meterline.providers.http import http_upstream
from meterline.providers.sim import SimUpstream
from meterline.store.budgets import BudgetStore
from meterline.store.ddb_http import DynamoHttp
from meterline.store.keys import KeyRecord, KeyStore
from meterline.store.ledger import LedgerStore
from meterline.store.prices import PriceCatalogStore
from meterline.store.workspaces import WorkspaceConfig, WorkspaceStore
from meterline.vault import SecretCache, Vault

log = logging.getLogger("meterline.gateway")


@dataclass
class WorkspaceView:
    config: WorkspaceConfig
    catalog: Catalog  # list prices with this workspace's overrides applied


@dataclass
class AwsCallCounter:
    """Ledger writes after the last upstream byte (the benchmark reports them per request; the calls
    before the upstream are the caches' `misses`, background ones their `refreshes`)."""

    after_upstream: int = 0


@dataclass
class Services:
    settings: Settings
    keys: KeyStore
    workspaces: WorkspaceStore
    ledger: LedgerStore
    vault: Vault
    secrets: SecretCache
    http: Upstream
    sim: Upstream
    dynamo: DynamoHttp
    prices: PriceCatalogStore
    key_cache: RefreshingCache[str, KeyRecord | None] = field(init=False)
    workspace_cache: RefreshingCache[str, WorkspaceView | None] = field(init=False)
    # The price catalog in force: one with key "current" (`prices sync` stores accepted ones).
    catalog_cache: RefreshingCache[str, Catalog] = field(init=False)
    _catalog: tuple[str, Catalog] | None = field(default=None, init=False)
    budgets: BudgetStore = field(init=False)
    enforcement_cache: RefreshingCache[str, Enforcement] = field(init=False)
    calls: AwsCallCounter = field(default_factory=AwsCallCounter)
    _bedrock: Upstream | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        ttl = self.settings.key_cache_ttl_s
        self.key_cache = RefreshingCache(self._load_key, ttl=ttl)
        self.workspace_cache = RefreshingCache(self._load_workspace, ttl=ttl)
        self.catalog_cache = RefreshingCache(self._load_catalog, ttl=ttl)
        self.budgets = BudgetStore(self.settings)
        # Budget and limit definitions change rarely: cached like the workspace config.
        self.enforcement_cache = RefreshingCache(self._load_enforcement, ttl=ttl)

    async def _load_key(self, key_hash: str) -> KeyRecord | None:
        try:
            return await asyncio.to_thread(self.keys.get, key_hash)
        except Exception as exc:
            raise ServiceUnavailable("The key store is unavailable; try again shortly.") from exc

    async def _load_workspace(self, workspace: str) -> WorkspaceView | None:
        # The catalog rides on the workspace load: concurrent with it on a miss, and a cache hit (or a
        # background refresh) otherwise, so it adds no round trip before the first upstream byte.
        loaded = await asyncio.gather(asyncio.to_thread(self.workspaces.load, workspace),
                                      self.catalog_cache.get("current"), return_exceptions=True)
        config, catalog = loaded
        if isinstance(config, BaseException):
            raise ServiceUnavailable("The workspace store is unavailable; try again shortly.") from config
        if isinstance(catalog, BaseException):
            catalog = self._catalog[1] if self._catalog else default_catalog()
        if config is None:
            return None
        return WorkspaceView(config, catalog.with_overrides(config.price_overrides))

    async def _load_catalog(self, _: str) -> Catalog:
        """The catalog accepted by `prices sync` (read again only when its digest changes), else the
        bundled one. A store or data problem keeps the catalog in memory: pricing never stops."""
        try:
            head = await asyncio.to_thread(self.prices.head)
            if head is None:
                return default_catalog()
            if self._catalog is not None and self._catalog[0] == head.digest:
                return self._catalog[1]
            body = await asyncio.to_thread(self.prices.body, head.digest)
            if body is None:
                return self._catalog[1] if self._catalog else default_catalog()
            catalog = Catalog.from_dict(body)
            self._catalog = (head.digest, catalog)
            return catalog
        except Exception:
            log.warning("price_catalog_unavailable", exc_info=True)
            return self._catalog[1] if self._catalog else default_catalog()

    async def _load_enforcement(self, workspace: str) -> Enforcement:
        try:
            return await asyncio.to_thread(self.budgets.definitions, workspace)
        except Exception as exc:
            raise ServiceUnavailable("The budget store is unavailable; try again shortly.",
                                     code="budget_store_unavailable") from exc

    def upstream_for(self, kind: str) -> Upstream:
        if kind == "sim":
            return self.sim
        if kind == "bedrock":
            if self._bedrock is None:
                from meterline.providers.bedrock import SigV4Upstream

                self._bedrock = SigV4Upstream(self.http)
            return self._bedrock
        return self.http

    def prime(self) -> list[str]:
        """Import and initialise everything a request may need, so that no request after a SnapStart
        restore (or the first one of a fresh environment) pays for it: boto3 and its service models
        (cache misses read keys and workspaces through it; S3 for spilled cache entries), the
        encryption SDK and the KMS keyring (the first vault key of an environment), the lean DynamoDB
        client's credentials. No network call: a snapshot must not hold connections, and KMS is
        called per decrypt anyway.

        Runs in the lifespan, before uvicorn answers the readiness check LWA waits on, so it lands
        in the snapshot (SnapStart) or in the init phase (on-demand without SnapStart), never at
        import (`create_app` stays light: tests/unit/test_cold_start.py).
        """
        from meterline.store import aws

        done = []
        # s3: the exact cache spills answers too large for an item there (store/cache.py).
        for service in ("dynamodb", "kms", *(("s3",) if self.settings.cache_spill_bucket else ())):
            aws.client(service, self.settings)
            done.append(f"boto3:{service}")
        if self.settings.kms_key_id:
            self.vault._load()
            # The SDK loads the OpenSSL backend on its first decrypt, not on import.
            from cryptography.hazmat.backends.openssl import backend  # noqa: F401

            done.append("encryption-sdk")
        # anyio's asyncio backend and memory streams: loaded by Starlette on the first streamed
        # response and the first thread hop, not at import.
        import anyio._backends._asyncio
        import anyio.streams.memory
        import anyio.streams.stapled
        import anyio.streams.tls  # noqa: F401

        done.append("anyio")
        # The upstream client library (its session is created on the first request, in the loop).
        import aiohttp  # noqa: F401

        done.append("aiohttp")
        try:
            self.dynamo._creds(int(time.time()))
            done.append("credentials")
        except Exception:  # no credentials in this environment yet: the first call reports it
            pass
        import json  # noqa: F401  (translators and stores)
        import zoneinfo

        zoneinfo.ZoneInfo("UTC")  # the tz database (tzdata) is read on the first workspace time zone
        return done

    async def aclose(self) -> None:
        await self.budgets.release_pools(self.dynamo)  # what this process's budget pools still hold
        await self.http.aclose()
        await self.sim.aclose()
        await self.dynamo.aclose()

    @classmethod
    def build(cls, settings: Settings) -> Services:
        default_catalog()  # parse the bundled catalog at init (before a SnapStart snapshot), not on a request
        vault = Vault(settings)
        return cls(
            settings=settings,
            keys=KeyStore(settings),
            workspaces=WorkspaceStore(settings),
            ledger=LedgerStore(settings),
            vault=vault,
            secrets=SecretCache(vault, settings.secret_cache_ttl_s),
            http=http_upstream(
                connect_timeout=settings.upstream_connect_timeout_s,
                read_timeout=settings.upstream_read_timeout_s,
                transport=settings.upstream_transport,
                allow_hosts=settings.egress_allow_hosts,
            ),
            sim=SimUpstream(),
            dynamo=DynamoHttp(settings, max_in_flight=settings.store_max_in_flight,
                              deadline_s=settings.store_deadline_s,
                              attempt_timeout_s=settings.store_attempt_timeout_s),
            prices=PriceCatalogStore(settings),
        )
