"""Waste scoring on a planted ledger: every signal's $ and count, every grade, asserted exactly."""

from __future__ import annotations

import pytest

from meterline.pricing.cache_rules import min_cacheable
from meterline.pricing.catalog import default_catalog
from meterline.waste.features import json_slack_chars, profile
from meterline.waste.grades import ScopeReport, SignalTotal, grade_for
from meterline.waste.job import period_days
from meterline.waste.signals import PRUNE_EVERY, Pricer, percentile_95, score_records
from tests.waste_ledger import (
    BASELINE,
    DAY,
    EXPECTED_FEATURES,
    EXPECTED_SIGNALS,
    TOTAL_SPEND,
    TOTAL_WASTE,
    planted,
    rec,
)


def score(records, baseline=BASELINE, timezone="UTC"):
    return score_records(records, DAY, Pricer(default_catalog()), timezone, baseline)


def test_every_signal_is_exact_on_the_planted_ledger():
    scorer, _ = score(planted())
    got = {code: (t.micros, t.count) for code, t in scorer.total.signals.items()}
    assert got == EXPECTED_SIGNALS
    assert scorer.total.spend_micros == TOTAL_SPEND
    assert scorer.total.waste_micros == TOTAL_WASTE
    # W3 anywhere in the workspace caps it at D, whatever its waste %.
    assert scorer.total.grade == "D" and scorer.total.as_dict()["rating"] == "wasteful"
    assert scorer.total.look_first() == ["W5", "W4", "W3"]
    examples = scorer.total.signals
    assert examples["W1"].examples == ["req_0013"]
    assert examples["W8"].examples == ["req_0103", "req_f.1", "req_0106"]


def test_every_feature_grade_is_exact():
    scorer, _ = score(planted())
    got = {value: (r.spend_micros, r.waste_micros, r.score, r.grade, r.as_dict()["rating"])
           for value, r in scorer.by_dimension("feature").items()}
    assert got == EXPECTED_FEATURES


def test_members_agents_and_keys_are_graded_too():
    scorer, _ = score(planted())
    members = {v: r.grade for v, r in scorer.by_dimension("member").items()}
    assert members["bob"] == "A" and members["eve"] == "D" and members["nina"] == "S"
    agents = scorer.by_dimension("agent")
    assert set(agents) == {"looper", "-"} and agents["looper"].grade == "D"
    assert agents["looper"].signals["W3"].count == 3
    keys = scorer.by_dimension("key")
    assert keys["key_1"].spend_micros == TOTAL_SPEND and keys["key_1"].grade == "D"
    assert scorer.by_dimension("customer")["-"].requests == len(planted())


def test_the_day_p95_becomes_tomorrows_baseline_and_no_baseline_judges_no_size():
    scorer, p95 = score(planted(), baseline={})
    assert scorer.total.signals["W7"].micros == 5000 + 500  # JSON and repeated blocks only
    assert p95["openai/gpt-4o"] == 2000 and p95["anthropic/claude-sonnet-4-5"] == 3500


def test_grade_thresholds_are_inclusive_and_exact():
    assert [grade_for(w, 100, False) for w in (0, 3, 4, 10, 11, 20, 21, 35, 36, 100)] == \
        ["S", "S", "A", "A", "B", "B", "C", "C", "D", "D"]
    assert grade_for(0, 100, True) == "D"
    assert grade_for(0, 0, False) == "S"
    report = ScopeReport(0, 0)
    assert report.score == 100 and report.waste_pct_bp == 0
    # Overlapping signals never make waste exceed spend.
    report = ScopeReport(1000, 1, {"W1": SignalTotal(900, 1), "W7": SignalTotal(900, 1)})
    assert report.waste_micros == 1000 and report.score == 0


def test_windows_are_pruned_but_signals_survive_pruning():
    """Many records between a request and its duplicate force pruning passes; windows still hold."""
    records = [rec(1_794_268_800_000 + 36_000_000, 100, feature="f", member="m", req_fp="same")]
    base = records[0]["ts"]
    for i in range(PRUNE_EVERY * 2):
        records.append(rec(base + 1 + i, 1, feature="f", member="m", inp=1, out=0))
    records.append(rec(base + 300_000, 100, feature="f", member="m", req_fp="same"))  # 5 min later: W1
    records.append(rec(base + 300_000 + 601_000, 100, feature="f", member="m", req_fp="same"))  # 10 min 1 s: not
    scorer, _ = score_records(records, "2026-11-10", Pricer(default_catalog()), "UTC", {})
    assert (scorer.total.signals["W1"].micros, scorer.total.signals["W1"].count) == (100, 1)


