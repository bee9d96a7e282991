"""What a model can do, for routing's hard constraints: context window, image input, tools, JSON
mode, reasoning parameters. Data, not code: the catalog prices models, this says what they accept.

Keyed by catalog id prefix (`openai/gpt-4.1` covers `openai/gpt-4.1-mini`); the longest matching
prefix wins. A model with no entry has unknown capabilities: routing never sends a request to it
that needs tools, images, JSON mode or reasoning, nor one whose prompt plus output exceeds
UNKNOWN_CONTEXT tokens. Sources: each provider's model pages (checked 2026-12-01).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFacts:
    context: int  # tokens, prompt + output
    vision: bool = True
    tools: bool = True
    json_mode: bool = True  # response_format json_object / json_schema (or the provider's equivalent)
    reasoning: bool = False  # accepts reasoning_effort / thinking
    known: bool = True


UNKNOWN_CONTEXT = 32_000
UNKNOWN = ModelFacts(context=UNKNOWN_CONTEXT, vision=False, tools=False, json_mode=False, reasoning=False,
                     known=False)

FACTS: dict[str, ModelFacts] = {
    "openai/gpt-5": ModelFacts(400_000, reasoning=True),
    "openai/gpt-4.1": ModelFacts(1_047_576),
    "openai/gpt-4o": ModelFacts(128_000),
    "openai/o3": ModelFacts(200_000, reasoning=True),
    "openai/o4-mini": ModelFacts(200_000, reasoning=True),
    "openai/text-embedding": ModelFacts(8_191, vision=False, tools=False, json_mode=False),
    "anthropic/claude-opus-4": ModelFacts(200_000, reasoning=True),
    "anthropic/claude-sonnet-4": ModelFacts(200_000, reasoning=True),
    "anthropic/claude-haiku-4-5": ModelFacts(200_000, reasoning=True),
    "gemini/gemini-2.5": ModelFacts(1_048_576, reasoning=True),
    "gemini/gemini-3": ModelFacts(1_048_576, reasoning=True),
    # Bedrock Converse has no JSON mode parameter: a request asking for one stays where it is.
    "bedrock/anthropic.claude": ModelFacts(200_000, json_mode=False, reasoning=True),
    "bedrock/global.anthropic.claude": ModelFacts(200_000, json_mode=False, reasoning=True),
    "bedrock/us.anthropic.claude": ModelFacts(200_000, json_mode=False, reasoning=True),
    "bedrock/eu.anthropic.claude": ModelFacts(200_000, json_mode=False, reasoning=True),
    "bedrock/amazon.nova-pro": ModelFacts(300_000, json_mode=False),
    "bedrock/us.amazon.nova-pro": ModelFacts(300_000, json_mode=False),
    "bedrock/amazon.nova-lite": ModelFacts(300_000, json_mode=False),
    "bedrock/amazon.nova-micro": ModelFacts(128_000, vision=False, json_mode=False),
}
_BY_LENGTH = sorted(FACTS, key=len, reverse=True)


def facts_for(catalog_id: str) -> ModelFacts:
    for prefix in _BY_LENGTH:
        if catalog_id.startswith(prefix):
            return FACTS[prefix]
    return UNKNOWN
