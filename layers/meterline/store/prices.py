"""The accepted price catalog (`meterline prices sync`), stored beside the workspaces.

Workspaces table, a partition no workspace id can take (ids are `ws_…` / names without `#`):
    pk = "#catalog", sk = "head"   {digest, accepted_at, source, models}: small, read by gateways
    pk = "#catalog", sk = "body"   {digest, body: zlib-compressed compiled catalog JSON}

Access patterns:
    head()   GetItem head         gateways, in the background refresh of their catalog cache
    body()   GetItem body         only when the head's digest differs from the catalog in memory
    put()    TransactWriteItems   control plane (`prices sync --accept`); the body first, then
                                  the head that points at it, in one transaction
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

from meterline.config import Settings
from meterline.store import aws
from meterline.store.schema import WORKSPACES

PK = "#catalog"


@dataclass(frozen=True)
class CatalogHead:
    digest: str
    accepted_at: str
    source: str
    models: int


def digest_of(catalog: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(catalog, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


class PriceCatalogStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(WORKSPACES)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    def head(self) -> CatalogHead | None:
        item = self._ddb.get_item(TableName=self.table, Key={"pk": {"S": PK}, "sk": {"S": "head"}},
                                  ConsistentRead=True).get("Item")
        if not item:
            return None
        return CatalogHead(item["digest"]["S"], item["accepted_at"]["S"], item["source"]["S"],
                           int(item["models"]["N"]))

    def body(self, digest: str) -> dict[str, Any] | None:
        item = self._ddb.get_item(TableName=self.table, Key={"pk": {"S": PK}, "sk": {"S": "body"}},
                                  ConsistentRead=True).get("Item")
        if not item or item["digest"]["S"] != digest:
            return None  # a sync landed between the two reads: the next refresh picks it up
        return json.loads(zlib.decompress(item["body"]["B"]))

    def put(self, catalog: dict[str, Any], source: str, accepted_at: str) -> CatalogHead:
        digest = digest_of(catalog)
        body = zlib.compress(json.dumps(catalog, separators=(",", ":")).encode(), 9)
        if len(body) > 350_000:
            raise ValueError("the compiled catalog is too large to store (over 350 KB compressed)")
        head = CatalogHead(digest, accepted_at, source[:500], len(catalog.get("models", {})))
        self._ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": self.table, "Item": {
                "pk": {"S": PK}, "sk": {"S": "body"}, "digest": {"S": digest}, "body": {"B": body}}}},
            {"Put": {"TableName": self.table, "Item": {
                "pk": {"S": PK}, "sk": {"S": "head"}, "digest": {"S": digest},
                "accepted_at": {"S": accepted_at}, "source": {"S": head.source}, "models": {"N": str(head.models)}}}},
        ])
        return head
