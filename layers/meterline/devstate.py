"""`meterline dev` keeps its state across restarts: every table's items, the vault's KMS key and
the demo key, in one file per port under the state dir (`<state dir>/data-<port>/state.json`,
owner-only). Saved every 30 seconds and on exit; loaded at start unless `--fresh`.

The embedded AWS runs in this process, so the snapshot reads moto's tables directly under the
same lock that serialises AWS requests (a consistent cut, no paging through Scan), and a restore
writes items straight into the tables without stream records (the restored rollups already count
them). The KMS key keeps its id and material, so provider keys stored in the vault still decrypt.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from meterline.config import Settings

FORMAT = 1
ACCOUNT = "123456789012"  # moto's default account


def _dynamodb(region: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[ACCOUNT][region]


def _kms(region: str) -> Any:
    from moto.kms.models import kms_backends

    return kms_backends[ACCOUNT][region]


def _key_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def snapshot(settings: Settings, lock: threading.Lock, demo: dict[str, str]) -> dict[str, Any]:
    with lock:
        backend = _dynamodb(settings.region)
        tables = {}
        for logical, name in settings.table_names.items():
            table = backend.tables.get(name)
            if table is not None:
                tables[logical] = [item.to_json()["Attributes"] for item in table.all_items()]
        key = _kms(settings.region).keys[_key_id(settings.kms_key_id)]
        material = key.key_material
    return {"format": FORMAT, "tables": tables, "demo": demo,
            "kms": {"id": key.id, "arn": key.arn, "material": base64.b64encode(material).decode()}}


def restore(settings: Settings, lock: threading.Lock, state: dict[str, Any]) -> Settings:
    """Load a snapshot into freshly provisioned tables and key; returns settings naming the old key."""
    with lock:
        backend = _dynamodb(settings.region)
        for logical, items in state["tables"].items():
            name = settings.table_names.get(logical)
            table = backend.tables.get(name) if name else None
            if table is None:
                continue  # a table this version no longer has
            shard, table.stream_shard = table.stream_shard, None  # no stream records for restored items
            try:
                for attrs in items:
                    table.put_item(attrs, overwrite=True)
            finally:
                table.stream_shard = shard
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
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("format") == FORMAT else None


def save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the demo key: owner-only
    with os.fdopen(fd, "w") as out:
        json.dump(state, out, separators=(",", ":"))
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
