"""The real-client tier: unmodified SDKs and agent frameworks against the gateway on uvicorn
(loopback) with the built-in simulator as the provider, as `meterline dev` serves them.

Every framework here is a `dev` extra dependency. All run offline: telemetry and tracing that
would call out are switched off before they are imported."""

from __future__ import annotations

import os
import uuid

import pytest

from meterline.store.keys import KeyRecord, KeyStore
from meterline.store.workspaces import WorkspaceStore
from meterline.vkeys import generate, hash_key
from tests.conftest import Tenant

# Offline: no tracing export (openai-agents), no LangSmith, no Logfire (pydantic-ai).
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
os.environ["LANGCHAIN_TRACING_V2"] = "false"
os.environ["LANGSMITH_TRACING"] = "false"
os.environ.pop("LANGCHAIN_API_KEY", None)
os.environ.pop("LANGSMITH_API_KEY", None)
os.environ["LOGFIRE_IGNORE_NO_CONFIG"] = "1"


def new_sim_tenant(settings) -> Tenant:
    """A workspace on the simulator (like `meterline dev`'s demo) and a key for it."""
    ws = "ws_" + uuid.uuid4().hex[:8]
    WorkspaceStore(settings).create(ws, "Sim workspace", default_provider="sim")
    key, key_id = generate()
    KeyStore(settings).create(KeyRecord(key_hash=hash_key(key), key_id=key_id, workspace=ws, member="dev",
                                        department="engineering"))
    return Tenant(ws, key, key_id)


@pytest.fixture
def sim_tenant(settings) -> Tenant:
    return new_sim_tenant(settings)
