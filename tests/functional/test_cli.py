"""The `meterline` CLI against embedded AWS, in-process, as a user would run it next to `meterline dev`."""

from __future__ import annotations

import io
import sys

import pytest

from meterline.cli.main import build_parser, main
from meterline.store.keys import KeyStore
from meterline.store.workspaces import WorkspaceStore
from meterline.vault import Vault
from meterline.vkeys import hash_key


def test_keys_lifecycle_uses_the_dev_state_with_no_flags(dev_state, capsys):
    main(["keys", "create", "--member", "carol", "--department", "ops", "--models", "sim/*"])
    out = capsys.readouterr()
    key = next(line.split(": ")[1] for line in out.out.splitlines() if line.startswith("api_key: "))
    key_id = next(line.split(": ")[1] for line in out.out.splitlines() if line.startswith("key_id: "))
    assert "shown once" in out.err
    record = KeyStore(dev_state).get(hash_key(key))
    assert (record.workspace, record.member, record.department, record.models) == ("demo", "carol", "ops", ("sim/*",))

    main(["keys", "list"])
    listed = capsys.readouterr()  # read once: a second read would be empty and prove nothing
    assert key_id in listed.out and key not in listed.out and key not in listed.err
    main(["keys", "revoke", key_id])
    assert KeyStore(dev_state).get(hash_key(key)).revoked


def test_provider_key_comes_from_stdin_or_env_never_argv(dev_state, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("sk-from-stdin-0123456789\n"))
    main(["providers", "add", "openai"])
    entry = WorkspaceStore(dev_state).load("demo").providers["openai"]
    assert Vault(dev_state).decrypt(entry.ciphertext, "demo", "openai") == "sk-from-stdin-0123456789"

    monkeypatch.setenv("GROQ_KEY", "gsk-from-env-0123456789")
    main(["providers", "add", "groq", "--base-url", "https://api.groq.com/openai/v1", "--key-env", "GROQ_KEY"])
    entry = WorkspaceStore(dev_state).load("demo").providers["groq"]
    assert (entry.kind, entry.catalog) == ("openai_compatible", "groq")
    assert Vault(dev_state).decrypt(entry.ciphertext, "demo", "groq") == "gsk-from-env-0123456789"

    main(["providers", "list"])
    listing = capsys.readouterr().out
    assert "groq" in listing and "sk-from" not in listing and "gsk-" not in listing
    # There is no way to pass the key itself as an argument.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["providers", "add", "openai", "--key", "sk-nope"])
    with pytest.raises(SystemExit, match="NAME of an environment variable"):
        main(["providers", "add", "openai", "--key-env", "sk-nope-0123"])


def test_price_override_is_validated_and_stored(dev_state, capsys):
    main(["prices", "set", "--model", "groq/llama-3.3-70b", "--input", "0.59", "--output", "0.79"])
    assert WorkspaceStore(dev_state).load("demo").price_overrides == {
        "groq/llama-3.3-70b": {"input": "0.59", "output": "0.79"}}
    with pytest.raises(SystemExit, match="invalid price"):
        main(["prices", "set", "--model", "x/y", "--input", "0.0000001", "--output", "1"])
    main(["prices", "show", "openai/gpt-4o"])
    assert "2.500000" in capsys.readouterr().out


def test_workspace_is_required_without_dev_state(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("METERLINE_STATE_DIR", str(tmp_path / "none"))
    monkeypatch.delenv("METERLINE_WORKSPACE", raising=False)
    with pytest.raises(SystemExit, match="--workspace is required"):
        main(["keys", "list"])
