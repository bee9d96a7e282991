"""Semantic-dedup table: LSH bucket items and stored answers, per workspace, with TTL.

Keys (see schema.SEMANTIC):
    pk = "<ws>#b#<scope>#<band>#<bits>", sk = "<ts ms>#<entry id>"   one per band of an entry:
        v (base64 int8 unit vector), g (guard JSON), rid (request id), cost (micro-dollars),
        srv (an answer is stored), expires_at
    pk = "<ws>#e#<scope>", sk = "<ts ms>#<entry id>"                the stored answer (serve mode):
        body (base64 zlib of the response body), model, expires_at

Access patterns (request path, the lean async client):
    candidates(scope, buckets)   BANDS concurrent Query pk = bucket, newest first, Limit PER_BUCKET
    answer(scope, sk)            GetItem (serve mode, on a hit only)
    put(...)                     PutItem per band (+ the answer), concurrently
Expired items are filtered at read (DynamoDB deletes them late, typically within ~48 h).
The pk starts with the workspace id, so IAM can scope access by leading key and no tenant can
read another's bucket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import zlib

from meterline.cache import semantic
from meterline.config import Settings
from meterline.store.codec import from_item, to_item
from meterline.store.ddb_http import DynamoHttp
from meterline.store.schema import SEMANTIC

PER_BUCKET = 25
MAX_ANSWER_BYTES = 64 * 1024  # compressed; larger answers are not stored (detect still works)


def bucket_pk(workspace: str, bucket: str) -> str:
    return f"{workspace}#b#{bucket}"


def answer_pk(workspace: str, scope: str) -> str:
    return f"{workspace}#e#{scope}"


class SemanticStore:
    def __init__(self, settings: Settings):
        self.table = settings.table(SEMANTIC)

    async def candidates(self, client: DynamoHttp, workspace: str, buckets: list[str]) -> list[semantic.Entry]:
        now = int(time.time())
        pages = await asyncio.gather(*(client.call("Query", {
            "TableName": self.table, "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": bucket_pk(workspace, b)}},
            "ScanIndexForward": False, "Limit": PER_BUCKET}) for b in buckets))
        entries = []
        for page in pages:
            for raw in page.get("Items", []):
                item = from_item(raw)
                if int(item.get("expires_at", 0)) <= now:
                    continue
                entries.append(semantic.Entry(
                    entry_id=item["sk"], unit=semantic.dequantize(base64.b64decode(item["v"])),
                    guard=semantic.Guard.from_dict(json.loads(item["g"])), request_id=item.get("rid", ""),
                    cost_micros=int(item.get("cost", 0)), servable=bool(item.get("srv"))))
        return entries

    async def answer(self, client: DynamoHttp, workspace: str, scope: str, entry_id: str) -> bytes | None:
        out = await client.call("GetItem", {"TableName": self.table, "ConsistentRead": False, "Key": to_item(
            {"pk": answer_pk(workspace, scope), "sk": entry_id})})
        item = from_item(out["Item"]) if out.get("Item") else None
        if item is None or int(item.get("expires_at", 0)) <= int(time.time()):
            return None
        return zlib.decompress(base64.b64decode(item["body"]))

    async def put(self, client: DynamoHttp, workspace: str, scope: str, buckets: list[str], unit: list[float],
                  guard: semantic.Guard, request_id: str, cost_micros: int, ttl_s: int,
                  answer: bytes | None = None, model: str | None = None) -> str:
        now = time.time()
        entry_id = f"{int(now * 1000):013d}#{request_id}"
        expires = int(now) + ttl_s
        stored = None
        if answer is not None:
            packed = base64.b64encode(zlib.compress(answer, 6)).decode()
            stored = packed if len(packed) <= MAX_ANSWER_BYTES else None
        vector = base64.b64encode(semantic.quantize(unit)).decode()
        writes = [client.call("PutItem", {"TableName": self.table, "Item": to_item({
            "pk": bucket_pk(workspace, b), "sk": entry_id, "v": vector, "g": json.dumps(guard.to_dict()),
            "rid": request_id, "cost": cost_micros, "srv": stored is not None, "expires_at": expires})})
            for b in buckets]
        if stored is not None:
            writes.append(client.call("PutItem", {"TableName": self.table, "Item": to_item({
                "pk": answer_pk(workspace, scope), "sk": entry_id, "body": stored, "model": model,
                "expires_at": expires})}))
        await asyncio.gather(*writes)
        return entry_id
