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
