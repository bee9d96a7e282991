"""Compact item storage for the embedded AWS's DynamoDB tables (installed by moto_patches.apply).

moto keeps every item as an `Item` holding one `DynamoType` object per attribute: ~11 KB of Python
objects for a 1.5 KB ledger record, and each stream record as a nested dict of the whole image
(~11 KB more). A dev server's ledger grows by one record per request, so that was most of its
memory growth. Here each stored item keeps only its two key values (what moto sorts and matches on)
and its attributes pickled (~1.7 KB); the attributes are rebuilt on first access and packed again
when the AWS request that touched them ends. Stream records are kept pickled the same way.

Why the semantics are unchanged:
  * Tables are created by moto from the same specs the CDK stack uses (store/schema.py); only the
    per-item storage differs. Every read of `item.attrs` sees the real attributes, and moto's
    in-place updates (UpdateItem, transactions) mutate the materialized attributes, which stay
    materialized until the request ends (`pack_pending`, called under the lock that applies one
    AWS request at a time), so no write is lost.
  * The packed form is the `DynamoType` tree itself (type and raw value per node), so a round trip
    rebuilds exactly what moto stored, binary and sets included.
  * Reads that need no attributes never unpack: key matching and sorting use the key values, the
    1 MB page limit uses the size computed when the item was packed, paging compares keys, and a
    query's result copy (moto deep-copies results) unpacks straight into a plain `Item`.
"""

from __future__ import annotations

import copy
import pickle
from collections import defaultdict
from typing import Any

_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _pack_value(value: Any) -> tuple[str, Any]:
    raw = value.value
    if isinstance(raw, list) and value.type == "L":
        raw = [_pack_value(v) for v in raw]
    elif isinstance(raw, dict):
        raw = {k: _pack_value(v) for k, v in raw.items()}
    return (value.type, raw)


def _unpack_value(packed: tuple[str, Any]) -> Any:
    from moto.dynamodb.models.dynamo_type import DynamoType

    kind, raw = packed
    if kind == "L":
        raw = [_unpack_value(v) for v in raw]
    elif kind == "M":
        raw = {k: _unpack_value(v) for k, v in raw.items()}
    value = DynamoType.__new__(DynamoType)
    value.type, value.value = kind, raw
    return value


def pack_attrs(attrs: dict[str, Any]) -> bytes:
    return pickle.dumps({k: _pack_value(v) for k, v in attrs.items()}, _PROTOCOL)


def unpack_attrs(blob: bytes) -> Any:
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    # LimitedSizeDict's own update bypasses its per-key size check (the item passed it when written);
    # later writes through __setitem__ are still checked.
    return LimitedSizeDict((k, _unpack_value(v)) for k, v in pickle.loads(blob).items())


# Items materialized during the current AWS request; packed again when it ends. Only touched under
# the embedded AWS's lock (devenv._Atomic), which applies one request at a time.
_pending: dict[int, Any] = {}


def pack_pending() -> None:
    while _pending:
        _, item = _pending.popitem()
        item.pack()


_classes: dict[str, type] = {}


def compact_item_class() -> type:
    """CompactItem, defined on first use (moto is imported only when the embedded AWS starts)."""
    if "item" in _classes:
        return _classes["item"]
    from moto.dynamodb.models.dynamo_type import Item, LimitedSizeDict, bytesize

    class CompactItem(Item):
        """A stored item: key values, packed attributes and their size; see the module docstring."""

        def __init__(self, item: Any):  # not Item.__init__: wraps an item already built and checked
            self.hash_key = item.hash_key
            self.range_key = item.range_key
            self._blob: bytes | None = None
            self._size = 0
            self._attrs = item.attrs
            _pending[id(self)] = self

        @property
        def attrs(self) -> Any:  # type: ignore[override]
            if self._attrs is None:
                self._attrs = unpack_attrs(self._blob)  # type: ignore[arg-type]
                self._blob = None
                _pending[id(self)] = self
            return self._attrs

        @attrs.setter
        def attrs(self, value: Any) -> None:
            self._attrs, self._blob = value, None
            _pending[id(self)] = self

        def pack(self) -> None:
            if self._attrs is not None:
                self._size = sum(bytesize(k) + v.size() for k, v in self._attrs.items())
                self._blob, self._attrs = pack_attrs(self._attrs), None

        def size(self) -> int:
            return self._size if self._attrs is None else super().size()

        def __deepcopy__(self, memo: dict[int, Any]) -> Any:
            """A plain Item with its own attributes (moto deep-copies query results and rollback
            snapshots); a packed item unpacks straight into the copy, leaving itself packed."""
            result = Item.__new__(Item)
            result.hash_key = copy.deepcopy(self.hash_key, memo)
            result.range_key = copy.deepcopy(self.range_key, memo)
            if self._attrs is None:
                result.attrs = unpack_attrs(self._blob)  # type: ignore[arg-type]
            else:
                result.attrs = LimitedSizeDict((k, copy.deepcopy(v, memo)) for k, v in self._attrs.items())
            return result

        def to_json(self, root_attr_name: str = "Attributes") -> dict[str, Any]:
            if self._attrs is not None:
                return super().to_json(root_attr_name)
            # Read-only use (snapshots, stream images): a throwaway copy, nothing left materialized.
            return Item.to_json(self.__deepcopy__({}), root_attr_name)

    _classes["item"] = CompactItem
    return CompactItem


def _compact(value: Any) -> Any:
    from moto.dynamodb.models.dynamo_type import Item

    if type(value) is Item:
        return compact_item_class()(value)
    return value


class CompactPartition(dict):
    """One hash key's items in a table with a sort key."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _compact(value))


class CompactItems(defaultdict):
    """A table's `items`: hash key -> item (no sort key) or -> CompactPartition (sort key)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _compact(value))


class CompactRecord:
    """A stream record, pickled; `to_json` is all moto's stream readers call."""

    __slots__ = ("_blob",)

    def __init__(self, record: dict[str, Any]):
        self._blob = pickle.dumps(record, _PROTOCOL)

    def to_json(self) -> dict[str, Any]:
        return pickle.loads(self._blob)


def install() -> None:
    """Make every table moto creates from now on store its items and stream records compactly."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import StreamShard, Table

    original_init = Table.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.items = CompactItems(CompactPartition)

    Table.__init__ = __init__  # type: ignore[method-assign]

    original_add = StreamShard.add

    def add(self: Any, old: Any, new: Any) -> None:
        original_add(self, old, new)
        if self.items and type(self.items[-1]) is not CompactRecord:
            self.items[-1] = CompactRecord(self.items[-1].to_json())

    StreamShard.add = add  # type: ignore[method-assign]

    def _item_comes_before_dct(self: Any, item: Any, dct: dict[str, Any], hash_key_attrs: list[str],
                               range_key_attrs: list[str | None], scan_index_forward: bool) -> bool:
        """moto's, reading the table's own key attributes from the item's key values: paging through
        a partition compares every item before the start key, which must not unpack them all."""
        for attr in self._generate_attr_to_sort_by(hash_key_attrs, range_key_attrs):
            if attr == self.hash_key_attr:
                value = item.hash_key
            elif attr == self.range_key_attr:
                value = item.range_key
            else:
                value = item.attrs.get(attr)
            if value is not None and value != DynamoType(dct.get(attr)):
                return (value < DynamoType(dct.get(attr))) == scan_index_forward
        return True

    Table._item_comes_before_dct = _item_comes_before_dct  # type: ignore[method-assign]
