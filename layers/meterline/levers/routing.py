"""Model routing (lever 3): send a request to a cheaper (or the right) model by rule or by difficulty.

Pure: decides from the rule, the request body and the candidate models' facts and prices; no I/O.
The gateway stage (`gateway/routing.py`) resolves the candidates, keeps session affinity and the
output-length history, applies the decision and records the saving.

Rules are per workspace, on one scope: a virtual key, a member, a customer, a feature, an agent, or
the whole workspace (most specific first, in that order). A rule names either
  - an ordered list of models (`fixed`): the first one that satisfies the request's hard
    constraints serves it, the others follow as fallbacks; or
  - a cheap and a strong model (`auto`): a difficulty score (0-100, from cheap features, each one
    named in the reason) picks the strong model at or above the rule's threshold, else the cheap one.
Hard constraints always hold, whatever the rule says: the model's context window (estimated prompt
plus requested output), image input, tools, JSON mode, reasoning parameters, and the key's
allowlist (checked by the stage). A candidate that fails one is skipped; if none is left the request
stays on the model it asked for.

Mode `shadow` (the default for a new rule) decides and records what would have happened (the model,
the reason, the projected saving) without switching; mode `on` switches.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meterline.levers.models import ModelFacts

SCOPE_TYPES = ("key", "member", "customer", "feature", "agent", "workspace")  # precedence order
MODES = ("shadow", "on")
DEFAULT_THRESHOLD = 25
ROUTABLE_ENDPOINTS = ("chat.completions", "messages", "responses")

_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |function |const |let |var |public |private |#include|SELECT |"
    r"CREATE |for \(|if \(|while \(|return |\}|\{)", re.MULTILINE)
_REASONING = re.compile(
    r"\b(prove|proof|derive|derivation|step[- ]by[- ]step|reason(ing)? about|analy[sz]e|analysis|trade-?offs?|"
    r"optimi[sz]e|debug|refactor|architect(ure)?|design (a|an|the)|algorithm|complexity|theorem|lemma|"
    r"calculate|compute|estimate|compare and contrast|critique|evaluate|plan (a|an|the)|why does|why is|"
    r"explain (in detail|why|how)|root cause|edge cases?|formal(ly)?|rigorous(ly)?|think carefully|solve|"
    r"implement(ation)?|specification|migrat(e|ion)|test plan|write (a|an) (function|program|script|class|parser|"
    r"service|library|compiler))\b", re.IGNORECASE)
_MATH = re.compile(r"(\d+\s*[-+*/^=<>]\s*\d+|\\frac|\\sum|\\int|∑|∫|√)")
_GREETING = re.compile(r"^\s*(hi|hello|hey|thanks|thank you|ok|okay|yes|no|good (morning|evening))\b[\s!.?]*$",
                       re.IGNORECASE)
_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
_AUDIO_PARTS = frozenset({"input_audio", "audio"})
_FILE_PARTS = frozenset({"file", "document", "input_file"})


@dataclass(frozen=True)
class RouteRule:
    scope_type: str  # one of SCOPE_TYPES
    scope_value: str  # "*" for the workspace
    models: tuple[str, ...] = ()  # fixed: ordered list
    cheap: str | None = None  # auto tiers
    strong: str | None = None
    threshold: int = DEFAULT_THRESHOLD
    mode: str = "shadow"

    @property
    def scope(self) -> str:
        return f"{self.scope_type}:{self.scope_value}"

    @property
    def auto(self) -> bool:
        return bool(self.cheap and self.strong)

    def targets(self) -> tuple[str, ...]:
        return (self.cheap, self.strong) if self.auto else self.models  # type: ignore[return-value]

    def validate(self) -> None:
        if self.scope_type not in SCOPE_TYPES:
            raise ValueError(f"a route's scope is one of {SCOPE_TYPES}")
        if not self.scope_value:
            raise ValueError("a route's scope needs a value, e.g. feature:summarize")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if bool(self.cheap) != bool(self.strong):
            raise ValueError("auto tiers need both a cheap and a strong model")
        if self.auto == bool(self.models):
            raise ValueError("a route names either --model (one or more, in order) or --cheap and --strong")
        if not 0 <= self.threshold <= 100:
            raise ValueError("threshold is a difficulty score in [0, 100]")
        for model in self.targets():
            if "/" not in model:
                raise ValueError(f"route targets are provider/model or an alias with a provider: {model!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "models": list(self.models), "cheap": self.cheap, "strong": self.strong,
                "threshold": self.threshold, "mode": self.mode}


def match(rules: Mapping[str, RouteRule], attribution: Mapping[str, str | None]) -> RouteRule | None:
    """The most specific rule covering the request (key, member, customer, feature, agent, workspace)."""
    if not rules:
        return None
    for scope_type in SCOPE_TYPES:
        value = "*" if scope_type == "workspace" else attribution.get(scope_type)
        if value:
            rule = rules.get(f"{scope_type}:{value}")
            if rule is not None:
                return rule
    return None


@dataclass(frozen=True)
class Features:
    """What the classifier and the hard constraints look at. Cheap to compute: one walk of the body."""

    prompt_tokens: int  # estimate: characters / 4 of the text parts (classifier)
    prompt_tokens_bound: int  # conservative: characters / 3 of the whole request (context window)
    max_output: int | None
    code: bool
    tools: int
    reasoning_markers: tuple[str, ...]
    math: bool
    turns: int
    images: bool
    audio: bool
    files: bool
    json_mode: bool
    reasoning_params: bool
    greeting: bool
    opening: str  # hash of the conversation's opening (system, tools, first user turn)


def _collect(value: Any, texts: list[str], kinds: set[str]) -> None:
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect(item, texts, kinds)
    elif isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str):
            kinds.add(kind)
        for name in ("text", "content", "input_text"):
            if name in value:
                _collect(value[name], texts, kinds)


def features(endpoint: str, body: Mapping[str, Any]) -> Features:
    messages = body.get("messages")
    if endpoint == "responses":
        raw_input = body.get("input")
        messages = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else (raw_input or [])
    messages = [m for m in (messages or []) if isinstance(m, dict)]
    system = body.get("system") if endpoint == "messages" else body.get("instructions")
    texts: list[str] = []
    kinds: set[str] = set()
    _collect(system, texts, kinds)
    for message in messages:
        _collect(message.get("content"), texts, kinds)
    user_texts: list[str] = []
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last_user is not None:
        _collect(last_user.get("content"), user_texts, set())
    text = "\n".join(texts)
    user_text = "\n".join(user_texts)
    tools = body.get("tools") or []
    response_format = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    json_mode = isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")
    json_mode = json_mode or bool(body.get("output_format"))
    reasoning_params = any(body.get(k) is not None for k in ("reasoning_effort", "reasoning", "thinking"))
    max_output = None
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            max_output = value
            break
    markers = tuple(sorted({m.group(0).lower() for m in _REASONING.finditer(user_text or text)}))[:5]
    whole = json.dumps([system, messages, tools], ensure_ascii=False, separators=(",", ":"), default=str)
    first_user = next((m for m in messages if m.get("role") == "user"), None)
    opening = hashlib.sha256(json.dumps([system, [m for m in messages if m.get("role") == "system"][:1],
                                         tools, first_user], sort_keys=True, default=str).encode()).hexdigest()[:32]
    return Features(
        prompt_tokens=(len(text) + 3) // 4 + (len(json.dumps(tools, separators=(",", ":"))) // 4 if tools else 0),
        prompt_tokens_bound=(len(whole) + 2) // 3,
        max_output=max_output,
        code="```" in text or len(_CODE_LINE.findall(text)) >= 3,
        tools=len(tools) if isinstance(tools, list) else 0,
        reasoning_markers=markers,
        math=len(_MATH.findall(user_text or text)) >= 2,
        turns=sum(1 for m in messages if m.get("role") in ("user", "assistant")),
        images=bool(kinds & _IMAGE_PARTS),
        audio=bool(kinds & _AUDIO_PARTS) or bool(body.get("audio")) or "audio" in (body.get("modalities") or ()),
        files=bool(kinds & _FILE_PARTS),
        json_mode=json_mode,
        reasoning_params=reasoning_params,
        greeting=bool(_GREETING.match(user_text)) if user_text else False,
        opening=opening,
    )


@dataclass(frozen=True)
class Difficulty:
    score: int  # 0 (trivial) .. 100
    reasons: tuple[str, ...]


def difficulty(f: Features, expected_output: int | None = None) -> Difficulty:
    """An explainable score: each feature adds points and names itself. Weights are a starting point
    (Bifrost's retired lexical scorer and LiteLLM's heuristic tiers weigh the same signals); the
    labelled set in tests/data/routing_requests.json shows where each request lands."""
    score, reasons = 0, []

    def add(points: int, reason: str) -> None:
        nonlocal score
        score += points
        reasons.append(f"{reason} {points:+d}")

    if f.prompt_tokens > 8000:
        add(30, f"prompt {f.prompt_tokens} tok")
    elif f.prompt_tokens > 2000:
        add(15, f"prompt {f.prompt_tokens} tok")
    elif f.prompt_tokens > 500:
        add(5, f"prompt {f.prompt_tokens} tok")
    if f.code:
        add(25, "code")
    if f.tools:
        add(25 if f.tools > 3 else 10, f"{f.tools} tools")
    if f.reasoning_markers:
        add(min(15 * len(f.reasoning_markers), 45), "reasoning: " + ",".join(f.reasoning_markers))
    if f.math:
        add(10, "math")
    if f.turns > 6:
        add(10, f"{f.turns} turns")
    if f.reasoning_params:
        add(25, "reasoning requested")
    out = expected_output if expected_output is not None else f.max_output
    source = "history" if expected_output is not None else "max_tokens"
    if out is not None and out > 1500:
        add(15, f"output ~{out} tok ({source})")
    elif out is not None and out > 500 and expected_output is not None:
        add(5, f"output ~{out} tok ({source})")
    if f.greeting:
        add(-20, "greeting")
    return Difficulty(max(0, min(100, score)), tuple(reasons))


@dataclass(frozen=True)
class Candidate:
    name: str  # as the rule names it
    model_id: str  # provider/model the plan uses
    facts: ModelFacts
    allowed: bool = True  # the key's allowlist


def violation(candidate: Candidate, f: Features) -> str | None:
    """The first hard constraint the candidate fails for this request, or None."""
    facts = candidate.facts
    if not candidate.allowed:
        return "not allowed for this key"
    if f.prompt_tokens_bound + (f.max_output or 0) > facts.context:
        return f"context window {facts.context}"
    if f.images and not facts.vision:
        return "no image input"
    if f.tools and not facts.tools:
        return "no tools"
    if f.json_mode and not facts.json_mode:
        return "no JSON mode"
    if f.reasoning_params and not facts.reasoning:
        return "no reasoning parameters"
    return None


@dataclass(frozen=True)
class Decision:
    model: str | None  # the candidate name to route to; None = stay on the requested model
    reason: str
    tier: str | None = None  # auto: "cheap" | "strong"
    score: int | None = None
    fallbacks: tuple[str, ...] = ()  # further candidates (fixed lists), in order
    skipped: tuple[str, ...] = field(default=())


def decide(rule: RouteRule, f: Features, candidates: Sequence[Candidate], requested_model_id: str,
           expected_output: int | None = None) -> Decision:
    """Where the rule sends this request. `candidates` are the rule's targets that resolved, in the
    rule's order (auto: cheap then strong)."""
    if f.audio or f.files:
        return Decision(None, "audio or file input: not routed")
    usable: list[Candidate] = []
    skipped: list[str] = []
    for c in candidates:
        problem = violation(c, f)
        if problem is None:
            usable.append(c)
        else:
            skipped.append(f"{c.name}: {problem}")
    if rule.auto:
        d = difficulty(f, expected_output)
        tier = "strong" if d.score >= rule.threshold else "cheap"
        wanted = rule.strong if tier == "strong" else rule.cheap
        detail = f"score {d.score} {'>=' if tier == 'strong' else '<'} {rule.threshold}"
        if d.reasons:
            detail += " (" + "; ".join(d.reasons) + ")"
        chosen = next((c for c in usable if c.name == wanted), None)
        if chosen is None and tier == "cheap":
            # The cheap model cannot take it (context, tools, ...): the strong one is the safe choice.
            chosen = next((c for c in usable if c.name == rule.strong), None)
            tier = "strong" if chosen else tier
        if chosen is None:
            return Decision(None, f"auto {tier}: {detail}; no usable model ({', '.join(skipped)})", tier, d.score,
                            skipped=tuple(skipped))
        if chosen.model_id == requested_model_id:
            return Decision(None, f"auto {tier}: {detail}; already on {chosen.model_id}", tier, d.score,
                            skipped=tuple(skipped))
        return Decision(chosen.name, f"auto {tier}: {detail}", tier, d.score, skipped=tuple(skipped))
    if not usable:
        return Decision(None, f"rule {rule.scope}: no usable model ({', '.join(skipped)})", skipped=tuple(skipped))
    first = usable[0]
    if first.model_id == requested_model_id:
        return Decision(None, f"rule {rule.scope}: already on {first.model_id}", skipped=tuple(skipped))
    reason = f"rule {rule.scope}"
    if skipped:
        reason += f" (skipped {', '.join(skipped)})"
    return Decision(first.name, reason, fallbacks=tuple(c.name for c in usable[1:]), skipped=tuple(skipped))
