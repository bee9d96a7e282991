"""The pure policy engine: validation, globs, windows, source IPs, composition (deny wins, order,
monitor mode, smallest cap), and fail-closed handling of an unreadable stored policy."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from meterline.policies.engine import Facts, PolicySet, evaluate, glob_regex
from meterline.policies.ip import network, parse_ip, source_ip
from meterline.policies.model import PolicyError, PolicySpec, parse_window


def facts(**over) -> Facts:
    base = dict(endpoint="chat.completions", model="openai/gpt-4o", key="key_1", member="alice",
                department="research", feature=None, client_ip="10.1.2.3", body_bytes=100, messages=2,
                max_tokens=None, now=datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("UTC")).timestamp())  # a Wednesday
    base.update(over)
    return Facts(**base)


def pset(*policies: dict, tz: str = "UTC", proxies: tuple[str, ...] = ()) -> PolicySet:
    return PolicySet.build([PolicySpec.from_dict(p).to_dict() for p in policies], tz, proxies)


def test_globs_do_not_cross_the_slash():
    regex = glob_regex(("openai/gpt-4o*", "anthropic/*"))
    assert regex.match("openai/gpt-4o") and regex.match("openai/gpt-4o-mini")
    assert regex.match("anthropic/claude-sonnet-4-5")
    assert not regex.match("openai/gpt-4")
    assert not regex.match("anthropic/x/y")  # `*` stops at `/`
    assert not glob_regex(("*",)).match("openai/gpt-4o")
    assert glob_regex(("*/*",)).match("openai/gpt-4o")
    assert glob_regex(("openai/gpt-[45]o",)).match("openai/gpt-4o")
    assert not glob_regex(("openai/gpt-[!4]o",)).match("openai/gpt-4o")
    assert not glob_regex(("openai/gpt.4o",)).match("openai/gpt-4o")  # `.` is literal


@pytest.mark.parametrize("bad", [
    {"id": "x", "kind": "models"},
    {"id": "x", "kind": "models", "allow": ["gpt-4o"]},  # no provider
    {"id": "x", "kind": "ip", "cidrs": ["10.0.0.0/33"]},
    {"id": "x", "kind": "schedule", "windows": ["weekdays 8-20"]},
    {"id": "x", "kind": "schedule", "windows": ["mon-fri 08:00-20:00"], "timezone": "Mars/Olympus"},
    {"id": "x", "kind": "max_tokens", "max_tokens": 0},
    {"id": "x", "kind": "max_tokens", "max_tokens": 10, "on_exceed": "explode"},
    {"id": "x", "kind": "size"},
    {"id": "x", "kind": "pii", "entities": ["dna"]},
    {"id": "x", "kind": "ip", "cidrs": ["10.0.0.0/8"], "max_tokens": 5},  # another kind's field
    {"id": "x", "kind": "ip", "cidrs": ["10.0.0.0/8"], "attach": "team:a"},
    {"id": "x", "kind": "ip", "cidrs": ["10.0.0.0/8"], "attach": "key:"},
    {"id": "has space", "kind": "ip", "cidrs": ["10.0.0.0/8"]},
    {"id": "x", "kind": "ip", "cidrs": ["10.0.0.0/8"], "colour": "red"},
    {"id": "x", "kind": "size", "max_bytes": True},
])
def test_invalid_policies_are_refused_with_a_reason(bad):
    with pytest.raises(PolicyError):
        PolicySpec.from_dict(bad)


def test_stored_form_round_trips():
    data = {"id": "dev-hours", "kind": "schedule", "attach": "department:dev", "windows": ["mon-fri 08:00-20:00"],
            "timezone": "Europe/Berlin", "mode": "monitor"}
    spec = PolicySpec.from_dict(data)
    assert PolicySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_windows_including_past_midnight_and_the_week_wrap():
    w = parse_window("mon-fri 08:00-20:00")
    assert w.contains(0, 8 * 60) and w.contains(4, 20 * 60 - 1)
    assert not w.contains(0, 20 * 60) and not w.contains(5, 10 * 60) and not w.contains(2, 7 * 60 + 59)
    night = parse_window("fri 22:00-06:00")
    assert night.contains(4, 23 * 60) and night.contains(5, 5 * 60)  # Saturday early morning counts for Friday
    assert not night.contains(4, 5 * 60) and not night.contains(5, 23 * 60)
    wrap = parse_window("sat-mon 00:00-24:00")
    assert wrap.days == frozenset({5, 6, 0})


def test_schedule_uses_the_workspace_time_zone():
    policies = pset({"id": "hours", "kind": "schedule", "windows": ["mon-fri 08:00-20:00"]}, tz="Asia/Tokyo")
    # 10:00 UTC on Wednesday is 19:00 in Tokyo: inside; 12:00 UTC is 21:00: outside.
    assert evaluate(policies, facts()).allowed
    late = datetime(2026, 12, 2, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    verdict = evaluate(policies, facts(now=late))
    assert not verdict.allowed and "Asia/Tokyo" in verdict.denied.reason
    # The policy's own zone wins over the workspace's.
    own = pset({"id": "hours", "kind": "schedule", "windows": ["mon-fri 08:00-20:00"], "timezone": "UTC"},
               tz="Asia/Tokyo")
    assert evaluate(own, facts(now=late)).allowed


def test_models_allow_and_deny_deny_wins_and_order_names_the_first_denier():
    policies = pset(
        {"id": "b-allow", "kind": "models", "allow": ["openai/*", "anthropic/claude-haiku-*"]},
        {"id": "a-deny", "kind": "models", "deny": ["openai/gpt-5*"]},
        {"id": "key-deny", "kind": "models", "attach": "key:key_1", "deny": ["openai/gpt-4o"]},
    )
    assert evaluate(policies, facts(model="openai/gpt-4o-mini")).allowed
    verdict = evaluate(policies, facts(model="openai/gpt-5.1"))
    assert verdict.denied.policy == "a-deny"  # workspace policies by id: a-deny before b-allow
    assert verdict.ledger_note() == {"a-deny": "deny", "b-allow": "allow", "key-deny": "allow"}
    verdict = evaluate(policies, facts(model="gemini/gemini-2.5-pro"))
    assert verdict.denied.policy == "b-allow" and "not in the allowed list" in verdict.denied.reason
    # Attached to the key: applies to that key only, after the workspace's.
    verdict = evaluate(policies, facts(model="openai/gpt-4o"))
    assert verdict.denied.policy == "key-deny"
    assert evaluate(policies, facts(model="openai/gpt-4o", key="key_2")).allowed
    assert policies.model_permitted(facts(), "openai/gpt-4o-mini")
    assert not policies.model_permitted(facts(), "openai/gpt-5")


def test_attachment_to_member_department_and_feature():
    policies = pset({"id": "m", "kind": "size", "attach": "member:bob", "max_messages": 1},
                    {"id": "d", "kind": "size", "attach": "department:research", "max_bytes": 50},
                    {"id": "f", "kind": "size", "attach": "feature:chat", "max_messages": 1})
    verdict = evaluate(policies, facts())
    assert verdict.denied.policy == "d" and verdict.denied.status == 413
    assert [o.policy for o in verdict.outcomes] == ["d"]
    assert evaluate(policies, facts(department="sales")).allowed
    verdict = evaluate(policies, facts(department="sales", member="bob", feature="chat"))
    assert [o.policy for o in verdict.outcomes] == ["m", "f"] and verdict.denied.policy == "m"


def test_max_tokens_caps_clamp_to_the_smallest_and_reject_mode_denies():
    policies = pset({"id": "cap1", "kind": "max_tokens", "max_tokens": 1000},
                    {"id": "cap2", "kind": "max_tokens", "attach": "member:alice", "max_tokens": 300})
    assert evaluate(policies, facts(max_tokens=5000)).max_tokens == 300
    assert evaluate(policies, facts(max_tokens=None)).max_tokens == 300  # a missing cap gets one
    assert evaluate(policies, facts(max_tokens=200)).max_tokens is None
    assert evaluate(policies, facts(endpoint="embeddings")).max_tokens is None
    strict = pset({"id": "strict", "kind": "max_tokens", "max_tokens": 100, "on_exceed": "reject"})
    verdict = evaluate(strict, facts(max_tokens=101))
    assert verdict.denied.policy == "strict" and verdict.denied.status == 400
    assert evaluate(strict, facts(max_tokens=None)).max_tokens == 100


def test_monitor_mode_records_but_never_denies_or_changes():
    policies = pset({"id": "watch", "kind": "models", "deny": ["openai/*"], "mode": "monitor"},
                    {"id": "cap", "kind": "max_tokens", "max_tokens": 10, "mode": "monitor"})
    verdict = evaluate(policies, facts(max_tokens=500))
    assert verdict.allowed and verdict.max_tokens is None
    assert verdict.ledger_note() == {"watch": "monitor:deny", "cap": "monitor:clamp"}
    assert policies.model_permitted(facts(), "openai/gpt-4o")


def test_ip_allowlist_v4_v6_and_unknown_source():
    policies = pset({"id": "office", "kind": "ip", "cidrs": ["10.0.0.0/8", "2001:db8::/32"]})
    assert evaluate(policies, facts(client_ip="10.9.9.9")).allowed
    assert evaluate(policies, facts(client_ip="2001:db8::1")).allowed
    assert evaluate(policies, facts(client_ip="::ffff:10.0.0.1")).allowed
    assert not evaluate(policies, facts(client_ip="192.168.1.1")).allowed
    assert evaluate(policies, facts(client_ip=None)).denied.reason == "the source IP is unknown"
    assert not evaluate(policies, facts(client_ip="not-an-ip")).allowed


def test_source_ip_trusts_the_lambda_context_and_forwarded_for_only_when_configured():
    lwa = {"x-amzn-request-context": json.dumps({"http": {"sourceIp": "203.0.113.7"}}),
           "x-forwarded-for": "198.51.100.1, 203.0.113.9"}
    # Behind the adapter (peer is loopback): the function URL's source IP.
    assert source_ip("127.0.0.1", lwa, behind_lambda_adapter=True) == "203.0.113.7"
    # Not behind the adapter: the header is a client's forgery and is ignored.
    assert source_ip("127.0.0.1", lwa, behind_lambda_adapter=False) == "127.0.0.1"
    # Behind the adapter but not from loopback: ignored too.
    assert source_ip("192.0.2.5", lwa, behind_lambda_adapter=True) == "192.0.2.5"
    # X-Forwarded-For without trusted proxies: ignored.
    assert source_ip("192.0.2.5", lwa, behind_lambda_adapter=False) == "192.0.2.5"
    proxies = (network("192.0.2.0/24"), network("203.0.113.9/32"))
    # From a trusted proxy: walk right to left past trusted hops.
    assert source_ip("192.0.2.5", lwa, behind_lambda_adapter=False, trusted_proxies=proxies) == "198.51.100.1"
    # A client that prepends a fake hop does not get it used: the rightmost untrusted hop is the client.
    forged = {"x-forwarded-for": "10.0.0.1, 198.51.100.1"}
    assert source_ip("192.0.2.5", forged, behind_lambda_adapter=False, trusted_proxies=proxies) == "198.51.100.1"
    # The peer is not a trusted proxy: its header means nothing.
    assert source_ip("198.51.100.50", forged, behind_lambda_adapter=False, trusted_proxies=proxies) == "198.51.100.50"
    assert source_ip("192.0.2.5", {"x-forwarded-for": "junk"}, behind_lambda_adapter=False,
                     trusted_proxies=proxies) is None
    assert source_ip("127.0.0.1", {"x-amzn-request-context": "{bad json"}, behind_lambda_adapter=True) is None


def test_an_unreadable_stored_policy_denies_instead_of_vanishing():
    policies = PolicySet.build([{"id": "future", "kind": "quantum", "attach": "workspace"}], "UTC")
    verdict = evaluate(policies, facts())
    assert verdict.denied.policy == "future" and "cannot be read" in verdict.denied.reason


def test_pii_policies_union_their_entities():
    policies = pset({"id": "p1", "kind": "pii", "entities": ["email"]},
                    {"id": "p2", "kind": "pii", "attach": "member:alice", "entities": ["phone"], "restore": True})
    verdict = evaluate(policies, facts())
    assert verdict.pii_entities == {"email", "phone"} and verdict.pii_restore and verdict.pii_policy == "p1"
    everything = evaluate(pset({"id": "all", "kind": "pii"}), facts())
    assert "credit_card" in everything.pii_entities and not everything.pii_restore


def test_parse_ip_handles_v4_v6_mapped_and_junk():
    assert parse_ip("10.0.0.1") == (4, 0x0A000001)
    assert parse_ip("::ffff:10.0.0.1") == (4, 0x0A000001)
    assert parse_ip("2001:db8::1")[0] == 6
    assert parse_ip("fe80::1%eth0")[0] == 6
    for junk in ("", None, "10.0.0", "10.0.0.256", "1.2.3.4.5", "::g", " "):
        assert parse_ip(junk) is None
    with pytest.raises(ValueError):
        network("10.0.0.0/33")
