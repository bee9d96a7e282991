"""A ledger day with planted waste of every kind, and the exact scores it must earn.

Every planted record's cost is written here by hand from catalog.json's prices (gpt-4o: input
2.50, cache read 1.25, output 10.00; gpt-4o-mini: 0.15 / 0.60; claude-sonnet-4-5: input 3.00,
cache read 0.30, 5-minute write 3.75, output 15.00 USD per 1M tokens), and so is every expected $:
the scorer's output is compared with these numbers, never with a recomputation by the same code.

Day 2026-11-10 (a Tuesday), workspace time zone UTC, business hours 09-18.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

DAY = "2026-11-10"
WORKSPACE = "ws_planted"
GPT4O = "openai/gpt-4o"
SONNET = "anthropic/claude-sonnet-4-5"
BASELINE = {GPT4O: 3000}  # yesterday's p95 prompt tokens on gpt-4o

_T0 = int(datetime.fromisoformat(DAY).replace(tzinfo=UTC).timestamp() * 1000)
_seq = [0]


def at(hh: int, mm: int, ss: int = 0) -> int:
    return _T0 + ((hh * 60 + mm) * 60 + ss) * 1000


def rec(ts: int, cost: int, *, feature: str, member: str, model: str = GPT4O, inp: int = 2000, out: int = 500,
        **extra: Any) -> dict[str, Any]:
    _seq[0] += 1
    rid = extra.pop("request_id", f"req_{_seq[0]:04d}")
    record = {"request_id": rid, "parent_request_id": extra.pop("parent_request_id", rid), "ts": ts,
              "workspace": WORKSPACE, "key": "key_1", "member": member, "department": "eng", "feature": feature,
              "provider": model.split("/")[0], "model": model, "priced_as": model, "outcome": "ok", "status": 200,
              "input_uncached": inp, "cache_read": 0, "cache_write_5m": 0, "cache_write_1h": 0, "output": out,
              "cost_micros": cost, "req_fp": f"fp{_seq[0]}", "endpoint": "chat.completions"}
    record.update(extra)
    if "savings" in record:  # as the gateway writes it: savings {lever: micros} and their sum
        record.setdefault("saved_micros", sum(record["savings"].values()))
    return record


def planted() -> list[dict[str, Any]]:
    _seq[0] = 0
    r: list[dict[str, Any]] = []
    # clean: 10 ordinary requests (2000 in, 500 out = 5000 + 5000 micros) + one with pretty JSON (2000 slack tokens).
    for i in range(10):
        extra: dict[str, Any] = {}
        if i == 0:
            extra["savings"] = {"routing": 2000}
        if i == 1:
            extra["savings"] = {"compression": 700}
        r.append(rec(at(9, 5 + i), 10_000, feature="clean", member="bob", tools=2, **extra))
    r.append(rec(at(9, 30), 10_000, feature="clean", member="bob", json_slack=2000))  # W7 2000 x 2.50 = 5000
    # W1: the same request three times; the 2nd is 1 min after the 1st (dup), the 3rd 19 min after the 2nd.
    r.append(rec(at(10, 0), 10_000, feature="dup", member="carol", req_fp="dupA"))
    r.append(rec(at(10, 1), 10_000, feature="dup", member="carol", req_fp="dupA"))  # W1 10000
    r.append(rec(at(10, 20), 10_000, feature="dup", member="carol", req_fp="dupA"))
    r.append(rec(at(10, 30), 0, feature="dup", member="carol", req_fp="dupA", outcome="cache_hit",
                 savings={"exact_cache": 10_000}, saved_micros=10_000))  # V1 10000
    # W2: 4 simple requests on gpt-4o (500 in, 100 out: 1250 + 1000 = 2250); on gpt-4o-mini 75 + 60 = 135.
    for i in range(4):
        r.append(rec(at(12, i), 2250, feature="chat", member="dave", inp=500, out=100))  # W2 2115 each
    # W3: a session repeating one call 4 times (3rd and 4th thrash), then stopped by the loop breaker.
    for i in range(4):
        r.append(rec(at(11, i), 10_000, feature="agentic", member="eve", agent="looper", session="s1", loop_fp="L1"))
    r.append(rec(at(11, 4), 0, feature="agentic", member="eve", agent="looper", session="s1", loop_fp="L1",
                 outcome="rejected", status=429, error_code="agent_loop_detected", inp=0, out=0))
    # W4: max_tokens 4000, 100 used (2000 in: 5000 + 1000 = 6000); capacity (4000-100) x 10.00 = 39000 each.
    for i in range(2):
        r.append(rec(at(14, 30 + i), 6000, feature="summaries", member="erin", out=100, max_tokens=4000))
    # W5: 40 requests in 03:00-04:00 (1200 in, 0 out = 3000 each); 2 in every other off-hours hour (norm 2).
    for i in range(40):
        r.append(rec(at(3, i), 3000, feature="batch", member="frank", inp=1200, out=0))
    for hour in (0, 1, 2, 4, 5, 6, 7, 8, 18, 19, 20, 21, 22, 23):
        for minute in (10, 40):
            r.append(rec(at(hour, minute), 3000, feature="nightly", member="nina", inp=1200, out=0))
    # W6 (a): a 3000-token prefix sent twice 2 min apart, no cache read (3500 in, 200 out: 10500 + 3000):
    # the 2nd misses 3000 x (3.00 - 0.30) = 8100.
    for minute in (0, 2):
        r.append(rec(at(13, minute), 13_500, feature="rag", member="gina", model=SONNET, inp=3500, out=200,
                     prefix_fp="P1", prefix_tokens=3000))
    # W6 (b): a 5-minute write of 2000 tokens never read (7500 + 300 + 1500): premium 2000 x 0.75 = 1500.
    r.append(rec(at(14, 0), 9300, feature="rag", member="gina", model=SONNET, inp=100, out=100,
                 cache_write_5m=2000, prefix_fp="P2", prefix_tokens=2000))
    # ... and a write that is read a minute later: no waste (read: 600 + 300 + 1500 = 2400).
    r.append(rec(at(15, 0), 9300, feature="rag", member="gina", model=SONNET, inp=100, out=100,
                 cache_write_5m=2000, prefix_fp="P3", prefix_tokens=2000))
    r.append(rec(at(15, 1), 2400, feature="rag", member="gina", model=SONNET, inp=100, out=100,
                 cache_read=2000, prefix_fp="P3", prefix_tokens=2000))
    # W7: repeated blocks (200 tokens: 500) and a prompt of 5000 over a p95 of 3000 (2000 x 2.50 = 5000;
    # cost 12500 + 5000 = 17500).
    r.append(rec(at(16, 30), 10_000, feature="reports", member="hank", repeat_slack=200))
    r.append(rec(at(16, 31), 17_500, feature="reports", member="hank", inp=5000))
    # W8 (a): an identical retry a minute after a 400 (both unbilled); (b) paid tokens of a timed-out
    # attempt that failed over (1600 in: 4000) and of a client disconnect (1200 in: 3000).
    r.append(rec(at(16, 0), 0, feature="flaky", member="ivan", req_fp="R1", outcome="upstream_error", status=400,
                 inp=0, out=0))
    r.append(rec(at(16, 1), 0, feature="flaky", member="ivan", req_fp="R1", outcome="upstream_error", status=400,
                 inp=0, out=0))
    r.append(rec(at(17, 0), 4000, feature="flaky", member="ivan", inp=1600, out=0, outcome="upstream_timeout",
                 status=504, request_id="req_f.1", parent_request_id="req_f"))
    r.append(rec(at(17, 0, 30), 10_000, feature="flaky", member="ivan", request_id="req_f"))
    r.append(rec(at(17, 10), 3000, feature="flaky", member="ivan", inp=1200, out=0, outcome="client_disconnect"))
    r.sort(key=lambda x: x["ts"])
    return r


# signal -> ($ micro-dollars, count)
EXPECTED_SIGNALS = {
    "W1": (10_000, 1),
    "W2": (4 * 2115, 4),
    "W3": (20_000, 3),
    "W4": (2 * 39_000, 2),
    "W5": (120_000 * 38 // 40, 38),
    "W6": (8100 + 1500, 2),
    "W7": (5000 + 500 + 5000, 3),
    "W8": (0 + 4000 + 3000, 3),
    "V1": (10_000, 1),
    "V2": (2000, 1),
    "V3": (700, 1),
}
# feature -> (spend, waste, score, grade, rating)
EXPECTED_FEATURES = {
    "clean": (110_000, 5000, 95, "A", "justified"),
    "dup": (30_000, 10_000, 66, "C", "questionable"),
    "chat": (9000, 8460, 6, "D", "wasteful"),
    "agentic": (40_000, 20_000, 50, "D", "wasteful"),  # 50 % waste, and the W3 veto regardless
    "summaries": (12_000, 0, 100, "S", "justified"),  # W4 is capacity, not graded
    "batch": (120_000, 114_000, 5, "D", "wasteful"),
    "nightly": (84_000, 0, 100, "S", "justified"),
    "rag": (48_000, 9600, 80, "B", "questionable"),  # exactly 20 %: B's upper bound is inclusive
    "reports": (27_500, 5500, 80, "B", "questionable"),
    "flaky": (17_000, 7000, 58, "D", "wasteful"),
}
TOTAL_SPEND = 497_500
TOTAL_WASTE = 10_000 + 8460 + 20_000 + 114_000 + 9600 + 10_500 + 7000
