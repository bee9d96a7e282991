"""Semantic dedup (lever 6): find near-duplicate requests by embedding similarity. Pure: no I/O.

- Scope: a request can only match entries of its own scope = workspace + endpoint + model +
  every generation parameter + a hash of the system prompt (and tools). Two tenants, two models,
  two temperatures or two system prompts never share an entry.
- Candidates: random-hyperplane LSH. The vector's signs against BANDS x ROWS fixed hyperplanes
  (seeded, so every instance computes the same buckets) give BANDS bucket keys; a stored entry is
  a candidate if it shares one. With ROWS=12, BANDS=8 a pair at cosine 0.95 shares a bucket with
  probability ~93%, at 0.8 ~41%, at 0.4 ~3% (1 - (1 - (1 - θ/π)^r)^b).
- Re-rank: exact cosine against the stored (int8-quantized) vector.
- Guards (serve mode): embeddings score "turn on dark mode" and "turn off dark mode" as near
  neighbours, so a hit must also have the same negations and polarity words (on/off, enable/disable,
  increase/decrease, ...), the same numbers, and the same identifiers (capitalized names, words with
  digits, URLs, e-mails, code). The guards are lexical on purpose: exact, explainable, and they only
  ever turn a hit into a miss.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import random
import re
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

ROWS = 12
BANDS = 8
SEED = 20261201
DEFAULT_THRESHOLD = 0.95
MAX_SERVE_MESSAGES = 4  # serve mode: short conversations only (user + assistant turns)
MAX_EMBED_CHARS = 8000  # longer requests are not embedded (cost; long prompts rarely repeat loosely)
MODES = ("detect", "serve")
DEFAULT_EMBEDDING_MODEL = "openai/text-embedding-3-small"
DEFAULT_DIMENSIONS = 256
DEFAULT_TTL_S = 24 * 3600
# Parameters that do not change the answer's distribution, or are the request itself.
_NOT_SCOPE = frozenset({"messages", "input", "system", "instructions", "stream", "stream_options", "user",
                        "metadata", "store", "service_tier", "model"})



def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_NEGATIONS = _set("""not no never none nothing nobody nowhere neither nor cannot cant can't don't dont doesn't
doesnt didn't didnt isn't isnt aren't arent wasn't wasnt weren't werent won't wont wouldn't wouldnt shouldn't shouldnt
couldn't couldnt mustn't without except unless""")
# Opposites: a mismatch when one text has one side and the other text the other side, in different counts.
_ANTONYMS = (("on", "off"), ("enable", "disable"), ("enabled", "disabled"), ("increase", "decrease"),
             ("add", "remove"), ("before", "after"), ("min", "max"), ("minimum", "maximum"), ("up", "down"),
             ("open", "close"), ("start", "stop"), ("include", "exclude"), ("allow", "deny"), ("true", "false"),
             ("yes", "no"), ("more", "less"), ("higher", "lower"), ("first", "last"), ("in", "out"),
             ("buy", "sell"), ("import", "export"), ("encrypt", "decrypt"), ("upload", "download"),
             ("lock", "unlock"), ("show", "hide"), ("accept", "reject"), ("win", "lose"), ("best", "worst"),
             ("light", "dark"), ("left", "right"), ("above", "below"), ("inside", "outside"), ("new", "old"),
             ("fast", "slow"), ("cheap", "expensive"), ("asc", "desc"), ("ascending", "descending"),
             ("largest", "smallest"), ("oldest", "newest"), ("plus", "minus"), ("increment", "decrement"),
             ("positive", "negative"), ("success", "failure"), ("valid", "invalid"), ("legal", "illegal"))
# Switching something on vs off, in any words: "turn on" vs "disable" is an opposition too.
_ACTIVATE = _set("on enable enabled activate activated start open show allow include unlock unmute")
_DEACTIVATE = _set("off disable disabled deactivate deactivated stop close hide deny exclude lock mute block")
_POLARITY = _NEGATIONS | {w for pair in _ANTONYMS for w in pair} | _ACTIVATE | _DEACTIVATE
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_IDENT = re.compile(r"\S+@\S+|https?://\S+|`[^`]+`|\b[A-Za-z_]*\d[\w.-]*\b|\b[A-Z][a-zA-Z]+\b")
_NUMBER_WORDS = _set("""zero one two three four five six seven eight nine ten eleven twelve twenty thirty forty
fifty hundred thousand million billion half double triple once twice""")


@dataclass(frozen=True)
class Settings:
    """A scope's semantic-dedup settings (stored as `lever#semantic#<scope>`)."""

    mode: str = "detect"
    threshold: float = DEFAULT_THRESHOLD
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    dimensions: int = DEFAULT_DIMENSIONS
    ttl_s: int = DEFAULT_TTL_S

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Settings:
        unknown = set(raw) - {"mode", "threshold", "embedding_model", "dimensions", "ttl_s"}
        if unknown:
            raise ValueError(f"unknown semantic settings: {sorted(unknown)}")
        out = cls(**{k: v for k, v in raw.items() if v is not None})
        if out.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if not isinstance(out.threshold, int | float) or not 0.5 <= float(out.threshold) <= 1.0:
            raise ValueError("threshold is a cosine similarity in [0.5, 1]")
        if out.mode == "serve" and float(out.threshold) < DEFAULT_THRESHOLD:
            raise ValueError(f"serve mode needs a threshold of at least {DEFAULT_THRESHOLD}")
        if "/" not in str(out.embedding_model):
            raise ValueError("embedding_model is provider/model, e.g. openai/text-embedding-3-small")
        if not isinstance(out.dimensions, int) or not 16 <= out.dimensions <= 4096:
            raise ValueError("dimensions is 16..4096")
        if not isinstance(out.ttl_s, int) or not 60 <= out.ttl_s <= 30 * 86400:
            raise ValueError("ttl_s is 60 s .. 30 days")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "threshold": float(self.threshold), "embedding_model": self.embedding_model,
                "dimensions": self.dimensions, "ttl_s": self.ttl_s}


