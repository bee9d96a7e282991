"""Rate-limit quota blocks: one process's share of a subject's minute window, claimed ahead.

A rate window is a DynamoDB counter every gateway instance shares (store/budgets.py `rate_window`):
one conditional `ADD n :1` per request. A process that serves a subject steadily (a managed
instance, a container, `meterline dev`; rarely an on-demand Lambda environment, which serves one
request at a time) instead claims a block of N requests (and N x the request's tokens) in that one
write and admits the next N - 1 requests of the subject from memory, with no store call.

Why it stays a limit:
- never more than the limit: every admitted request spends a unit that a conditional write claimed
  (`n <= rpm - N`, `tk <= tpm - T`), so the window's count covers every admitted request;
- never far below it: a block is at most a quarter of a second of this process's own traffic for the
  subject (the last full second's count / 4), at most MAX_BLOCK, and at most 1/SHARE of what the
  window had left when last seen. A process with no steady traffic (or a test's frozen clock: no
  full second ever passes) claims one request at a time, exactly as without blocks; so does every
  process near the limit. Units a process claimed and did not use before its minute ended (it went
  idle) are the only requests the window refuses that it would have admitted: at most one block per
  process, and only while the window is nearly full;
- a refusal is exact: when a block does not fit, the request alone is tried before it is refused;
- the `x-ratelimit-remaining-*` figures count this process's unused units as free.
Limits with a burst (per-second) or an hourly window always count one request at a time. Tokens
gate a block only under a tokens-per-minute limit; without one, the window's `tk` is a statistic
(N x the claiming request's tokens), as nothing reads it but a tpm limit.

Pure: times are passed in; store/budgets.py does the writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from meterline.budgets.model import RateLimit

MAX_BLOCK = 64
SHARE = 8  # a block takes at most 1/SHARE of what the window had left
RATE_FRACTION = 4  # ... and at most 1/RATE_FRACTION of a second of this process's traffic


def eligible(limit: RateLimit) -> bool:
    return limit.burst is None and limit.rph is None


@dataclass
class Traffic:
    """One process's requests for a subject: in the current second, and in the last full one. Kept
    across minutes and limit changes (the rate is the process's, not the window's)."""

    second: int = -1
    this_second: int = 0
    last_second: int = 0

    def observe(self, now: float) -> None:
        second = int(now)
        if second != self.second:
            self.last_second = self.this_second if second == self.second + 1 else 0
            self.second, self.this_second = second, 0
        self.this_second += 1


@dataclass
class Quota:
    """This process's view of one subject's window for one minute."""

    limit: RateLimit
    minute: int
    traffic: Traffic = field(default_factory=Traffic)
    requests: int = 0  # claimed by this process and not used yet
    tokens: int = 0
    n: int = 0  # the window's counts after the last claim this process saw (its unused units included)
    tk: int = 0
    # A block claim on its way: requests that find no unit wait for it instead of claiming their own.
    claiming: asyncio.Future[None] | None = field(default=None, repr=False)

    def take(self, tokens: int) -> dict[str, int] | None:
        """Admit one request from the units claimed ahead: the window's state as this request sees
        it, or None when none is left (or, under a token limit, not enough tokens)."""
        if self.requests <= 0 or (self.limit.tpm is not None and self.tokens < tokens):
            return None
        self.requests -= 1
        self.tokens = max(self.tokens - tokens, 0)
        return self.view()

    def next_block(self, tokens: int) -> int:
        """How many requests the next claim takes: this one and the ones expected after it."""
        size = min(MAX_BLOCK, self.traffic.last_second // RATE_FRACTION)
        if self.limit.rpm is not None:
            size = min(size, (self.limit.rpm - self.n) // SHARE)
        if self.limit.tpm is not None and tokens > 0:
            size = min(size, (self.limit.tpm - self.tk) // SHARE // tokens)
        return max(size, 1)

    def claimed(self, size: int, tokens: int, state: dict[str, int]) -> dict[str, int]:
        """A claim of `size` requests (`size` x `tokens` tokens) succeeded, leaving the window at
        `state` (n, tk after it): keep the units beyond this request's; this request's view."""
        self.requests += size - 1
        self.tokens += (size - 1) * tokens
        self.n = max(self.n, int(state.get("n", 0)))
        self.tk = max(self.tk, int(state.get("tk", 0)))
        return self.view()

    def seen(self, state: dict[str, int]) -> None:
        """The window's counts from a refusal: the next blocks are sized from them."""
        self.n = max(self.n, int(state.get("n", 0)))
        self.tk = max(self.tk, int(state.get("tk", 0)))

    def view(self) -> dict[str, int]:
        return {"n": max(self.n - self.requests, 0), "tk": max(self.tk - self.tokens, 0)}


def fits_alone(limit: RateLimit, state: dict[str, int], tokens: int) -> bool:
    """Whether one request (`tokens`) fits the window at `state`: a refused block is then retried alone."""
    if limit.rpm is not None and int(state.get("n", 0)) >= limit.rpm:
        return False
    return limit.tpm is None or int(state.get("tk", 0)) + tokens <= limit.tpm
