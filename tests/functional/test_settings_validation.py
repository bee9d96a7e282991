"""Settings are validated at the boundary, in one place (issue 14, items 4 and 11): the control-plane
operations (behind both the admin API and the CLI) refuse what would break or silently weaken the
data plane, and the data plane survives a bad value stored before validation existed."""

from __future__ import annotations

import httpx
import pytest

from meterline.admin.ops import OpError, Ops
from meterline.budgets.model import Budget, Policy, RateLimit
from meterline.store.budgets import BudgetStore
from tests.conftest import make_tenant


@pytest.fixture
def ops(settings):
    o = Ops(settings)
    o.create_workspace("ws_valid", "Valid")
    return o


@pytest.mark.parametrize("changes", [{"loop_window_s": 0}, {"loop_window_s": -600}, {"key_rpm_default": -1},
                                     {"loop_throttle_after": 0}, {"loop_reject_after": 1, "loop_throttle_after": 5},
                                     {"fail_open": "yes"}, {"loop_window_s": 1e308}, {"no_such_setting": 1}])
def test_bad_policy_values_are_refused(ops, changes):
    with pytest.raises(OpError):
        ops.set_policy("ws_valid", **changes)


@pytest.mark.parametrize("limit", [RateLimit("key", "*"), RateLimit("key", "*", rpm=-5), RateLimit("key", "*", rpm=0),
                                   RateLimit("member", "a b", rpm=5), RateLimit("agent", "x", tpm=10**12),
                                   RateLimit("workspace", "x", rpm=5)])
def test_bad_limits_are_refused(ops, limit):
    with pytest.raises(OpError):
        ops.set_limit("ws_valid", limit)


def test_a_limit_for_an_unknown_key_is_refused_and_for_a_real_one_accepted(ops):
    with pytest.raises(OpError) as err:
        ops.set_limit("ws_valid", RateLimit("key", "key_doesnotexist", rpm=5))
    assert err.value.status == 404
    key = ops.create_key("ws_valid", "alice")
    assert ops.set_limit("ws_valid", RateLimit("key", key["key_id"], rpm=5)) == {"subject": f"key:{key['key_id']}"}


@pytest.mark.parametrize("budget", [
    Budget("workspace", "ws_valid", monthly_micros=100, throttle_at=50, throttle_rpm=-1),
    Budget("workspace", "ws_valid", monthly_micros=100, daily_micros=1000),
    Budget("workspace", "ws_valid", monthly_micros=10**20)])
def test_bad_budgets_are_refused(ops, budget):
    with pytest.raises(OpError):
        ops.set_budget("ws_valid", budget)


@pytest.mark.parametrize("workspace", ["a#b", "a/b", "a b", "", "-x", "x" * 65, "ws\n"])
def test_workspace_ids_are_key_safe(settings, workspace):
    with pytest.raises(OpError):
        Ops(settings).create_workspace(workspace, "Bad")


def test_duplicates_zones_and_expiry_are_client_errors(ops):
    with pytest.raises(OpError) as err:
        ops.create_workspace("ws_valid", "Again")
    assert err.value.status == 409
    for zone in ("Mars/Olympus", "../../etc/passwd", ""):
        with pytest.raises(OpError):
            ops.create_workspace("ws_zone", "Z", timezone=zone)
        with pytest.raises(OpError):
            ops.update_workspace("ws_valid", timezone=zone)
    for days in (1e308, -1, 0, float("nan"), float("inf")):
        with pytest.raises(OpError):
            ops.create_key("ws_valid", "alice", expires_in_days=days)


def test_a_bad_policy_stored_before_validation_does_not_break_requests(gateway, settings, fake_openai):
    t = make_tenant(settings, fake_openai[1])
    store = BudgetStore(settings)
    store.put_policy(t.workspace, Policy(loop_window_s=0))  # written around the operations
    store.put_limit(t.workspace, RateLimit("key", "*"))  # a limit with no numbers
    with httpx.Client(timeout=30) as http:
        response = http.post(gateway.base_url + "/chat/completions",
                             headers={"authorization": f"Bearer {t.api_key}", "meterline-session": "s1"},
                             json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    assert response.headers["x-ratelimit-limit-requests"] == "100"  # the default floor still applies
