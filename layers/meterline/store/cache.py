"""Cache table: the exact-match response cache (meterline.cache decides, this module stores).

Keys (see schema.CACHE):
    pk = "<workspace>#<key>"        an entry: body (zlib JSON, B), usage (M), created_ms, expires_at,
                                    model, service_tier, endpoint, request_id (the filler)
    pk = "<workspace>#<key>#fill"   a fill marker: one request somewhere is calling the provider for
                                    this key; expires_at = when the claim lapses (seconds)
An answer whose compressed form does not fit an item (cache/entry.py MAX_STORED_BYTES) is spilled
when a spill bucket is configured: the object `cache/<workspace>/<key>` holds the compressed body,
and the item holds `spill` (the object key) and `spill_sha256` instead of `body`. The object is
written first, so an item never points at nothing; a read checks the digest (a stale or foreign
object is a miss). The bucket's lifecycle rule expires objects after the longest entry TTL.
`key` is the SHA-256 of the canonical request (cache/key.py), which already covers the workspace;
the workspace prefix keeps every item visibly a tenant's own and makes a cross-tenant read
impossible even by construction of the partition key.

Access patterns (request path, on the lean async client):
    get(ws, key, now)             GetItem (eventually consistent); an item past expires_at is a miss
                                  (TTL deletion runs up to days late)
    claim_fill(ws, key, now, s)   PutItem marker, condition: absent or lapsed -> True if ours
    put(ws, key, entry, ttl)      PutItem entry (last writer wins: entries for a key are equivalent)
    release_fill(ws, key)         PutItem marker lapsed (the fill did not produce a storable answer)
    spilled entries               + one S3 GetObject on a hit / one PutObject before the PutItem on a fill
The gateway role may only GetItem and PutItem here (and s3:GetObject/PutObject under cache/). To
drop a scope's entries at once, change its rule's namespace (`meterline cache set ... --namespace
v2`): old entries are never read again and expire by TTL.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

from meterline.cache.entry import (
    MAX_SPILL_BYTES,
    MAX_STORED_BYTES,
    Entry,
    compress,
    decompress,
    usage_from_dict,
    usage_to_dict,
)
from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import from_item, to_item
from meterline.store.ddb_http import DynamoError, DynamoHttp
from meterline.store.schema import CACHE

FILL_SUFFIX = "#fill"


SPILL_PREFIX = "cache"


def entry_pk(workspace: str, key: str) -> str:
    return f"{workspace}#{key}"


def spill_key(workspace: str, key: str) -> str:
    return f"{SPILL_PREFIX}/{workspace}/{key}"


class CacheStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(CACHE)
        self.bucket = settings.cache_spill_bucket
        # Built up front (never lazily on a warm request); calls go to a worker thread: spills are rare.
        self._s3: Any = aws.client("s3", settings) if self.bucket else None

    def can_store(self, blob: bytes) -> bool:
        """Whether a compressed answer of this size is stored: in the item, or spilled to S3."""
        return len(blob) <= MAX_STORED_BYTES or (self._s3 is not None and len(blob) <= MAX_SPILL_BYTES)

    async def _read_spill(self, object_key: str, digest: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                return self._s3.get_object(Bucket=self.bucket, Key=object_key)["Body"].read()
            except self._s3.exceptions.NoSuchKey:
                return None

        blob = await asyncio.to_thread(read)
        if blob is None or hashlib.sha256(blob).hexdigest() != digest:
            return None  # expired by the lifecycle rule, or overwritten by a later fill
        return blob

    async def get(self, client: DynamoHttp, workspace: str, key: str, now_s: int) -> Entry | None:
        result = await client.call("GetItem", {"TableName": self.table,
                                               "Key": {"pk": {"S": entry_pk(workspace, key)}}})
        raw = result.get("Item")
        if not raw:
            return None
        encoded = raw.pop("body", {}).get("B")  # DynamoDB's JSON protocol carries binary as base64
        item = from_item(raw)
        if int(item.get("expires_at", 0)) <= now_s:
            return None
        blob = base64.b64decode(encoded) if encoded else None
        spilled = item.get("spill")
        if blob is None and isinstance(spilled, str) and self._s3 is not None \
                and spilled == spill_key(workspace, key):  # only ever this tenant's own object
            blob = await self._read_spill(spilled, str(item.get("spill_sha256", "")))
        if not blob:
            return None
        return Entry(endpoint=item.get("endpoint", ""), body=decompress(blob),
                     usage=usage_from_dict(item.get("usage") or {}), created_ms=int(item.get("created_ms", 0)),
                     model=item.get("model"), service_tier=item.get("service_tier"),
                     request_id=item.get("request_id"))

    def entry_item(self, workspace: str, key: str, entry: Entry, ttl_s: int, blob: bytes | None = None,
                   spilled: str | None = None) -> dict:
        """The item in DynamoDB's JSON protocol (binary as base64), for the lean async client; with
        `spilled` (the body's SHA-256), the item points at the S3 object instead of holding the body."""
        fields = {
            "pk": entry_pk(workspace, key),
            "usage": usage_to_dict(entry.usage), "created_ms": entry.created_ms,
            "expires_at": entry.created_ms // 1000 + ttl_s, "endpoint": entry.endpoint, "model": entry.model,
            "service_tier": entry.service_tier, "request_id": entry.request_id, "workspace": workspace,
        }
        if spilled is not None:
            return to_item({**fields, "spill": spill_key(workspace, key), "spill_sha256": spilled})
        body = base64.b64encode(blob if blob is not None else compress(entry.body)).decode()
        return {"body": {"B": body}, **to_item(fields)}

    async def put(self, client: DynamoHttp, workspace: str, key: str, entry: Entry, ttl_s: int,
                  blob: bytes | None = None) -> None:
        blob = blob if blob is not None else compress(entry.body)
        spilled = None
        if len(blob) > MAX_STORED_BYTES:
            if not self.can_store(blob):
                raise ValueError("the answer is too large to store")
            await asyncio.to_thread(self._s3.put_object, Bucket=self.bucket, Key=spill_key(workspace, key),
                                    Body=blob, ContentType="application/zlib")
            spilled = hashlib.sha256(blob).hexdigest()
        await client.call("PutItem", {"TableName": self.table,
                                      "Item": self.entry_item(workspace, key, entry, ttl_s, blob, spilled)})

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
