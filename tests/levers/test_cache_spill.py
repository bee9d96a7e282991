"""Exact-match cache entries too large for a DynamoDB item are spilled to S3 (moto), read back on a
hit, and never served across tenants or after their object is gone."""

from __future__ import annotations

import base64
import os
import zlib

from meterline.store import aws
from meterline.store.cache import CacheStore, spill_key
from meterline.store.schema import CACHE
from tests.conftest import wait_for_ledger
from tests.levers.conftest import make_world
from tests.levers.test_response_cache import Q, cache_on, call, sdk

BIG = base64.b64encode(os.urandom(600_000)).decode()  # ~800 KB of text that zlib cannot shrink below 350 KB


def items(settings, workspace: str) -> list[dict]:
    ddb = aws.client("dynamodb", settings)
    pages = ddb.scan(TableName=settings.table(CACHE))["Items"]
    return [i for i in pages if i["pk"]["S"].startswith(workspace + "#") and not i["pk"]["S"].endswith("#fill")]


def test_a_large_answer_is_spilled_to_s3_and_served_from_it(gateway, settings, fakes):
    assert len(zlib.compress(BIG.encode(), 6)) > 350_000
    fakes.openai.chat.chunks = [BIG[:400_000], BIG[400_000:]]
    world = make_world(settings, fakes)
    cache_on(settings, world.workspace)
    client = sdk(gateway, world)
    first = call(client)
    assert first.headers["meterline-cache"] == "stored"
    [item] = items(settings, world.workspace)
    key = item["pk"]["S"].split("#", 1)[1]
    assert "body" not in item
    assert item["spill"]["S"] == spill_key(world.workspace, key) == f"cache/{world.workspace}/{key}"
    s3 = aws.client("s3", settings)
    stored = s3.get_object(Bucket=settings.cache_spill_bucket, Key=item["spill"]["S"])["Body"].read()
    assert zlib.decompress(stored) == first.content  # the answer as the client received it

    second = call(client)
    assert second.headers["meterline-cache"] == "hit"
    assert second.parse().choices[0].message.content == BIG
    streamed = list(client.chat.completions.create(model="openai/gpt-4o", messages=Q, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == BIG  # replayed as SSE
    assert len(fakes.openai.chat.requests) == 1
    miss, hit, hit2 = wait_for_ledger(settings, world.workspace, 3)
    assert miss["cache_spilled"] is True and miss["cache_stored"] is True
    assert hit["outcome"] == hit2["outcome"] == "cache_hit" and hit["savings"] == {"exact_cache": miss["cost_micros"]}

    # The object expired (lifecycle) before the item: a miss, filled again.
    s3.delete_object(Bucket=settings.cache_spill_bucket, Key=item["spill"]["S"])
    assert call(client).headers["meterline-cache"] == "stored"
    assert call(client).headers["meterline-cache"] == "hit"
    assert len(fakes.openai.chat.requests) == 2


def test_a_spilled_entry_is_never_another_tenants(gateway, settings, fakes):
    fakes.openai.chat.chunks = [BIG]
    a, b = make_world(settings, fakes), make_world(settings, fakes)
    for w in (a, b):
        cache_on(settings, w.workspace)
    assert call(sdk(gateway, a)).headers["meterline-cache"] == "stored"
    [item_a] = items(settings, a.workspace)
    # B sends the same body: its own key, a miss, its own object.
    assert call(sdk(gateway, b)).headers["meterline-cache"] == "stored"
    [item_b] = items(settings, b.workspace)
    assert item_b["spill"]["S"].startswith(f"cache/{b.workspace}/") and item_b["spill"] != item_a["spill"]
    # An item of B forged to point at A's object (and digest) is not served from it.
    forged = {**item_b, "spill": item_a["spill"], "spill_sha256": item_a["spill_sha256"]}
    aws.client("dynamodb", settings).put_item(TableName=settings.table(CACHE), Item=forged)
    response = call(sdk(gateway, b))
    assert response.headers["meterline-cache"] == "stored"  # a miss: B's provider answered again
    assert len(fakes.openai.chat.requests) == 3


def test_without_a_spill_bucket_large_answers_are_not_stored(start_gateway, settings, fakes):
    fakes.openai.chat.chunks = [BIG]
    gateway = start_gateway(cache_spill_bucket="")
    world = make_world(settings, fakes)
    cache_on(settings, world.workspace)
    client = sdk(gateway, world)
    assert call(client).headers["meterline-cache"] == "miss"
    assert call(client).headers["meterline-cache"] == "miss"
    records = wait_for_ledger(settings, world.workspace, 2)
    assert {r["cache_not_stored"] for r in records} == {"too_large"}
    assert CacheStore(gateway.settings).can_store(b"x" * 350_000) and items(settings, world.workspace) == []
