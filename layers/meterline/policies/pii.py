"""PII redaction before forwarding, and optional restoration in responses. Pure, offline.

Detectors are compiled regexes with validators (no model, no network): email, phone (9-15 digits
with a `+` or separators), credit card (13-19 digits, Luhn), IBAN (mod-97), national-id-like numbers
(US SSN with its reserved ranges excluded, UK NINO), IP addresses (v4 and v6, parsed), and
API-key-like secrets (OpenAI, Anthropic, AWS, GitHub, Slack, Google, Stripe, GitLab, JWTs, PEM
private keys, Meterline keys).

Each distinct value gets a numbered placeholder per kind, in order of first appearance over the
request in a fixed order (instructions, system, messages, input, prompt): `[EMAIL_1]`, `[PHONE_2]`.
So the same conversation prefix always redacts to the same bytes (provider prompt caching and the
exact-match cache keep working), and the same value within a request is always the same placeholder.

Restoration (opt-in per policy) maps placeholders back in the response: whole bodies at once, and
streams delta by delta, holding back a trailing partial placeholder (`[EMA`) until the next delta of
the same text channel completes it (or the channel ends), so a placeholder split across SSE events
is still restored. The mapping lives only in the request's memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from meterline.policies.ip import parse_ip

LABELS = {"email": "EMAIL", "phone": "PHONE", "credit_card": "CREDIT_CARD", "iban": "IBAN",
          "national_id": "NATIONAL_ID", "ip_address": "IP_ADDRESS", "secret": "SECRET"}

_SECRET = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?:sk-(?:ant-|proj-|svcacct-)?[A-Za-z0-9_\-]{16,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"
    r"|mlk_[A-Za-z0-9_\-]{20,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
    r")(?![A-Za-z0-9_\-])")
_SECRET_HINTS = ("sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "AIza",
                 "_live_", "_test_", "glpat-", "mlk_", "eyJ", "PRIVATE KEY")
# Patterns start with a literal or a character class (never a lookaround), so the regex engine can
# skip ahead to candidates at C speed; the boundary checks a lookbehind would do run in Python on
# the few candidates.
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_IBAN = re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"\d(?:[ \-]?\d){12,18}(?![\d\-])")
_SSN = re.compile(r"\d{3}-\d{2}-\d{4}(?![\d\-])")
_NINO = re.compile(r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])")
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6 = re.compile(r":[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*(?:%[A-Za-z0-9]+)?")
_HEX = frozenset("0123456789abcdefABCDEF")
_PHONE = re.compile(r"[+(\d][\d ().\-]{6,}\d")
_NUMERIC = re.compile(r"\d[\d ().\-]*")  # one pass finds every region a numeric detector looks at
PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CREDIT_CARD|IBAN|NATIONAL_ID|IP_ADDRESS|SECRET)_(\d{1,6})\]")
_PARTIAL = re.compile(r"\[[A-Z_]*\d*\Z")
MAX_PLACEHOLDER = 22  # len("[CREDIT_CARD_999999]") + slack


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _after(text: str, start: int, forbidden: str) -> bool:
    """The character before `start` is not one of `forbidden` (or alphanumeric, for "alnum")."""
    if start == 0:
        return True
    prev = text[start - 1]
    return not (prev.isalnum() if forbidden == "alnum" else prev in forbidden)


Span = tuple[int, int]


def _secrets(text: str, regions: list[Span]) -> Iterator[Span]:
    if any(h in text for h in _SECRET_HINTS):
        for m in _SECRET.finditer(text):
            if m.group().startswith("-----") or (_after(text, m.start(), "_-") and _after(text, m.start(), "alnum")):
                yield m.span()


def _emails(text: str, regions: list[Span]) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL_DOMAIN.finditer(text):
        start = m.start()
        while start > 0 and m.start() - start < 64 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        if start < m.start() and (start == 0 or text[start - 1] not in _EMAIL_LOCAL):
            yield start, m.end()


def _ibans(text: str, regions: list[Span]) -> Iterator[Span]:
    # An IBAN is two letters, then its check digits: a numeric region starts right after the letters.
    for a, _ in regions:
        if a >= 2 and text[a - 2:a].isupper() and text[a - 2:a].isalpha() and _after(text, a - 2, "alnum"):
            m = _IBAN.match(text, a - 2)
            if m and iban_ok(m.group()):
                yield m.span()


def _cards(text: str, regions: list[Span]) -> Iterator[Span]:
    for a, b in regions:
        if b - a >= 13:
            for m in _CARD.finditer(text, a, b):
                if _after(text, m.start(), "0123456789-") and luhn("".join(c for c in m.group() if c.isdigit())):
                    yield m.span()


def _national_ids(text: str, regions: list[Span]) -> Iterator[Span]:
    for a, b in regions:
        if b - a >= 11:
            for m in _SSN.finditer(text, a, b):
                area, group, serial = m.group().split("-")
                if (_after(text, m.start(), "0123456789-") and area not in ("000", "666") and area[0] != "9"
                        and group != "00" and serial != "0000"):
                    yield m.span()
        for lead in (3, 2):  # UK NINO: two letters, an optional space, then its digits
            if a >= lead and _after(text, a - lead, "alnum"):
                m = _NINO.match(text, a - lead)
                if m and m.group()[:2] not in _NINO_BAD_PREFIXES:
                    yield m.span()
                    break


def _ips(text: str, regions: list[Span]) -> Iterator[Span]:
    for a, b in regions:
        if b - a >= 7:
            for m in _IPV4.finditer(text, a, b):
                if _after(text, m.start(), "0123456789.") and parse_ip(m.group()) is not None:
                    yield m.span()
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            start = m.start()
            while start > 0 and m.start() - start < 4 and text[start - 1] in _HEX:
                start -= 1
            end = m.end()
            if (start == 0 or text[start - 1] not in _HEX) and parse_ip(text[start:end]) is not None:
                yield start, end


def _phones(text: str, regions: list[Span]) -> Iterator[Span]:
    for a, b in regions:
        if b - a < 9:
            continue
        while a > 0 and text[a - 1] in "+(":
            a -= 1
        for m in _PHONE.finditer(text, a, b):
            value = m.group().rstrip(" .-(")
            count = sum(c.isdigit() for c in value)
            if (9 <= count <= 15 and (value[0] == "+" or any(c in value for c in " .-()"))
                    and _after(text, m.start(), "+_") and _after(text, m.start(), "alnum")
                    and not text[m.start() + len(value):m.start() + len(value) + 1].isalnum()):
                yield m.start(), m.start() + len(value)


# (kind, finder), in priority order: when two detections overlap, the earlier kind wins.
DETECTORS: tuple[tuple[str, Any], ...] = (
    ("secret", _secrets),
    ("email", _emails),
    ("iban", _ibans),
    ("credit_card", _cards),
    ("national_id", _national_ids),
    ("ip_address", _ips),
    ("phone", _phones),
)

# Keys whose string values are structure, not content (and thinking blocks, whose signature covers
# their text): never redacted.
_SKIP_KEYS = frozenset({"role", "type", "id", "tool_call_id", "tool_use_id", "call_id", "name", "model",
                        "cache_control", "media_type", "image_url", "source", "url", "data", "file_id",
                        "signature", "status", "format", "detail", "mime_type", "audio"})
_SKIP_TYPES = frozenset({"thinking", "redacted_thinking", "image", "input_image", "image_url", "document",
                         "input_audio", "input_file", "reasoning"})
BODY_FIELDS = ("instructions", "system", "messages", "input", "prompt")


class Redactor:
    """One request's redaction: the placeholder each value got, and the counts per kind."""

    def __init__(self, entities: Iterable[str]):
        wanted = set(entities)
        self.detectors = [d for d in DETECTORS if d[0] in wanted]
        self.placeholders: dict[str, str] = {}  # original -> placeholder
        self.counts: dict[str, int] = {}

    def _placeholder(self, kind: str, value: str) -> str:
        found = self.placeholders.get(value)
        if found is None:
            n = self.counts.get(kind, 0) + 1
            self.counts[kind] = n
            found = self.placeholders[value] = f"[{LABELS[kind]}_{n}]"
        return found

    def text(self, text: str) -> str:
        if not text or len(text) < 5:
            return text
        spans: list[tuple[int, int, int, str]] = []  # start, end, priority, kind
        regions = [m.span() for m in _NUMERIC.finditer(text)]
        for priority, (kind, find) in enumerate(self.detectors):
            for start, end in find(text, regions):
                spans.append((start, end, priority, kind))
        if not spans:
            return text
        spans.sort(key=lambda s: (s[0], s[2]))
        out, pos = [], 0
        chosen: list[tuple[int, int, int, str]] = []
        for span in spans:
            if chosen and span[0] < chosen[-1][1]:
                if span[2] < chosen[-1][2]:  # overlaps a lower-priority detection: the stronger kind wins
                    chosen[-1] = span
                continue
            chosen.append(span)
        for start, end, _, kind in chosen:
            out.append(text[pos:start])
            out.append(self._placeholder(kind, text[start:end]))
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            if value.get("type") in _SKIP_TYPES:
                return value
            return {k: (v if k in _SKIP_KEYS else self.value(v)) for k, v in value.items()}
        return value

    def body(self, body: dict[str, Any]) -> None:
        """Redact a request body in place, in the fixed field order (stable numbering)."""
        for name in BODY_FIELDS:
            if name in body:
                body[name] = self.value(body[name])

    def restorer(self) -> Restorer:
        return Restorer({p: v for v, p in self.placeholders.items()})


