"""Cache table: the exact-match response cache (meterline.cache decides, this module stores).

Keys (see schema.CACHE):
    pk = "<workspace>#<key>"        an entry: body (zlib JSON, B), usage (M), created_ms, expires_at,
                                    model, service_tier, endpoint, request_id (the filler)
    pk = "<workspace>#<key>#fill"   a fill marker: one request somewhere is calling the provider for
                                    this key; expires_at = when the claim lapses (seconds)
`key` is the SHA-256 of the canonical request (cache/key.py), which already covers the workspace;
the workspace prefix keeps every item visibly a tenant's own and makes a cross-tenant read
impossible even by construction of the partition key.

Access patterns (request path, on the lean async client):
    get(ws, key, now)             GetItem (eventually consistent); an item past expires_at is a miss
                                  (TTL deletion runs up to days late)
    claim_fill(ws, key, now, s)   PutItem marker, condition: absent or lapsed -> True if ours
    put(ws, key, entry, ttl)      PutItem entry (last writer wins: entries for a key are equivalent)
    release_fill(ws, key)         PutItem marker lapsed (the fill did not produce a storable answer)
The gateway role may only GetItem and PutItem here. To drop a scope's entries at once, change its
rule's namespace (`meterline cache set ... --namespace v2`): old entries are never read again and
expire by TTL.
"""

from __future__ import annotations

import base64

from meterline.cache.entry import Entry, compress, decompress, usage_from_dict, usage_to_dict
from meterline.config import Settings
from meterline.store.codec import from_item, to_item
from meterline.store.ddb_http import DynamoError, DynamoHttp
from meterline.store.schema import CACHE

FILL_SUFFIX = "#fill"


def entry_pk(workspace: str, key: str) -> str:
    return f"{workspace}#{key}"


class CacheStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(CACHE)

    async def get(self, client: DynamoHttp, workspace: str, key: str, now_s: int) -> Entry | None:
        result = await client.call("GetItem", {"TableName": self.table,
                                               "Key": {"pk": {"S": entry_pk(workspace, key)}}})
        raw = result.get("Item")
        if not raw:
            return None
        blob = raw.pop("body", {}).get("B")  # DynamoDB's JSON protocol carries binary as base64
        item = from_item(raw)
        if int(item.get("expires_at", 0)) <= now_s or not blob:
            return None
        return Entry(endpoint=item.get("endpoint", ""), body=decompress(base64.b64decode(blob)),
                     usage=usage_from_dict(item.get("usage") or {}), created_ms=int(item.get("created_ms", 0)),
                     model=item.get("model"), service_tier=item.get("service_tier"),
                     request_id=item.get("request_id"))

    def entry_item(self, workspace: str, key: str, entry: Entry, ttl_s: int, blob: bytes | None = None) -> dict:
        """The item in DynamoDB's JSON protocol (binary as base64), for the lean async client."""
        body = base64.b64encode(blob if blob is not None else compress(entry.body)).decode()
        return {"body": {"B": body}, **to_item({
            "pk": entry_pk(workspace, key),
            "usage": usage_to_dict(entry.usage), "created_ms": entry.created_ms,
            "expires_at": entry.created_ms // 1000 + ttl_s, "endpoint": entry.endpoint, "model": entry.model,
            "service_tier": entry.service_tier, "request_id": entry.request_id, "workspace": workspace,
        })}

    async def put(self, client: DynamoHttp, workspace: str, key: str, entry: Entry, ttl_s: int,
                  blob: bytes | None = None) -> None:
        await client.call("PutItem", {"TableName": self.table,
                                      "Item": self.entry_item(workspace, key, entry, ttl_s, blob)})

    async def claim_fill(self, client: DynamoHttp, workspace: str, key: str, now_s: int, hold_s: int) -> bool:
        try:
            await client.call("PutItem", {
                "TableName": self.table,
                "Item": {"pk": {"S": entry_pk(workspace, key) + FILL_SUFFIX}, "workspace": {"S": workspace},
                         "expires_at": {"N": str(now_s + hold_s)}},
                "ConditionExpression": "attribute_not_exists(pk) OR expires_at <= :now",
                "ExpressionAttributeValues": {":now": {"N": str(now_s)}},
            })
        except DynamoError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def release_fill(self, client: DynamoHttp, workspace: str, key: str) -> None:
        """Mark the claim lapsed (a put, not a delete: the gateway role has no DeleteItem anywhere)."""
        await client.call("PutItem", {"TableName": self.table, "Item": {
            "pk": {"S": entry_pk(workspace, key) + FILL_SUFFIX}, "workspace": {"S": workspace},
            "expires_at": {"N": "0"}}})


__all__ = ["CacheStore", "entry_pk"]
