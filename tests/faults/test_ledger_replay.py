"""`ledger_write_failed` has a way back: the gateway's log line, as CloudWatch Logs would deliver it to
the replay function (functions/replay/handler.py), writes the record exactly once; and so has
`budget_settle_failed`: the settlement reaches the budget counter exactly once.

The ledger write is made to fail in the gateway by the store proxy (tests/fakes/slow_store.py), not by
patching our code: `refuse` answers 500 and never applies the write (a real failure); `answer` applies
it and holds the answer past the client's deadline (a spurious failure: the write is in the ledger,
the gateway logged it as failed). The log line is what the gateway's logger emits on Lambda
(Powertools' JSON formatter), gzip'd and base64'd into a subscription event like CloudWatch Logs
sends. Rollups are then folded from the ledger table's stream (rollup.StreamPoller), as on AWS.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import time

import httpx
import pytest

from meterline.budgets.model import Budget, RateLimit
from meterline.replay import MESSAGE, SETTLE_MESSAGE
from meterline.rollup import StreamPoller
from meterline.store import aws
from meterline.store.budgets import BudgetStore
from meterline.store.rollups import RollupStore
from meterline.store.schema import BUDGETS, LEDGER
from tests.conftest import ledger_items, make_tenant, wait_for_ledger
from tests.functional.test_admin_handler import load_handler

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}
LOG_GROUP = "/aws/lambda/Meterline-DataPlaneGateway"
NO_SETTLEMENTS = {"settled": 0, "settle_duplicates": 0}


@pytest.fixture
def gateway_log():
    """The gateway's log lines as its logger writes them on Lambda: logs.configure installs Powertools'
    Logger, whose handler formats with LambdaPowertoolsFormatter (extra fields at top level)."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LambdaPowertoolsFormatter(service="gateway"))
    handler.setLevel(logging.ERROR)
    logger = logging.getLogger("meterline")
    logger.addHandler(handler)
    yield lambda: [line for line in stream.getvalue().splitlines() if line]
    logger.removeHandler(handler)


@pytest.fixture
def replay_handler(settings, monkeypatch):
    """The replay Lambda handler with its environment (ledger table, dead-letter queue) on moto."""
    sqs = aws.client("sqs", settings)
    queue = sqs.create_queue(QueueName=settings.table(LEDGER) + "-replay-dlq")["QueueUrl"]
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("METERLINE_REPLAY_DLQ_URL", queue)
    module = load_handler("functions/replay/handler.py", "replay_handler_" + settings.table(LEDGER))

    def letters() -> list[dict]:
        out = []
        while True:
            page = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not page.get("Messages"):
                return out
            for message in page["Messages"]:
                out.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    return module.handler, letters


def subscription_event(messages: list[str], message_type: str = "DATA_MESSAGE") -> dict:
    """What CloudWatch Logs sends a Lambda destination: {"awslogs": {"data": base64(gzip(json))}}."""
    now = int(time.time() * 1000)
    payload = {
        "messageType": message_type, "owner": "123456789012", "logGroup": LOG_GROUP,
        "logStream": "2026/12/01/[$LATEST]0123456789abcdef", "subscriptionFilters": ["LedgerReplay"],
        "logEvents": [{"id": f"3{i:055d}", "timestamp": now, "message": m} for i, m in enumerate(messages)],
    }
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(payload).encode())).decode()}}


def emitted_metrics(out: str) -> dict[str, int]:
    """The EMF lines the handler printed: {metric name: value} for namespace Meterline, service=replay."""
    metrics = {}
    for line in out.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        if not isinstance(blob, dict) or "_aws" not in blob:
            continue
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Meterline" and directive["Dimensions"] == [["service"]]
        assert blob["service"] == "replay"
        for metric in directive["Metrics"]:
            value = blob[metric["Name"]]  # EMF: a number or a list of them
            metrics[metric["Name"]] = int(sum(value) if isinstance(value, list) else value)
    return metrics


def _post(gateway, key: str) -> httpx.Response:
    with httpx.Client(timeout=60) as http:
        return http.post(gateway.base_url + "/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"})


