"""PII redaction and restoration (pure): detectors with validators, stable numbering, and stream
restoration across every possible split of a placeholder between SSE events."""

from __future__ import annotations

import json

import pytest

from meterline.policies.model import PII_ENTITIES
from meterline.policies.pii import Redactor, iban_ok, luhn

CARD = "4111 1111 1111 1111"  # Luhn-valid test card
IBAN = "DE89 3704 0044 0532 0130 00"  # mod-97-valid example IBAN
SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"


def redact(text: str, entities=PII_ENTITIES) -> str:
    return Redactor(entities).text(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("mail alice.smith+tag@example.co.uk now", "mail [EMAIL_1] now"),
    ("call +1 415-555-0132 or (030) 1234 5678", "call [PHONE_1] or [PHONE_2]"),
    (f"card {CARD} ok", "card [CREDIT_CARD_1] ok"),
    ("card 4111111111111112 bad luhn", "card 4111111111111112 bad luhn"),
    (f"iban {IBAN}", "iban [IBAN_1]"),
    ("iban DE89 3704 0044 0532 0130 01", "iban DE89 3704 0044 0532 0130 01"),  # bad checksum
    ("ssn 123-45-6789", "ssn [NATIONAL_ID_1]"),
    ("nino AB 12 34 56 C", "nino [NATIONAL_ID_1]"),
    ("from 203.0.113.7 and 2001:db8::1", "from [IP_ADDRESS_1] and [IP_ADDRESS_2]"),
    ("version 1.2.3.4.5 and 999.1.1.1", "version 1.2.3.4.5 and 999.1.1.1"),
    (f"key {SECRET}", "key [SECRET_1]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [SECRET_1]"),
    ("order 12345 on 2026-12-01 at 10:30:45, total 1999", "order 12345 on 2026-12-01 at 10:30:45, total 1999"),
])
def test_detectors(text, expected):
    assert redact(text) == expected


def test_validators():
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")


def test_only_the_chosen_entities_are_redacted():
    assert redact("a@b.io 203.0.113.7", ["email"]) == "[EMAIL_1] 203.0.113.7"
    # Reserved SSN ranges are not national ids.
    assert redact("123-45-6789 000-12-3456 666-12-3456", ["national_id"]) == "[NATIONAL_ID_1] 000-12-3456 666-12-3456"


def test_numbering_is_by_first_appearance_and_stable_across_turns():
    turn1 = {"model": "m", "messages": [
        {"role": "system", "content": "Support agent. Escalate to boss@corp.com."},
        {"role": "user", "content": "I am jane@x.org, card 4111 1111 1111 1111, mail boss@corp.com too"}]}
    r1 = Redactor(PII_ENTITIES)
    r1.body(turn1)
    assert turn1["messages"][0]["content"] == "Support agent. Escalate to [EMAIL_1]."
    assert turn1["messages"][1]["content"] == "I am [EMAIL_2], card [CREDIT_CARD_1], mail [EMAIL_1] too"
    turn2 = {"model": "m", "messages": [
        {"role": "system", "content": "Support agent. Escalate to boss@corp.com."},
        {"role": "user", "content": "I am jane@x.org, card 4111 1111 1111 1111, mail boss@corp.com too"},
        {"role": "assistant", "content": "Noted, jane@x.org."},
        {"role": "user", "content": "Also bob@y.net"}]}
    Redactor(PII_ENTITIES).body(turn2)
    assert turn2["messages"][:2] == turn1["messages"]  # the prefix redacts to the same bytes
    assert turn2["messages"][3]["content"] == "Also [EMAIL_3]"


