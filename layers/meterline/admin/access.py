"""Who may run which control-plane operation on which workspace.

Roles, per workspace, from the grants (store/admins.py):
    read      the GET side: list and show anything of the workspace, reports, audit, exports
    admin     everything on the workspace (keys, providers, budgets, policies, ...), reads included
    platform  every workspace, plus what belongs to none: creating workspaces, grants, the price catalog

Every operation declares the role it needs in `admin.ops.OP_ROLES`; `Ops` checks it before the
operation runs (so a denied caller learns nothing, not even whether the workspace exists). The
admin API resolves its caller to an `Access` from the IAM principal Lambda puts in the request
context (or, under `meterline dev`, the local admin token); the MCP server from the virtual key;
the CLI, which talks to the tables with its own AWS credentials (IAM on the tables is its
boundary), acts with `Access.direct`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

ROLES = ("read", "admin", "platform")
RANK = {"read": 1, "admin": 2, "platform": 3}
ALL_WORKSPACES = "*"

# arn:aws:sts::<acct>:assumed-role/<role>/<session>  (a role session: acts with the role's grants)
_ASSUMED = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/[\w+=,.@-]+$")
# arn:aws:iam::<acct>:role/<path/>name  (grants name the role without its path: sessions carry no path)
_ROLE = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)$")
_USER = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):(?:user|root)(?:/[\w+=,.@-]+)*$")
_LOCAL = re.compile(r"^local:[A-Za-z0-9_.@-]{1,64}$")


class AccessDenied(Exception):
    """The caller may not run this operation on this workspace (HTTP 403)."""


def normalize_principal(principal: str) -> str:
    """The form a grant is stored under: an IAM user or root ARN as is, a role ARN without its path,
    `local:<name>` for `meterline dev`. ValueError for anything else (a typo must not grant nothing
    silently, nor grant a pattern)."""
    principal = principal.strip() if isinstance(principal, str) else ""
    if m := _ROLE.fullmatch(principal):
        return f"arn:{m[1]}:iam::{m[2]}:role/{m[3]}"
    if _USER.fullmatch(principal) or _LOCAL.fullmatch(principal):
        return principal
    if _ASSUMED.fullmatch(principal):
        raise ValueError("grant the role (arn:aws:iam::<account>:role/<name>), not one session of it")
    raise ValueError("a principal is an IAM user or role ARN (arn:aws:iam::<account>:user/<name>, "
                     "arn:aws:iam::<account>:role/<name>) or, locally, local:<name>")


def candidates(caller: str) -> list[str]:
    """The principals whose grants a caller holds: its own ARN and, for a role session, the role."""
    if m := _ASSUMED.fullmatch(caller):
        return [caller, f"arn:{m[1]}:iam::{m[2]}:role/{m[3]}"]
    try:
        return [normalize_principal(caller)]
    except ValueError:
        return [caller]


@dataclass(frozen=True)
class Access:
    principal: str
    platform: bool = False
    roles: Mapping[str, str] = field(default_factory=dict)  # workspace -> "read" | "admin"

    @classmethod
    def direct(cls, principal: str) -> Access:
        """A caller with the tables' own credentials (the CLI, jobs): the tables' IAM is its boundary."""
        return cls(principal, platform=True)

    @classmethod
    def from_grants(cls, principal: str, grants: list[tuple[str, str]]) -> Access:
        """(workspace, role) pairs -> Access; the strongest role per workspace wins."""
        roles: dict[str, str] = {}
        platform = False
        for workspace, role in grants:
            if role == "platform" and workspace == ALL_WORKSPACES:
                platform = True
            elif (role in ("read", "admin") and workspace != ALL_WORKSPACES
                  and RANK[role] > RANK.get(roles.get(workspace, ""), 0)):
                roles[workspace] = role
        return cls(principal, platform, roles)

    @property
    def known(self) -> bool:
        """Holds any grant at all (an unknown principal is refused before anything is read)."""
        return self.platform or bool(self.roles)

    def can(self, workspace: str | None, need: str) -> bool:
        if self.platform:
            return True
        if need == "platform" or workspace is None:
            return False
        role = self.roles.get(workspace)
        return role is not None and RANK[role] >= RANK[need]

    def require(self, workspace: str | None, need: str) -> None:
        if self.can(workspace, need):
            return
        if need == "platform":
            raise AccessDenied(f"{self.principal} needs the platform role for this")
        what = "change" if need == "admin" else "read"
        raise AccessDenied(f"{self.principal} may not {what} workspace {workspace!r}")

    def readable(self, workspace: str) -> bool:
        return self.can(workspace, "read")

    def describe(self) -> dict[str, object]:
        return {"principal": self.principal, "platform": self.platform, "workspaces": dict(sorted(self.roles.items()))}
