"""Provider prompt-cache rules shared by the simulator, the prompt-caching lever and waste scoring:
one data table, so the three never disagree about when a prefix can be cached.

Anthropic silently does not cache a prefix shorter than the model's minimum. Sources disagree on the
figures (LEVERS.md §A1), so they are data, matched by the longest pattern found in the model's name
(provider prefixes and Bedrock's `us.anthropic.` ids included). A figure set too low only costs a
wasted breakpoint, never money.

Bedrock Converse takes explicit `cachePoint` blocks only on the models of its prompt-caching table
(AWS Bedrock user guide, "Prompt caching for faster model inference"; a cachePoint sent to any other
model is a ValidationException): Claude 3.5 Haiku, 3.7 Sonnet and the Claude 4+ families (system,
messages and tools), and Amazon Nova Micro/Lite/Pro/Premier (system and messages only; at most 32k
cached tokens). The 1-hour TTL (`cachePoint.ttl`) exists on Claude 4.5 and newer only.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_CACHEABLE: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-5", 4096), ("claude-opus-4-6", 4096), ("claude-opus-4-7", 4096), ("claude-opus-4-8", 4096),
    ("claude-haiku-4-5", 4096), ("claude-3-haiku", 2048), ("claude-3-5-haiku", 2048), ("claude-haiku-3", 2048),
    ("claude", 1024), ("amazon.nova", 1000),
)
DEFAULT_MIN_CACHEABLE = 1024


def min_cacheable(model: str) -> int:
    """The minimum cacheable prompt length in tokens for `model` (`provider/model` or a bare id)."""
    name = model.rsplit("/", 1)[-1]
    best, value = -1, DEFAULT_MIN_CACHEABLE
    for pattern, minimum in MIN_CACHEABLE:
        if pattern in name and len(pattern) > best:
            best, value = len(pattern), minimum
    return value


@dataclass(frozen=True)
class BedrockCaching:
    """What Bedrock's cachePoint accepts on one model."""

    tools: bool  # a cachePoint may follow the tool definitions
    ttl_1h: bool  # `cachePoint.ttl: "1h"` is accepted
    max_cached_tokens: int | None = None  # Nova caches at most 32k tokens of prefix


_CLAUDE_4 = BedrockCaching(tools=True, ttl_1h=False)
_CLAUDE_45 = BedrockCaching(tools=True, ttl_1h=True)
_NOVA = BedrockCaching(tools=False, ttl_1h=False, max_cached_tokens=32_000)
# Longest pattern found in the model id wins; a Claude or Nova id matching none (Claude 3 Haiku/
# Sonnet/Opus, 3.5 Sonnet v1, Claude 2, Nova Sonic/Canvas/Reel) gets no cachePoint.
BEDROCK_CACHE_POINT: tuple[tuple[str, BedrockCaching], ...] = (
    ("anthropic.claude-3-5-haiku", _CLAUDE_4), ("anthropic.claude-3-7-sonnet", _CLAUDE_4),
    ("anthropic.claude-sonnet-4", _CLAUDE_4), ("anthropic.claude-opus-4", _CLAUDE_4),
    ("anthropic.claude-sonnet-4-5", _CLAUDE_45), ("anthropic.claude-sonnet-4-6", _CLAUDE_45),
    ("anthropic.claude-haiku-4-5", _CLAUDE_45), ("anthropic.claude-opus-4-5", _CLAUDE_45),
    ("anthropic.claude-opus-4-6", _CLAUDE_45), ("anthropic.claude-opus-4-7", _CLAUDE_45),
    ("anthropic.claude-opus-4-8", _CLAUDE_45), ("anthropic.claude-sonnet-5", _CLAUDE_45),
    ("anthropic.claude-opus-5", _CLAUDE_45), ("anthropic.claude-haiku-5", _CLAUDE_45),
    ("anthropic.claude-fable-5", _CLAUDE_45), ("anthropic.claude-mythos-5", _CLAUDE_45),
    ("amazon.nova-micro", _NOVA), ("amazon.nova-lite", _NOVA), ("amazon.nova-pro", _NOVA),
    ("amazon.nova-premier", _NOVA), ("amazon.nova-2-lite", _NOVA),
)


def bedrock_caching(model: str) -> BedrockCaching | None:
    """Bedrock's cachePoint rules for `model` (a model id or inference profile), None if it has none."""
    name = model.rsplit("/", 1)[-1]
    best, found = -1, None
    for pattern, caching in BEDROCK_CACHE_POINT:
        if pattern in name and len(pattern) > best:
            best, found = len(pattern), caching
    return found