def test_structure_and_signed_thinking_are_left_alone():
    body = {"model": "m", "system": [{"type": "text", "text": "ops@corp.com"}], "messages": [
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "x@y.io", "signature": "sig"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "mail",
                                           "input": {"to": "x@y.io"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sent to x@y.io"}]}]}
    Redactor(PII_ENTITIES).body(body)
    assert body["system"][0]["text"] == "[EMAIL_1]"
    assert body["messages"][0]["content"][0]["thinking"] == "x@y.io"
    assert body["messages"][0]["content"][1]["input"] == {"to": "[EMAIL_2]"}
    assert body["messages"][1]["content"][0]["content"] == "sent to [EMAIL_2]"
    assert body["messages"][1]["content"][0]["tool_use_id"] == "toolu_1"


def openai_chunk(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


def anthropic_delta(text: str) -> bytes:
    data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return b"event: content_block_delta\ndata: " + json.dumps(data).encode() + b"\n\n"


def collect_openai(out: list[bytes]) -> str:
    text = ""
    for raw in b"".join(out).split(b"\n\n"):
        if raw.startswith(b"data: {"):
            text += json.loads(raw[6:])["choices"][0]["delta"].get("content") or ""
    return text


def test_stream_restoration_across_every_split():
    redactor = Redactor(PII_ENTITIES)
    redactor.text("write to jane@x.org and call +1 415-555-0132")
    reply = "Sure: [EMAIL_1] and [PHONE_1], not [EMAIL_9] or [bracket]."
    expected = "Sure: jane@x.org and +1 415-555-0132, not [EMAIL_9] or [bracket]."
    for a in range(len(reply)):
        for b in range(a, len(reply) + 1, 3):
            stream = redactor.restorer().stream()
            out: list[bytes] = []
            for piece in (reply[:a], reply[a:b], reply[b:]):
                out.extend(stream.feed(openai_chunk(piece)))
            out.extend(stream.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'))
            out.extend(stream.feed(b"data: [DONE]\n\n"))
            out.extend(stream.flush())
            assert collect_openai(out) == expected, (a, b)
            assert out[-1] == b"data: [DONE]\n\n"


def test_anthropic_stream_releases_a_held_partial_before_the_block_stops():
    redactor = Redactor(PII_ENTITIES)
    redactor.text("jane@x.org")
    stream = redactor.restorer().stream()
    out = [*stream.feed(anthropic_delta("Hi [EMA")), *stream.feed(anthropic_delta("IL_1] and [EM")),
           *stream.feed(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')]
    texts = [json.loads(o.split(b"data: ", 1)[1])["delta"]["text"] for o in out if b"text_delta" in o]
    assert "".join(texts) == "Hi jane@x.org and [EM"
    assert out[-1].startswith(b"event: content_block_stop")
    assert all(o.startswith(b"event: ") for o in out)


def test_whole_body_restoration_escapes_for_json():
    redactor = Redactor(PII_ENTITIES)
    redactor.text("jane@x.org")
    raw = json.dumps({"content": [{"type": "text", "text": "to [EMAIL_1]"}],
                      "tool": {"arguments": json.dumps({"to": "[EMAIL_1]"})}}).encode()
    restored = json.loads(redactor.restorer().json_bytes(raw))
    assert restored["content"][0]["text"] == "to jane@x.org"
    assert json.loads(restored["tool"]["arguments"]) == {"to": "jane@x.org"}


def test_responses_api_stream_deltas_and_final_events_are_restored():
    redactor = Redactor(PII_ENTITIES)
    redactor.text("jane@x.org")
    stream = redactor.restorer().stream()

    def event(kind: str, **data) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    out = [*stream.feed(event("response.output_text.delta", item_id="msg_1", content_index=0, delta="to [EM")),
           *stream.feed(event("response.output_text.delta", item_id="msg_1", content_index=0, delta="AIL_1] ok")),
           *stream.feed(event("response.output_text.done", item_id="msg_1", content_index=0,
                              text="to [EMAIL_1] ok"))]
    deltas = [json.loads(o.split(b"data: ", 1)[1]) for o in out]
    assert "".join(d["delta"] for d in deltas if d["type"].endswith(".delta")) == "to jane@x.org ok"
    assert deltas[-1]["text"] == "to jane@x.org ok"
