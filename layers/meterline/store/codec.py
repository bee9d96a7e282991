"""Plain Python values <-> DynamoDB attribute values (low-level client format)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def to_attr(value: Any) -> dict[str, Any]:
    kind = type(value)  # the exact types first: a ledger record is ~45 of them per request
    if kind is str:
        return {"S": value}
    if kind is int:
        return {"N": str(value)}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes):
        return {"B": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, list | tuple):
        return {"L": [to_attr(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {k: to_attr(v) for k, v in value.items()}}
    raise TypeError(f"cannot store {type(value).__name__} in DynamoDB (floats are not money-safe)")


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: to_attr(v) for k, v in values.items() if v is not None}


def from_attr(attr: dict[str, Any]) -> Any:
    (kind, value), = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        try:
            return int(value)  # DynamoDB writes numbers plainly: digits and a sign, or a decimal / exponent
        except ValueError:
            return value
    if kind == "BOOL":
        return value
    if kind == "B":
        return bytes(value)
    if kind == "NULL":
        return None
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "SS":
        return set(value)
    raise TypeError(f"unsupported DynamoDB type {kind}")


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: from_attr(v) for k, v in item.items()}


def paginate(call: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a Query or Scan (`call` is the boto3 client method), page after page, decoded."""
    while True:
        page = call(**kwargs)
        for item in page.get("Items", []):
            yield from_item(item)
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
