"""Request policies as values: what an operator stores, validated at the boundary. Pure.

A policy has an `id` (unique in its workspace), a `kind`, what it is attached to, a `mode` and its
kind's settings:

    models      allow / deny: globs over `provider/model` (`*` and `?` never cross `/`)
    ip          cidrs: the source IP must be in one of them (IPv4 and IPv6)
    schedule    windows: "mon-fri 08:00-20:00" (workspace time zone, or the policy's `timezone`)
    max_tokens  max_tokens: a cap on requested output tokens; on_exceed clamp (default) | reject
    size        max_bytes (request body), max_messages
    pii         entities (default: all), restore: put the originals back into responses

attach: `workspace`, or `key:<key id>`, `member:<name>`, `department:<name>`, `feature:<name>`.
mode: `enforce` (default) or `monitor` (decisions are recorded, nothing is denied or changed).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

KINDS = ("models", "ip", "schedule", "max_tokens", "size", "pii")
ATTACH_TYPES = ("workspace", "department", "member", "key", "feature")  # also the evaluation order
MODES = ("enforce", "monitor")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PII_ENTITIES = ("email", "phone", "credit_card", "iban", "national_id", "ip_address", "secret")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_WINDOW = re.compile(r"^\s*([a-z]{3})(?:\s*-\s*([a-z]{3}))?\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.:@*?\-\[\]!/]{1,200}$")


class PolicyError(ValueError):
    """A policy that cannot be stored as given (the message says what to fix)."""


@dataclass(frozen=True)
class Window:
    """Days (0 = Monday) and minutes of the day, [start, end); end <= start runs past midnight,
    counted on the day it starts."""

    days: frozenset[int]
    start: int
    end: int

    def contains(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or ((weekday - 1) % 7 in self.days
                                                                   and minute < self.end)

    def __str__(self) -> str:
        days = [DAYS[d] for d in sorted(self.days)]
        return f"{','.join(days)} {self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


def parse_window(text: str) -> Window:
    """`mon-fri 08:00-20:00`, `sat 10:00-14:00`, `sun-mon 22:00-06:00` (wraps the week and midnight)."""
    match = _WINDOW.match(text.lower())
    if not match:
        raise PolicyError(f"window {text!r}: expected e.g. 'mon-fri 08:00-20:00'")
    first, last, h1, m1, h2, m2 = match.groups()
    if first not in DAYS or (last and last not in DAYS):
        raise PolicyError(f"window {text!r}: days are {', '.join(DAYS)}")
    a, b = DAYS.index(first), DAYS.index(last or first)
    days = frozenset((a + i) % 7 for i in range(((b - a) % 7) + 1))
    start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
    if int(h1) > 24 or int(h2) > 24 or int(m1) > 59 or int(m2) > 59 or start > 1440 or end > 1440:
        raise PolicyError(f"window {text!r}: times are HH:MM within 00:00-24:00")
    if start == end:
        raise PolicyError(f"window {text!r}: start and end are the same")
    return Window(days, start, end)


@dataclass(frozen=True)
class PolicySpec:
    id: str
    kind: str
    attach: str = "workspace"
    mode: str = "enforce"
    description: str = ""
    # models
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    # ip
    cidrs: tuple[str, ...] = ()
    # schedule
    windows: tuple[str, ...] = ()
    timezone: str | None = None
    # max_tokens
    max_tokens: int | None = None
    on_exceed: str = "clamp"
    # size
    max_bytes: int | None = None
    max_messages: int | None = None
    # pii
    entities: tuple[str, ...] = ()
    restore: bool = False

    @property
    def attach_type(self) -> str:
        return self.attach.partition(":")[0]

    def validate(self) -> PolicySpec:
        """Raise PolicyError unless this policy is complete and consistent; returns self."""
        if not _ID.match(self.id or ""):
            raise PolicyError("id: 1-64 characters of A-Z a-z 0-9 _ . - (starting with a letter or digit)")
        if self.kind not in KINDS:
            raise PolicyError(f"kind must be one of {', '.join(KINDS)}")
        if self.mode not in MODES:
            raise PolicyError(f"mode must be one of {', '.join(MODES)}")
        kind, _, value = self.attach.partition(":")
        if kind not in ATTACH_TYPES or (kind == "workspace") != (value == ""):
            raise PolicyError("attach: 'workspace', or key:<key id>, member:<name>, department:<name>, "
                              "feature:<name>")
        used = {name for name in ("allow", "deny", "cidrs", "windows", "timezone", "max_tokens", "max_bytes",
                                  "max_messages", "entities") if getattr(self, name)}
        allowed = {"models": {"allow", "deny"}, "ip": {"cidrs"}, "schedule": {"windows", "timezone"},
                   "max_tokens": {"max_tokens"}, "size": {"max_bytes", "max_messages"},
                   "pii": {"entities"}}[self.kind]
        if used - allowed:
            raise PolicyError(f"a {self.kind} policy does not take {', '.join(sorted(used - allowed))}")
        if self.kind == "models":
            if not self.allow and not self.deny:
                raise PolicyError("a models policy needs allow and/or deny patterns (provider/model globs)")
            for pattern in (*self.allow, *self.deny):
                if not _PATTERN.match(pattern) or "/" not in pattern:
                    raise PolicyError(f"model pattern {pattern!r}: a glob over provider/model, e.g. openai/gpt-4o*")
        elif self.kind == "ip":
            if not self.cidrs:
                raise PolicyError("an ip policy needs at least one CIDR")
            for cidr in self.cidrs:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError as exc:
                    raise PolicyError(f"cidr {cidr!r}: {exc}") from exc
        elif self.kind == "schedule":
            if not self.windows:
                raise PolicyError("a schedule policy needs at least one window, e.g. 'mon-fri 08:00-20:00'")
            for window in self.windows:
                parse_window(window)
            if self.timezone:
                try:
                    ZoneInfo(self.timezone)
                except (ValueError, KeyError) as exc:
                    raise PolicyError(f"unknown time zone {self.timezone!r}") from exc
        elif self.kind == "max_tokens":
            if not _positive(self.max_tokens):
                raise PolicyError("a max_tokens policy needs max_tokens, a positive integer")
            if self.on_exceed not in ("clamp", "reject"):
                raise PolicyError("on_exceed must be 'clamp' or 'reject'")
        elif self.kind == "size":
            if self.max_bytes is None and self.max_messages is None:
                raise PolicyError("a size policy needs max_bytes and/or max_messages")
            for value in (self.max_bytes, self.max_messages):
                if value is not None and not _positive(value):
                    raise PolicyError("max_bytes and max_messages are positive integers")
        elif self.kind == "pii":
            unknown = set(self.entities) - set(PII_ENTITIES)
            if unknown:
                raise PolicyError(f"unknown PII entities {sorted(unknown)}; known: {', '.join(PII_ENTITIES)}")
        if self.kind != "max_tokens" and self.on_exceed != "clamp":
            raise PolicyError("on_exceed applies to max_tokens policies only")
        if self.kind != "pii" and self.restore:
            raise PolicyError("restore applies to pii policies only")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The stored (and listed) form: only the fields that are set."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "attach": self.attach, "mode": self.mode}
        for name in ("description", "allow", "deny", "cidrs", "windows", "timezone", "max_tokens", "max_bytes",
                     "max_messages", "entities"):
            value = getattr(self, name)
            if value:
                out[name] = list(value) if isinstance(value, tuple) else value
        if self.kind == "max_tokens":
            out["on_exceed"] = self.on_exceed
        if self.kind == "pii":
            out["restore"] = self.restore
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicySpec:
        """Build and validate from the admin API / CLI / stored form. Raises PolicyError."""
        if not isinstance(data, dict):
            raise PolicyError("a policy is a JSON object")
        known = {"id", "kind", "attach", "mode", "description", "allow", "deny", "cidrs", "windows", "timezone",
                 "max_tokens", "on_exceed", "max_bytes", "max_messages", "entities", "restore"}
        unknown = set(data) - known
        if unknown:
            raise PolicyError(f"unknown policy fields {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if value is None:
                continue
            if name in ("allow", "deny", "cidrs", "windows", "entities"):
                if isinstance(value, str):
                    value = [v for v in (p.strip() for p in value.split(",")) if v] if name != "windows" else [value]
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise PolicyError(f"{name} is a list of strings")
                value = tuple(v.strip() for v in value if v.strip())
            elif name in ("max_tokens", "max_bytes", "max_messages"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise PolicyError(f"{name} is an integer")
            elif name == "restore":
                if not isinstance(value, bool):
                    raise PolicyError("restore is true or false")
            elif not isinstance(value, str):
                raise PolicyError(f"{name} is a string")
            values[name] = value
        if "id" not in values or "kind" not in values:
            raise PolicyError("a policy needs an id and a kind")
        return cls(**values).validate()


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
