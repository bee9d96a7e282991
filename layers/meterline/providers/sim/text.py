"""The simulator's tokenizer and deterministic prose. Pure.

Tokens: runs of up to 8 letters or 3 digits (with their leading space), single punctuation marks,
and whitespace runs, so `"".join(tokens(text)) == text` and ~4-5 characters make a token, close to
the real BPE encodings for English. Every count the simulator reports comes from this one function,
so a reply cut at `max_tokens` holds exactly that many tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_TOKEN = re.compile(r" ?[A-Za-z]{1,8}| ?[0-9]{1,3}| ?[^A-Za-z0-9\s]|\s+")

_WORDS = (
    "the", "gateway", "meters", "every", "call", "so", "that", "spend", "is", "explained", "and", "bounded",
    "while", "the", "product", "runs", "budgets", "hold", "under", "concurrency", "keys", "stay", "in", "the",
    "vault", "and", "each", "cent", "is", "accounted", "for", "exactly", "in", "integer", "micro", "dollars",
)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def count(text: str) -> int:
    return len(_TOKEN.findall(text))


def seed_of(*parts: Any) -> bytes:
    """A 32-byte seed that depends only on the parts (canonical JSON)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def prose(seed: bytes, model: str, topic: str) -> str:
    """A reply of 20-120 tokens that names the model and echoes the question."""
    topic = " ".join(topic.split())[:60]
    head = f"Simulated reply from {model} to: {topic!r}."
    words = [_WORDS[(seed[i % 32] + i) % len(_WORDS)] for i in range(20 + seed[0] % 100)]
    text = head + " " + " ".join(words) + "."
    return "".join(tokens(text)[: 20 + seed[0] % 100])


def truncate(text: str, limit: int) -> tuple[str, int, bool]:
    """(text cut to at most `limit` tokens, its token count, whether it was cut)."""
    parts = tokens(text)
    if len(parts) <= limit:
        return text, len(parts), False
    return "".join(parts[:limit]), limit, True


def chunks(text: str, size: int = 3) -> list[str]:
    """Stream pieces: a few tokens each, joined back exactly."""
    parts = tokens(text)
    return ["".join(parts[i:i + size]) for i in range(0, len(parts), size)] or [""]
