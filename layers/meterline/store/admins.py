"""Admin grants: which principal may administer which workspace, and how (admin/access.py decides).

Kept in the workspaces table (schema.WORKSPACES) beside the workspaces' item collections. A
workspace id never holds '#', so a grant's partition never collides with a workspace's.

Keys:
    pk = "admin#<principal>", sk = "grant#<workspace>"   role "admin" | "read" on one workspace
    pk = "admin#<principal>", sk = "grant#*"             role "platform": every workspace, creating
                                                         workspaces, grants, the price catalog
    attributes: principal, workspace ("*" for platform), role, granted_by, granted_at (epoch s)

<principal> is an IAM ARN (`arn:aws:iam::<account>:user/<name>` or `...:role/<name>`; a role's
sessions, `arn:aws:sts::<account>:assumed-role/<name>/<session>`, act with the role's grants) or,
for `meterline dev`, `local:<name>`.

Access patterns:
    grants_of(principals)   Query pk = "admin#<principal>" per candidate ARN (1-2): every admin API request
    put(grant)              PutItem (replaces that principal's role on that workspace)
    delete(principal, ws)   DeleteItem, condition attribute_exists(pk): False when there was none
    list()                  Scan filtered on begins_with(pk, "admin#") (control plane, small)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import from_item, paginate, to_item
from meterline.store.schema import WORKSPACES

PK_PREFIX = "admin#"
SK_PREFIX = "grant#"
ALL_WORKSPACES = "*"


@dataclass(frozen=True)
class Grant:
    principal: str
    workspace: str  # a workspace id, or "*" with role "platform"
    role: str
    granted_by: str = ""
    granted_at: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"principal": self.principal, "workspace": self.workspace, "role": self.role,
                "granted_by": self.granted_by, "granted_at": self.granted_at}


def _grant(item: dict[str, Any]) -> Grant:
    return Grant(principal=item["principal"], workspace=item["workspace"], role=item["role"],
                 granted_by=item.get("granted_by", ""), granted_at=int(item.get("granted_at", 0)))


class AdminGrantStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(WORKSPACES)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    def grants_of(self, principals: list[str]) -> list[Grant]:
        out: list[Grant] = []
        for principal in dict.fromkeys(principals):
            out += [_grant(item) for item in paginate(
                self._ddb.query, TableName=self.table, KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": PK_PREFIX + principal}})]
        return out

    def put(self, grant: Grant) -> None:
        self._ddb.put_item(TableName=self.table, Item=to_item({
            "pk": PK_PREFIX + grant.principal, "sk": SK_PREFIX + grant.workspace, **grant.as_dict()}))

    def delete(self, principal: str, workspace: str) -> Grant | None:
        """Remove one grant; the removed grant (for the audit trail), or None when there was none."""
        try:
            out = self._ddb.delete_item(
                TableName=self.table, Key=to_item({"pk": PK_PREFIX + principal, "sk": SK_PREFIX + workspace}),
                ConditionExpression="attribute_exists(pk)", ReturnValues="ALL_OLD")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return _grant(from_item(out["Attributes"]))

    def list(self) -> list[Grant]:
        items = paginate(self._ddb.scan, TableName=self.table, FilterExpression="begins_with(pk, :p)",
                         ExpressionAttributeValues={":p": {"S": PK_PREFIX}})
        return sorted((_grant(i) for i in items), key=lambda g: (g.workspace, g.principal))
