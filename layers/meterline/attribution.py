"""Who a request is attributed to.

Member and department come from the virtual key, never from a header. Agent, session, feature and
customer come from `Meterline-*` headers, bounded in length and charset so they are safe as
DynamoDB key parts and metric dimensions. A header that fails the rules is rejected (400) rather
than silently truncated, so spend is never attributed to a mangled name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from meterline.errors import InvalidRequestError

HEADERS = {
    "agent": "meterline-agent",
    "session": "meterline-session-id",
    "feature": "meterline-feature",
    "customer": "meterline-customer",
}
MAX_LEN = 128
_ALLOWED = re.compile(r"^[A-Za-z0-9._:@/+=\-]+$")

# Dimensions a spend report can group by.
DIMENSIONS = ("workspace", "key", "member", "department", "agent", "session", "feature", "customer",
              "provider", "model", "template")


@dataclass(frozen=True)
class Attribution:
    workspace: str
    key: str
    member: str
    department: str
    agent: str | None = None
    session: str | None = None
    feature: str | None = None
    customer: str | None = None
    provider: str | None = None
    model: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def sanitize(name: str, value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_LEN or not _ALLOWED.match(value):
        raise InvalidRequestError(
            f"Header {HEADERS[name]} must be 1-{MAX_LEN} characters of A-Z a-z 0-9 . _ : @ / + = -",
            code="invalid_header", param=HEADERS[name],
        )
    return value


def from_headers(headers: Mapping[str, str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, header in HEADERS.items():
        raw = headers.get(header)
        out[name] = sanitize(name, raw) if raw is not None else None
    return out