@pytest.mark.parametrize("fault", ["refuse", "answer"])
def test_a_failed_ledger_write_is_replayed_once_from_its_log_line(start_gateway, settings, slow_store, fake_openai,
                                                                  gateway_log, replay_handler, capsys, fault):
    store, url = slow_store
    gateway = start_gateway(aws_endpoint=url, store_attempt_timeout_s=5.0, store_deadline_s=6.0)
    handler, letters = replay_handler
    t = make_tenant(settings, fake_openai[1])
    assert _post(gateway, t.api_key).status_code == 200  # warm, through the healthy store: recorded
    ledger = settings.table(LEDGER).encode()
    store.rules.append((lambda target, body: target.endswith(".PutItem") and ledger in body, fault))
    response = _post(gateway, t.api_key)
    store.release.set()
    assert response.status_code == 200  # the provider answered and billed: the caller gets the answer
    request_id = response.headers["meterline-request-id"]
    deadline = time.monotonic() + 60
    while store.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    store.rules.clear()

    lines = [line for line in gateway_log() if json.loads(line).get("message") == MESSAGE]
    assert len(lines) == 1, lines
    logged = json.loads(lines[0])["ledger_record"]
    assert logged["request_id"] == request_id and logged["cost_micros"] > 0
    in_ledger = [r for r in ledger_items(settings, t.workspace) if r["request_id"] == request_id]
    # refuse: the write never applied; answer: it applied although the gateway saw it fail.
    assert len(in_ledger) == (1 if fault == "answer" else 0)

    capsys.readouterr()
    event = subscription_event(lines)
    first = handler(event, None)
    expected = {"replayed": 1, "duplicates": 0} if fault == "refuse" else {"replayed": 0, "duplicates": 1}
    assert first == {**expected, "unreplayable": 0, **NO_SETTLEMENTS}
    assert emitted_metrics(capsys.readouterr().out) == {
        "LedgerReplayed": expected["replayed"], "LedgerReplayDuplicates": expected["duplicates"],
        "LedgerUnreplayable": 0, "BudgetSettlementsReplayed": 0}
    # Delivered again (CloudWatch Logs or Lambda retrying): nothing more is written.
    assert handler(event, None) == {"replayed": 0, "duplicates": 1, "unreplayable": 0, **NO_SETTLEMENTS}

    records = wait_for_ledger(settings, t.workspace, 2)
    assert len(records) == 2
    [replayed] = [r for r in records if r["request_id"] == request_id]
    assert {k: v for k, v in replayed.items() if k in logged} == logged  # the record as the gateway built it
    assert letters() == []

    # Rollups from the ledger's stream: each request counted once, whatever was replayed.
    assert StreamPoller(settings).poll_once() >= 2
    [total] = RollupStore(settings).by_dimension(t.workspace, f"M#{logged['month']}", "total")
    assert total["requests"] == 2 and total["cost_micros"] == sum(r["cost_micros"] for r in records)
    assert total["cost_micros"] == 2 * logged["cost_micros"]  # both requests priced alike


def test_lines_that_cannot_be_replayed_are_dead_lettered_with_their_reason(settings, replay_handler, capsys):
    handler, letters = replay_handler
    good = {"request_id": "req_ok", "parent_request_id": "req_ok", "ts": int(time.time() * 1000), "day": "x",
            "month": "2026-12", "workspace": "ws_replay", "outcome": "ok", "cost_micros": 7}

    def line(record: object, message: str = MESSAGE) -> str:
        return json.dumps({"level": "ERROR", "message": message, "service": "gateway", "ledger_record": record})

    messages = [
        line(good),
        line(good)[:80],  # cut short (a line over CloudWatch's event size is truncated)
        "START RequestId: 1f2e Version: 7",  # not JSON
        line({**good, "request_id": "req_float", "cost_micros": 0.5}),  # a float is not money-safe
        line({k: v for k, v in good.items() if k != "ts"}),  # no key
        line({**good, "request_id": "req_hash", "workspace": "a#b"}),  # not a workspace id
        line(good, message="request"),  # another line of the log group
        line({**good, "request_id": "req_big", "blob": "x" * 500_000}),  # over DynamoDB's 400 KB item limit
    ]
    capsys.readouterr()
    assert handler(subscription_event(messages), None) == {"replayed": 1, "duplicates": 0, "unreplayable": 7,
                                                           **NO_SETTLEMENTS}
    assert emitted_metrics(capsys.readouterr().out)["LedgerUnreplayable"] == 7
    kept = letters()
    assert len(kept) == 7
    assert all(k["logGroup"] == LOG_GROUP and k["id"] and k["reason"] for k in kept)
    reasons = " | ".join(k["reason"] for k in kept)
    for expected in ("not a JSON log line", "float", "ledger_record.ts", "workspace id", "not a ledger_write_failed or",
                     "the ledger refused the record"):
        assert expected in reasons, reasons
    assert [k for k in kept if "message_truncated" in k]  # the 500 KB line: referred to by its coordinates
    assert [r["request_id"] for r in ledger_items(settings, "ws_replay")] == ["req_ok"]
    # CloudWatch Logs' own reachability check carries no records.
    assert handler(subscription_event([], "CONTROL_MESSAGE"), None) == {"replayed": 0, "duplicates": 0,
                                                                         "unreplayable": 0, **NO_SETTLEMENTS}
    # Not a subscription event at all: kept as is, counted.
    assert handler({"awslogs": {"data": "not base64!"}}, None)["unreplayable"] == 1
    assert "not a CloudWatch Logs subscription event" in letters()[0]["reason"]


