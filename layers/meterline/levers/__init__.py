"""The cost levers (PRODUCT.md §6): pure decisions that reduce what a request costs.

Each lever that acts on a request records what it saved with `RequestContext.save(lever, micros)`;
the ledger record carries `savings` ({lever: micro-dollars}) and `saved_micros` (their sum), and the
rollups add them up per scope and period like spend (`saved_micros`, `saved_<lever>`).
"""

from __future__ import annotations

EXACT_CACHE = "exact_cache"  # the gateway's exact-match response cache (cache/)
PROMPT_CACHE = "prompt_cache"  # provider prompt caching helped by injected breakpoints / cache keys
TEMPLATE = "template"  # prompt templates assembled stable-parts-first
ROUTING = "routing"  # model routing to a cheaper model
COMPRESSION = "compression"  # deterministic prompt compression
SEMANTIC_CACHE = "semantic_cache"  # near-duplicate answers served from the semantic cache

LEVERS = (EXACT_CACHE, PROMPT_CACHE, TEMPLATE, ROUTING, COMPRESSION, SEMANTIC_CACHE)
