"""The embedded AWS's compact item storage (meterline.moto_compact) answers exactly as moto's own.

Each table of the schema is created twice in the embedded AWS from the same spec: one with the compact
storage `meterline dev` uses, one switched back to moto's stock storage. The same writes (every
DynamoDB type, updates in place, conditional and cancelled writes, transactions, deletes) go to both;
every read (GetItem, Query both ways, paged, filtered, projected, on GSIs) and the stream must answer
the same. Then the dev state file round-trips the compact tables item for item."""

from __future__ import annotations

import base64
import threading
import uuid
from collections import defaultdict
from typing import Any

import botocore.exceptions
import pytest

from meterline import devstate, moto_compact
from meterline.devenv import provision
from meterline.store import aws
from meterline.store.schema import ALL_TABLES, LEDGER, TableSpec

ACCOUNT_REGION = ("123456789012", "us-east-1")


def backend_table(name: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[ACCOUNT_REGION[0]][ACCOUNT_REGION[1]].tables[name]


def key_of(spec: TableSpec, n: int, part: int) -> dict[str, Any]:
    def value(attr: Any, text: str) -> dict[str, Any]:
        return {"N": str(len(text) * 1000 + n)} if attr.type == "N" else {attr.type: text}

    key = {spec.partition_key.name: value(spec.partition_key, f"p{part}")}
    if spec.sort_key:
        key[spec.sort_key.name] = value(spec.sort_key, f"{n:05d}#r")
    return key


def item_of(spec: TableSpec, n: int, part: int) -> dict[str, Any]:
    item = {
        **key_of(spec, n, part),
        "s": {"S": f"text {n}"}, "num": {"N": str(n * 7)}, "dec": {"N": "0.000123"},
        "bin": {"B": base64.b64encode(bytes([n % 256, 0, 255])).decode()},
        "flag": {"BOOL": n % 2 == 0}, "nothing": {"NULL": True},
        "nested": {"M": {"list": {"L": [{"S": "a"}, {"N": "1"}, {"M": {"deep": {"B": "AAE="}}}]},
                         "empty": {"M": {}}}},
        "ss": {"SS": ["x", f"y{n}"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": ["AAE=", "AQI="]},
    }
    for index in spec.indexes:  # GSI keys: a few values shared by many items
        for attr in (index.partition_key, index.sort_key):
            if attr and attr.name not in item:
                item[attr.name] = {"N": str(n % 3)} if attr.type == "N" else {attr.type: f"g{n % 3}"}
    return item


def strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k not in ("ResponseMetadata", "ConsumedCapacity")}


def both(ddb: Any, names: tuple[str, str], op: str, **kwargs: Any) -> Any:
    """Run `op` on the compact and the plain table; both must answer (or fail) the same."""
    outcomes = []
    for name in names:
        try:
            outcomes.append(("ok", strip(getattr(ddb, op)(TableName=name, **kwargs))))
        except botocore.exceptions.ClientError as exc:
            outcomes.append(("error", exc.response["Error"]["Code"]))
    assert outcomes[0] == outcomes[1], f"{op} {kwargs}"
    return outcomes[0]


@pytest.mark.parametrize("spec", ALL_TABLES, ids=lambda s: s.logical_name)
def test_compact_tables_answer_exactly_like_moto(settings, spec):
    ddb = aws.client("dynamodb", settings)
    compact = settings.table(spec)
    plain = f"{compact}-plain"
    ddb.create_table(**spec.create_table_kwargs(plain))
    backend_table(plain).items = defaultdict(dict)  # moto's stock storage
    names = (compact, plain)

    for n in range(12):
        both(ddb, names, "put_item", Item=item_of(spec, n, n % 2))
    # Updates in place: SET, ADD, REMOVE, list_append, on packed items.
    for n in (1, 4):
        both(ddb, names, "update_item", Key=key_of(spec, n, n % 2),
             UpdateExpression="SET s = :s, nested.list = list_append(nested.list, :l) ADD num :one REMOVE nothing",
             ExpressionAttributeValues={":s": {"S": "updated"}, ":l": {"L": [{"S": "z"}]}, ":one": {"N": "1"}},
             ReturnValues="ALL_NEW")
    # A conditional write that fails, a delete, a write that must not exist yet.
    both(ddb, names, "put_item", Item=item_of(spec, 3, 1), ConditionExpression="attribute_not_exists(s)")
    both(ddb, names, "delete_item", Key=key_of(spec, 5, 1), ReturnValues="ALL_OLD")
    # Transactions, one cancelled (no trace), one applied.
    for check in ("attribute_exists(s)", "attribute_not_exists(s)"):
        outcomes = []
        for name in names:
            try:
                ddb.transact_write_items(TransactItems=[
                    {"Update": {"TableName": name, "Key": key_of(spec, 2, 0), "UpdateExpression": "ADD num :k",
                                "ExpressionAttributeValues": {":k": {"N": "10"}}}},
                    {"ConditionCheck": {"TableName": name, "Key": key_of(spec, 3, 1), "ConditionExpression": check}},
                ])
                outcomes.append("ok")
            except botocore.exceptions.ClientError as exc:
                outcomes.append([r["Code"] for r in exc.response.get("CancellationReasons", [])])
        assert outcomes[0] == outcomes[1]

    # The compact table really is compact between requests: every stored item packed.
    stored = backend_table(compact).all_items()
    assert stored and all(type(i).__name__ == "CompactItem" and i._attrs is None for i in stored)

    for n in range(12):
        both(ddb, names, "get_item", Key=key_of(spec, n, n % 2), ConsistentRead=True)
        both(ddb, names, "get_item", Key=key_of(spec, n, n % 2), ProjectionExpression="s, nested.list[2]")
    pk = spec.partition_key.name
    for part in (0, 1):
        pk_value = key_of(spec, 0, part)[pk]
        for forward in (True, False):
            for extra in ({}, {"FilterExpression": "num > :five", "ExpressionAttributeValues": {":five": {"N": "5"}}},
                          {"ProjectionExpression": "s, bin"}):
                query: dict[str, Any] = {"KeyConditionExpression": "#p = :p", "ExpressionAttributeNames": {"#p": pk},
                                         "ScanIndexForward": forward, "Limit": 2, **extra}
                query["ExpressionAttributeValues"] = {":p": pk_value, **extra.get("ExpressionAttributeValues", {})}
                while True:  # page by page: LastEvaluatedKey and each page must match
                    _, page = both(ddb, names, "query", **query)
                    if "LastEvaluatedKey" not in page:
                        break
                    query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    for index in spec.indexes:
        query = {"IndexName": index.name, "KeyConditionExpression": "#g = :g", "Limit": 2,
                 "ExpressionAttributeNames": {"#g": index.partition_key.name},
                 "ExpressionAttributeValues": {":g": item_of(spec, 1, 1)[index.partition_key.name]}}
        while True:
            _, page = both(ddb, names, "query", **query)
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    both(ddb, names, "scan")

    if spec.stream:  # stream records: same events and images (event ids and times are per record)
        streams = aws.client("dynamodbstreams", settings)

        def records(name: str) -> list[Any]:
            arn = ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
            shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
            it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
            got = streams.get_records(ShardIterator=it["ShardIterator"], Limit=1000)["Records"]
            return [(r["eventName"], r["dynamodb"]["Keys"], r["dynamodb"].get("NewImage")) for r in got]

        assert records(compact) == records(plain)


def test_dev_state_round_trips_the_compact_tables(moto, settings, tmp_path):
    ddb = aws.client("dynamodb", settings)
    lock: threading.Lock = moto.server.app.lock
    for n in range(30):
        ddb.put_item(TableName=settings.table(LEDGER), Item=item_of(LEDGER, n, n % 3))
    before = sorted(map(str, ddb.scan(TableName=settings.table(LEDGER))["Items"]))

    path = tmp_path / "state.json"
    devstate.save(path, devstate.snapshot(settings, lock, {"api_key": "k", "workspace": "demo"}))
    loaded = devstate.load(path)
    assert loaded is not None and loaded["demo"] == {"api_key": "k", "workspace": "demo"}
    again = provision(moto.endpoint, prefix="t" + uuid.uuid4().hex[:10])
    restored = devstate.restore(again, lock, loaded)
    assert restored.kms_key_id == settings.kms_key_id
    after = sorted(map(str, ddb.scan(TableName=again.table(LEDGER))["Items"]))
    assert after == before
    with lock:
        assert not moto_compact._pending  # a restore leaves nothing unpacked