def test_a_store_failure_is_raised_for_lambda_to_retry(settings, replay_handler, monkeypatch):
    """A store failure is not a bad record: the invocation fails (Lambda retries it, then sends it to the
    on-failure destination), and nothing is dead-lettered as unreplayable."""
    handler, letters = replay_handler
    monkeypatch.setenv(LEDGER.env_var, "no-such-ledger-table")
    record = {"request_id": "req_x", "ts": int(time.time() * 1000), "workspace": "ws_gone", "cost_micros": 1}
    line = json.dumps({"message": MESSAGE, "ledger_record": record})
    with pytest.raises(Exception, match=r"ResourceNotFound|non-existent|not found"):
        handler(subscription_event([line]), None)
    assert letters() == []


def test_a_failed_settlement_reaches_the_budget_counter_once_through_the_replay(
        start_gateway, settings, slow_store, fake_openai, gateway_log, replay_handler, capsys):
    """Every attempt to settle fails (the store refuses them, never applying one): before, the
    reservation sat until its lease expired and the sweeper released it, and the request's actual
    spend never reached the budget. The `budget_settle_failed` line carries the settlement; replayed,
    the lease is replaced by the actual cost, exactly once however often the line is delivered."""
    store, url = slow_store
    gateway = start_gateway(aws_endpoint=url, store_attempt_timeout_s=5.0, store_deadline_s=6.0)
    handler, letters = replay_handler
    t = make_tenant(settings, fake_openai[1])
    scope = f"workspace:{t.workspace}"
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=1_000_000))
    budgets = settings.table(BUDGETS).encode()
    store.rules.append((lambda target, body: target.endswith(".UpdateItem") and budgets in body
                        and b"REMOVE #lease ADD committed :delta" in body, "refuse"))
    response = _post(gateway, t.api_key)
    assert response.status_code == 200  # the caller is not failed for a settlement
    request_id = response.headers["meterline-request-id"]
    [record] = wait_for_ledger(settings, t.workspace, 1)
    deadline = time.monotonic() + 60
    while not [line for line in gateway_log() if SETTLE_MESSAGE in line] and time.monotonic() < deadline:
        time.sleep(0.05)
    store.rules.clear()
    assert store.refused >= 1
    lines = [line for line in gateway_log() if json.loads(line).get("message") == SETTLE_MESSAGE]
    assert len(lines) == 1, lines
    settlement = json.loads(lines[0])["settlement"]
    assert settlement["request_id"] == request_id and settlement["scope"] == scope
    assert settlement["actual"] == record["cost_micros"] > 0 and settlement["worst"] > 0
    month = settlement["month"]
    held = BudgetStore(settings).counter(t.workspace, scope, month)
    # Before the replay: the worst case still held, the actual spend nowhere on the counter.
    assert int(held["reserved"]) == settlement["worst"] and int(held.get("spent", 0)) == 0

    capsys.readouterr()
    event = subscription_event(lines)
    assert handler(event, None) == {"replayed": 0, "duplicates": 0, "unreplayable": 0, "settled": 1,
                                    "settle_duplicates": 0}
    assert emitted_metrics(capsys.readouterr().out)["BudgetSettlementsReplayed"] == 1
    counter = BudgetStore(settings).counter(t.workspace, scope, month)
    assert int(counter["spent"]) == int(counter["committed"]) == record["cost_micros"]
    assert int(counter["reserved"]) == 0 and not [k for k in counter if k.startswith("l_")]
    assert int(counter[f"ds_{settlement['day']}"]) == record["cost_micros"]
    # Delivered again (or the gateway's failed attempt had applied after all): nothing more is added.
    assert handler(event, None) == {"replayed": 0, "duplicates": 0, "unreplayable": 0, "settled": 0,
                                    "settle_duplicates": 1}
    again = BudgetStore(settings).counter(t.workspace, scope, month)
    assert {k: again[k] for k in ("spent", "committed", "reserved")} == {
        k: counter[k] for k in ("spent", "committed", "reserved")}
    assert letters() == []


