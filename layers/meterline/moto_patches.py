"""moto, made fit to serve `meterline dev` for hours: two fixes applied to the embedded AWS.

1. moto's `TransactWriteItems` deep-copies every table a transaction names before applying it (to
   roll back on failure). Our budget reservations are transactions on the ledger-sized tables, so
   each one copied every item *and the table's whole stream history*: 68 % of dev-server CPU in a
   profile, and RSS growing from 144 MB to 1.4 GB in 300 requests. The replacement snapshots only
   the items the transaction touches (and the stream's length) and restores exactly those, with
   the same semantics: all-or-nothing, `ConditionalCheckFailed` reasons per item, no stream
   records from a cancelled transaction.
2. A table's stream keeps every record forever in moto (DynamoDB keeps 24 hours), and every
   GetRecords call leaves a shard iterator behind for good. The stream keeps its newest
   STREAM_MAX_RECORDS records (sequence numbers stay stable; the rollup poller reads every half
   second, far behind that bound) and the newest MAX_ITERATORS iterators, so a long-running dev
   server's memory is bounded by its recent traffic, not its age.

Tests keep running on moto; only these two code paths differ. `apply()` is idempotent.
"""

from __future__ import annotations

import copy
import functools
import re
import threading
from typing import Any

from meterline import moto_compact

STREAM_MAX_RECORDS = 5_000
MAX_ITERATORS = 1_000

_applied = False
_lock = threading.Lock()


def _key_values(table: Any, key: dict[str, Any]) -> tuple[Any, Any]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_value = DynamoType(key[table.hash_key_attr])
    range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    return hash_value, range_value


def _restore(table: Any, hash_value: Any, range_value: Any, snapshot: Any) -> None:
    """Put an item back as it was (or remove it), without a stream record."""
    if range_value is not None:
        if snapshot is None:
            table.items.get(hash_value, {}).pop(range_value, None)
        else:
            table.items[hash_value][range_value] = snapshot
    elif snapshot is None:
        table.items.pop(hash_value, None)
    else:
        table.items[hash_value] = snapshot


def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    touched: list[tuple[Any, Any, Any, Any]] = []  # (table, hash, range, item before)
    stream_marks: dict[int, tuple[Any, int]] = {}
    seen: set[tuple[str, str]] = set()

    def rollback() -> None:
        for table, hash_value, range_value, snapshot in reversed(touched):
            _restore(table, hash_value, range_value, snapshot)
        for shard, length in stream_marks.values():
            del shard.items[length:]

    errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        if len(item) > 1:
            rollback()
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            table = self.get_table(table_name)
            if op_type == "Put":
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            unique = (str(table_name), str(dict(sorted(key.items()))))
            if unique in seen:
                raise MultipleTransactionsException()
            seen.add(unique)
            hash_value, range_value = _key_values(table, key)
            current = table.get_item(hash_value, range_value)
            if op_type != "ConditionCheck":
                touched.append((table, hash_value, range_value, copy.deepcopy(current)))
                if table.stream_shard is not None and id(table) not in stream_marks:
                    stream_marks[id(table)] = (table.stream_shard, len(table.stream_shard.items))
            condition = op.get("ConditionExpression")
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if condition is not None and not get_filter_expression(condition, names, values).expr(current):
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    original_item = current.to_json()["Attributes"]
                raise ConditionalCheckFailed(item=original_item)
            if op_type == "Put":
                self.put_item(table_name, op["Item"], condition_expression=condition,
                              expression_attribute_names=names, expression_attribute_values=values)
            elif op_type == "Delete":
                self.delete_item(table_name, key, condition_expression=condition,
                                 expression_attribute_names=names, expression_attribute_values=values)
            elif op_type == "Update":
                self.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                 condition_expression=condition, expression_attribute_names=names,
                                 expression_attribute_values=values)
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            rollback()
            raise
        except ConditionalCheckFailed as exc:
            errors.append(("ConditionalCheckFailed", str(exc.message), original_item))
        except Exception as exc:
            errors.append((type(exc).__name__, str(exc), original_item))
    if any(code is not None for code, _, _ in errors):
        rollback()
        raise TransactionCanceledException(errors)


def _trimming_add(original: Any) -> Any:
    def add(self: Any, old: Any, new: Any) -> None:
        original(self, old, new)
        drop = len(self.items) - STREAM_MAX_RECORDS
        if drop > 0:
            del self.items[:drop]
            self.starting_sequence_number += drop  # keeps every remaining record's sequence number

    return add


def _clamped_get(self: Any, start: int, quantity: int) -> list[dict[str, Any]]:
    """Records from `start`; a position already trimmed reads from the oldest kept record."""
    offset = max(start - self.starting_sequence_number, 0)
    return [i.to_json() for i in self.items[offset:offset + quantity]]


