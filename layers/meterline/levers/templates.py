"""Prompt templates (lever 5): a versioned, byte-stable prompt prefix assembled stable-parts-first.
Pure.

A template holds a system prompt, tool schemas ({name, description, parameters}), few-shot
examples ({role, content}) and an optional `prompt`: a user turn with `${variable}` placeholders.
A request names `Meterline-Template: name@version` and passes `Meterline-Template-Variables: {JSON}`.
Assembly: [system, tools, examples] — identical bytes for every request of that version — then the
rendered prompt, then the request's own messages and tools. On /v1/messages the gateway places a
`cache_control` breakpoint on the last stable block (the template boundary) unless the request
already carries 4 breakpoints; on chat/Responses the provider caches the stable prefix by itself.
On /v1/responses the template's system prompt leads `instructions` (the request's own follow it),
its tools lead `tools`, and its examples and prompt lead `input`; a request continuing a stored
conversation (`previous_response_id` or `conversation`) gets instructions and tools only — OpenAI
does not carry those over, while the examples and prompt are already in the stored input.
Versions are immutable: editing a template publishes the next version.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from typing import Any

from meterline.levers.prompt_cache import MAX_BREAKPOINTS, chat_client_breakpoints, client_breakpoints

NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_TEMPLATE_BYTES = 200_000
_ROLES = ("user", "assistant")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    system: str = ""
    tools: tuple[dict[str, Any], ...] = ()
    examples: tuple[dict[str, str], ...] = ()
    prompt: str = ""
    variables: dict[str, str | None] = field(default_factory=dict)  # name -> default (None: required)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "system": self.system, "tools": list(self.tools),
                "examples": list(self.examples), "prompt": self.prompt, "variables": dict(self.variables)}


def parse(name: str, document: Any, version: int = 0) -> Template:
    """A template from its YAML/JSON document, validated (clear errors, nothing half-stored)."""
    if not NAME.match(name):
        raise TemplateError("template names are 1-64 characters of A-Z a-z 0-9 . _ -")
    if not isinstance(document, dict):
        raise TemplateError("a template is a mapping with system, tools, examples, prompt, variables")
    unknown = set(document) - {"name", "system", "tools", "examples", "prompt", "variables"}
    if unknown:
        raise TemplateError(f"unknown template fields: {', '.join(sorted(unknown))}")
    system, prompt = document.get("system") or "", document.get("prompt") or ""
    if not isinstance(system, str) or not isinstance(prompt, str):
        raise TemplateError("system and prompt are strings")
    tools = []
    for tool in document.get("tools") or []:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise TemplateError("each tool needs a name (and optionally description, parameters)")
        tools.append({"name": tool["name"], "description": str(tool.get("description") or ""),
                      "parameters": tool.get("parameters") or {"type": "object", "properties": {}}})
    examples = []
    for example in document.get("examples") or []:
        if not isinstance(example, dict) or example.get("role") not in _ROLES or \
                not isinstance(example.get("content"), str):
            raise TemplateError("each example is {role: user|assistant, content: text}")
        examples.append({"role": example["role"], "content": example["content"]})
    raw_vars = document.get("variables") or {}
    if isinstance(raw_vars, list):
        raw_vars = {v: None for v in raw_vars}
    if not isinstance(raw_vars, dict):
        raise TemplateError("variables is a list of names or a mapping of name -> default")
    variables = {str(k): (None if v is None else str(v)) for k, v in raw_vars.items()}
    used = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(prompt)
            if m.group("named") or m.group("braced")}
    if used - set(variables):
        raise TemplateError(f"the prompt uses undeclared variables: {', '.join(sorted(used - set(variables)))}")
    template = Template(name, version, system, tuple(tools), tuple(examples), prompt, variables)
    if len(json.dumps(template.as_dict())) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"a template is at most {MAX_TEMPLATE_BYTES} bytes")
    return template


def parse_ref(header: str) -> tuple[str, int]:
    name, _, version = header.strip().partition("@")
    if not NAME.match(name) or not version.isdigit() or int(version) < 1:
        raise TemplateError("Meterline-Template must be NAME@VERSION (e.g. support@3)")
    return name, int(version)


def parse_variables(header: str | None) -> dict[str, str]:
    if not header:
        return {}
    try:
        values = json.loads(header)
    except ValueError as exc:
        raise TemplateError("Meterline-Template-Variables must be a JSON object") from exc
    if not isinstance(values, dict) or not all(isinstance(v, str | int | float) for v in values.values()):
        raise TemplateError("Meterline-Template-Variables must be a JSON object of strings")
    return {str(k): str(v) for k, v in values.items()}


def _render(template: Template, values: dict[str, str]) -> str:
    unknown = set(values) - set(template.variables)
    if unknown:
        raise TemplateError(f"unknown template variables: {', '.join(sorted(unknown))}")
    merged = {k: v for k, v in template.variables.items() if v is not None} | values
    missing = [k for k in template.variables if k not in merged]
    if missing:
        raise TemplateError(f"missing template variables: {', '.join(missing)}")
    return string.Template(template.prompt).safe_substitute(merged)


def assemble(template: Template, endpoint: str, body: dict[str, Any], values: dict[str, str]) -> tuple[dict, bool]:
    """(the request with the template applied, whether a breakpoint marks the template boundary)."""
    prompt = _render(template, values) if template.prompt else ""
    out = dict(body)
    examples = [dict(e) for e in template.examples]
    tail = [{"role": "user", "content": prompt}] if prompt else []
    if endpoint == "messages":
        if out.get("system"):
            raise TemplateError("a templated /v1/messages request takes its system prompt from the template")
        tools = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                 for t in template.tools]
        system = [{"type": "text", "text": template.system}] if template.system else []
        stable: list[dict[str, Any]] = system
        if examples:
            stable = examples  # the boundary is the last example
        marked = False
        if stable and client_breakpoints(body) < MAX_BREAKPOINTS:
            last = stable[-1]
            if "text" in last:
                stable[-1] = {**last, "cache_control": {"type": "ephemeral"}}
            else:
                stable[-1] = {"role": last["role"], "content": [{"type": "text", "text": last["content"],
                                                                 "cache_control": {"type": "ephemeral"}}]}
            marked = True
        if system:
            out["system"] = system
        out["tools"] = tools + list(body.get("tools") or []) if tools or body.get("tools") else body.get("tools")
        out["messages"] = [*examples, *tail, *(body.get("messages") or [])]
        if out["tools"] is None:
            out.pop("tools")
        return out, marked
    if endpoint == "chat.completions":
        system = [{"role": "system", "content": template.system}] if template.system else []
        out["messages"] = [*system, *examples, *tail, *(body.get("messages") or [])]
        tools = [{"type": "function", "function": dict(t)} for t in template.tools]
        if tools or body.get("tools"):
            out["tools"] = tools + list(body.get("tools") or [])
        return out, False
    if endpoint == "responses":
        return _responses(template, body, examples, tail), False
    raise TemplateError("templates apply to /v1/chat/completions, /v1/responses and /v1/messages")


def chat_stable_count(template: Template) -> int:
    """How many leading messages of an assembled chat request are the template's stable parts."""
    return (1 if template.system else 0) + len(template.examples)


