"""Policy evaluation: a workspace's policies compiled once, each request's decision a value. Pure.

Order (documented in docs/ARCHITECTURE.md): the policies attached to the workspace, then to the
request's department, member, key and feature; within each, by id. Every applicable policy is
evaluated and its outcome recorded (`allow`, `deny`, `clamp`, `redact`, or `monitor:<outcome>` for a
policy in monitor mode). **Deny wins**: if any enforced policy denies, the request is denied and the
first denying policy in that order is the one named to the caller. Transforms apply only to a request
that is not denied: the smallest applicable max_tokens cap; PII redaction with the union of the
entities of every applicable pii policy (restoration if any of them asks for it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from meterline.policies.ip import in_networks, network, parse_ip
from meterline.policies.model import PII_ENTITIES, PolicyError, PolicySpec, Window, parse_window

GENERATION_ENDPOINTS = ("chat.completions", "messages", "responses")
# Which body field carries the output cap, per endpoint (chat: the first present, else the first).
MAX_TOKEN_FIELDS = {"chat.completions": ("max_completion_tokens", "max_tokens"), "messages": ("max_tokens",),
                    "responses": ("max_output_tokens",)}


def requested_max_tokens(endpoint: str, body: dict) -> tuple[str | None, int | None]:
    """(field, value) of the request's output cap; field None for endpoints without one."""
    fields = MAX_TOKEN_FIELDS.get(endpoint)
    if not fields:
        return None, None
    for name in fields:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return name, value
    return fields[0], None


def message_count(body: dict) -> int:
    messages = body.get("messages")
    if isinstance(messages, list):
        return len(messages)
    items = body.get("input")
    return len(items) if isinstance(items, list) else (1 if items else 0)