@pytest.mark.parametrize("fault", ["refuse", "answer"])
def test_a_pooled_request_whose_ledger_write_failed_is_added_once(start_gateway, settings, slow_store, fake_openai,
                                                                   gateway_log, replay_handler, monkeypatch, fault):
    """A request carved from a budget pool settles through its ledger record (which names the pool and
    its cost). When that record's write fails, the gateway adds the cost on its own (under the request's
    marker) and logs the record for the replay without the pools it names: so the budget's spend equals
    the ledger's costs once the line is replayed (refuse) - or already, when the failed write did land
    (answer), the pool's release not counting it twice."""
    from meterline.gateway import enforcement
    from meterline.store.ledger import POOLS_FIELD

    now = {"t": (time.time() // 600) * 600 + 1}
    monkeypatch.setattr(enforcement, "clock", lambda: now["t"])  # a steady 100 requests a second
    store, url = slow_store
    gateway = start_gateway(aws_endpoint=url, store_attempt_timeout_s=5.0, store_deadline_s=6.0)
    handler, _ = replay_handler
    t = make_tenant(settings, fake_openai[1])
    scope = f"workspace:{t.workspace}"
    BudgetStore(settings).put_budget(t.workspace, Budget("workspace", t.workspace, monthly_micros=10**9))
    BudgetStore(settings).put_limit(t.workspace, RateLimit("key", t.key_id, rpm=10**6))
    for _ in range(120):  # the first second reserves alone; then pools
        assert _post(gateway, t.api_key).status_code == 200
        now["t"] += 0.01
    ledgered = gateway.services.budgets.ledger_settlements
    assert ledgered > 0
    ledger = settings.table(LEDGER).encode()
    store.rules.append((lambda target, body: target.endswith(".PutItem") and ledger in body, fault))
    response = _post(gateway, t.api_key)
    now["t"] += 0.01
    store.release.set()
    assert response.status_code == 200
    deadline = time.monotonic() + 60
    while store.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    store.rules.clear()
    assert gateway.services.budgets.ledger_settlements == ledgered + 1  # it was carved from a pool
    for _ in range(5):
        assert _post(gateway, t.api_key).status_code == 200
        now["t"] += 0.01
    [line] = [line for line in gateway_log() if json.loads(line).get("message") == MESSAGE]
    logged = json.loads(line)["ledger_record"]
    assert logged["request_id"] == response.headers["meterline-request-id"] and POOLS_FIELD not in logged
    if fault == "refuse":
        assert handler(subscription_event([line]), None)["replayed"] == 1
    records = wait_for_ledger(settings, t.workspace, 126)
    assert len(records) == 126
    named = [r for r in records if POOLS_FIELD in r]
    assert named and all(set(r[POOLS_FIELD].values()) == {r["cost_micros"]} for r in named)
    month = logged["month"]
    deadline = time.monotonic() + 60  # the last pool's window ends: its timer releases it
    while int(BudgetStore(settings).counter(t.workspace, scope, month).get("reserved", 0)):
        assert time.monotonic() < deadline, "a pool was never released"
        time.sleep(0.1)
    counter = BudgetStore(settings).counter(t.workspace, scope, month)
    assert int(counter["spent"]) == int(counter["committed"]) == sum(r["cost_micros"] for r in records)
    assert int(counter["requests"]) == 126 and not [k for k in counter if k.startswith(("l_", "s_"))]
