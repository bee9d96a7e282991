"""PII redaction through the official SDKs (gateway on uvicorn, fake providers on loopback).

GIVEN a workspace with an opt-in pii policy (with restoration)
WHEN the openai and anthropic SDKs send messages carrying e-mails, phone numbers, cards, IBANs,
     national ids, IPs and API keys, streamed and not
THEN the fake provider receives only numbered placeholders (the same bytes for the same
     conversation prefix), the caller gets its own values back (across SSE chunk boundaries too),
     and neither the ledger nor the logs contain a redacted value.
"""

from __future__ import annotations

import json
import logging

import anthropic
import openai
import pytest

from meterline.admin.ops import Ops
from meterline.store.workspaces import ProviderEntry, WorkspaceStore
from meterline.vault import Vault
from tests.conftest import wait_for_ledger
from tests.fakes import anthropic_server
from tests.servers import ServerThread

EMAIL, PHONE, CARD = "jane.doe@example.com", "+1 415-555-0132", "4111 1111 1111 1111"
IBAN, SSN, IP = "DE89 3704 0044 0532 0130 00", "123-45-6789", "203.0.113.7"
SECRET = "sk-proj-" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2"
VALUES = (EMAIL, PHONE, CARD, IBAN, SSN, IP, SECRET)
PROMPT = (f"I am {EMAIL}, phone {PHONE}. Card {CARD}, IBAN {IBAN}, SSN {SSN}, from {IP}, "
          f"key {SECRET}. Write back to {EMAIL}.")
REDACTED = ("I am [EMAIL_1], phone [PHONE_1]. Card [CREDIT_CARD_1], IBAN [IBAN_1], SSN [NATIONAL_ID_1], "
            "from [IP_ADDRESS_1], key [SECRET_1]. Write back to [EMAIL_1].")
# The provider answers with placeholders split across stream chunks.
REPLY_CHUNKS = ["Sure, mailing [EMA", "IL_1", "] and calling [PHONE_", "1]. Card [CREDIT_CARD_1] noted", "."]
RESTORED = f"Sure, mailing {EMAIL} and calling {PHONE}. Card {CARD} noted."


def no_pii_in(text: str) -> bool:
    return not any(v in text for v in VALUES) and "jane.doe" not in text


def server_logs(caplog) -> str:
    """What the gateway and its server logged (the SDK clients' own debug logs show their requests)."""
    return "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records
                     if not r.name.startswith(("openai", "anthropic", "httpx", "httpcore")))


@pytest.fixture
def pii_policy(settings, tenant):
    Ops(settings).set_request_policy(tenant.workspace, {"id": "pii", "kind": "pii", "restore": True})


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_provider_sees_placeholders_and_caller_gets_values(gateway, tenant, fake_openai, settings,
                                                                      pii_policy, caplog, stream):
    caplog.set_level(logging.DEBUG)
    fake, _ = fake_openai
    fake.chunks = list(REPLY_CHUNKS)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    messages = [{"role": "system", "content": f"The customer is {EMAIL}; escalate to ops@corp.example."},
                {"role": "user", "content": PROMPT}]
    if stream:
        chunks = list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(model="gpt-4o", messages=messages).choices[0].message.content
    assert text == RESTORED
    [sent] = fake.requests
    assert sent["messages"][0]["content"] == "The customer is [EMAIL_1]; escalate to [EMAIL_2]."
    assert sent["messages"][1]["content"] == REDACTED
    assert no_pii_in(json.dumps(sent))
    [record] = wait_for_ledger(settings, tenant.workspace, 1)
    assert record["pii_redacted"] == {"email": 2, "phone": 1, "credit_card": 1, "iban": 1, "national_id": 1,
                                      "ip_address": 1, "secret": 1}
    assert record["policies"] == {"pii": "redact"}
    assert no_pii_in(json.dumps(record, default=str)) and no_pii_in(server_logs(caplog))