class Restorer:
    def __init__(self, originals: dict[str, str]):
        self.originals = originals
        # JSON-escaped originals for raw JSON bytes (a value inside a JSON string).
        self._escaped = {p: json.dumps(v)[1:-1] for p, v in originals.items()}

    def text(self, text: str) -> str:
        if "[" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self.originals.get(m.group(), m.group()), text)

    def json_text(self, text: str) -> str:
        if "[" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self._escaped.get(m.group(), m.group()), text)

    def json_bytes(self, raw: bytes) -> bytes:
        """Restore inside a serialized JSON document (a whole response body or one SSE event's data)."""
        if b"[" not in raw:
            return raw
        text = raw.decode("utf-8", errors="surrogateescape")
        text = PLACEHOLDER.sub(lambda m: self._escaped.get(m.group(), m.group()), text)
        return text.encode("utf-8", errors="surrogateescape")

    def stream(self) -> StreamRestorer:
        return StreamRestorer(self)


class StreamRestorer:
    """Restores placeholders in a client-dialect SSE stream (OpenAI chat, Anthropic messages,
    OpenAI responses). Text deltas go through a per-channel buffer that holds back a trailing
    partial placeholder; a channel's held text is released into a copy of its last delta event
    before any other event of the stream goes out, so nothing is lost or reordered."""

    def __init__(self, restorer: Restorer):
        self.restorer = restorer
        # channel -> (held text, a copy of the channel's last delta event, its SSE event name, text path)
        self.held: dict[Any, tuple[str, dict[str, Any], str | None, list[Any]]] = {}

    def _split(self, channel: Any, text: str) -> tuple[str, str]:
        held = self.held.pop(channel, None)
        if held is not None:
            text = held[0] + text
        cut = text.rfind("[")
        if cut != -1 and len(text) - cut <= MAX_PLACEHOLDER and _PARTIAL.match(text, cut):
            return text[:cut], text[cut:]
        return text, ""

    def _restore(self, path: list[Any], text: str) -> str:
        # Tool-call arguments are JSON text: a restored value goes in JSON-escaped.
        return self.restorer.json_text(text) if path[-1] in ("partial_json", "arguments") else self.restorer.text(text)

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        for raw in _events(chunk):
            yield from self._event(raw)

    def flush(self) -> Iterator[bytes]:
        for channel in list(self.held):
            yield from self._release(channel)

    def _release(self, channel: Any) -> Iterator[bytes]:
        text, event, name, path = self.held.pop(channel)
        if text:
            _set(event, path, self._restore(path, text))
            yield _encode(name, event)

    def _event(self, raw: bytes) -> Iterator[bytes]:
        name, data = _parse(raw)
        if data is None:
            yield from self.flush()
            yield raw
            return
        deltas = list(_text_deltas(data))
        touched = set()
        for channel, path in deltas:
            emit, hold = self._split(channel, _get(data, path))
            _set(data, path, self._restore(path, emit))
            if hold:
                self.held[channel] = (hold, json.loads(json.dumps(data)), name, path)
            touched.add(channel)
        for channel in [c for c in self.held if c not in touched]:
            yield from self._release(channel)
        if deltas:
            yield _encode(name, data)
        else:
            yield self.restorer.json_bytes(raw)


