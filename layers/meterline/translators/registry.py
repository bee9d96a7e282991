"""Which translator serves a request: chosen from (endpoint, provider kind), created per request.

    endpoint               provider kinds                          translator
    chat.completions       openai, openai_compatible, azure, sim   openai_openai.OpenAIChatToOpenAI
    chat.completions       anthropic                               openai_anthropic.OpenAIChatToAnthropic
    chat.completions       gemini                                  openai_gemini.OpenAIChatToGemini
    chat.completions       bedrock                                 openai_bedrock.OpenAIChatToBedrock
    messages               anthropic, sim                          anthropic_anthropic.AnthropicToAnthropic
    messages.count_tokens  anthropic, sim                          anthropic_anthropic (count_tokens path)
    responses              openai, openai_compatible, azure, sim   responses_openai.ResponsesToOpenAI
    embeddings             openai, openai_compatible, azure, sim   embeddings_openai.EmbeddingsToOpenAI

The simulator (`sim`) speaks every dialect natively, so it takes the pass-through translators.

Anything else is refused with a clear 400 before a provider is called.
"""

from __future__ import annotations

from collections.abc import Callable

from meterline.errors import InvalidRequestError
from meterline.translators.anthropic_anthropic import AnthropicToAnthropic
from meterline.translators.base import Translator
from meterline.translators.embeddings_openai import EmbeddingsToOpenAI
from meterline.translators.openai_anthropic import OpenAIChatToAnthropic
from meterline.translators.openai_bedrock import OpenAIChatToBedrock
from meterline.translators.openai_gemini import OpenAIChatToGemini
from meterline.translators.openai_openai import OpenAIChatToOpenAI
from meterline.translators.responses_openai import ResponsesToOpenAI

Factory = Callable[[dict[str, str]], Translator]
_OPENAI_HOSTS = ("openai", "openai_compatible", "azure")

_TABLE: dict[tuple[str, str], Factory] = {
    **{("chat.completions", kind): (lambda h: OpenAIChatToOpenAI()) for kind in (*_OPENAI_HOSTS, "sim")},
    ("chat.completions", "anthropic"): OpenAIChatToAnthropic,
    ("chat.completions", "gemini"): OpenAIChatToGemini,
    ("chat.completions", "bedrock"): OpenAIChatToBedrock,
    **{("messages", kind): AnthropicToAnthropic for kind in ("anthropic", "sim")},
    **{("messages.count_tokens", kind): (lambda h: AnthropicToAnthropic(h, path="messages/count_tokens"))
       for kind in ("anthropic", "sim")},
    **{("responses", kind): ResponsesToOpenAI for kind in (*_OPENAI_HOSTS, "sim")},
    **{("embeddings", kind): EmbeddingsToOpenAI for kind in (*_OPENAI_HOSTS, "sim")},
}

_PATHS = {"chat.completions": "/v1/chat/completions", "messages": "/v1/messages",
          "messages.count_tokens": "/v1/messages/count_tokens", "responses": "/v1/responses",
          "embeddings": "/v1/embeddings"}


def supports(endpoint: str, kind: str) -> bool:
    return (endpoint, kind) in _TABLE


def translator_for(endpoint: str, kind: str, headers: dict[str, str]) -> Translator:
    factory = _TABLE.get((endpoint, kind))
    if factory is None:
        raise unsupported(endpoint, kind)
    return factory(headers)


def unsupported(endpoint: str, kind: str) -> InvalidRequestError:
    kinds = sorted({k for (e, k) in _TABLE if e == endpoint})
    return InvalidRequestError(
        f"{_PATHS.get(endpoint, endpoint)} cannot reach a `{kind}` provider; it serves {', '.join(kinds)} "
        "providers.", code="unsupported_provider", param="model")
