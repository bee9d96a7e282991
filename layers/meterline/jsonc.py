"""JSON on the request path: orjson, with the standard library as the fallback.

A warm request encodes and decodes JSON several times (the provider body, the provider's answer,
every store call, the ledger record): through `json` that was ~5 % of the gateway's CPU per request
on a small body (bench/overhead.py --profile), and it grows with the body. orjson does the same
work in a fraction of the time. Its output is json.dumps(value, separators=(",", ":"),
ensure_ascii=False) as UTF-8 bytes for every value a JSON body can hold, floats aside (shortest
round-trip form either way, e.g. 1e-7 rather than 1e-07).

Where orjson refuses what `json` accepts, the answer is `json`'s (ASCII-escaped), so behaviour
never narrows:
integers beyond 64 bits, lone surrogates and non-str keys on encode; NaN/Infinity and nesting
beyond orjson's limit on decode. orjson reads an integer beyond 64 bits as a float: what may carry
one (a client's request body, a provider's answer) is parsed with `json`, so such a figure is kept,
or flagged, exactly; DynamoDB's JSON carries every number as a string.
A low floor: imports nothing of Meterline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_SORTED = orjson.OPT_SORT_KEYS


def dumps(value: Any, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact JSON as UTF-8 bytes."""
    try:
        return orjson.dumps(value, default=default, option=_SORTED if sort_keys else None)
    except TypeError:  # orjson.JSONEncodeError: fall back to what json does (or raises)
        # ASCII-escaped: a lone surrogate has no UTF-8 form, "\\ud800" is valid JSON for any reader.
        return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys, default=default).encode()


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; raises ValueError (json.JSONDecodeError) on invalid input, like json.loads."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
