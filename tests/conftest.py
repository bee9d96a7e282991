"""Shared fixtures: embedded AWS (moto server), a fake OpenAI upstream, and the gateway on uvicorn."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from meterline.config import Settings
from meterline.devenv import EmbeddedAws, provision, start_moto
from meterline.gateway.app import create_app
from meterline.gateway.services import Services
from meterline.store import aws
from meterline.store.codec import from_item
from meterline.store.keys import KeyRecord, KeyStore
from meterline.store.schema import LEDGER
from meterline.store.workspaces import ProviderEntry, WorkspaceStore
from meterline.vault import Vault
from meterline.vkeys import generate, hash_key
from tests.fakes.openai_server import FakeOpenAI, build_app
from tests.servers import ServerThread

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_PROFILE", None)
# The embedded store (moto) applies one call at a time inside the test process, which shares a loaded
# 2-core CI machine: a call can wait tens of seconds behind a 200-request burst. Generous deadlines
# for it (never retries): boto3's read timeout here, the gateway's store client in `start_gateway`.
os.environ.setdefault("METERLINE_AWS_READ_TIMEOUT", "120")
EMBEDDED_STORE_DEADLINES = {"store_attempt_timeout_s": 300.0, "store_deadline_s": 600.0}

PROVIDER_SECRET = "sk-test-UPSTREAMSECRET0123456789abcdef"


@pytest.fixture(scope="session")
def moto() -> Iterator[EmbeddedAws]:
    embedded = start_moto()
    yield embedded
    embedded.stop()


@pytest.fixture
def settings(moto: EmbeddedAws) -> Settings:
    return provision(moto.endpoint, prefix="t" + uuid.uuid4().hex[:10])


@pytest.fixture
def dev_state(settings, tmp_path, monkeypatch):
    """A `meterline dev` state file pointing the CLI at this test's tables, with a demo workspace."""
    from meterline.cli import target

    monkeypatch.setenv("METERLINE_STATE_DIR", str(tmp_path))
    WorkspaceStore(settings).create("demo", "Demo", default_provider="sim")
    target.write_dev_state(settings, {"workspace": "demo"})
    return settings


@pytest.fixture
def fake_openai() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    with ServerThread(build_app(fake)) as server:
        yield fake, server.url + "/v1"


@dataclass
class Gateway:
    url: str
    services: Services
    settings: Settings

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


@pytest.fixture
def start_gateway(settings: Settings):
    started: list[ServerThread] = []

    def start(**overrides: Any) -> Gateway:
        gw_settings = replace(settings, **{**EMBEDDED_STORE_DEADLINES, **overrides})
        services = Services.build(gw_settings)
        server = ServerThread(create_app(gw_settings, services)).__enter__()
        started.append(server)
        return Gateway(server.url, services, gw_settings)

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def gateway(start_gateway) -> Gateway:
    return start_gateway()


@dataclass
class Tenant:
    workspace: str
    api_key: str
    key_id: str


def make_tenant(settings: Settings, upstream_url: str | None, *, workspace: str | None = None,
                member: str = "alice", department: str = "research", models: tuple[str, ...] = (),
                provider_secret: str = PROVIDER_SECRET, **ws_settings: Any) -> Tenant:
    ws = workspace or "ws_" + uuid.uuid4().hex[:8]
    store = WorkspaceStore(settings)
    store.create(ws, f"Workspace {ws}", default_provider="openai", **ws_settings)
    if upstream_url:
        ciphertext = Vault(settings).encrypt(provider_secret, ws, "openai")
        store.put_provider(ws, ProviderEntry("openai", "openai", upstream_url, ciphertext, "openai"))
    key, key_id = generate()
    KeyStore(settings).create(KeyRecord(key_hash=hash_key(key), key_id=key_id, workspace=ws, member=member,
                                        department=department, models=models))
    return Tenant(ws, key, key_id)


@pytest.fixture
def tenant(settings: Settings, fake_openai: tuple[FakeOpenAI, str]) -> Tenant:
    return make_tenant(settings, fake_openai[1])


def ledger_items(settings: Settings, workspace: str | None = None) -> list[dict[str, Any]]:
    ddb = aws.client("dynamodb", settings)
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": settings.table(LEDGER), "ConsistentRead": True}
    while True:
        page = ddb.scan(**kwargs)
        items.extend(from_item(i) for i in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    if workspace:
        items = [i for i in items if i["workspace"] == workspace]
    return sorted(items, key=lambda i: i["ts"])


def wait_for_ledger(settings: Settings, workspace: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items = ledger_items(settings, workspace)
        if len(items) >= count or time.monotonic() > deadline:
            return items
        time.sleep(0.05)


class CurrentStdout:
    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def lambda_logging(monkeypatch, capsys) -> Iterator[None]:
    """Logging as `logs.configure` sets it up on Lambda (Powertools' JSON logger on `meterline`, and the
    request line written by telemetry itself), writing to the captured stdout; undone after."""
    import logging

    from meterline import logs

    package = logging.getLogger("meterline")
    saved = (package.handlers[:], package.level, package.propagate)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "Meterline-DataPlaneGateway")
    monkeypatch.setattr(logs, "_json_lines", False)  # set again by configure; put back by monkeypatch
    logs.configure("gateway")
    # Powertools' handler keeps the stdout of when it was first made (another test's capture, maybe):
    # it writes to whatever sys.stdout is when it writes, as telemetry does.
    handlers = [h for h in package.handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = CurrentStdout()
    yield
    for handler, stream in zip(handlers, streams, strict=True):
        handler.stream = stream
    package.handlers[:] = saved[0]
    package.setLevel(saved[1])
    package.propagate = saved[2]
