"""What the simulator knows about the models it stands in for: context windows, output limits,
reasoning, embedding sizes, prompt-cache minimums. Output limits come from the price catalog
(one source); the rest are the providers' published figures."""

from __future__ import annotations

from meterline.pricing.catalog import default_catalog

# Longest matching prefix wins.
_CONTEXT = (
    ("gpt-3.5", 16_385), ("gpt-4-turbo", 128_000), ("gpt-4o", 128_000), ("gpt-4.1", 1_047_576),
    ("gpt-4", 8_192), ("gpt-5", 400_000), ("o1-mini", 128_000), ("o1", 200_000), ("o3", 200_000),
    ("o4", 200_000), ("claude", 200_000), ("gemini", 1_048_576),
)
DEFAULT_CONTEXT = 128_000
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
EMBEDDING_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
EMBEDDING_MAX_INPUT = 8192


def _prefix_lookup(model: str, table: tuple[tuple[str, int], ...], default: int) -> int:
    best, value = -1, default
    for prefix, figure in table:
        if model.startswith(prefix) and len(prefix) > best:
            best, value = len(prefix), figure
    return value


def context_window(model: str) -> int:
    return _prefix_lookup(model, _CONTEXT, DEFAULT_CONTEXT)


def max_output(model: str) -> int | None:
    """The model's maximum output tokens from the catalog, None when the catalog does not know it."""
    try:
        pricing = default_catalog().find_by_name(model)
    except Exception:
        return None
    return (pricing.max_output_tokens or None) if pricing else None


def is_reasoning(model: str) -> bool:
    return model.startswith(REASONING_PREFIXES)


