"""Prompt compression (lever 4): deterministic, measured transformations of a request's messages.

Pure: rewrites a request body and reports what each transformation removed; token counting is
passed in (`levers/tokens.py` counts with a real offline tokenizer).

What is never touched:
- the system prompt / instructions and the tool definitions (the prefix shared across requests and
  conversations, which provider caches key on), and every block up to and including the last block
  a client marked with `cache_control` (an explicit provider-cache breakpoint);
- code: fenced blocks (``` or ~~~) stay byte-identical, indented lines (indentation-sensitive:
  code, YAML, nested lists) and lines with inline code are left as they are, and a block that looks
  like unfenced code is skipped whole.
Why compression does not break prompt caching: each safe transformation is a pure function of one
block, so a block is rewritten the same way in every turn that repeats it, and the prefix a provider
cached from the previous turn (which it saw rewritten) still matches byte for byte. The duplicate
reference depends only on earlier blocks, which later turns repeat. The lossy history budget is the
exception (dropping old turns changes the prefix): it is opt-in and says so.

Safe transformations (on when compression is on):
- `json`: a tool result that is JSON is re-serialized without insignificant whitespace (only the
  whitespace between tokens goes: strings, numbers and key order are kept byte for byte);
- `whitespace`: in prose, runs of spaces/tabs inside a line become one, trailing spaces go, and runs
  of blank lines become one blank line;
- `dedupe`: a block (of at least DEDUPE_MIN_CHARS) identical to an earlier one becomes a short reference.
Lossy transformations (opt-in):
- `tool_output`: a tool result above `tool_output_max_tokens` keeps its first and last lines and
  every line in between that reports an error, with a marker saying how much was left out;
- `history`: above `history_budget_tokens`, the oldest whole turns (a user message and everything up
  to the next user message) are dropped, never the system prompt, the protected prefix or the last turn.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SAFE = ("json", "whitespace", "dedupe")
LOSSY = ("tool_output", "history")
DEDUPE_MIN_CHARS = 256
HEAD_LINES = 20
TAIL_LINES = 20
MAX_ERROR_LINES = 40
DEFAULT_TOOL_OUTPUT_MAX_TOKENS = 2000
COMPRESSIBLE_ENDPOINTS = ("chat.completions", "messages", "responses")

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_RUN = re.compile(r"[ \t]{2,}")
_CODE_LINE = re.compile(
    r"^(def |class |import |from \S+ import |function |const |let |var |#include|package |func |fn |pub |"
    r"public |private |return |if \(|for \(|while \(|\}|\{|<\?php|<!DOCTYPE|<html)")
_ERROR_LINE = re.compile(r"error|exception|traceback|fail|fatal|panic|warn|denied|refused|timeout|assert",
                         re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """A scope's compression settings (stored as `lever#compression#<scope>`)."""

    tool_output_max_tokens: int | None = None  # lossy tool output: None = off
    history_budget_tokens: int | None = None  # lossy history budget: None = off

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Settings:
        unknown = set(raw) - {"tool_output_max_tokens", "history_budget_tokens"}
        if unknown:
            raise ValueError(f"unknown compression settings: {sorted(unknown)}")
        out = cls(raw.get("tool_output_max_tokens"), raw.get("history_budget_tokens"))
        for name, value in (("tool_output_max_tokens", out.tool_output_max_tokens),
                            ("history_budget_tokens", out.history_budget_tokens)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 100):
                raise ValueError(f"{name} is a whole number of tokens, at least 100")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"tool_output_max_tokens": self.tool_output_max_tokens,
                "history_budget_tokens": self.history_budget_tokens}


@dataclass
class Result:
    tokens_before: int = 0  # of the blocks that changed (or were dropped)
    tokens_after: int = 0
    by_transform: dict[str, int] = field(default_factory=dict)  # tokens removed per transformation
    blocks_changed: int = 0

    @property
    def saved_tokens(self) -> int:
        return self.tokens_before - self.tokens_after


