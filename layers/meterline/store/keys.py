"""Keys table: virtual keys, stored only as SHA-256 hashes.

Keys (see schema.KEYS):
    key_hash = sha256(virtual key)                  the key record
    GSI by_workspace: workspace, key_id             listing and revocation by public key id

Access patterns:
    get(key_hash)                   GetItem (data plane, cached briefly in memory)
    create(record)                  PutItem, condition: the hash is new
    list(workspace)                 Query by_workspace
    revoke(workspace, key_id)       Query by_workspace + UpdateItem SET revoked
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import from_item, paginate, to_item
from meterline.store.schema import KEYS


class KeyNotFound(LookupError):
    pass


@dataclass(frozen=True)
class KeyRecord:
    key_hash: str
    key_id: str
    workspace: str
    member: str
    department: str
    models: tuple[str, ...] = ()  # allowlist of model ids / "provider/*"; empty = any
    expires_at: int | None = None
    revoked: bool = False
    created_at: int = 0
    name: str = ""
    # Control-plane scopes beyond calling models: "mcp:key" | "mcp:member" | "mcp:department" (the MCP
    # server answers about that slice of the workspace only) or "mcp:admin" (the whole workspace).
    scopes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


def _record(item: dict[str, Any]) -> KeyRecord:
    return KeyRecord(
        key_hash=item["key_hash"],
        key_id=item["key_id"],
        workspace=item["workspace"],
        member=item["member"],
        department=item.get("department", "default"),
        models=tuple(item.get("models", [])),
        expires_at=item.get("expires_at"),
        revoked=bool(item.get("revoked", False)),
        created_at=item.get("created_at", 0),
        name=item.get("name", ""),
        scopes=tuple(item.get("scopes", [])),
    )


class KeyStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(KEYS)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    def get(self, key_hash: str) -> KeyRecord | None:
        item = self._ddb.get_item(TableName=self.table, Key={"key_hash": {"S": key_hash}}).get("Item")
        return _record(from_item(item)) if item else None

    def create(self, record: KeyRecord) -> None:
        self._ddb.put_item(
            TableName=self.table,
            Item=to_item({
                "key_hash": record.key_hash, "key_id": record.key_id, "workspace": record.workspace,
                "member": record.member, "department": record.department,
                "models": list(record.models) or None, "expires_at": record.expires_at,
                "revoked": record.revoked, "created_at": record.created_at or int(time.time()),
                "name": record.name or None, "scopes": list(record.scopes) or None,
            }),
            ConditionExpression="attribute_not_exists(key_hash)",
        )

    def list(self, workspace: str) -> list[KeyRecord]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "by_workspace",
            "KeyConditionExpression": "workspace = :ws",
            "ExpressionAttributeValues": {":ws": {"S": workspace}},
        }
        return [_record(item) for item in paginate(self._ddb.query, **kwargs)]

    def revoke(self, workspace: str, key_id: str) -> KeyRecord:
        page = self._ddb.query(
            TableName=self.table,
            IndexName="by_workspace",
            KeyConditionExpression="workspace = :ws AND key_id = :k",
            ExpressionAttributeValues={":ws": {"S": workspace}, ":k": {"S": key_id}},
        )
        items = page.get("Items", [])
        if not items:
            raise KeyNotFound(key_id)
        record = _record(from_item(items[0]))
        self._ddb.update_item(
            TableName=self.table,
            Key={"key_hash": {"S": record.key_hash}},
            UpdateExpression="SET revoked = :t, revoked_at = :now",
            ExpressionAttributeValues={":t": {"BOOL": True}, ":now": {"N": str(int(time.time()))}},
            ConditionExpression="attribute_exists(key_hash)",
        )
        return record