# -- what is compared --------------------------------------------------------------------------------
def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(t for t in (_text_of(v) for v in value) if t)
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "image", "input_image", "input_audio", "file", "document"):
            return "\x00binary"  # never comparable: marks the request unservable
        return _text_of(value.get("text") if "text" in value else value.get("content"))
    return ""


@dataclass(frozen=True)
class Query:
    scope: str  # hex digest
    text: str  # the conversation as embedded ("role: text" lines)
    turns: int
    servable: bool  # serve mode may answer it (no tools, no binary parts, short, text only)
    reason: str  # why not servable


def query_of(workspace: str, endpoint: str, model_id: str, body: Mapping[str, Any]) -> Query | None:
    """The scope and the text to embed, or None if the request is not a candidate at all."""
    if endpoint == "responses":
        raw = body.get("input")
        messages = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
        system = body.get("instructions")
    else:
        messages = body.get("messages")
        system = body.get("system")
    if not isinstance(messages, list) or not messages:
        return None
    lines, systems = [], [system]
    for message in messages:
        if not isinstance(message, dict):
            return None
        role = message.get("role") or message.get("type") or "item"
        if role in ("system", "developer"):
            systems.append(message.get("content"))
            continue
        text = _text_of(message.get("content") if "content" in message else message.get("output"))
        if message.get("tool_calls") or role in ("tool", "function_call", "function_call_output"):
            text = "\x00tool " + json.dumps(message, sort_keys=True, default=str)
        lines.append(f"{role}: {text}")
    text = "\n".join(lines)
    if not text.strip() or len(text) > MAX_EMBED_CHARS:
        return None
    params = {k: v for k, v in body.items() if k not in _NOT_SCOPE}
    scope = hashlib.sha256(json.dumps([workspace, endpoint, model_id, params, systems], sort_keys=True,
                                      separators=(",", ":"), default=str).encode()).hexdigest()[:32]
    turns = len(lines)
    reason = ""
    if "\x00" in text:
        reason = "tool calls or non-text content"
    elif body.get("tools"):
        reason = "tools defined"
    elif turns > MAX_SERVE_MESSAGES:
        reason = f"{turns} turns (serve is for conversations of at most {MAX_SERVE_MESSAGES})"
    elif (body.get("n") or 1) != 1:
        reason = "n > 1"
    return Query(scope, text.replace("\x00", ""), turns, not reason, reason)


