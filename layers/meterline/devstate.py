"""`meterline dev` keeps its state across restarts: every table's items, the vault's KMS key and
the demo key, in one file per port under the state dir (`<state dir>/data-<port>/state.json`,
owner-only; JSON lines, one item per line). Saved every 30 seconds and on exit; loaded at start
unless `--fresh`.

The embedded AWS runs in this process, so the snapshot reads moto's tables directly under the
same lock that serialises AWS requests (a consistent cut, no paging through Scan) and keeps the
items' packed bytes (moto_compact), which the save writes out one item at a time; a restore reads
the file line by line and writes items straight into the tables without stream records (the
restored rollups already count them). Memory stays flat while saving or loading a large ledger.
The KMS key keeps its id and material, so provider keys stored in the vault still decrypt.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from meterline import moto_compact
from meterline.config import Settings

FORMAT = 2  # JSON lines: a header, then one item per line (format 1, one JSON object, still loads)
ACCOUNT = "123456789012"  # moto's default account
RESTORE_BATCH = 500  # items restored between re-packs: a large state never sits unpacked at once


def _dynamodb(region: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[ACCOUNT][region]


def _kms(region: str) -> Any:
    from moto.kms.models import kms_backends

    return kms_backends[ACCOUNT][region]


def _key_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _frozen(item: Any) -> Any:
    """An item as it is now: its packed bytes (immutable; a later write packs new bytes) or, for an
    item that is not packed, its attributes in DynamoDB JSON."""
    blob = getattr(item, "_blob", None)
    return blob if blob is not None else item.to_json()["Attributes"]


def _wire(node: tuple[str, Any]) -> dict[str, Any]:
    """A packed DynamoType as DynamoDB JSON (what a PutItem carries)."""
    kind, raw = node
    if kind == "L":
        raw = [_wire(v) for v in raw]
    elif kind == "M":
        raw = {k: _wire(v) for k, v in raw.items()}
    elif kind == "B" and isinstance(raw, bytes):
        raw = base64.b64encode(raw).decode()
    elif kind == "BS":
        raw = [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in raw]
    return {kind: raw}


def item_json(frozen: Any) -> dict[str, Any]:
    if isinstance(frozen, bytes):
        return {k: _wire(v) for k, v in pickle.loads(frozen).items()}
    return frozen


def snapshot(settings: Settings, lock: threading.Lock, demo: dict[str, str]) -> dict[str, Any]:
    """A consistent cut, taken under the lock that applies AWS requests one at a time. It holds the
    items' packed bytes (shared, not copied); `save` turns them into JSON one at a time."""
    with lock:
        moto_compact.pack_pending()
        backend = _dynamodb(settings.region)
        tables = {}
        for logical, name in settings.table_names.items():
            table = backend.tables.get(name)
            if table is not None:
                tables[logical] = [_frozen(item) for item in table.all_items()]
        key = _kms(settings.region).keys[_key_id(settings.kms_key_id)]
        material = key.key_material
    return {"format": FORMAT, "tables": tables, "demo": demo,
            "kms": {"id": key.id, "arn": key.arn, "material": base64.b64encode(material).decode()}}


def restore(settings: Settings, lock: threading.Lock, state: dict[str, Any]) -> Settings:
    """Load a snapshot into freshly provisioned tables and key; returns settings naming the old key."""
    with lock:
        backend = _dynamodb(settings.region)
        tables = {}
        for name in settings.table_names.values():
            if (table := backend.tables.get(name)) is not None:
                tables[name] = table
        shards = {name: table.stream_shard for name, table in tables.items()}
        for table in tables.values():
            table.stream_shard = None  # no stream records for restored items: the rollups count them
        try:
            for n, (logical, attrs) in enumerate(state["items"]()):
                table = tables.get(settings.table_names.get(logical, ""))
                if table is None:
                    continue  # a table this version no longer has
                table.put_item(attrs, overwrite=True)
                if n % RESTORE_BATCH == 0:
                    moto_compact.pack_pending()
        finally:
            moto_compact.pack_pending()
            for name, table in tables.items():
                table.stream_shard = shards[name]
        kms = _kms(settings.region)
        fresh = kms.keys.pop(_key_id(settings.kms_key_id))
        saved = state["kms"]
        fresh.id, fresh.arn = saved["id"], saved["arn"]
        fresh.key_material = base64.b64decode(saved["material"])
        kms.keys[fresh.id] = fresh
    return replace(settings, kms_key_id=saved["arn"])


def data_dir(state_dir: Path, port: int) -> Path:
    return state_dir / f"data-{port}"


def load(path: Path) -> dict[str, Any] | None:
    """The saved header (demo key, KMS key) with `items`: a callable that reads the items back one
    line at a time, so a large state is never parsed whole. None if there is no usable state."""
    try:
        with open(path) as saved:
            header = json.loads(saved.readline())
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    if header.get("format") == 1:  # one JSON object (earlier versions)
        tables = header.get("tables", {})
        header["items"] = lambda: ((t, attrs) for t, items in tables.items() for attrs in items)
        return header
    if header.get("format") != FORMAT:
        return None

    def items() -> Iterator[tuple[str, dict[str, Any]]]:
        with open(path) as saved:
            saved.readline()
            for line in saved:
                if line.strip():
                    entry = json.loads(line)
                    yield entry["t"], entry["i"]

    header["items"] = items
    return header


def save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the demo key: owner-only
    header = {"format": FORMAT, "demo": state["demo"], "kms": state["kms"]}
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(header, separators=(",", ":")) + "\n")
        for logical, items in state["tables"].items():
            for frozen in items:
                out.write(json.dumps({"t": logical, "i": item_json(frozen)}, separators=(",", ":")) + "\n")
    tmp.replace(path)


class Saver:
    """Saves a snapshot every `interval_s` seconds in the background, and once more on `stop`."""

    def __init__(self, path: Path, take: Any, interval_s: float = 30.0):
        self.path, self.take, self.interval_s = path, take, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meterline-dev-state", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            # A failed periodic save is retried next time; the final one (stop) reports.
            with contextlib.suppress(Exception):
                save(self.path, self.take())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        save(self.path, self.take())
