"""Usage a provider claims is validated before it becomes money (issue 14, item 3): NaN, 1e309
(infinity once parsed), negative counts and 10^40 tokens, streamed and not, each with a budget on the
workspace. The request answers normally (never a 500, always with its request id); the ledger keeps
what the provider claimed and flags it; the cost is estimated (invalid) or capped to what the
request allows (implausible); the budget is charged exactly the recorded cost, within its cap."""

from __future__ import annotations

import json

import httpx
import pytest

from meterline.budgets.model import Budget
from meterline.store.budgets import BudgetStore
from tests import oracle
from tests.conftest import make_tenant, wait_for_ledger

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}
HUGE = "1" + "0" * 40
CASES = {
    "nan": ('{"prompt_tokens":NaN,"completion_tokens":10,"total_tokens":NaN}', "invalid"),
    "inf": ('{"prompt_tokens":10,"completion_tokens":1e309,"total_tokens":1e309}', "invalid"),
    "negative": ('{"prompt_tokens":-5,"completion_tokens":10,"total_tokens":5}', "invalid"),
    "string": ('{"prompt_tokens":"10","completion_tokens":10,"total_tokens":20}', "invalid"),
    "huge": ('{"prompt_tokens":10,"completion_tokens":' + HUGE + ',"total_tokens":' + HUGE + "}", "implausible"),
}
CAP = 1_000_000


def _month() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m")


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "stream"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_claimed_usage_is_validated_flagged_and_bounded(gateway, settings, fake_openai, case, stream):
    fake, url = fake_openai
    raw, flag = CASES[case]
    fake.usage_raw = raw
    t = make_tenant(settings, url)
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=CAP))
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}} if stream else BODY
    with httpx.Client(timeout=30) as http:
        response = http.post(gateway.base_url + "/chat/completions", json=body,
                             headers={"authorization": f"Bearer {t.api_key}"})
    assert response.status_code == 200, response.text
    assert response.headers["meterline-request-id"]
    if stream:
        lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        assert not any('"error"' in line for line in lines)
    [record] = wait_for_ledger(settings, t.workspace, 1)
    assert record["outcome"] == "ok"
    assert record["usage_flag"] == flag
    claimed = record["usage_claimed"]
    assert ("NaN" in claimed) if case == "nan" else True
    assert (HUGE in claimed) if case == "huge" else True
    if flag == "invalid":
        assert record["estimated"] is True and record["cost_micros"] > 0
    else:
        # Output capped at what the request allows (max_tokens); input as claimed.
        assert (record["input_uncached"], record["output"]) == (10, 50)
        assert record["cost_micros"] == oracle.openai_cost_micros("openai/gpt-4o", 10, 0, 50)
    counter = BudgetStore(settings).counter(t.workspace, f"workspace:{t.workspace}", _month())
    assert int(counter["spent"]) == record["cost_micros"] <= CAP
    assert int(counter["reserved"]) == 0
    json.loads(json.dumps(record))  # every recorded value is plain, finite JSON


@pytest.mark.parametrize("kind", ["huge", "garbage"])
def test_a_huge_or_garbage_answer_is_a_clean_error_and_still_recorded(start_gateway, settings, fake_openai, kind):
    fake, url = fake_openai
    gateway = start_gateway(max_upstream_body_bytes=1_000_000)
    fake.prompt_tokens, fake.cached_tokens, fake.completion_tokens, fake.reasoning_tokens = 10, 0, 50, 0
    if kind == "huge":
        fake.chunks = ["x" * 100_000] * 20  # a 2 MB answer
    else:
        fake.usage_raw = '{"prompt_tokens":10,"completion_tokens":'  # the body is not JSON any more
    t = make_tenant(settings, url)
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=CAP))
    with httpx.Client(timeout=30) as http:
        response = http.post(gateway.base_url + "/chat/completions", json=BODY,
                             headers={"authorization": f"Bearer {t.api_key}"})
    assert response.status_code == 502 and response.headers["meterline-request-id"]
    assert response.json()["error"]["code"] == ("upstream_too_large" if kind == "huge" else "upstream_unavailable")
    [record] = wait_for_ledger(settings, t.workspace, 1)
    assert record["outcome"] == "upstream_break" and record["estimated"] is True and record["cost_micros"] > 0
    counter = BudgetStore(settings).counter(t.workspace, f"workspace:{t.workspace}", _month())
    assert int(counter["spent"]) == record["cost_micros"] and int(counter["reserved"]) == 0