def test_near_duplicates_from_semantic_detection_count_as_duplicates():
    base = 1_794_304_800_000
    records = [rec(base, 10_000, feature="f", member="m"),
               rec(base + 1000, 9000, feature="f", member="m", semantic_duplicate_of="req_0001",
                   semantic_similarity=9712),
               rec(base + 2000, 8000, feature="f", member="m", semantic_duplicate_of="req_0001",
                   outcome="upstream_error", status=502)]
    scorer, _ = score_records(records, "2026-11-10", Pricer(default_catalog()), "UTC", {})
    w1 = scorer.total.signals["W1"]
    assert (w1.micros, w1.count, w1.examples) == (9000, 1, [records[1]["request_id"]])


def test_off_hours_follow_the_workspace_time_zone():
    # 40 requests at 03:00 UTC are 12:00 in Tokyo: business hours, no burst.
    records = [r for r in planted() if r["feature"] == "batch"]
    scorer, _ = score(records, timezone="Asia/Tokyo")
    assert "W5" not in scorer.total.signals
    scorer, _ = score(records, timezone="UTC")
    # norm 0 (no other off-hours traffic): every request of the burst hour is excess.
    assert (scorer.total.signals["W5"].micros, scorer.total.signals["W5"].count) == (120_000, 40)


def test_scope_values_are_bounded(monkeypatch):
    from meterline.waste import signals

    monkeypatch.setattr(signals, "MAX_SCOPE_VALUES", 3)
    records = [rec(1_794_304_800_000 + i, 10, feature="f", member="m", customer=f"c{i}", inp=4, out=0)
               for i in range(6)]
    scorer, _ = score_records(records, "2026-11-10", Pricer(default_catalog()), "UTC", {})
    customers = scorer.by_dimension("customer")
    assert set(customers) == {"c0", "c1", "c2", "(other)"} and customers["(other)"].spend_micros == 30


def test_profile_fields():
    body = {"model": "gpt-4o", "max_tokens": 4000, "stream": True,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [{"role": "system", "content": "x" * 5000},
                         {"role": "user", "content": '{\n  "a": 1,\n  "b": [1, 2]\n}'},
                         {"role": "assistant", "content": "y" * 300},
                         {"role": "user", "content": "y" * 300}]}
    fields = profile(body, session=True)
    assert fields["max_tokens"] == 4000 and fields["tools"] == 1
    assert fields["json_slack"] == 3  # 27 characters pretty, 17 compact: 10 characters, (10 + 3) // 4 tokens
    assert fields["repeat_slack"] == 75 and "loop_fp" in fields
    same = profile({**body, "stream": False})
    assert same["req_fp"] == fields["req_fp"] and "loop_fp" not in same
    changed = profile({**body, "messages": [*body["messages"][:-1], {"role": "user", "content": "other"}]})
    assert changed["req_fp"] != fields["req_fp"] and changed["prefix_fp"] == fields["prefix_fp"]
    assert json_slack_chars("not json {") == 0 and json_slack_chars('{"a":1}') == 0
    assert profile({"model": "m", "input": "hi"}) == {"req_fp": profile({"model": "m", "input": "hi"})["req_fp"]}


def test_helpers():
    from collections import Counter

    assert percentile_95(Counter({1: 95, 100: 5})) == 1
    assert percentile_95(Counter({1: 94, 100: 6})) == 100
    assert min_cacheable("anthropic/claude-haiku-4-5") == 4096 and min_cacheable("anthropic/claude-haiku-3") == 2048
    assert min_cacheable("openai/gpt-4o") == 1024
    assert min_cacheable("bedrock/us.anthropic.claude-opus-4-5-20251101-v1:0") == 4096
    from datetime import date

    assert period_days("2026-11", date(2026, 11, 3)) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert period_days("yesterday", date(2026, 11, 1)) == ["2026-10-31"]
    assert len(period_days("7d", date(2026, 11, 3))) == 7
    with pytest.raises(ValueError):
        period_days("last week")
