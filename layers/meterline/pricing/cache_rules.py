"""Provider prompt-cache rules shared by the simulator, the prompt-caching lever and waste scoring:
one data table, so the three never disagree about when a prefix can be cached.

Anthropic silently does not cache a prefix shorter than the model's minimum. Sources disagree on the
figures (LEVERS.md §A1), so they are data, matched by the longest pattern found in the model's name
(provider prefixes and Bedrock's `us.anthropic.` ids included). A figure set too low only costs a
wasted breakpoint, never money.
"""

from __future__ import annotations

MIN_CACHEABLE: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-5", 4096), ("claude-opus-4-6", 4096), ("claude-opus-4-7", 4096), ("claude-opus-4-8", 4096),
    ("claude-haiku-4-5", 4096), ("claude-3-haiku", 2048), ("claude-3-5-haiku", 2048), ("claude-haiku-3", 2048),
    ("claude", 1024),
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
