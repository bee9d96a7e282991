"""The built-in simulated provider, `sim/<model>`: a faithful, deterministic stand-in for every
dialect the gateway serves, priced as the real model it names so demos show real money.

    chat.py        OpenAI Chat Completions (tools, structured output, n, streaming)
    responses.py   OpenAI Responses (function tools, structured output, streaming events)
    embeddings.py  OpenAI Embeddings (similar texts close together, `dimensions`, base64)
    anthropic.py   Anthropic Messages and count_tokens (tools, thinking, cache_control)
    cache.py       the providers' prompt caches, per workspace and model, with TTLs
    tools.py       when the simulated model calls which tool; schema.py: arguments that validate
    text.py        the tokenizer every count comes from; models.py: context windows and limits

The reply depends only on the request (and, for cache usage, on the workspace's earlier requests
within the TTL). The gateway names the workspace in `x-meterline-workspace` (sim requests only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from meterline.providers.base import UpstreamRequest
from meterline.providers.sim import anthropic, chat, embeddings, responses
from meterline.providers.sim.cache import PromptCache
from meterline.providers.sim.response import SimError, SimResponse

WORKSPACE_HEADER = "x-meterline-workspace"

__all__ = ["WORKSPACE_HEADER", "SimResponse", "SimUpstream"]


class SimUpstream:
    def __init__(self, delay_ms: float | None = None, clock: Callable[[], float] | None = None):
        self.delay_s = (float(os.environ.get("METERLINE_SIM_DELAY_MS", "0")) if delay_ms is None else delay_ms) / 1000
        self.cache = PromptCache(clock) if clock else PromptCache()

    async def aclose(self) -> None:
        return None

    async def send(self, request: UpstreamRequest) -> SimResponse:
        path = request.url.split("?", 1)[0]
        anthropic_api = path.endswith(("/messages", "/messages/count_tokens"))
        try:
            body = json.loads(request.body)
        except ValueError:
            error = SimError(400, "We could not parse the JSON body of your request.")
            return error.anthropic() if anthropic_api else error.openai()
        workspace = request.headers.get(WORKSPACE_HEADER, "")
        try:
            if path.endswith("/messages/count_tokens"):
                return anthropic.count_tokens(body)
            if path.endswith("/messages"):
                return anthropic.build(body, self.cache, workspace, self.delay_s)
            if path.endswith("/responses"):
                return responses.build(body, self.cache, workspace, self.delay_s)
            if path.endswith("/embeddings"):
                return embeddings.build(body)
            if path.endswith("/chat/completions"):
                return chat.build(body, self.cache, workspace, self.delay_s)
            return SimError(404, f"Unknown endpoint {path}.", code="unknown_url").openai()
        except SimError as error:
            return error.anthropic() if anthropic_api else error.openai()
