"""bench/overhead.py runs end to end (the README's overhead figures come from it) and its structural
figures hold: warm requests make no store round trip before the first upstream byte, exactly one
after the last (the ledger write), and no enforcement write by default but the key's rate window -
at most one per request (fewer once the process sees steady traffic and claims blocks of it; how
many fewer depends on this machine's speed, so test_rate_quota.py checks the blocks on times it
sets); with 3 budgets, the budgets' reservations and settlements join it (at most one write per budget
and request each: pools, checked in test_budget_pools.py, take fewer, and their requests settle through
the ledger record). Timing figures are printed, not asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^(\w+)\s+(\d+) \|.*\|" + r"\s+([\d.]+)" * 9 + r"\s*$")


def run_bench(*args: str) -> dict[str, tuple[float, ...]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers"), str(ROOT)])}
    out = subprocess.run([sys.executable, str(ROOT / "bench/overhead.py"), "--requests", "30", "--concurrency", "1",
                          *args], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {}
    for line in out.stdout.splitlines():
        found = ROW.match(line)
        if found:
            name, _, *figures = found.groups()
            rows[name] = tuple(float(f) for i, f in enumerate(figures) if i != 2)  # not 'background'

    return rows


def test_default_rows_of_the_gateway_and_the_bare_floor():
    pin = ["--pin"] if len(os.sched_getaffinity(0)) >= 2 else []  # the gateway alone on a core
    rows = run_bench("--transports", "bare,http1", *pin)
    assert rows["bare"] == (0.0,) * 8
    before, after, writes, windows, pooling, alone, settles, ledgered = rows["http1"]
    assert (before, after) == (0.0, 1.0)
    # Only the key's rate window: in blocks once the process sees steady traffic, how large depends on how fast
    # this machine runs the bench (tests/functional/test_rate_quota.py checks the blocks on times it sets).
    assert writes == windows and 0 < windows <= 1.0 and pooling == alone == settles == ledgered == 0


def test_three_budgets_add_their_reservations_and_settlements_only():
    rows = run_bench("--transports", "http1", "--budgets")
    before, after, writes, windows, pooling, alone, settles, ledgered = rows["http1"]
    assert (before, after) == (0.0, 1.0)
    # The key's rate window in blocks, and the 3 budgets' reservations: one write a request each (one also
    # counting the throttle minute), or carved from a pool of several claimed in one write - how many of each
    # depends on this machine's speed (tests/functional/test_budget_pools.py checks the pools on times it
    # sets). Every write is one of those or a settlement, and each of the 3 budgets settles every request
    # once: with a write of its own (concurrency 1: never coalesced), or through the ledger record when it
    # was carved from a pool.
    assert round(writes - windows - pooling - alone - settles, 6) == 0 and 0 < windows <= 1.0
    assert 0 <= alone <= 3.0 and round(alone + pooling, 6) <= 3.0 and round(settles + ledgered, 6) == 3.0