def _bounded_get_records(original: Any) -> Any:
    def get_records(self: Any, iterator_arn: str, limit: int) -> dict[str, Any]:
        result = original(self, iterator_arn, limit)
        iterators = self.shard_iterators
        for arn in list(iterators)[: max(0, len(iterators) - MAX_ITERATORS)]:
            del iterators[arn]
        return result

    return get_records


# UpdateExpressions made only of SET name = :value, ADD name :number and REMOVE name on top-level
# attributes: what the budget counters and the rollups write on every request. moto parses,
# validates and executes each through a generic AST (~20 ms of CPU for a 12-counter ADD; a rollup
# transaction of 100 of them held the embedded AWS for seconds). These apply directly, after moto's
# own request validation and condition check, with moto's arithmetic; anything else (paths,
# functions, sets, overlapping or key attributes, a type mismatch) goes through moto unchanged.
FAST_UPDATES = True
_TOKEN = re.compile(r"\s*(?:(?P<kw>SET|ADD|REMOVE)\b|(?P<name>#[A-Za-z0-9_]+|[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<val>:[A-Za-z0-9_]+)|(?P<eq>=)|(?P<comma>,))", re.IGNORECASE)
_SCALARS = {"S", "N", "B", "BOOL", "NULL"}


def _reserved() -> frozenset[str]:
    global _RESERVED
    if _RESERVED is None:
        from moto.dynamodb.parsing.reserved_keywords import ReservedKeywords

        _RESERVED = frozenset(ReservedKeywords.get_reserved_keywords())
    return _RESERVED


_RESERVED: frozenset[str] | None = None


def simple_update_plan(expression: str, names: dict[str, str] | None, values: dict[str, Any] | None,
                       scalars_only: bool = True) -> list[tuple[str, str, Any]] | None:
    """[(action, attribute, value)] for a simple update expression, or None (moto's path). With
    `scalars_only` off, SET may carry any value (the plan then only names the attributes)."""
    names, values = names or {}, values or {}
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None or match.end() == pos:
            if expression[pos:].strip():
                return None
            break
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    plan: list[tuple[str, str, Any]] = []
    seen_clauses: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        if kind != "kw" or text.upper() in seen_clauses:
            return None
        clause = text.upper()
        seen_clauses.add(clause)
        i += 1
        while True:
            shape = {"SET": ("name", "eq", "val"), "ADD": ("name", "val"), "REMOVE": ("name",)}[clause]
            part = tokens[i:i + len(shape)]
            if [k for k, _ in part] != list(shape):
                return None
            raw_name, raw_value = part[0][1], part[-1][1]
            name = names.get(raw_name) if raw_name.startswith("#") else raw_name
            if not raw_name.startswith("#") and raw_name.upper() in _reserved():
                return None  # moto reports the reserved word
            value = values.get(raw_value) if clause != "REMOVE" else None
            if name is None or (clause != "REMOVE" and not isinstance(value, dict)):
                return None
            if clause == "ADD" and set(value) != {"N"}:
                return None
            if clause == "SET" and scalars_only and not set(value) <= _SCALARS:
                return None
            plan.append((clause, name, value))
            i += len(shape)
            if i < len(tokens) and tokens[i][0] == "comma":
                i += 1
                continue
            break
    touched = [name for _, name, _ in plan]
    return plan if plan and len(set(touched)) == len(touched) else None


def _moto_update(original: Any, backend: Any, table_name: str, key: dict[str, Any], update_expression: str,
                 names: dict[str, Any], values: dict[str, Any], *rest: Any) -> Any:
    """moto's own update; then, for an expression of top-level names (a map SET, say), the names
    its UPDATED_NEW answer must carry."""
    item = original(backend, table_name, key, update_expression, names, values, *rest)
    plan = simple_update_plan(update_expression, names, values, scalars_only=False) if update_expression else None
    if plan and not rest[0]:  # not with AttributeUpdates
        _touched[0] = {name for action, name, _ in plan if action != "REMOVE"}
    return item


