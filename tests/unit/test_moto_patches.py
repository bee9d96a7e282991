"""The embedded AWS's patched TransactWriteItems keeps DynamoDB's semantics (all or nothing, per-item
cancellation reasons, no stream records from a cancelled transaction) without copying tables, and
its streams stay bounded."""

from __future__ import annotations

import botocore.exceptions
import pytest

from meterline import moto_patches
from meterline.store import aws
from meterline.store.schema import LEDGER


def test_a_cancelled_transaction_leaves_no_trace(settings):
    ddb = aws.client("dynamodb", settings)
    table = settings.table(LEDGER)
    key_attrs = [k["AttributeName"] for k in ddb.describe_table(TableName=table)["Table"]["KeySchema"]]

    def item(n: int, **extra):
        return {**{a: {"S": f"{a}-{n}"} for a in key_attrs}, **extra}

    ddb.put_item(TableName=table, Item=item(1, v={"N": "1"}))
    streams = aws.client("dynamodbstreams", settings)
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]

    def stream_count() -> int:
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        return len(streams.get_records(ShardIterator=it["ShardIterator"], Limit=1000)["Records"])

    before = stream_count()
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": item(2)}},
            {"Update": {"TableName": table, "Key": item(1), "UpdateExpression": "SET v = v + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            {"ConditionCheck": {"TableName": table, "Key": item(3), "ConditionExpression": "attribute_exists(v)"}},
        ])
    reasons = [r["Code"] for r in err.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "ConditionalCheckFailed"]
    assert "Item" not in ddb.get_item(TableName=table, Key=item(2), ConsistentRead=True)
    assert ddb.get_item(TableName=table, Key=item(1), ConsistentRead=True)["Item"]["v"] == {"N": "1"}
    assert stream_count() == before

    ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": table, "Item": item(2)}},
        {"Update": {"TableName": table, "Key": item(1), "UpdateExpression": "SET v = v + :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}}])
    assert ddb.get_item(TableName=table, Key=item(1), ConsistentRead=True)["Item"]["v"] == {"N": "2"}
    assert stream_count() == before + 2


def test_streams_keep_their_newest_records_with_stable_sequence_numbers(settings, monkeypatch):
    monkeypatch.setattr(moto_patches, "STREAM_MAX_RECORDS", 5)
    ddb = aws.client("dynamodb", settings)
    table = settings.table(LEDGER)
    key_attrs = [k["AttributeName"] for k in ddb.describe_table(TableName=table)["Table"]["KeySchema"]]
    for n in range(8):
        ddb.put_item(TableName=table, Item={a: {"S": f"{a}-{n}"} for a in key_attrs})
    streams = aws.client("dynamodbstreams", settings)
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=it["ShardIterator"], Limit=100)["Records"]
    assert len(records) == 5
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert numbers == list(range(numbers[0], numbers[0] + 5))


def test_simple_updates_answer_exactly_like_moto(settings, monkeypatch):
    """The direct path for SET/ADD/REMOVE on top-level attributes (budget counters, rollups) against
    moto's own parser and executor: same answers, same errors, same items, same stream records."""
    from moto.dynamodb.parsing.executors import UpdateExpressionExecutor

    executed = []
    original_execute = UpdateExpressionExecutor.execute
    monkeypatch.setattr(UpdateExpressionExecutor, "execute",
                        lambda self, *a: (executed.append(moto_patches.FAST_UPDATES), original_execute(self, *a))[1])
    ddb = aws.client("dynamodb", settings)
    fast, slow = settings.table(LEDGER), settings.table(LEDGER) + "-moto"
    ddb.create_table(**LEDGER.create_table_kwargs(slow))

    def run(call: dict) -> tuple:
        outcomes = []
        for table, on in ((fast, True), (slow, False)):
            monkeypatch.setattr(moto_patches, "FAST_UPDATES", on)
            try:
                answer = ddb.update_item(TableName=table, **call)
                outcomes.append(("ok", answer.get("Attributes")))
            except botocore.exceptions.ClientError as exc:
                outcomes.append((exc.response["Error"]["Code"], exc.response["Error"]["Message"]))
        assert outcomes[0] == outcomes[1], call
        return outcomes[0]

    key = {"pk": {"S": "p"}, "sk": {"S": "s"}}
    values = {":one": {"N": "1"}, ":d": {"N": "2.50"}, ":neg": {"N": "-7"}, ":s": {"S": "lease-1"},
              ":t": {"BOOL": True}, ":null": {"NULL": True}, ":b": {"B": b"\x00\x01"}}

    def call(expression: str, used: tuple[str, ...], names: dict | None = None, **extra) -> dict:
        body = {"Key": key, "UpdateExpression": expression, "ReturnValues": "ALL_NEW",
                "ExpressionAttributeValues": {v: values[v] for v in used}, **extra}
        if names:
            body["ExpressionAttributeNames"] = names
        return body

    executed.clear()
    assert run(call("ADD committed :one, #dc :d", (":one", ":d"), {"#dc": "dc"}))[0] == "ok"  # creates the item
    assert run(call("SET #lease = :s, flag = :t, gone = :null, payload = :b ADD committed :neg, n :one",
                    (":s", ":t", ":null", ":b", ":neg", ":one"), {"#lease": "lease"}))[0] == "ok"
    assert run(call("REMOVE #lease, gone ADD #dc :d", (":d",), {"#lease": "lease", "#dc": "dc"},
                    ReturnValues="UPDATED_OLD"))[0] == "ok"
    assert run(call("add committed :one set note = :s", (":one", ":s"), ReturnValues="ALL_OLD"))[0] == "ok"
    fast_path_executions = sum(executed)  # moto's executor runs with the direct path on
    # Conditions, errors and everything the direct path leaves to moto.
    assert run(call("ADD committed :one", (":one",), ConditionExpression="attribute_not_exists(committed)"))[0] \
        == "ConditionalCheckFailedException"
    assert run(call("ADD note :one", (":one",)))[0] == "ValidationException"  # a string is not a number
    assert run(call("ADD #k :one", (":one",), {"#k": "sk"}))[0] == "ValidationException"  # a key attribute
    assert run(call("ADD status :one", (":one",)))[0] == "ValidationException"  # a reserved word
    assert run(call("SET n = n + :one", (":one",)))[0] == "ok"
    assert run(call("SET m = if_not_exists(m, :one), committed = :d", (":one", ":d")))[0] == "ok"
    assert fast_path_executions == 0 and sum(executed) > 0  # the simple ones never reached moto's executor

    items = [ddb.get_item(TableName=t, Key=key, ConsistentRead=True)["Item"] for t in (fast, slow)]
    assert items[0] == items[1]
    streams = aws.client("dynamodbstreams", settings)

    def images(table: str) -> list:
        arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        return [(r["eventName"], r["dynamodb"].get("NewImage"))
                for r in streams.get_records(ShardIterator=it["ShardIterator"], Limit=100)["Records"]]

    assert images(fast) == images(slow)


def test_updated_new_names_every_attribute_the_update_sets_or_adds(settings):
    """As DynamoDB: UPDATED_NEW returns each attribute the expression SETs or ADDs, changed or not
    (moto returned only the changed ones, so `ADD spent :zero` read no `spent`)."""
    ddb = aws.client("dynamodb", settings)
    table = settings.table(LEDGER)
    key = {"pk": {"S": "u"}, "sk": {"S": "1"}}
    ddb.put_item(TableName=table, Item={**key, "spent": {"N": "5"}, "note": {"S": "same"}, "extra": {"N": "1"}})
    answer = ddb.update_item(TableName=table, Key=key, ReturnValues="UPDATED_NEW",
                             UpdateExpression="SET note = :same ADD spent :zero, committed :two REMOVE extra",
                             ExpressionAttributeValues={":same": {"S": "same"}, ":zero": {"N": "0"},
                                                        ":two": {"N": "2"}})
    assert answer["Attributes"] == {"note": {"S": "same"}, "spent": {"N": "5"}, "committed": {"N": "2"}}
    # A map value goes through moto's executor; the answer still names what the expression sets.
    answer = ddb.update_item(TableName=table, Key=key, ReturnValues="UPDATED_NEW",
                             UpdateExpression="SET lease = :m ADD spent :zero",
                             ExpressionAttributeValues={":m": {"M": {"w": {"N": "3"}}}, ":zero": {"N": "0"}})
    assert answer["Attributes"] == {"lease": {"M": {"w": {"N": "3"}}}, "spent": {"N": "5"}}
    # A later update on moto's own path does not inherit these names.
    answer = ddb.update_item(TableName=table, Key=key, ReturnValues="UPDATED_NEW",
                             UpdateExpression="SET committed = committed + :two",
                             ExpressionAttributeValues={":two": {"N": "2"}})
    assert answer["Attributes"] == {"committed": {"N": "4"}}