# -- per-block transformations (pure, context-free) --------------------------------------------
def compact_json(text: str) -> str | None:
    """`text` without whitespace between JSON tokens, or None if it is not a JSON object or array.
    Strings (escapes included) and numbers are copied byte for byte."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        json.loads(stripped)
    except ValueError:
        return None
    out: list[str] = []
    in_string = escaped = False
    for ch in stripped:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif ch not in " \t\r\n":
            out.append(ch)
    return "".join(out)


def looks_like_code(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return False
    code = sum(1 for line in lines if _CODE_LINE.match(line.lstrip()) or line.rstrip().endswith((";", "{", "}")))
    indented = sum(1 for line in lines if line[:1] in (" ", "\t"))
    return code >= 3 or (len(lines) >= 4 and indented * 2 >= len(lines))


def collapse_whitespace(text: str) -> str:
    """Prose whitespace outside code fences; fenced, indented and inline-code lines unchanged."""
    if "```" not in text and "~~~" not in text and looks_like_code(text):
        return text
    out: list[str] = []
    fence: str | None = None
    blank_run = 0
    for line in text.split("\n"):
        marker = _FENCE.match(line)
        if fence is not None:
            out.append(line)
            if marker and marker.group(1) == fence:
                fence = None
            continue
        if marker:
            fence = marker.group(1)
            blank_run = 0
            out.append(line)
            continue
        if not line.strip():
            blank_run += 1
            if blank_run <= 1:
                out.append("")
            continue
        blank_run = 0
        if line[:1] in (" ", "\t") or "`" in line:
            out.append(line)
        else:
            out.append(_RUN.sub(" ", line).rstrip(" \t"))
    return "\n".join(out)


def head_tail(text: str, max_tokens: int, count: Callable[[str], int]) -> str:
    """Lossy: the first and last lines plus the error lines in between, with a marker."""
    if count(text) <= max_tokens:
        return text
    lines = text.split("\n")
    if len(lines) > HEAD_LINES + TAIL_LINES + 1:
        middle = lines[HEAD_LINES:-TAIL_LINES]
        errors = [line for line in middle if _ERROR_LINE.search(line)][:MAX_ERROR_LINES]
        marker = (f"[... {len(middle) - len(errors)} of {len(middle)} middle lines omitted by Meterline "
                  f"(tool output head/tail); {len(errors)} error lines kept ...]")
        return "\n".join([*lines[:HEAD_LINES], marker, *errors, *lines[-TAIL_LINES:]])
    keep = max_tokens * 2  # characters at each end: ~4 characters per token, half the budget each side
    if len(text) <= 2 * keep:
        return text
    marker = f"[... {len(text) - 2 * keep} characters omitted by Meterline (tool output head/tail) ...]"
    return f"{text[:keep]}\n{marker}\n{text[-keep:]}"


# -- the request walk -------------------------------------------------------------------------------
@dataclass
class _Slot:
    holder: Any  # dict holding the text
    key: str  # key of the text in holder
    kind: str  # "tool" | "prose"
    message: int  # index of the message it belongs to
    protected: bool = False


def _has_breakpoint(value: Any) -> bool:
    return isinstance(value, dict) and "cache_control" in value


def _slots(endpoint: str, body: dict[str, Any]) -> tuple[list[_Slot], list[dict[str, Any]] | None]:
    """Every text block a transformation may touch, in prompt order, and the message list."""
    if endpoint == "responses":
        items = body.get("input")
        if not isinstance(items, list):
            return [], None
        messages = items
    else:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return [], None
    slots: list[_Slot] = []
    last_breakpoint = -1  # index into slots of the last block at or before a client breakpoint
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer") or message.get("type") in ("function_call", "reasoning"):
            continue
        if message.get("type") == "function_call_output":
            if isinstance(message.get("output"), str):
                slots.append(_Slot(message, "output", "tool", i))
            continue
        kind = "tool" if role == "tool" else "prose"
        content = message.get("content")
        if isinstance(content, str):
            slots.append(_Slot(message, "content", kind, i))
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
                    slots.append(_Slot(part, "text", kind, i))
                elif part.get("type") == "tool_result":
                    inner = part.get("content")
                    if isinstance(inner, str):
                        slots.append(_Slot(part, "content", "tool", i))
                    elif isinstance(inner, list):
                        for block in inner:
                            if isinstance(block, dict) and block.get("type") == "text" and isinstance(
                                    block.get("text"), str):
                                slots.append(_Slot(block, "text", "tool", i))
                                if _has_breakpoint(block):
                                    last_breakpoint = len(slots) - 1
                if _has_breakpoint(part):
                    last_breakpoint = len(slots) - 1
        if _has_breakpoint(message):
            last_breakpoint = len(slots) - 1
    for slot in slots[: last_breakpoint + 1]:
        slot.protected = True
    return slots, messages


def compress(endpoint: str, body: dict[str, Any], settings: Settings, count: Callable[[str], int]) -> Result:
    """Rewrite `body` in place; return what was removed, in tokens counted by `count`."""
    result = Result()
    if endpoint not in COMPRESSIBLE_ENDPOINTS:
        return result
    slots, messages = _slots(endpoint, body)
    if not slots:
        return result
    seen: dict[str, int] = {}
    for slot in slots:
        text = slot.holder[slot.key]
        if slot.protected:
            if len(text) >= DEDUPE_MIN_CHARS:
                seen.setdefault(text, slot.message)
            continue
        original, steps = text, []
        if slot.kind == "tool":
            compacted = compact_json(text)
            if compacted is not None and compacted != text:
                steps.append(("json", text, compacted))
                text = compacted
        if compact_json(text) is None:
            collapsed = collapse_whitespace(text)
            if collapsed != text:
                steps.append(("whitespace", text, collapsed))
                text = collapsed
        if slot.kind == "tool" and settings.tool_output_max_tokens:
            cut = head_tail(text, settings.tool_output_max_tokens, count)
            if cut != text:
                steps.append(("tool_output", text, cut))
                text = cut
        if len(text) >= DEDUPE_MIN_CHARS:
            earlier = seen.get(text)
            if earlier is None:
                seen[text] = slot.message
            else:
                reference = f"[identical to the content of message {earlier}; omitted by Meterline]"
                steps.append(("dedupe", text, reference))
                text = reference
        if text == original:
            continue
        before = count(original)
        after = count(text)
        # Attribute the tokens each step removed (counted on the step's own input and output).
        for name, step_in, step_out in steps:
            removed = count(step_in) - count(step_out) if len(steps) > 1 else before - after
            result.by_transform[name] = result.by_transform.get(name, 0) + removed
        result.tokens_before += before
        result.tokens_after += after
        result.blocks_changed += 1
        slot.holder[slot.key] = text
    if settings.history_budget_tokens and messages is not None and endpoint != "responses":
        _apply_history_budget(messages, slots, settings.history_budget_tokens, count, result)
    return result


def _message_tokens(message: Any, count: Callable[[str], int]) -> int:
    return count(json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str))


def _apply_history_budget(messages: list[Any], slots: list[_Slot], budget: int, count: Callable[[str], int],
                          result: Result) -> None:
    """Drop the oldest whole turns until the conversation fits `budget` tokens (lossy, opt-in)."""
    protected_until = max((s.message for s in slots if s.protected), default=-1)
    starts = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"
              and i > protected_until]
    if len(starts) < 2:
        return
    sizes = [_message_tokens(m, count) for m in messages]
    total = sum(sizes)
    if total <= budget:
        return
    drop_until = None
    for start, next_start in itertools.pairwise(starts):
        if total <= budget:
            break
        total -= sum(sizes[start:next_start])
        drop_until = (starts[0], next_start)
    if drop_until is None:
        return
    first, end = drop_until
    removed = sum(sizes[first:end])
    del messages[first:end]
    result.tokens_before += removed
    result.by_transform["history"] = result.by_transform.get("history", 0) + removed
    result.blocks_changed += 1
