"""What the exact-match cache stores: the endpoint's non-streamed answer (as the client receives it)
and the provider usage it took, so a hit can say what it saved. Pure.

One stored form per endpoint serves both streamed and non-streamed requests: a stream's answer is
collected into the non-streamed form (collect.py) and replayed as SSE on a streaming hit (replay.py).
The answer is zlib-compressed; DynamoDB items are capped at 400 KB, so an answer whose compressed
form exceeds MAX_STORED_BYTES is spilled to S3 when a spill bucket is configured (store/cache.py; up
to MAX_SPILL_BYTES compressed), and not stored otherwise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from meterline.usage import Usage

MAX_STORED_BYTES = 350_000
MAX_SPILL_BYTES = 16 * 1024 * 1024  # one spilled object at most (compressed)
USAGE_FIELDS = ("input_uncached", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning",
                "input_audio", "cache_read_audio", "output_audio")


@dataclass(frozen=True)
class Entry:
    endpoint: str
    body: bytes  # JSON of the non-streamed answer
    usage: Usage
    created_ms: int
    model: str | None = None  # what the provider said it used
    service_tier: str | None = None
    request_id: str | None = None  # the request that filled it

    def age_s(self, now_ms: int) -> int:
        return max(0, (now_ms - self.created_ms) // 1000)


def compress(body: bytes) -> bytes:
    return zlib.compress(body, 6)


def decompress(blob: bytes) -> bytes:
    return zlib.decompress(blob)


def usage_to_dict(usage: Usage) -> dict[str, int]:
    return {name: int(getattr(usage, name)) for name in USAGE_FIELDS if getattr(usage, name) is not None}


def usage_from_dict(values: dict[str, int]) -> Usage:
    return Usage(**{name: int(values[name]) for name in USAGE_FIELDS if name in values})
