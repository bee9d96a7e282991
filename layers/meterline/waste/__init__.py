"""Waste scoring: was the spend worth it? Pure signals and grades over ledger records.

    features.py  the request-shape fields the profile stage notes on each ledger record
    signals.py   the streaming scorer: ledger records (time-ordered) -> signal totals per scope
    grades.py    efficiency score, grade S/A/B/C/D, justification rating, "where to look first"

The I/O edge is `waste/job.py` (reads the ledger by workspace-day partitions, writes results to the
waste table, emits metrics); it runs on a schedule (functions/waste) and on demand (CLI, admin API).
"""

from __future__ import annotations

# Signal codes and what they mean (README "Waste scoring" documents each rule and its $).
SIGNALS: dict[str, str] = {
    "W1": "duplicate calls",
    "W2": "model overkill",
    "W3": "agent thrashing",
    "W4": "low max_tokens utilisation",
    "W5": "off-hours bursts",
    "W6": "cache misses",
    "W7": "oversized prompts",
    "W8": "wasteful retries",
    "V1": "cache-hit value",
    "V2": "routing savings",
    "V3": "compression gain",
}
# Signals whose $ was billed and need not have been: they make up a grade's waste.
BILLED = ("W1", "W2", "W3", "W5", "W6", "W7", "W8")
# W4's $ is capacity held (budget reservations, rate-limit tokens), not money billed: shown, not graded.
CAPACITY = ("W4",)
VALUE = ("V1", "V2", "V3")
# Scopes graded besides the workspace itself.
DIMENSIONS = ("member", "agent", "feature", "customer", "key")
