"""Prompt templates, stored in the workspaces table under their own partition.

Keys (see schema.WORKSPACES):
    pk = "<workspace>#template", sk = "<name>#<version, 6 digits>"   document (JSON), created_at
Their own partition keeps them out of the workspace config the gateway loads every 30 s.

Access patterns:
    get(ws, name, version)      GetItem (gateway: cached in memory; versions never change)
    put(ws, template)           PutItem, condition: new (a version is immutable)
    versions(ws, name)          Query pk, begins_with(sk, "<name>#")  (control plane)
    list(ws)                    Query pk                               (control plane)
"""

from __future__ import annotations

import json
import time
from typing import Any

from meterline.config import Settings
from meterline.levers.templates import Template, parse
from meterline.store import aws
from meterline.store.codec import from_item, paginate, to_item
from meterline.store.ddb_http import DynamoHttp
from meterline.store.schema import WORKSPACES


def template_pk(workspace: str) -> str:
    return f"{workspace}#template"


def template_sk(name: str, version: int) -> str:
    return f"{name}#{version:06d}"


class TemplateStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(WORKSPACES)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    async def get(self, client: DynamoHttp, workspace: str, name: str, version: int) -> Template | None:
        result = await client.call("GetItem", {"TableName": self.table, "Key": to_item(
            {"pk": template_pk(workspace), "sk": template_sk(name, version)})})
        item = result.get("Item")
        return parse(name, json.loads(from_item(item)["document"]), version) if item else None

    def versions(self, workspace: str, name: str) -> list[Template]:
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :pk AND begins_with(sk, :n)",
                                  "ExpressionAttributeValues": {":pk": {"S": template_pk(workspace)},
                                                                ":n": {"S": f"{name}#"}}, "ConsistentRead": True}
        return [parse(name, json.loads(i["document"]), int(i["sk"].rsplit("#", 1)[1]))
                for i in paginate(self._ddb.query, **kwargs)]

    def list(self, workspace: str) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :pk",
                                  "ExpressionAttributeValues": {":pk": {"S": template_pk(workspace)}}}
        return [{"name": i["sk"].rsplit("#", 1)[0], "version": int(i["sk"].rsplit("#", 1)[1]),
                 "created_at": i.get("created_at")} for i in paginate(self._ddb.query, **kwargs)]

    def put(self, workspace: str, template: Template) -> None:
        document = {k: v for k, v in template.as_dict().items() if k not in ("name", "version")}
        self._ddb.put_item(TableName=self.table, Item=to_item({
            "pk": template_pk(workspace), "sk": template_sk(template.name, template.version),
            "document": json.dumps(document, sort_keys=True), "created_at": int(time.time())}),
            ConditionExpression="attribute_not_exists(sk)")
