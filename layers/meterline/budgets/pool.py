"""Budget reservation pools: one process's share of a budget's headroom, reserved ahead.

A budget's reservation (store/budgets.py `reserve`) is one conditional write per request before the
upstream. A process that serves a budget steadily (a managed instance, a container, `meterline dev`;
rarely an on-demand Lambda environment, which serves one request at a time) instead reserves a pool
in that one write: W = N x the request's worst case, under one lease (`l_<pool id>`), and carves the
next N - 1 requests' worst cases out of it from memory, with no store call before their upstream.

A carved request settles through its ledger record, with no write of its own (`Pool.defer`): the
record - written and awaited before the response ends, as every request's is - names the pool and
the request's cost (`budget_pools`). Once the write is done (`ledgered`), the pool owes that cost, and
its release adds what it owes to spent (and to committed, which keeps committed = spent + reserved)
while it gives W back, in one write conditional on its lease. So the counter's spent lags the
ledger by at most a pool's life (WINDOW_S and its requests' duration); committed never does: W holds
every carved request's worst case until the costs replace it. Exactly once:
- the process releases the pool (in-memory sums) or, when the process crashed or froze past the
  lease's expiry, the sweeper folds it from the ledger (the records naming the pool in the range
  its claim time bounds: LEDGER_BEFORE_MS/LEDGER_AFTER_MS), both conditional on the pool's lease:
  exactly one of them applies;
- a request settles through the ledger only if its record lands in that range and long before the
  lease may expire (DEFER_MARGIN_S), so the sweeper reads every record that names the pool;
- a record whose write failed is logged for the replay without the pools it names, and the request's
  cost is added at once under its marker (`s_<hash of the request id>`); the sweeper skips a record
  whose marker is on the counter (the failed write may have landed);
- a request that cannot settle through the ledger (a side call; a record outside the range; a pool
  left to expire) writes its settlement, fenced by the pool's count of settlement writes (`n`):
  each write is conditional on the count the last one left (one write on its way per counter item:
  concurrent settlements go out together), so a retried or late copy finds the count moved on.
  Only such a write whose outcome is unknown falls back to a marker, and its pool is left to expire.
The pool is released when its window is over and its last request has settled.

Why the budget still holds:
- never over a cap: the pool's W is in `committed` from its claim until its release, and every
  in-flight request of the pool has its worst case carved from W, so committed >= spent + every
  in-flight worst case across processes, as with one lease per request;
- a pool forms only where no rung of the budget can be reached within it: its claim is conditional
  on the whole W fitting below every threshold of the month and of the day (the hard cap, the
  throttle stage, the downgrade rung: `ceilings`), so each request carved from it is judged as one
  reserved at the claim would be (fits, not throttled, not downgraded). Near any threshold requests
  reserve one at a time, exactly as without pools: a refusal, a throttle, a downgrade or a clamp is
  always decided by a request's own conditional write;
- a pool is small and short: at most MAX_CARVES requests, half a second of this process's own
  traffic for the budget (the last full second's count / 2), 1/SHARE of what was left below the
  lowest threshold when last seen, and WINDOW_S seconds (never past its minute for a budget with a
  throttle stage, whose pool claims its N requests' places in the minute's count as well). So the
  only requests judged on a view older than their own write are at most N per pool, at most
  WINDOW_S old, all below every threshold by the pool's own condition;
- what a pool costs others: while it lives, W - its in-flight carves is held for this process, so
  another process's request may be refused that would have fitted, only when the budget is within
  W of its cap (W <= 1/SHARE of what was left). A process frozen with a pool (an on-demand Lambda
  environment after steady traffic) holds it until the lease expires (LEASE_S + WINDOW_S).
Carves settled at zero cost (a request refused by another check) write nothing: the pool takes its
carve back. A budget alert threshold crossed by what a pool owed is found by its release (or fold).
Pure: times are passed in; store/budgets.py does the writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from meterline.budgets.model import Budget
from meterline.budgets.quota import Traffic

MAX_CARVES = 32  # requests per pool (the ones judged on the pool's view, and the markers a failed pool leaves)
SHARE = 8  # a pool takes at most 1/SHARE of what was left below the lowest threshold
RATE_FRACTION = 2  # ... and at most 1/RATE_FRACTION of a second of this process's traffic
WINDOW_S = 2.0  # requests are carved from a pool for this long after its claim
# A settlement through the ledger (`Pool.defer`): the request's ledger record names the pool and its
# cost, so the sweeper can fold a crashed process's pool from the ledger. Only records whose time lies
# in [claim - LEDGER_BEFORE_MS, claim + LEDGER_AFTER_MS] (wall clock) may name a pool: the sweeper reads
# just that range of the workspace's ledger. Carves happen within WINDOW_S of the claim, so every
# request of a pool falls in it unless it waited unusually long before its carve (it then settles on
# its own).
LEDGER_BEFORE_MS = 10_000
LEDGER_AFTER_MS = 30_000
# ... and only while its ledger write lands long before the pool's lease may expire (the sweeper
# folds a pool only after it has expired, from what the ledger holds then).
DEFER_MARGIN_S = 60


def _below(percent: int, cap: int) -> int:
    """The highest committed figure x with x * 100 < percent * cap (the rung's test: not yet reached)."""
    return (percent * cap - 1) // 100


def ceilings(budget: Budget, day: str) -> dict[str, int]:
    """{counter attribute: the highest figure it may reach with a pool in it} for the month
    (`committed`) and the day (`dc_<day>`): below every threshold the budget has on that period."""
    out: dict[str, int] = {}
    throttle = budget.throttle_at is not None and budget.throttle_rpm is not None
    downgrade = budget.downgrade_at is not None and bool(budget.downgrade_to)
    for attr, cap, downgrades in (("committed", budget.monthly_micros, True),
                                  (f"dc_{day}", budget.daily_micros, budget.monthly_micros is None)):
        if cap is None:
            continue
        limits = [cap] if budget.hard else []
        if throttle:
            assert budget.throttle_at is not None
            limits.append(_below(budget.throttle_at, cap))
        if downgrade and downgrades:
            assert budget.downgrade_at is not None
            limits.append(_below(budget.downgrade_at, cap))
        if limits:
            out[attr] = min(limits)
    return out


@dataclass
class Pool:
    """One pool: its lease on the counter and what this process has carved from it."""

    id: str
    workspace: str
    budget: Budget
    month: str
    day: str
    size: int  # W, micro-dollars reserved under the pool's lease
    window_end: float  # carves only before this time
    expires: int  # the lease's expiry (the sweeper's)
    state: dict[str, Any]  # the counter after the claim
    carves_left: int
    ordinal: int | None = None  # the next carve's place in the minute (a budget with a throttle stage)
    free: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)  # carved, not settled: request's marker -> worst
    settling: dict[str, int] = field(default_factory=dict)  # their settlement on its way
    settled: list[str] = field(default_factory=list)  # markers written (fallbacks) to remove with the lease
    seq: int = 0  # the lease's settlement count (`n`) after this process's last write that applied
    claimed_ms: int = 0  # wall-clock time of the claim (the ledger range of its deferred settlements)
    deferred: dict[str, int] = field(default_factory=dict)  # settling through the ledger: marker -> cost
    owed: int = 0  # the costs of its requests settled through the ledger: added by the release
    owed_requests: int = 0
    closed: bool = False  # no more carves
    tainted: bool = False  # a settlement's outcome is unknown: the pool is left to expire (the replay's)

    def carve(self, marker: str, worst: int, now: float) -> dict[str, Any] | None:
        """Carve one request's worst case (`marker`: the request's settlement marker): the counter as
        that request sees it, or None."""
        if (self.closed or self.carves_left <= 0 or now >= self.window_end or self.free < worst
                or marker in self.in_flight or marker in self.settling):
            return None
        self.free -= worst
        self.carves_left -= 1
        self.in_flight[marker] = worst
        if self.ordinal is None:
            return self.state
        ordinal, self.ordinal = self.ordinal, self.ordinal + 1
        return {**self.state, "tn": ordinal}

    def settle(self, marker: str) -> bool:
        """A carved request's settlement begins: False if it has begun before (a repeated call)."""
        worst = self.in_flight.pop(marker, None)
        if worst is None:
            return False
        self.settling[marker] = worst
        return True

    def returned(self, marker: str, wrote: bool) -> None:
        """A carved request's settlement is done (`wrote`: its marker is on the counter, a fallback):
        its carve goes back to the pool."""
        worst = self.settling.pop(marker, None)
        if worst is None:
            return
        self.free += worst
        if wrote:
            self.settled.append(marker)

    def covers(self, ts_ms: int, now: float) -> bool:
        """Whether a request that started at `ts_ms` (its ledger record's time) may settle through the
        ledger at `now`: its record is in the range the sweeper reads, and lands long before the
        pool's lease may expire."""
        return (not self.tainted and self.claimed_ms - LEDGER_BEFORE_MS <= ts_ms <= self.claimed_ms + LEDGER_AFTER_MS
                and now < self.expires - DEFER_MARGIN_S)

    def defer(self, marker: str, cost: int) -> bool:
        """A carved request settles through the ledger: its cost waits for its ledger write
        (`ledgered`). False if its settlement has begun before (a repeated call)."""
        if not self.settle(marker):
            return False
        self.deferred[marker] = cost
        return True

    def ledgered(self, marker: str, written: bool) -> int | None:
        """The request's ledger write is done. Written: its cost is owed by the pool (added by the
        release, or by the sweeper from the ledger) and its carve goes back; None. Not written: the
        cost it must add on its own, then `returned` (None if it was not deferred here)."""
        cost = self.deferred.pop(marker, None)
        if cost is None or not written:
            return cost
        self.owed += cost
        self.owed_requests += 1
        self.returned(marker, False)
        return None

    @property
    def idle(self) -> bool:
        """Closed, nothing in flight, every settlement known: the lease may be released."""
        return self.closed and not self.in_flight and not self.settling and not self.tainted


@dataclass
class Slot:
    """This process's pools for one budget, month and day."""

    traffic: Traffic = field(default_factory=Traffic)
    current: Pool | None = None
    seen: dict[str, int] = field(default_factory=dict)  # the counter's figures last seen (sizing)
    claiming: asyncio.Future[None] | None = field(default=None, repr=False)

    def see(self, state: dict[str, Any]) -> None:
        for attr, value in state.items():
            if attr == "committed" or attr.startswith("dc_"):
                self.seen[attr] = max(self.seen.get(attr, 0), int(value))

    def next_size(self, limits: dict[str, int], worst: int) -> int:
        """How many requests (of `worst`) the next pool holds; 1 or less: none (reserve alone)."""
        size = min(MAX_CARVES, self.traffic.last_second // RATE_FRACTION)
        for attr, limit in limits.items():
            size = min(size, (limit - self.seen.get(attr, 0)) // SHARE // worst)
        return size
