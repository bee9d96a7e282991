"""The BYO-KEY vault: tenants cannot reach each other's keys; plaintext keys never leak;
a warm request makes no KMS call."""

from __future__ import annotations

import logging

import openai
import pytest

from meterline.store.workspaces import ProviderEntry, WorkspaceStore
from meterline.vault import Vault, VaultError
from tests.conftest import PROVIDER_SECRET, ledger_items, make_tenant, wait_for_ledger

MESSAGES = [{"role": "user", "content": "hi"}]


def test_ciphertext_of_workspace_a_never_decrypts_as_workspace_b(settings):
    vault = Vault(settings)
    ciphertext = vault.encrypt("sk-live-A", "ws_a", "openai")
    assert b"sk-live-A" not in ciphertext
    assert vault.decrypt(ciphertext, "ws_a", "openai") == "sk-live-A"
    for workspace, provider in [("ws_b", "openai"), ("ws_a", "groq")]:
        with pytest.raises(VaultError):
            vault.decrypt(ciphertext, workspace, provider)


def test_workspace_b_cannot_obtain_workspace_a_key_through_the_gateway(gateway, settings, fake_openai):
    fake, url = fake_openai
    a = make_tenant(settings, url, provider_secret="sk-test-AAAA-tenant-a-secret")
    b = make_tenant(settings, url, provider_secret="sk-test-BBBB-tenant-b-secret")
    openai.OpenAI(base_url=gateway.base_url, api_key=b.api_key).chat.completions.create(
        model="gpt-4o", messages=MESSAGES)
    assert fake.headers[-1]["authorization"] == "Bearer sk-test-BBBB-tenant-b-secret"

    # Even a ciphertext copied from A into B's vault entry (a confused or malicious admin) is useless.
    a_entry = WorkspaceStore(settings).load(a.workspace).providers["openai"]
    WorkspaceStore(settings).put_provider(b.workspace, ProviderEntry("stolen", "openai", url, a_entry.ciphertext,
                                                                     "openai"))
    gateway.services.workspace_cache.invalidate()
    with pytest.raises(openai.InternalServerError) as err:
        openai.OpenAI(base_url=gateway.base_url, api_key=b.api_key, max_retries=0).chat.completions.create(
            model="stolen/gpt-4o", messages=MESSAGES)
    assert err.value.code == "provider_key_invalid"
    assert all("AAAA" not in h.get("authorization", "") for h in fake.headers)


def test_no_plaintext_provider_key_in_logs_errors_or_ledger(gateway, tenant, fake_openai, settings, caplog,
                                                            capfd):
    fake, _ = fake_openai
    caplog.set_level(logging.DEBUG)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    list(sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    fake.error = (401, {"error": {"message": f"Incorrect API key provided: {PROVIDER_SECRET}", "type": "x"}})
    with pytest.raises(openai.AuthenticationError) as err:
        sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    bodies = err.value.response.text
    records = wait_for_ledger(settings, tenant.workspace, 3)
    out, errs = capfd.readouterr()
    haystacks = [bodies, repr(records), caplog.text, out, errs]
    for text in haystacks:
        assert PROVIDER_SECRET not in text
        assert PROVIDER_SECRET[8:24] not in text
        assert tenant.api_key not in text  # the virtual key is not logged either


def test_warm_requests_make_no_kms_call(gateway, tenant):
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    for _ in range(5):
        sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert gateway.services.secrets.kms_decrypts == 1
    assert gateway.services.key_cache.loads == 1
    assert gateway.services.workspace_cache.loads == 1


def test_a_burst_of_first_requests_loads_the_key_once(gateway, tenant, settings):
    import concurrent.futures

    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES), range(16)))
    assert gateway.services.key_cache.loads == 1
    assert gateway.services.secrets.kms_decrypts == 1
    assert len(ledger_items(settings, tenant.workspace)) == 16
