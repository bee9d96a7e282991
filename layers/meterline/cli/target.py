"""Which Meterline the CLI talks to, in order:

1. `--stack NAME` / `METERLINE_STACK`: a deployed stack; table names and the KMS key come from its
   CloudFormation outputs, with the caller's own AWS credentials.
2. A running `meterline dev`: it writes its endpoint and names to a state file the CLI reads.
3. The environment (`METERLINE_TABLE_*`, `METERLINE_KMS_KEY_ID`, `METERLINE_AWS_ENDPOINT`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from meterline.config import Settings
from meterline.store.schema import ALL_TABLES


def state_file() -> Path:
    base = os.environ.get("METERLINE_STATE_DIR") or str(Path.home() / ".meterline")
    return Path(base) / "dev.json"


def write_dev_state(settings: Settings, extra: dict[str, Any]) -> Path:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"endpoint": settings.aws_endpoint, "region": settings.region, "tables": settings.table_names,
               "kms_key_id": settings.kms_key_id, "pid": os.getpid(), **extra}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.chmod(tmp, 0o600)  # holds the demo key id and the local endpoint: owner-only
    tmp.replace(path)
    return path


def read_dev_state() -> dict[str, Any] | None:
    path = state_file()
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except ValueError:
        return None
    pid = state.get("pid")
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # a dev server that died without cleaning up
        except PermissionError:
            pass
    return state


def settings_from_stack(stack: str, region: str | None = None) -> Settings:
    import boto3

    cfn = boto3.client("cloudformation", region_name=region) if region else boto3.client("cloudformation")
    outputs = {o["OutputKey"]: o["OutputValue"]
               for o in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
    names = {}
    for spec in ALL_TABLES:
        for key in (f"{spec.logical_name.capitalize()}TableName", f"Table{spec.logical_name.capitalize()}"):
            if key in outputs:
                names[spec.logical_name] = outputs[key]
    kms = outputs.get("VaultKeyArn") or outputs.get("VaultKeyId") or ""
    return Settings(region=cfn.meta.region_name, table_names=names, kms_key_id=kms)


def resolve(stack: str | None = None) -> tuple[Settings, dict[str, Any]]:
    """(settings, context); context may name a default workspace (from `meterline dev`)."""
    stack = stack or os.environ.get("METERLINE_STACK")
    if stack:
        return settings_from_stack(stack), {}
    state = read_dev_state()
    if state is not None:
        for name, value in {"AWS_ACCESS_KEY_ID": "meterline-dev", "AWS_SECRET_ACCESS_KEY": "meterline-dev"}.items():
            os.environ.setdefault(name, value)
        return Settings(region=state["region"], aws_endpoint=state["endpoint"], table_names=state["tables"],
                        kms_key_id=state["kms_key_id"]), state
    return Settings.from_env(), {}


def workspace_of(args: Any, context: dict[str, Any]) -> str:
    """--workspace, else METERLINE_WORKSPACE, else the running `meterline dev`'s demo workspace."""
    import sys

    ws = getattr(args, "workspace", None) or os.environ.get("METERLINE_WORKSPACE") or context.get("workspace")
    if not ws:
        sys.exit("error: --workspace is required (or set METERLINE_WORKSPACE)")
    return ws


def ops(args: Any) -> tuple[Any, dict[str, Any]]:
    """The control-plane operations for the CLI's target, acting as the local user (audited)."""
    from meterline.admin.ops import Ops

    settings, context = resolve(getattr(args, "stack", None))
    return Ops(settings, actor=f"cli:{os.environ.get('USER', 'unknown')}"), context