def _events(chunk: bytes) -> Iterator[bytes]:
    for part in chunk.split(b"\n\n"):
        if part.strip():
            yield part + b"\n\n"


def _parse(raw: bytes) -> tuple[str | None, Any]:
    name, data = None, None
    for line in raw.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                try:
                    data = json.loads(payload)
                except ValueError:
                    data = None
    return name, data if isinstance(data, dict) else None


def _encode(name: str | None, data: dict[str, Any]) -> bytes:
    body = b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    return (b"event: " + name.encode() + b"\n" + body) if name else body


def _get(data: Any, path: list[Any]) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: list[Any], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _text_deltas(data: dict[str, Any]) -> Iterator[tuple[Any, list[Any]]]:
    """(channel, path) of every incremental text field in one event, per dialect."""
    kind = data.get("type")
    if kind == "content_block_delta":  # Anthropic
        delta = data.get("delta") or {}
        for field in ("text", "partial_json"):
            if isinstance(delta.get(field), str):
                yield ("block", data.get("index"), field), ["delta", field]
        return
    if isinstance(kind, str) and kind.startswith("response.") and kind.endswith(".delta"):  # Responses
        if isinstance(data.get("delta"), str):
            yield ("resp", kind, data.get("item_id"), data.get("content_index")), ["delta"]
        return
    for i, choice in enumerate(data.get("choices") or []):  # OpenAI chat chunks
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for field in ("content", "refusal"):
            if isinstance(delta.get(field), str):
                yield ("choice", choice.get("index", i), field), ["choices", i, "delta", field]
        for j, call in enumerate(delta.get("tool_calls") or []):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                yield (("tool", choice.get("index", i), call.get("index", j)),
                       ["choices", i, "delta", "tool_calls", j, "function", "arguments"])