def _fast_update_item(original: Any) -> Any:
    def update_item(self: Any, table_name: str, key: dict[str, Any], update_expression: str,
                    expression_attribute_names: dict[str, Any], expression_attribute_values: dict[str, Any],
                    attribute_updates: dict[str, Any] | None = None, expected: dict[str, Any] | None = None,
                    condition_expression: str | None = None,
                    return_values_on_condition_check_failure: str | None = None) -> Any:
        from moto.dynamodb.comparisons import get_filter_expression
        from moto.dynamodb.exceptions import ConditionalCheckFailed
        from moto.dynamodb.models.dynamo_type import DynamoType

        _touched[0] = None
        plan = None
        if FAST_UPDATES and update_expression and not attribute_updates and not expected:
            plan = simple_update_plan(update_expression, expression_attribute_names, expression_attribute_values)
        table = self.get_table(table_name) if plan else None
        if table is None or table.hash_key_attr not in key or any(
                name in (table.hash_key_attr, table.range_key_attr) for _, name, _ in plan):  # type: ignore[union-attr]
            return _moto_update(original, self, table_name, key, update_expression, expression_attribute_names,
                                expression_attribute_values, attribute_updates, expected, condition_expression,
                                return_values_on_condition_check_failure)
        hash_value, range_value = _key_values(table, key) if table.range_key_attr in key else (
            DynamoType(key[table.hash_key_attr]), None)
        item = table.get_item(hash_value, range_value)
        # New values first, from the current item: a type mismatch or a bad number is moto's to report.
        current = item.attrs if item is not None else {}
        updates: list[tuple[str, Any]] = []
        try:
            for action, name, value in plan:  # type: ignore[union-attr]
                if action == "SET":
                    updates.append((name, DynamoType(value)))
                elif action == "ADD":
                    existing = current.get(name) or DynamoType({"N": "0"})
                    if existing.type != "N":
                        raise TypeError(name)
                    updates.append((name, existing + DynamoType(value)))
                else:
                    updates.append((name, None))
        except Exception:
            return _moto_update(original, self, table_name, key, update_expression, expression_attribute_names,
                                expression_attribute_values, attribute_updates, expected, condition_expression,
                                return_values_on_condition_check_failure)
        condition = get_filter_expression(condition_expression, expression_attribute_names,
                                          expression_attribute_values)
        if not condition.expr(item):
            if return_values_on_condition_check_failure == "ALL_OLD" and item is not None:
                raise ConditionalCheckFailed(item=item.to_json()["Attributes"])
            raise ConditionalCheckFailed
        orig_item = copy.deepcopy(item) if table.stream_shard is not None else None
        if item is None:  # as moto: an update creates the item from its key
            data = {table.hash_key_attr: {hash_value.type: hash_value.value}}
            if range_value is not None:
                data[table.range_key_attr] = {range_value.type: range_value.value}
            table.put_item(data)
            item = table.get_item(hash_value, range_value)
        attrs = item.attrs
        before = dict(attrs)
        try:
            for name, value in updates:
                if value is None:
                    attrs.pop(name, None)
                else:
                    attrs[name] = value  # LimitedSizeDict: checks the item's 400 KB limit
        except Exception:
            from moto.dynamodb.exceptions import ItemSizeToUpdateTooLarge

            attrs.clear()
            attrs.update(before)
            raise ItemSizeToUpdateTooLarge() from None
        if table.stream_shard is not None:
            table.stream_shard.add(orig_item, item)
        _touched[0] = {name for action, name, _ in plan if action != "REMOVE"}
        return item

    return update_item


# The attributes the last simple update SET or ADDed, for its UPDATED_NEW answer. DynamoDB returns
# every attribute the update names, changed or not (`ADD spent :zero` returns `spent`); moto returns
# only the attributes whose value changed. Set and read under the embedded AWS's one-request lock.
_touched: list[set[str] | None] = [None]


def _updated_new(original: Any) -> Any:
    def build(self: Any, before: Any, after: Any) -> Any:
        touched, _touched[0] = _touched[0], None  # the top-level call takes it; recursion sees None
        result = original(self, before, after)
        if touched and isinstance(result, dict) and isinstance(after, dict):
            result.update({k: after[k] for k in touched if k in after})
        return result

    return build


def _cached_parse(original: Any) -> Any:
    """moto parses an UpdateExpression up to three times per write (request validation, backend,
    transaction validation) and only reads the tree (its validator works on a deep copy); the same
    few expressions repeat on every request, so each is parsed once."""
    parse = functools.lru_cache(maxsize=1024)(original)
    return classmethod(lambda cls, expression_str: parse(expression_str))


def _untracked_new(base: Any) -> Any:
    def __new__(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return super(base, cls).__new__(cls)

    return __new__


def apply() -> None:
    global _applied
    with _lock:
        if _applied:
            return
        from moto.core.common_models import BaseModel
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.models.table import StreamShard
        from moto.dynamodb.parsing.expressions import UpdateExpressionParser
        from moto.dynamodb.responses import DynamoHandler
        from moto.dynamodbstreams.models import DynamoDBStreamsBackend

        BaseModel.__new__ = _untracked_new(BaseModel)  # type: ignore[method-assign]
        DynamoDBBackend.transact_write_items = transact_write_items
        DynamoDBBackend.update_item = _fast_update_item(DynamoDBBackend.update_item)  # type: ignore[method-assign]
        UpdateExpressionParser.make = _cached_parse(UpdateExpressionParser.make)  # type: ignore[method-assign]
        DynamoHandler._build_updated_new_attributes = _updated_new(  # type: ignore[method-assign]
            DynamoHandler._build_updated_new_attributes)  # type: ignore[method-assign]
        StreamShard.add = _trimming_add(StreamShard.add)  # type: ignore[method-assign]
        StreamShard.get = _clamped_get  # type: ignore[method-assign]
        DynamoDBStreamsBackend.get_records = _bounded_get_records(  # type: ignore[method-assign]
            DynamoDBStreamsBackend.get_records)
        moto_compact.install()
        _applied = True