def glob_regex(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One anchored regex for a list of globs whose `*` and `?` never cross `/`."""
    if not patterns:
        return None
    parts = []
    for pattern in patterns:
        out, i = [], 0
        while i < len(pattern):
            c = pattern[i]
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[":
                end = pattern.find("]", i + 1)
                if end == -1:
                    out.append(re.escape(c))
                else:
                    body = pattern[i + 1:end]
                    negate = body.startswith("!")
                    body = re.escape(body[1:] if negate else body).replace("\\-", "-")
                    out.append(f"[^/{body}]" if negate else f"[{body}]")
                    i = end
            else:
                out.append(re.escape(c))
            i += 1
        parts.append("".join(out))
    return re.compile("(?:" + "|".join(parts) + r")\Z")


@dataclass(slots=True)
class Facts:
    """What policies decide on, gathered by the gateway stage (or `policies test`)."""

    endpoint: str
    model: str  # canonical provider/model the request names (alias resolved)
    key: str
    member: str
    department: str
    feature: str | None = None
    client_ip: str | None = None
    body_bytes: int = 0
    messages: int = 0
    max_tokens: int | None = None  # requested output cap, None if the request sets none
    now: float = 0.0  # epoch seconds


class Outcome(NamedTuple):
    policy: str
    kind: str
    result: str  # allow | deny | clamp | redact (monitor mode: monitor:<result>)
    reason: str = ""
    status: int = 403


_NONE: frozenset[str] = frozenset()


@dataclass(slots=True)
class Verdict:
    outcomes: tuple[Outcome, ...] = ()
    denied: Outcome | None = None
    max_tokens: int | None = None  # set the request's output cap to this (clamp, or a missing cap)
    pii_entities: frozenset[str] = frozenset()
    pii_restore: bool = False
    pii_policy: str | None = None

    @property
    def allowed(self) -> bool:
        return self.denied is None

    def ledger_note(self) -> dict[str, str]:
        return {o.policy: o.result for o in self.outcomes}


@dataclass(frozen=True)
class Compiled:
    spec: PolicySpec
    models_allow: re.Pattern[str] | None = None
    models_deny: re.Pattern[str] | None = None
    networks: tuple[tuple[int, int, int], ...] = ()  # ip.network() form
    windows: tuple[Window, ...] = ()
    zone: ZoneInfo | None = None
    broken: str | None = None  # a stored policy that cannot be read: it denies (fail closed)
    # The common outcomes, made once (a warm request allocates nothing for a policy that passes).
    allow: Outcome = field(init=False)
    act: Outcome = field(init=False)  # clamp / redact
    enforced: bool = field(init=False)

    def __post_init__(self) -> None:
        spec = self.spec
        enforced = spec.mode == "enforce" or self.broken is not None
        prefix = "" if enforced else "monitor:"
        object.__setattr__(self, "allow", Outcome(spec.id, spec.kind, prefix + "allow"))
        act = Outcome(spec.id, spec.kind, prefix + "clamp", f"max tokens set to {spec.max_tokens}") \
            if spec.kind == "max_tokens" else Outcome(spec.id, spec.kind, prefix + "redact")
        object.__setattr__(self, "act", act)
        object.__setattr__(self, "enforced", enforced)

    @property
    def id(self) -> str:
        return self.spec.id


def compile_spec(spec: PolicySpec) -> Compiled:
    if spec.kind == "models":
        return Compiled(spec, glob_regex(spec.allow), glob_regex(spec.deny))
    if spec.kind == "ip":
        return Compiled(spec, networks=tuple(network(c) for c in spec.cidrs))
    if spec.kind == "schedule":
        return Compiled(spec, windows=tuple(parse_window(w) for w in spec.windows),
                        zone=ZoneInfo(spec.timezone) if spec.timezone else None)
    return Compiled(spec)


@dataclass(frozen=True)
class PolicySet:
    """A workspace's policies, indexed by what they are attached to. Built when the workspace config
    loads (cached with it), so evaluation costs no round trip."""

    by_attach: dict[str, tuple[Compiled, ...]] = field(default_factory=dict)
    timezone: str = "UTC"
    count: int = 0
    # The workspace's trusted proxies (ip.network form): X-Forwarded-For is read only behind them.
    trusted_proxies: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def build(cls, stored: list[dict[str, Any]], timezone: str = "UTC",
              trusted_proxies: tuple[str, ...] = ()) -> PolicySet:
        """From the stored form. A policy that no longer validates is kept as a denying one: a
        guard that silently vanished would be worse than a loud refusal."""
        grouped: dict[str, list[Compiled]] = {}
        for data in stored:
            try:
                compiled = compile_spec(PolicySpec.from_dict(data))
            except (PolicyError, ValueError, KeyError, TypeError) as exc:
                pid = str(data.get("id", "?")) if isinstance(data, dict) else "?"
                attach = str(data.get("attach", "workspace")) if isinstance(data, dict) else "workspace"
                compiled = Compiled(PolicySpec(id=pid, kind="size", attach=attach), broken=str(exc)[:200])
            grouped.setdefault(compiled.spec.attach, []).append(compiled)
        by_attach = {k: tuple(sorted(v, key=lambda c: c.id)) for k, v in grouped.items()}
        networks = []
        for cidr in trusted_proxies:
            try:
                networks.append(network(cidr))
            except ValueError:
                continue  # validated on write; an unreadable entry trusts nothing
        return cls(by_attach, timezone, sum(len(v) for v in by_attach.values()), tuple(networks))

    def applicable(self, facts: Facts) -> list[Compiled]:
        """The policies that apply to a request, in evaluation order."""
        if not self.count:
            return []
        by_attach = self.by_attach
        found = list(by_attach.get("workspace", ()))
        if len(by_attach) > 1 or not found:
            for attach in (f"department:{facts.department}", f"member:{facts.member}", f"key:{facts.key}",
                           f"feature:{facts.feature}" if facts.feature else ""):
                more = by_attach.get(attach)
                if more:
                    found.extend(more)
        return found

    def model_permitted(self, facts: Facts, model_id: str, applicable: list[Compiled] | None = None) -> bool:
        """Whether the enforced model policies let `model_id` through (fallback routes are filtered by it)."""
        for compiled in self.applicable(facts) if applicable is None else applicable:
            spec = compiled.spec
            if spec.kind == "models" and spec.mode == "enforce" and _model_refusal(compiled, model_id):
                return False
        return True


def _model_refusal(c: Compiled, model: str) -> str | None:
    if c.models_deny is not None and c.models_deny.match(model):
        return f"the model `{model}` is denied"
    if c.models_allow is not None and not c.models_allow.match(model):
        return f"the model `{model}` is not in the allowed list"
    return None


def _evaluate_one(c: Compiled, facts: Facts, tz: str) -> Outcome:
    spec = c.spec
    if c.broken is not None:
        return Outcome(spec.id, spec.kind, "deny", "the stored policy cannot be read; fix or delete it")
    kind = spec.kind
    if kind == "models":
        reason = _model_refusal(c, facts.model)
        return Outcome(spec.id, kind, "deny", reason) if reason else c.allow
    if kind == "ip":
        ip = parse_ip(facts.client_ip)
        if ip is None:
            return Outcome(spec.id, kind, "deny", "the source IP is unknown")
        if in_networks(ip, c.networks):
            return c.allow
        return Outcome(spec.id, kind, "deny", "the source IP is not in the allowed networks")
    if kind == "schedule":
        zone = c.zone or ZoneInfo(tz)
        local = datetime.fromtimestamp(facts.now, zone)
        weekday, minute = local.weekday(), local.hour * 60 + local.minute
        for window in c.windows:
            if window.contains(weekday, minute):
                return c.allow
        return Outcome(spec.id, kind, "deny",
                       f"outside the allowed hours ({'; '.join(str(w) for w in c.windows)} {zone.key})")
    if kind == "max_tokens":
        if facts.endpoint not in GENERATION_ENDPOINTS:
            return c.allow
        cap = spec.max_tokens or 0
        if facts.max_tokens is not None and facts.max_tokens > cap and spec.on_exceed == "reject":
            return Outcome(spec.id, kind, "deny", f"max tokens {facts.max_tokens} is above the cap of {cap}", 400)
        if facts.max_tokens is None or facts.max_tokens > cap:
            return c.act
        return c.allow
    if kind == "size":
        if spec.max_bytes is not None and facts.body_bytes > spec.max_bytes:
            return Outcome(spec.id, kind, "deny",
                           f"the request body is {facts.body_bytes} bytes; the limit is {spec.max_bytes}", 413)
        if spec.max_messages is not None and facts.messages > spec.max_messages:
            return Outcome(spec.id, kind, "deny",
                           f"the request has {facts.messages} messages; the limit is {spec.max_messages}", 413)
        return c.allow
    if kind == "pii":  # every endpoint (token counts and embeddings too); restoration only on generation
        return c.act
    return Outcome(spec.id, kind, "deny", "unknown policy kind")


def evaluate(policies: PolicySet, facts: Facts, applicable: list[Compiled] | None = None) -> Verdict:
    """`applicable`: policies.applicable(facts), when the caller has it already."""
    if applicable is None:
        applicable = policies.applicable(facts)
    if not applicable:
        return Verdict()
    outcomes: list[Outcome] = []
    denied: Outcome | None = None
    cap: int | None = None
    entities: set[str] = set()
    restore = False
    pii_policy = None
    for compiled in applicable:
        outcome = _evaluate_one(compiled, facts, policies.timezone)
        if not compiled.enforced:
            if outcome.result == "deny":
                outcome = outcome._replace(result="monitor:deny")
            outcomes.append(outcome)
            continue
        outcomes.append(outcome)
        if outcome.result == "deny":
            denied = denied or outcome
        elif outcome.result == "clamp":
            limit = compiled.spec.max_tokens or 0
            cap = limit if cap is None else min(cap, limit)
        elif outcome.result == "redact":
            entities.update(compiled.spec.entities or PII_ENTITIES)
            restore = restore or compiled.spec.restore
            pii_policy = pii_policy or compiled.id
    if denied is not None:
        return Verdict(tuple(outcomes), denied)
    return Verdict(tuple(outcomes), None, cap, frozenset(entities) if entities else _NONE, restore, pii_policy)
