"""Token usage, normalised across providers.

`None` means the provider did not report a field; 0 means it reported zero. The classes are the
ones money is computed on: `input_uncached` + `cache_read` + `cache_write_5m` + `cache_write_1h`
is the whole prompt; `output` includes reasoning (reported apart in `reasoning` for information).

This module is pure: it parses provider payloads (dicts), it does no I/O and computes no money.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    input_uncached: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    output: int = 0
    reasoning: int | None = None
    # Set when the counts are the gateway's estimate (stream cut before the provider's usage).
    estimated: bool = False

    @property
    def prompt_total(self) -> int:
        return self.input_uncached + self.cache_read + self.cache_write_5m + self.cache_write_1h

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total(self) -> int:
        return self.prompt_total + self.output

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(int(value), 0)


def from_openai_chat(usage: dict[str, Any] | None) -> Usage | None:
    """OpenAI Chat Completions `usage`: prompt_tokens includes cached (and cache-write) tokens."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    prompt = prompt or 0
    details = usage.get("prompt_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) or 0
    cache_write = _int(details.get("cache_write_tokens")) or 0
    # Guard against providers that report more cached than prompt tokens: never bill negative input.
    cached = min(cached, prompt)
    cache_write = min(cache_write, prompt - cached)
    out_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_uncached=prompt - cached - cache_write,
        cache_read=cached,
        cache_write_5m=cache_write,
        output=completion or 0,
        reasoning=_int(out_details.get("reasoning_tokens")),
    )


def estimate_tokens(text_chars: int) -> int:
    """The gateway's fallback estimate: ~4 characters per token, rounded up."""
    return (text_chars + 3) // 4


def estimate_chat_prompt_tokens(messages: Any) -> int:
    """Estimate prompt tokens of chat messages: content characters / 4 plus per-message framing."""
    if not isinstance(messages, list):
        return 0
    chars = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                chars += len(str(call.get("function", "")))
    # Chat framing: ~4 tokens per message plus 3 for the reply primer (OpenAI's documented overhead).
    return estimate_tokens(chars) + 4 * len(messages) + 3