def test_the_same_prefix_redacts_to_the_same_bytes(gateway, tenant, fake_openai, settings, pii_policy):
    fake, _ = fake_openai
    client = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    turn1 = [{"role": "user", "content": PROMPT}]
    reply = client.chat.completions.create(model="gpt-4o", messages=turn1).choices[0].message.content
    turn2 = [*turn1, {"role": "assistant", "content": reply}, {"role": "user", "content": "Also bob@example.org"}]
    client.chat.completions.create(model="gpt-4o", messages=turn2)
    first, second = fake.requests
    assert second["messages"][0] == first["messages"][0]
    assert second["messages"][1]["content"] == "Hello there! How can I help you today?"
    assert second["messages"][2]["content"] == "Also [EMAIL_2]"


def test_without_restore_the_caller_sees_placeholders(gateway, tenant, fake_openai, settings):
    fake, _ = fake_openai
    fake.chunks = list(REPLY_CHUNKS)
    Ops(settings).set_request_policy(tenant.workspace, {"id": "pii", "kind": "pii", "entities": ["email"]})
    client = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)
    text = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PROMPT}]
                                          ).choices[0].message.content
    assert text == "".join(REPLY_CHUNKS)
    sent = fake.requests[0]["messages"][0]["content"]
    assert EMAIL not in sent and PHONE in sent  # only the chosen entities


@pytest.fixture
def fake_anthropic(monkeypatch):
    fake = anthropic_server.FakeAnthropic()
    # The fake answers with placeholders split across its text deltas.
    monkeypatch.setattr(anthropic_server, "TEXT", list(REPLY_CHUNKS))
    with ServerThread(anthropic_server.build_app(fake)) as server:
        yield fake, server.url


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_round_trip(gateway, tenant, settings, pii_policy, fake_anthropic, caplog, stream):
    caplog.set_level(logging.DEBUG)
    fake, url = fake_anthropic
    ws = tenant.workspace
    WorkspaceStore(settings).put_provider(ws, ProviderEntry(
        "anthropic", "anthropic", url, Vault(settings).encrypt("sk-ant-test-SECRET0123456789", ws, "anthropic"),
        "anthropic"))
    client = anthropic.Anthropic(base_url=gateway.url, api_key=tenant.api_key, max_retries=0)
    kwargs = {"model": "claude-sonnet-4-5", "max_tokens": 200, "system": f"Owner: {EMAIL}",
              "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]}
    if stream:
        with client.messages.stream(**kwargs) as events:
            text = "".join(events.text_stream)
            final = events.get_final_message()
        assert final.content[0].text == RESTORED
    else:
        text = client.messages.create(**kwargs).content[0].text
    assert text == RESTORED
    [sent] = fake.requests
    assert sent["system"] == "Owner: [EMAIL_1]"  # system first: it numbers before the messages
    assert sent["messages"][0]["content"][0]["text"] == REDACTED
    assert no_pii_in(json.dumps(sent))
    [record] = wait_for_ledger(settings, ws, 1)
    assert record["pii_redacted"]["email"] == 1 and no_pii_in(json.dumps(record, default=str))
    assert no_pii_in(server_logs(caplog))


@pytest.mark.parametrize("stream", [False, True])
def test_a_cached_answer_is_restored_with_each_callers_values(gateway, tenant, fake_openai, settings, pii_policy,
                                                              stream):
    fake, _ = fake_openai
    fake.chunks = list(REPLY_CHUNKS)
    WorkspaceStore(settings).put_cache_rule(tenant.workspace, "workspace", {})
    client = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, max_retries=0)

    def ask(email: str) -> tuple[str, str]:
        messages = [{"role": "user", "content": PROMPT.replace(EMAIL, email)}]
        if not stream:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, temperature=0)
            return raw.parse().choices[0].message.content, raw.headers.get("meterline-cache", "")
        with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=messages,
                                                                    temperature=0, stream=True) as raw:
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
            return text, raw.headers.get("meterline-cache", "")

    first, status = ask(EMAIL)
    assert first == RESTORED and status in ("stored", "miss")  # a stream's headers go out before it is stored
    # Another caller with a different address redacts to the same bytes: a hit, restored with ITS value.
    second, status = ask("other.person@example.net")
    assert status == "hit" and second == RESTORED.replace(EMAIL, "other.person@example.net")
    assert len(fake.requests) == 1