def mark_chat_boundary(body: dict[str, Any], stable: int) -> dict[str, Any] | None:
    """An assembled chat request bound for Claude with an Anthropic-style `cache_control` on the last
    stable message (the translators carry it as `cache_control` / a Bedrock `cachePoint`), or None
    when there is no boundary or the request already carries 4 breakpoints."""
    messages = body.get("messages") or []
    if not 0 < stable <= len(messages) or chat_client_breakpoints(body) >= MAX_BREAKPOINTS:
        return None
    last = dict(messages[stable - 1])
    content = last.get("content")
    if not isinstance(content, str) or not content:
        return None
    last["content"] = [{"type": "text", "text": content, "cache_control": {"type": "ephemeral"}}]
    return {**body, "messages": [*messages[:stable - 1], last, *messages[stable:]]}


def _responses(template: Template, body: dict[str, Any], examples: list[dict[str, Any]],
               tail: list[dict[str, Any]]) -> dict[str, Any]:
    if body.get("prompt") is not None:
        raise TemplateError("a templated /v1/responses request cannot also name an OpenAI `prompt`")
    own = body.get("instructions")
    if own is not None and not isinstance(own, str):
        raise TemplateError("instructions must be a string in a templated /v1/responses request")
    out = dict(body)
    if template.system:
        out["instructions"] = template.system + ("\n\n" + own if own else "")
    # `strict: false` as on chat: Responses makes function tools strict by default, which would
    # reject a template's schemas that chat accepts (strict needs additionalProperties: false).
    tools = [{"type": "function", **t, "strict": False} for t in template.tools]
    if tools:
        out["tools"] = tools + list(body.get("tools") or [])
    if body.get("previous_response_id") or body.get("conversation"):
        return out
    own_input = body.get("input")
    items = [{"role": "user", "content": own_input}] if isinstance(own_input, str) else list(own_input or [])
    stable = [{"role": e["role"], "content": e["content"]} for e in examples]
    if stable or tail:
        out["input"] = [*stable, *tail, *items]
    return out
