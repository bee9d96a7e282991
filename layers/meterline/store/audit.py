"""Audit table: one immutable record per admin action and read (control plane, CLI, MCP).

Keys (see schema.AUDIT):
    pk = "<workspace>"   ("-" for actions on no workspace, e.g. listing workspaces)
    sk = "<epoch ms, 13 digits>#<random id>"    time-ordered, never reused
    GSI by_actor: actor, sk                     everything one principal did, across workspaces
    expires_at                                  TTL: retention (METERLINE_AUDIT_RETENTION_DAYS, 7 years)

Attributes: actor (IAM principal ARN, `cli:<user>`, `mcp:key:<id>`), action (`key.revoke`, ...),
workspace, ts (epoch ms), target / before / after (JSON strings; never a secret: the operations pass
key ids, not keys, and provider entries without ciphertext).

Access patterns:
    record(...)                      PutItem, condition attribute_not_exists(sk): append only
    query(workspace, since, actor)   Query pk = ws AND sk >= since (optionally filtered by actor)
    by_actor(actor, since, ws)       Query by_actor (optionally filtered by workspace)
Immutable: no code path updates or deletes a record, no role is granted UpdateItem, DeleteItem or
BatchWriteItem on the table, and the table's resource policy denies them to every principal.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import paginate, to_item
from meterline.store.schema import AUDIT

RETENTION_DAYS = 2557  # 7 years
NO_WORKSPACE = "-"
MAX_RESULTS = 1000


MAX_FIELD = 64 * 1024  # target, before and after each: a record stays well below DynamoDB's 400 KB item


def _json(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    if len(text.encode()) > MAX_FIELD:  # recorded, shortened, never dropped (the action is still audited)
        text = json.dumps({"truncated": True, "bytes": len(text.encode()), "head": text[:4096]})
    return text


class AuditStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(AUDIT)
        self.retention_days = int(os.environ.get("METERLINE_AUDIT_RETENTION_DAYS") or RETENTION_DAYS)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    def record(self, actor: str, action: str, workspace: str | None, *, target: Any = None, before: Any = None,
               after: Any = None, now_ms: int | None = None) -> dict[str, Any]:
        ts = now_ms if now_ms is not None else int(time.time() * 1000)
        item = {"pk": workspace or NO_WORKSPACE, "sk": f"{ts:013d}#{os.urandom(6).hex()}", "actor": actor,
                "action": action, "workspace": workspace or NO_WORKSPACE, "ts": ts, "target": _json(target),
                "before": _json(before), "after": _json(after),
                "expires_at": ts // 1000 + self.retention_days * 86400}
        self._ddb.put_item(TableName=self.table, Item=to_item(item), ConditionExpression="attribute_not_exists(sk)")
        return item

    def query(self, workspace: str, since_ms: int = 0, actor: str | None = None,
              limit: int = MAX_RESULTS) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :pk AND sk >= :since",
            "ExpressionAttributeValues": {":pk": {"S": workspace}, ":since": {"S": f"{since_ms:013d}"}},
        }
        if actor:
            kwargs["FilterExpression"] = "actor = :actor"
            kwargs["ExpressionAttributeValues"][":actor"] = {"S": actor}
        return self._collect(kwargs, limit)

    def by_actor(self, actor: str, since_ms: int = 0, workspace: str | None = None,
                 limit: int = MAX_RESULTS) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table, "IndexName": "by_actor",
            "KeyConditionExpression": "actor = :actor AND sk >= :since",
            "ExpressionAttributeValues": {":actor": {"S": actor}, ":since": {"S": f"{since_ms:013d}"}},
        }
        if workspace:
            kwargs["FilterExpression"] = "pk = :pk"
            kwargs["ExpressionAttributeValues"][":pk"] = {"S": workspace}
        return self._collect(kwargs, limit)

    def _collect(self, kwargs: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        out = []
        for item in paginate(self._ddb.query, **kwargs):
            out.append({"ts": int(item["ts"]), "actor": item["actor"], "action": item["action"],
                        "workspace": item["workspace"],
                        **{k: json.loads(item[k]) if k in item else None for k in ("target", "before", "after")}})
            if len(out) >= limit:
                break
        return out
