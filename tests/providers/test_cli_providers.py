"""`meterline providers add` for every provider kind, and `meterline aliases` / `keys fallbacks`."""

from __future__ import annotations

import io
import sys

import pytest

from meterline.cli.main import main
from meterline.store.workspaces import WorkspaceStore
from meterline.vault import Vault


def load(settings):
    return WorkspaceStore(settings).load("demo")


def test_anthropic_gemini_azure_keys_from_stdin_or_env(dev_state, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("sk-ant-from-stdin-0123456789\n"))
    main(["providers", "add", "anthropic"])
    monkeypatch.setenv("GEMINI_KEY", "AIza-from-env-0123456789")
    main(["providers", "add", "gemini", "--key-env", "GEMINI_KEY", "--base-url", "https://eu.proxy.example"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("azure-key-0123456789\n"))
    main(["providers", "add", "azure", "--base-url", "https://acme.openai.azure.com", "--api-version", "2025-01-01",
          "--deployment", "prod-4o=gpt-4o", "--deployment", "mini=gpt-4o-mini,emb=text-embedding-3-small"])
    config = load(dev_state)
    vault = Vault(dev_state)
    anthropic, gemini, azure = (config.providers[n] for n in ("anthropic", "gemini", "azure"))
    assert (anthropic.kind, anthropic.base_url, anthropic.catalog) == ("anthropic", "https://api.anthropic.com",
                                                                       "anthropic")
    assert vault.decrypt(anthropic.ciphertext, "demo", "anthropic") == "sk-ant-from-stdin-0123456789"
    assert (gemini.kind, gemini.base_url) == ("gemini", "https://eu.proxy.example")
    assert vault.decrypt(gemini.ciphertext, "demo", "gemini") == "AIza-from-env-0123456789"
    assert (azure.kind, azure.catalog) == ("azure", "openai")
    assert azure.options == {"api_version": "2025-01-01", "deployments": {
        "prod-4o": "gpt-4o", "mini": "gpt-4o-mini", "emb": "text-embedding-3-small"}}
    assert azure.catalog_model("mini") == "openai/gpt-4o-mini"
    main(["providers", "list"])
    out = capsys.readouterr().out
    assert "prod-4o->gpt-4o" in out and "sk-ant" not in out and "azure-key" not in out


def test_bedrock_needs_no_key_and_refuses_one(dev_state):
    main(["providers", "add", "bedrock", "--region", "eu-central-1"])
    entry = load(dev_state).providers["bedrock"]
    assert entry.ciphertext is None and entry.options == {"region": "eu-central-1"}
    assert entry.base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    with pytest.raises(SystemExit):
        main(["providers", "add", "bedrock", "--key-env", "AWS_SECRET_ACCESS_KEY"])


def test_azure_without_deployments_is_refused(dev_state, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("k-0123456789\n"))
    with pytest.raises(SystemExit) as err:
        main(["providers", "add", "azure", "--base-url", "https://acme.openai.azure.com"])
    assert "--deployment" in str(err.value)


def test_aliases_and_key_fallbacks(dev_state, capsys):
    main(["aliases", "set", "fast", "anthropic/claude-haiku-4-5", "--fallbacks",
          "anthropic/claude-sonnet-4-6,openai/gpt-4o-mini"])
    main(["keys", "fallbacks", "key_123", "--fallbacks", "openai/gpt-4o-mini"])
    config = load(dev_state)
    assert config.aliases["fast"].model == "anthropic/claude-haiku-4-5"
    assert config.aliases["fast"].fallbacks == ("anthropic/claude-sonnet-4-6", "openai/gpt-4o-mini")
    assert config.key_fallbacks == {"key_123": ("openai/gpt-4o-mini",)}
    main(["aliases", "list"])
    assert "fast" in capsys.readouterr().out
    main(["aliases", "remove", "fast"])
    main(["keys", "fallbacks", "key_123"])
    config = load(dev_state)
    assert config.aliases == {} and config.key_fallbacks == {}
    with pytest.raises(SystemExit):
        main(["aliases", "set", "fast", "claude-haiku-4-5"])  # the target needs provider/model


def test_alias_names_and_targets_are_checked(dev_state):
    with pytest.raises(SystemExit, match="has no '/'"):
        main(["aliases", "set", "team/fast", "anthropic/claude-haiku-4-5"])
    with pytest.raises(SystemExit, match="provider/model"):
        main(["aliases", "set", "fast", "claude-haiku-4-5"])
    assert load(dev_state).aliases == {}
