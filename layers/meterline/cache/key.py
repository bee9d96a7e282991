"""The exact-match cache key. Pure.

SHA-256 over canonical JSON (sorted keys, fixed separators, UTF-8, integral floats as integers) of:
the workspace, the partition inside it (workspace by default; key, member or customer on request),
the endpoint, the provider entry and the *resolved* model (after aliases and addressing), every
request parameter except `stream`, `stream_options`, `user`, `metadata` (and `model`, replaced by
the resolved one) — so messages, tools, response_format, temperature, max tokens, seed, stop,
reasoning effort... all count — the `anthropic-beta` header (it changes the answer), and the rule's
namespace. The workspace is in every key: identical bodies from two workspaces never share an entry.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_VERSION = 1
EXCLUDED = frozenset({"stream", "stream_options", "user", "metadata", "model"})


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1.0 and 1 are the same parameter
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def canonical_json(document: Any) -> bytes:
    return json.dumps(_canonical(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def cache_key(*, workspace: str, partition: tuple[str, str], endpoint: str, provider: str, model: str,
              body: dict[str, Any], namespace: str = "", anthropic_beta: str | None = None) -> str:
    document = {
        "v": KEY_VERSION,
        "workspace": workspace,
        "partition": list(partition),
        "endpoint": endpoint,
        "provider": provider,
        "model": model,
        "params": {k: v for k, v in body.items() if k not in EXCLUDED},
        "beta": anthropic_beta or "",
        "namespace": namespace,
    }
    return hashlib.sha256(canonical_json(document)).hexdigest()
