"""A request's shape, as the waste signals need it, computed once from the request body. Pure.

The ledger holds tokens and cost but not the prompt (it never stores content). The signals need a
few facts about the request itself, so the profile stage (gateway/profile.py) notes them on the
record, and only when they carry information (zero / absent fields are omitted):

    req_fp         fingerprint of the whole request (model, messages, parameters; not `stream`):
                   identical requests share it (W1 duplicates, W8 retries)
    prefix_fp      fingerprint of the stable prefix (tools, system, every turn but the last) and
    prefix_tokens  its estimated size (W6 cache misses: a prefix a provider could have cached)
    max_tokens     the output cap the caller asked for (W4 low utilisation)
    tools          number of tools offered (W2: a request with tools is not "simple")
    json_slack     estimated tokens removable by compacting pretty-printed JSON (W7)
    repeat_slack   estimated tokens of repeated identical blocks beyond their first copy (W7)
    loop_fp        the agent-loop fingerprint (near-identical turns), when a session is named (W3)
    priced_as      the catalog model the request was priced as (counterfactuals re-price with it)

Sizes are the gateway's usual estimate (4 characters per token): the $ at stake built on them is
labelled an estimate in the report. Fingerprints are truncated SHA-256, never content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from meterline import jsonc
from meterline.usage import estimate_tokens

# Parameters that change how a response is delivered, not what it says.
_DELIVERY = frozenset({"stream", "stream_options", "user", "metadata", "store"})
MIN_REPEAT_CHARS = 200  # a block shorter than this repeating is normal (greetings, separators)


def _fp(value: Any) -> str:
    return hashlib.sha256(jsonc.dumps(value, sort_keys=True, default=str)).hexdigest()[:16]


def _texts(content: Any) -> list[str]:
    """The text parts of a message content (string, or a list of parts in any dialect)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                for field in ("text", "content", "output", "input_text"):
                    value = part.get(field)
                    if isinstance(value, str):
                        out.append(value)
                    elif isinstance(value, list):
                        out.extend(_texts(value))
    return out


def json_slack_chars(text: str) -> int:
    """Characters a compact re-serialization would remove from pretty-printed JSON (0 otherwise)."""
    stripped = text.strip()
    if len(stripped) < 2 or stripped[0] not in "[{" or "\n" not in stripped:
        return 0
    try:
        parsed = json.loads(stripped)
    except ValueError:
        return 0
    compact = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False)
    return max(len(stripped) - len(compact), 0)


def _turns(body: Mapping[str, Any]) -> list[Any]:
    for field in ("messages", "input"):
        value = body.get(field)
        if isinstance(value, list):
            return value
    return []


def requested_max_tokens(body: Mapping[str, Any]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def profile(body: Mapping[str, Any], *, session: bool = False) -> dict[str, Any]:
    """The request-shape fields for the ledger record (only the informative ones)."""
    from meterline.budgets.policy import loop_fingerprint

    out: dict[str, Any] = {"req_fp": _fp({k: v for k, v in body.items() if k not in _DELIVERY})}
    turns = _turns(body)
    prefix = {"model": body.get("model"), "tools": body.get("tools"), "system": body.get("system"),
              "instructions": body.get("instructions"), "turns": turns[:-1]}
    if turns[:-1] or prefix["system"] or prefix["tools"] or prefix["instructions"]:
        prefix_chars = len(jsonc.dumps([prefix["tools"], prefix["system"], prefix["instructions"],
                                        prefix["turns"]], default=str).decode("utf-8", "replace"))
        out["prefix_fp"] = _fp(prefix)
        out["prefix_tokens"] = estimate_tokens(prefix_chars)
    max_tokens = requested_max_tokens(body)
    if max_tokens:
        out["max_tokens"] = max_tokens
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = len(tools)

    texts: list[str] = []
    system = body.get("system")
    texts.extend(_texts(system) if not isinstance(system, str) else [system])
    for turn in turns:
        if isinstance(turn, dict):
            texts.extend(_texts(turn.get("content")))
    slack = sum(json_slack_chars(t) for t in texts)
    if slack:
        out["json_slack"] = estimate_tokens(slack)
    seen: set[str] = set()
    repeated = 0
    for text in texts:
        if len(text) < MIN_REPEAT_CHARS:
            continue
        digest = hashlib.sha256(text.encode()).digest()
        key = digest.hex()
        if key in seen:
            repeated += len(text)
        seen.add(key)
    if repeated:
        out["repeat_slack"] = estimate_tokens(repeated)
    if session:
        out["loop_fp"] = loop_fingerprint(body)[:16]
    return out