# -- vectors -------------------------------------------------------------------------------------------
def normalize(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0:
        raise ValueError("zero vector")
    return [x / norm for x in vector]


def quantize(unit: Sequence[float]) -> bytes:
    """int8 per component (a unit vector's components are in [-1, 1]): 1 byte each, ~0.4% cosine error."""
    return struct.pack(f"{len(unit)}b", *(max(-127, min(127, round(x * 127))) for x in unit))


def dequantize(raw: bytes) -> list[float]:
    values = struct.unpack(f"{len(raw)}b", raw)
    return normalize([v / 127 for v in values]) if any(values) else [0.0] * len(values)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Of two unit vectors."""
    return sum(map(operator.mul, a, b))


@cache
def _planes(dimensions: int) -> tuple[tuple[float, ...], ...]:
    rng = random.Random(SEED * 10_000 + dimensions)
    return tuple(tuple(rng.gauss(0.0, 1.0) for _ in range(dimensions)) for _ in range(ROWS * BANDS))


def buckets(scope: str, unit: Sequence[float]) -> list[str]:
    """BANDS bucket keys for a vector in a scope."""
    planes = _planes(len(unit))
    out = []
    for band in range(BANDS):
        bits = 0
        for row in range(ROWS):
            bits = (bits << 1) | (cosine(planes[band * ROWS + row], unit) >= 0)
        out.append(f"{scope}#{band}#{bits:03x}")
    return out


# -- guards ----------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text.replace("\u2019", "'"))]


@dataclass(frozen=True)
class Guard:
    """The lexical facts two requests must share for one to be answered with the other's answer."""

    polarity: tuple[str, ...]
    numbers: tuple[str, ...]
    identifiers: tuple[str, ...]  # names mid-sentence, words with digits, e-mails, URLs, inline code
    words: tuple[str, ...] = ()  # every word (lowercase), to find an identifier of the other text

    def to_dict(self) -> dict[str, list[str]]:
        return {"p": list(self.polarity), "n": list(self.numbers), "i": list(self.identifiers), "w": list(self.words)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Guard:
        return cls(tuple(raw.get("p", ())), tuple(raw.get("n", ())), tuple(raw.get("i", ())), tuple(raw.get("w", ())))


MAX_GUARD_WORDS = 400


def guard_of(text: str) -> Guard:
    words = _words(text)
    polarity = sorted(w for w in words if w in _POLARITY or w.endswith("n't"))
    numbers = sorted([n.replace(",", "") for n in _NUMBER.findall(text)] + [w for w in words if w in _NUMBER_WORDS])
    # Capitalized words count as names unless they start a line or sentence (capitalized anyway).
    body = re.sub(r"(^|[.!?:\n]\s*)[A-Z][a-z]+", r"\1", text)
    identifiers = sorted({m.lower().strip("`.,;:!?") for m in _IDENT.findall(body)} - set(numbers))
    return Guard(tuple(polarity), tuple(numbers), tuple(identifiers), tuple(sorted(set(words)))[:MAX_GUARD_WORDS])


def _negations(words: Sequence[str]) -> int:
    return sum(1 for w in words if w in _NEGATIONS or w.endswith("n't"))


def polarity_mismatch(a: Sequence[str], b: Sequence[str]) -> bool:
    if _negations(a) != _negations(b):
        return True
    ca, cb = Counter(a), Counter(b)
    for x, y in _ANTONYMS:
        if (ca[x], ca[y]) != (cb[x], cb[y]) and ca[x] + cb[x] > 0 and ca[y] + cb[y] > 0:
            return True
    on_a, off_a = sum(ca[w] for w in _ACTIVATE), sum(ca[w] for w in _DEACTIVATE)
    on_b, off_b = sum(cb[w] for w in _ACTIVATE), sum(cb[w] for w in _DEACTIVATE)
    return (on_a, off_a) != (on_b, off_b) and on_a + on_b > 0 and off_a + off_b > 0


def _missing(identifier: str, words: set[str], identifiers: Sequence[str]) -> bool:
    return identifier not in identifiers and identifier not in words


def guard_mismatch(a: Guard, b: Guard) -> str | None:
    if polarity_mismatch(a.polarity, b.polarity):
        return "negation/polarity words differ"
    if a.numbers != b.numbers:
        return "numbers differ"
    # A name or identifier of one text must appear in the other (in any position or case).
    a_words, b_words = set(a.words), set(b.words)
    if any(_missing(i, b_words, b.identifiers) for i in a.identifiers) or any(
            _missing(i, a_words, a.identifiers) for i in b.identifiers):
        return "names or identifiers differ"
    return None


# -- decisions ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    entry_id: str
    unit: list[float]
    guard: Guard
    request_id: str
    cost_micros: int
    servable: bool  # it holds a stored answer


@dataclass(frozen=True)
class Match:
    entry: Entry
    similarity: float
    blocked: str | None  # why it cannot be served (guards, not servable), or None


def best_match(unit: Sequence[float], guard: Guard, entries: Sequence[Entry], threshold: float) -> Match | None:
    """The most similar entry at or above the threshold; a guard-passing one wins over a blocked one."""
    best: Match | None = None
    seen: set[str] = set()
    for entry in entries:
        if entry.entry_id in seen or len(entry.unit) != len(unit):
            continue
        seen.add(entry.entry_id)
        similarity = cosine(unit, entry.unit)
        if similarity < threshold:
            continue
        blocked = guard_mismatch(guard, entry.guard) or (None if entry.servable else "no stored answer")
        candidate = Match(entry, similarity, blocked)
        if best is None or (best.blocked is not None and blocked is None) or (
                (best.blocked is None) == (blocked is None) and similarity > best.similarity):
            best = candidate
    return best
