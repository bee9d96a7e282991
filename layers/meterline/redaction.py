"""One redaction for every byte the gateway passes on to a caller: upstream response headers,
bodies, stream events (provider error events inside a 200 stream included) and error messages.

What is removed:
- the request's own secrets (the provider key, 4+ characters): whole, or any piece of WINDOW characters
  (a provider's error body cut at a read cap or at 500 characters leaves a prefix), in any JSON
  spelling (`\\/` for `/`, `\\u0073` for `s`, upper- or lower-case hex), together with the rest of the
  key-shaped run around the match;
- anything shaped like an API key (OpenAI/Anthropic `sk-`, Google `AIza`, AWS access key ids,
  Meterline `mlk_` virtual keys, `Bearer` tokens), whoever it belongs to.

Pure and allocation-light: a compiled pattern per set of secrets (cached), one `sub` per piece of
text; bytes are redacted as bytes (keys are ASCII), so a stream is never re-encoded.
"""

from __future__ import annotations

import re
from functools import lru_cache

MARK = "[redacted]"
WINDOW = 8  # a secret's piece this long (or longer) is redacted wherever it appears
_KEY_CHAR = r"(?:[A-Za-z0-9_\-.+=]|\\u[0-9a-fA-F]{4}|\\/|/)"
_GENERIC = (r"sk-[A-Za-z0-9_\-]{6,}", r"AIza[0-9A-Za-z_\-]{20,}", r"mlk_[A-Za-z0-9_\-]{8,}",
            r"Bearer\s+[A-Za-z0-9._\-~+/]{8,}=*", r"(?:AKIA|ASIA)[0-9A-Z]{16}")


def _char(c: str) -> str:
    """A character as it may be spelled in JSON: itself, `\\uXXXX` (any hex case), `\\/` for `/`."""
    code = f"{ord(c):04x}"
    hexes = "".join(f"[{h}{h.upper()}]" if h.isalpha() else h for h in code)
    forms = [re.escape(c), r"\\u" + hexes]
    if c == "/":
        forms.append(r"\\/")
    return "(?:" + "|".join(forms) + ")"


def _secret_pattern(secret: str) -> str:
    # Windows at every offset that is a multiple of WINDOW/2: any piece of 1.5 x WINDOW characters
    # (and every prefix of WINDOW) contains one. Each match then extends over the key-shaped run.
    if len(secret) <= WINDOW:
        return "".join(_char(c) for c in secret)
    step = max(WINDOW // 2, 1)
    windows = {secret[i:i + WINDOW] for i in range(0, max(len(secret) - WINDOW, 0) + 1, step)}
    windows.add(secret[-WINDOW:])
    return "|".join("".join(_char(c) for c in w) + _KEY_CHAR + "*" for w in sorted(windows))


@lru_cache(maxsize=256)
def _compiled(secrets: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[bytes]]:
    parts = [_secret_pattern(s) for s in secrets] + list(_GENERIC)
    pattern = "|".join(f"(?:{p})" for p in parts)
    return re.compile(pattern), re.compile(pattern.encode())


_GENERIC_MARKS = (b"sk-", b"AIza", b"mlk_", b"Bearer", b"AKIA", b"ASIA", b"\\u", b"\\/", b"\\\\/")


@lru_cache(maxsize=256)
def _marks(secrets: tuple[str, ...]) -> re.Pattern[bytes]:
    """Literals one of which any redactable text contains: one C-level scan before the full pattern."""
    pieces = set()
    for secret in secrets:
        if len(secret) <= WINDOW:
            pieces.add(secret.encode())
            continue
        pieces.update(secret[i:i + WINDOW].encode() for i in range(0, len(secret) - WINDOW + 1, max(WINDOW // 2, 1)))
        pieces.add(secret[-WINDOW:].encode())
    return re.compile(b"|".join(re.escape(p) for p in (*_GENERIC_MARKS, *sorted(pieces))))


def _usable(secrets: tuple[str | None, ...]) -> tuple[str, ...]:
    clean = tuple(s for s in secrets if s and len(s) >= 4 and s.isascii())
    return clean if len(clean) <= 1 else tuple(sorted(set(clean)))  # one key: the common call, no sort


_BACK = re.compile(r"(?:[A-Za-z0-9_\-.+=]|\\u[0-9a-fA-F]{4}|\\/)+$")
_BACK_B = re.compile(rb"(?:[A-Za-z0-9_\-.+=]|\\u[0-9a-fA-F]{4}|\\/)+$")


def redact(text: str, *secrets: str | None) -> str:
    """`text` with the secrets and key-shaped strings replaced by MARK."""
    if not text:
        return text
    pattern = _compiled(_usable(secrets))[0]
    out, last = [], 0
    for match in pattern.finditer(text):
        start = match.start()
        # A match inside a secret (a later window) also takes the key-shaped run before it.
        back = _BACK.search(text, max(last, start - 256), start)
        if back is not None:
            start = back.start()
        out.append(text[last:start])
        out.append(MARK)
        last = match.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def redact_bytes(data: bytes, *secrets: str | None) -> bytes:
    """`redact` for bytes (stream events and bodies), without decoding them."""
    if not data:
        return data
    usable = _usable(secrets)
    if _marks(usable).search(data) is None:
        return data  # the common case (a stream event): one literal scan, not the escape-aware pattern
    pattern = _compiled(usable)[1]
    out, last = [], 0
    mark = MARK.encode()
    for match in pattern.finditer(data):
        start = match.start()
        back = _BACK_B.search(data, max(last, start - 256), start)
        if back is not None:
            start = back.start()
        out.append(data[last:start])
        out.append(mark)
        last = match.end()
    if not out:
        return data
    out.append(data[last:])
    return b"".join(out)


def redact_headers(headers: dict[str, str], *secrets: str | None) -> dict[str, str]:
    return {name: redact(value, *secrets) for name, value in headers.items()}
