"""Fixtures for the provider tests: a fake upstream per provider on loopback, and a workspace whose
provider entries point at them (keys in the vault; Bedrock with no key, signed with the test's AWS
credentials)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from meterline.config import Settings
from meterline.store.keys import KeyRecord, KeyStore
from meterline.store.workspaces import Alias, ProviderEntry, WorkspaceStore
from meterline.vault import Vault
from meterline.vkeys import generate, hash_key
from tests.fakes import anthropic_server, bedrock_server, gemini_server, openai_more
from tests.servers import ServerThread

OPENAI_SECRET = "sk-test-OPENAISECRET0123456789abcdef"
ANTHROPIC_SECRET = "sk-ant-test-ANTHROPICSECRET0123456789"
GEMINI_SECRET = "AIzaTestGEMINISECRET0123456789abcdefgh"
AZURE_SECRET = "azure-test-AZURESECRET0123456789abcdef"
AZURE_DEPLOYMENTS = {"prod-4o": "gpt-4o", "reasoner": "gpt-5", "emb-small": "text-embedding-3-small"}


@dataclass
class Fakes:
    anthropic: anthropic_server.FakeAnthropic
    gemini: gemini_server.FakeGemini
    bedrock: bedrock_server.FakeBedrock
    openai: openai_more.FakeOpenAIMore
    azure: openai_more.FakeOpenAIMore
    azure_log: openai_more.FakeAzureLog
    urls: dict[str, str]


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    f = Fakes(anthropic_server.FakeAnthropic(), gemini_server.FakeGemini(), bedrock_server.FakeBedrock(),
              openai_more.FakeOpenAIMore(), openai_more.FakeOpenAIMore(), openai_more.FakeAzureLog(), {})
    apps = {"anthropic": anthropic_server.build_app(f.anthropic), "gemini": gemini_server.build_app(f.gemini),
            "bedrock": bedrock_server.build_app(f.bedrock), "openai": openai_more.build_app(f.openai),
            "azure": openai_more.build_azure_app(f.azure, f.azure_log)}
    servers = {name: ServerThread(app).__enter__() for name, app in apps.items()}
    f.urls = {name: server.url for name, server in servers.items()}
    try:
        yield f
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)


@dataclass
class World:
    workspace: str
    api_key: str
    key_id: str


def make_world(settings: Settings, fakes: Fakes, *, models: tuple[str, ...] = (),
               aliases: tuple[Alias, ...] = (), key_fallbacks: tuple[str, ...] = ()) -> World:
    ws = "ws_" + uuid.uuid4().hex[:8]
    store = WorkspaceStore(settings)
    store.create(ws, f"Workspace {ws}", default_provider="openai")
    vault = Vault(settings)

    def put(name: str, kind: str, url: str, secret: str | None, catalog: str, **options: object) -> None:
        ciphertext = vault.encrypt(secret, ws, name) if secret else None
        store.put_provider(ws, ProviderEntry(name, kind, url, ciphertext, catalog, dict(options)))

    put("openai", "openai", fakes.urls["openai"] + "/v1", OPENAI_SECRET, "openai")
    put("anthropic", "anthropic", fakes.urls["anthropic"], ANTHROPIC_SECRET, "anthropic")
    put("gemini", "gemini", fakes.urls["gemini"], GEMINI_SECRET, "gemini")
    put("bedrock", "bedrock", fakes.urls["bedrock"], None, "bedrock", region="us-west-2")
    put("azure", "azure", fakes.urls["azure"], AZURE_SECRET, "openai", api_version="2024-10-21",
        deployments=AZURE_DEPLOYMENTS)
    for alias in aliases:
        store.put_alias(ws, alias)
    key, key_id = generate()
    KeyStore(settings).create(KeyRecord(key_hash=hash_key(key), key_id=key_id, workspace=ws, member="bob",
                                        department="platform", models=models))
    if key_fallbacks:
        store.put_key_fallbacks(ws, key_id, key_fallbacks)
    return World(ws, key, key_id)


@pytest.fixture
def world(settings: Settings, fakes: Fakes) -> World:
    return make_world(settings, fakes)
