"""How the simulated model decides to call a tool, in any dialect. Pure and deterministic.

A dialect module reduces its request to a `Turn` (the user's last words, whether the last thing in
the conversation is a tool's result, which tools were called so far) and its tools to `Tool`s.
The decision mirrors what real models do with `tool_choice`:

    none / no tools   answer in text
    named             call that tool, every time (as the providers do)
    required (any)    call the most relevant tool; after a tool result, the most relevant one not
                      called yet (so an agent loop that forces tools, like pydantic-ai's output
                      tool, reaches its final tool instead of looping)
    auto              call the most relevant tool when the user's words relate to one (or ask for
                      a tool); after a tool result, answer in text built from that result
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from meterline.providers.sim import text
from meterline.providers.sim.schema import instance

_STOP = {"the", "and", "for", "with", "what", "when", "where", "which", "that", "this", "from", "your", "into",
         "about", "tell", "please", "give", "some", "then", "there", "their", "have", "does", "will", "would",
         "could", "should", "function", "tool", "tools", "call", "return", "returns", "result", "using", "value"}
_ASKS_FOR_TOOL = re.compile(r"\b(use|call|invoke|run)\b.*\btools?\b|\btools?\b", re.IGNORECASE)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    strict: bool = False


@dataclass
class Turn:
    user_text: str = ""
    after_tool: bool = False
    tool_output: str = ""
    called: list[str] = field(default_factory=list)


def words(text: str) -> set[str]:
    split = re.sub(r"([a-z])([A-Z])", r"\1 \2", text).replace("_", " ").replace("-", " ").lower()
    return {w.rstrip("s") for w in re.findall(r"[a-z]{3,}", split) if w not in _STOP}


def relevance(tool: Tool, text: str) -> int:
    return len(words(tool.name + " " + tool.description) & words(text))


def hints(text: str) -> list[str]:
    """Words a tool argument would plausibly take: capitalised names first (cities, people,
    products), then quoted phrases, then numbers."""
    names = re.findall(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-zA-Z]+(?:\s[A-Z][a-zA-Z]+)*)", text)
    quoted = re.findall(r"['\"]([^'\"]{1,60})['\"]", text)
    out: list[str] = []
    for item in [*names, *quoted]:
        if item not in out and item.lower() not in _STOP:
            out.append(item)
    return out


def choose(tools: list[Tool], choice: str | None, named: str | None, turn: Turn) -> Tool | None:
    """`choice`: "auto" | "none" | "required" | "named" (with `named`)."""
    if not tools or choice == "none":
        return None
    if choice == "named":
        return next((t for t in tools if t.name == named), None)
    ranked = sorted(tools, key=lambda t: -relevance(t, turn.user_text))  # stable: ties keep the caller's order
    if choice == "required":
        if turn.after_tool:
            fresh = [t for t in ranked if t.name not in turn.called]
            return (fresh or ranked)[0]
        return ranked[0]
    if turn.after_tool:
        return None
    best = ranked[0]
    if relevance(best, turn.user_text) > 0 or _ASKS_FOR_TOOL.search(turn.user_text):
        return best
    return None


def text_answer(turn: Turn, seed: bytes, model: str, schema: dict[str, Any] | None, mode: str | None) -> str:
    """The assistant's words when it calls no tool, in the OpenAI dialects: JSON conforming to the
    requested schema (structured output), a JSON object (JSON mode), an answer built from the last
    tool result, or prose."""
    if schema is not None:
        return json.dumps(instance(schema, seed, hints(turn.user_text)))
    if mode == "json_object":
        return json.dumps({"answer": text.prose(seed, model, turn.user_text)})
    if turn.after_tool:
        return answer_after_tool(turn)
    return text.prose(seed, model, turn.user_text)


def answer_after_tool(turn: Turn) -> str:
    output = " ".join(turn.tool_output.split())[:300]
    return f"Based on the tool result ({output}), here is the answer to: {turn.user_text[:80]!r}."
