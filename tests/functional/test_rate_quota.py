"""Rate-limit quota blocks (budgets/quota.py) on the real store: a process with steady traffic for
a subject claims several requests of the minute window in one write and admits the next ones
without a store call. Checked here, with times passed in: never more than the limit (requests and
tokens) across processes; a single process's refusals and remaining counts stay exact; a process
without steady traffic, with a frozen clock, or under a burst or hourly limit counts one request per
write as before; concurrent requests wait for a block on its way instead of each claiming."""

from __future__ import annotations

import asyncio
import random
import time

from meterline.budgets.model import RateLimit
from meterline.budgets.quota import MAX_BLOCK
from meterline.store.budgets import BudgetStore
from meterline.store.ddb_http import DynamoHttp

T0 = 1_796_000_000 - 1_796_000_000 % 60  # the start of a minute
WARM = 400  # requests at 200/s over the minute before: a steady rate


def subject() -> str:
    return f"k{time.time_ns()}"


def drive(settings, steps):
    """Each step: (store, limit, tokens, now), in order -> ([(allowed, state)], store calls made)."""

    async def go():
        client = DynamoHttp(settings)
        try:
            out = [await store.rate_window(client, "ws_rq", limit, tokens, now) for store, limit, tokens, now in steps]
            return out, client.calls
        finally:
            await client.aclose()

    return asyncio.run(go())


def window(settings, limit: RateLimit, now: float, workspace: str = "ws_rq") -> dict:
    """The subject's minute window as stored: n, tk (what was claimed)."""
    item = BudgetStore(settings)._ddb.get_item(
        TableName=BudgetStore(settings).table, ConsistentRead=True,
        Key={"pk": {"S": f"{workspace}#rl#{limit.subject}"}, "sk": {"S": f"m#{int(now // 60)}"}}).get("Item", {})
    return {k: int(v["N"]) for k, v in item.items() if "N" in v}


def steady(store: BudgetStore, limit: RateLimit, start: float = T0 - 2) -> list:
    """WARM requests at 200 a second from `start`."""
    return [(store, limit, 10, start + i / 200) for i in range(WARM)]


def warm(store: BudgetStore, limit: RateLimit) -> list:
    """A steady 200 requests a second through the 2 s before T0 (the minute before), under a limit of
    the same subject too high to matter: the process's rate carries over to `limit` and the minute."""
    return steady(store, RateLimit(limit.subject_type, limit.subject_value, rpm=10**9))


def test_a_steady_process_claims_blocks_and_stays_exact_to_the_limit(settings):
    limit = RateLimit("key", subject(), rpm=300)
    store = BudgetStore(settings)
    steps = [(store, limit, 10, T0 + i / 200) for i in range(400)]  # 400 at 200/s: 100 too many
    _, warm_calls = drive(settings, warm(store, limit))
    assert warm_calls < WARM // 2 + 10  # one write a request for the first second, then blocks
    results, calls = drive(settings, steps)
    admitted = [state for allowed, state in results if allowed]
    assert len(admitted) == 300 and all(not allowed for allowed, _ in results[300:])
    # Remaining counts are exact for a lone process: the n-th admitted request sees n.
    assert [int(s["n"]) for s in admitted] == list(range(1, 301))
    assert window(settings, limit, T0)["n"] == 300  # every claimed unit was used
    # Admitting 300 took far fewer writes than requests; each refusal is one write, as before.
    assert calls - 100 < 300 // 5


def test_processes_sharing_a_window_never_exceed_it_and_lose_at_most_a_block_each(settings):
    limit = RateLimit("key", subject(), rpm=500)
    a, b = BudgetStore(settings), BudgetStore(settings)
    drive(settings, warm(a, limit) + warm(b, limit))
    rng = random.Random(7)
    steps = [(rng.choice((a, b)), limit, 10, T0 + i / 400) for i in range(800)]
    results, _ = drive(settings, steps)
    admitted = sum(1 for allowed, _ in results if allowed)
    unused = sum(s._quotas[("ws_rq", limit.subject)].requests for s in (a, b))
    counted = window(settings, limit, T0)["n"]
    assert admitted + unused == counted == 500  # every admitted request holds a claimed unit; the window is full
    assert admitted >= 500 - 2 * MAX_BLOCK  # what the processes claimed and did not use: a block at most each


def test_tokens_per_minute_blocks_never_exceed_the_limit(settings):
    limit = RateLimit("key", subject(), tpm=20_000)
    store = BudgetStore(settings)
    drive(settings, warm(store, limit))
    rng = random.Random(3)
    sizes = [rng.randint(20, 300) for _ in range(400)]
    results, calls = drive(settings, [(store, limit, n, T0 + i / 200) for i, n in enumerate(sizes)])
    admitted = [n for n, (allowed, _) in zip(sizes, results, strict=True) if allowed]
    left = store._quotas[("ws_rq", limit.subject)].tokens
    assert sum(admitted) + left == window(settings, limit, T0)["tk"] <= 20_000
    first = next(i for i, (allowed, _) in enumerate(results) if not allowed)
    counted = int(results[first][1]["tk"])  # the window's tokens when the request was refused
    assert counted + sizes[first] > 20_000  # refused only when it did not fit, its tokens claimed alone
    # ... and what this process held unused then was less than the request's own tokens.
    assert 0 <= counted - sum(admitted[:first]) < sizes[first]
    refusals = len(sizes) - len(admitted)
    assert calls - refusals < len(admitted) // 3  # each refusal is a write, as before


