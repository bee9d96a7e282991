"""Budgets, rate limits and the workspace's enforcement policy, as values. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SCOPE_TYPES = ("workspace", "key", "member", "department", "agent", "feature", "customer")
STRATEGIES = ("alert-only", "throttle", "reject")
LIMIT_SUBJECTS = ("key", "member", "agent")
DEFAULT_ALERTS = (50, 75, 90, 100)
# Every key gets this many requests per minute unless the workspace owner sets a limit explicitly.
DEFAULT_KEY_RPM = 100


@dataclass(frozen=True)
class Budget:
    scope_type: str
    scope_value: str
    monthly_micros: int | None = None
    daily_micros: int | None = None
    alerts: tuple[int, ...] = DEFAULT_ALERTS
    throttle_at: int | None = None  # percent of the monthly (else daily) cap
    throttle_rpm: int | None = None
    on_exhaust: str = "reject"  # alert-only | throttle | reject
    clamp: bool = False  # clamp max output tokens to what the remaining budget pays for
    # The ladder's "downgrade" rung: from this percent spent, route the scope's requests to a cheaper
    # model (alert -> downgrade -> throttle -> kill); see gateway/routing.py `downgrade`.
    downgrade_at: int | None = None
    downgrade_to: str | None = None  # provider/model

    @property
    def scope(self) -> str:
        return f"{self.scope_type}:{self.scope_value}"

    @property
    def hard(self) -> bool:
        """Reservations must fit under the caps (otherwise they are only counted)."""
        return self.on_exhaust == "reject"

    def validate(self) -> None:
        if self.scope_type not in SCOPE_TYPES:
            raise ValueError(f"scope must be one of {SCOPE_TYPES}")
        if not self.scope_value:
            raise ValueError("scope needs a value, e.g. feature:search")
        if self.on_exhaust not in STRATEGIES:
            raise ValueError(f"on_exhaust must be one of {STRATEGIES}")
        if self.monthly_micros is None and self.daily_micros is None:
            raise ValueError("a budget needs a monthly or a daily cap")
        for cap in (self.monthly_micros, self.daily_micros):
            if cap is not None and cap <= 0:
                raise ValueError("caps must be positive")
        if any(not 0 < a <= 100 for a in self.alerts):
            raise ValueError("alert thresholds are percentages in (0, 100]")
        if (self.throttle_at is None) != (self.throttle_rpm is None):
            raise ValueError("--throttle-at and --throttle-rpm go together")
        if self.throttle_at is not None and not 0 < self.throttle_at <= 100:
            raise ValueError("throttle_at is a percentage in (0, 100]")
        if (self.downgrade_at is None) != (self.downgrade_to is None):
            raise ValueError("--downgrade-at and --downgrade-to go together")
        if self.downgrade_at is not None and not 0 < self.downgrade_at <= 100:
            raise ValueError("downgrade_at is a percentage in (0, 100]")
        if self.downgrade_to is not None and "/" not in self.downgrade_to:
            raise ValueError("downgrade_to is provider/model, e.g. openai/gpt-4.1-mini")
        if self.downgrade_at is not None and self.throttle_at is not None and self.downgrade_at > self.throttle_at:
            raise ValueError("the ladder is alert -> downgrade -> throttle -> kill: downgrade_at <= throttle_at")
        if self.throttle_rpm is not None and not 0 < self.throttle_rpm <= MAX_COUNT:
            raise ValueError("throttle_rpm must be a positive number of requests per minute")
        for cap in (self.monthly_micros, self.daily_micros):
            if cap is not None and cap > MAX_MICROS:
                raise ValueError("caps are at most $1,000,000,000")
        if None not in (self.monthly_micros, self.daily_micros) and self.daily_micros > self.monthly_micros:
            raise ValueError("the daily cap cannot exceed the monthly cap")


MAX_COUNT = 10**9  # requests or tokens per window: beyond this a "limit" is a typo
MAX_MICROS = 10**15  # $1e9
_SUBJECT_VALUE = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127})$")


def _positive_count(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_COUNT:
        raise ValueError(f"{name} must be a whole number from 1 to {MAX_COUNT}")


@dataclass(frozen=True)
class RateLimit:
    subject_type: str  # key | member | agent
    subject_value: str  # a key id, member name, agent name, or "*" (workspace default for that type)
    rpm: int | None = None
    rph: int | None = None
    burst: int | None = None  # requests per second
    tpm: int | None = None  # tokens per minute (estimated input + max output, as OpenAI counts)

    @property
    def subject(self) -> str:
        return f"{self.subject_type}:{self.subject_value}"

    def validate(self) -> None:
        if self.subject_type not in LIMIT_SUBJECTS:
            raise ValueError(f"limits apply to {LIMIT_SUBJECTS}")
        if not isinstance(self.subject_value, str) or not _SUBJECT_VALUE.fullmatch(self.subject_value):
            raise ValueError("a limit's subject is an id or name (letters, digits, . _ : @ + -) or *")
        if all(v is None for v in (self.rpm, self.rph, self.burst, self.tpm)):
            # A limit with no numbers would replace (and so remove) every limit of the subject,
            # the default per-key RPM floor included.
            raise ValueError("give at least one of --rpm, --rph, --burst, --tpm (use `limits delete` to remove one)")
        for name in ("rpm", "rph", "burst", "tpm"):
            _positive_count(name, getattr(self, name))


@dataclass(frozen=True)
class Policy:
    """Workspace-wide enforcement settings."""

    fail_open: bool = False  # when the budget store is unavailable: False = 503, True = forward and flag
    loop_throttle_after: int = 8  # near-identical requests per session and window before throttling
    loop_reject_after: int = 20  # ... before rejecting
    loop_window_s: int = 600
    loop_throttle_interval_s: int = 10  # while throttled, one request per interval passes
    key_rpm_default: int = DEFAULT_KEY_RPM

    def validate(self) -> None:
        if not isinstance(self.fail_open, bool):
            raise ValueError("fail_open is true or false")
        for name in ("loop_throttle_after", "loop_reject_after", "loop_window_s", "loop_throttle_interval_s",
                     "key_rpm_default"):
            _positive_count(name, getattr(self, name))
        if self.loop_reject_after < self.loop_throttle_after:
            raise ValueError("loop_reject_after must be at least loop_throttle_after")
        if self.loop_throttle_interval_s > self.loop_window_s:
            raise ValueError("loop_throttle_interval_s cannot exceed loop_window_s")


@dataclass(frozen=True)
class Enforcement:
    """Everything enforcement needs for one workspace (cached with the workspace config)."""

    budgets: tuple[Budget, ...] = ()
    limits: dict[str, RateLimit] = field(default_factory=dict)  # by subject
    policy: Policy = field(default_factory=Policy)
