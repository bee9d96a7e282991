"""OpenAI Embeddings, simulated: deterministic unit vectors in which similar texts lie close.

Each text becomes weighted features (its content words, lightly stemmed, and their character
trigrams; function words weigh little);
each feature maps to a fixed pseudo-random dense direction (SHAKE-256 of the feature), and the
vector is their weighted sum, normalised. Texts sharing words and word pieces (paraphrases,
reorderings, typos) get a high cosine; unrelated texts ~0. `dimensions` keeps the leading
components and renormalises (as OpenAI's text-embedding-3 models do); `encoding_format: base64`
packs little-endian float32 as the SDKs expect.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections import Counter
from functools import lru_cache
from typing import Any

from meterline.providers.sim import models, text
from meterline.providers.sim.response import SimError, SimResponse, ok

_WORD = re.compile(r"[a-z0-9]+")


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


# Function words carry little meaning: they weigh a tenth of a content word and add no trigrams.
_FUNCTION_WORDS_TEXT = (
    "a an the i me my we our you your he she it its they them their is are was were be been am do does "
    "did can could would should will shall may might must have has had of to in on at by for with from as "
    "and or but if so than that this these those what which who how when where why there here not no"
)
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())


def features(value: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for word in _WORD.findall(value.lower()):
        if word in _FUNCTION_WORDS:
            found["w:" + word] += 0.2
            continue
        stem = _stem(word)
        found["w:" + stem] += 2.0
        padded = f"#{stem}#"
        for i in range(len(padded) - 2):
            found["c:" + padded[i:i + 3]] += 0.5
    return found


@lru_cache(maxsize=8192)
def _direction(feature: str, dims: int) -> bytes:
    return hashlib.shake_256(feature.encode()).digest(dims)


def embed(value: str, dims: int) -> list[float]:
    vector = [0.0] * dims
    for feature, weight in features(value).items():
        for i, byte in enumerate(_direction(feature, dims)):
            vector[i] += weight * (byte - 127.5)
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:  # no word at all: a fixed direction of its own
        vector = [b - 127.5 for b in _direction("empty:" + value, dims)]
        norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def _inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        return [" ".join(str(t) for t in raw)]  # one input given as token ids
    out = []
    for item in raw or []:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out.append(" ".join(str(t) for t in item))
        else:
            raise SimError(400, "'$.input' is invalid. Please check the API reference.", param="input")
    return out


def build(body: dict[str, Any]) -> SimResponse:
    model = body["model"]
    native = models.EMBEDDING_DIMS.get(model)
    if native is None:
        raise SimError(404, f"The model `{model}` does not exist or you do not have access to it.",
                       code="model_not_found", kind="invalid_request_error")
    dims = body.get("dimensions")
    if dims is not None:
        if model == "text-embedding-ada-002":
            raise SimError(400, "This model does not support specifying dimensions.", param="dimensions")
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= native:
            raise SimError(400, f"Invalid 'dimensions': must be between 1 and {native}.", param="dimensions",
                           code="invalid_value")
    inputs = _inputs(body.get("input"))
    if len(inputs) > 2048:
        raise SimError(400, "'$.input' is invalid: at most 2048 inputs per request.", param="input")
    data, total = [], 0
    for index, value in enumerate(inputs):
        n = text.count(value)
        if n > models.EMBEDDING_MAX_INPUT:
            raise SimError(400, f"This model's maximum context length is {models.EMBEDDING_MAX_INPUT} tokens, however "
                                f"you requested {n} tokens ({n} in your prompt; 0 for the completion). Please reduce "
                                "your prompt; or completion length.", param="input", code="context_length_exceeded")
        total += n
        vector = embed(value, dims or native)
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = {"prompt_tokens": total, "total_tokens": total}
    return ok({"object": "list", "data": data, "model": model, "usage": usage})