def test_without_steady_traffic_every_request_is_its_own_write(settings):
    limit = RateLimit("key", subject(), rpm=10_000)
    store = BudgetStore(settings)
    frozen = [(store, limit, 10, T0 + 1.5)] * 60  # a frozen clock: no full second ever passes
    results, calls = drive(settings, frozen)
    assert calls == 60 and all(allowed for allowed, _ in results)
    slow = [(store, limit, 10, T0 + 3 + i) for i in range(20)]  # then one a second
    results, calls = drive(settings, slow)
    assert calls == 20 and [int(s["n"]) for _, s in results] == list(range(61, 81))


def test_burst_and_hourly_limits_count_every_request(settings):
    for limit in (RateLimit("key", subject(), rpm=10_000, burst=1_000), RateLimit("key", subject(), rpm=10_000,
                                                                                  rph=100_000)):
        store = BudgetStore(settings)
        _, calls = drive(settings, steady(store, limit))
        per_request = 2 if limit.rph else 1  # the hour window is a write of its own
        assert calls == per_request * WARM


def test_concurrent_requests_wait_for_the_block_on_its_way(settings):
    limit = RateLimit("key", subject(), rpm=1_000)
    store = BudgetStore(settings)
    drive(settings, warm(store, limit))

    async def burst():
        client = DynamoHttp(settings)
        try:
            out = await asyncio.gather(*(store.rate_window(client, "ws_rq", limit, 10, T0 + 0.5) for _ in range(40)))
            return out, client.calls
        finally:
            await client.aclose()

    results, calls = asyncio.run(burst())
    assert all(allowed for allowed, _ in results)
    assert calls == 1  # one block of 50 (200/s / 4) covers all 40
    assert sorted(int(s["n"]) for _, s in results) == list(range(1, 41))
    assert window(settings, limit, T0)["n"] == 50


def test_a_process_with_a_stale_view_claims_only_what_fits(settings):
    """A sizes its block from a window it saw nearly empty; B has since nearly filled it. A's block
    must not be applied (the write's condition, not A's view, decides) and A's requests must still
    be admitted one at a time up to the limit."""
    limit = RateLimit("key", subject(), rpm=500)
    a, b = BudgetStore(settings), BudgetStore(settings)
    drive(settings, warm(a, limit) + warm(b, limit))
    drive(settings, [(a, limit, 10, T0 + i / 200) for i in range(50)])  # one block of 50, all used
    assert a._quotas[("ws_rq", limit.subject)].requests == 0
    i = 0
    while window(settings, limit, T0)["n"] < 485:  # B fills the window (its own blocks, its own view)
        drive(settings, [(b, limit, 10, T0 + 0.3 + i / 2000)])
        i += 1
    room = 500 - window(settings, limit, T0)["n"]
    results, _ = drive(settings, [(a, limit, 10, T0 + 0.5 + i / 200) for i in range(30)])
    # Exactly what was left, to the first requests: nothing more, nothing less, no refusal while room was left.
    assert [allowed for allowed, _ in results] == [True] * room + [False] * (30 - room)
    assert window(settings, limit, T0)["n"] == 500


def test_through_the_gateway_blocks_keep_the_sdk_headers_and_refusals_exact(gateway, settings, fake_openai,
                                                                           monkeypatch):
    """The official SDK, one request at a time through uvicorn, the enforcement stage's clock moved
    20 ms per request (a steady 50 a second, whatever this machine's speed): after the first second
    the key's window is claimed in blocks, and still the n-th request sees n - 1 requests remaining
    below the limit, the limit's next request is refused with Retry-After, and the window holds no
    more than the limit."""
    import openai

    from meterline.gateway import enforcement
    from tests.conftest import make_tenant

    now = {"t": (time.time() // 600) * 600 + 1}  # a minute's first second, near the wall clock
    monkeypatch.setattr(enforcement, "clock", lambda: now["t"])
    t = make_tenant(settings, fake_openai[1])
    limit = RateLimit("key", t.key_id, rpm=120)
    BudgetStore(settings).put_limit(t.workspace, limit)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0)
    writes = gateway.services.budgets.window_writes
    remaining, refused = [], []
    for _ in range(140):
        try:
            response = sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
            remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
        except openai.RateLimitError as exc:
            refused.append(exc.response.headers)
        now["t"] += 0.02
    assert remaining == list(range(119, -1, -1)) and len(refused) == 20
    assert all(r["x-ratelimit-remaining-requests"] == "0" and int(r["retry-after"]) >= 1 for r in refused)
    assert window(settings, limit, now["t"] - 1, t.workspace)["n"] == 120
    # 50 single writes in the first second, then blocks (at most 50 / 4 and 1/8 of what was left), then one
    # write per refusal: far fewer than one per request.
    assert gateway.services.budgets.window_writes - writes < 50 + 30 + 20

