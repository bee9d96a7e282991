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

from meterline.config import LOCAL_HOSTS, Settings
from meterline.store.schema import ALL_TABLES


def state_dir() -> Path:
    return Path(os.environ.get("METERLINE_STATE_DIR") or str(Path.home() / ".meterline"))


def state_file() -> Path:
    """The entry tests and tools write without a port (a running `meterline dev` writes its own
    entry under instances/, one per port)."""
    return state_dir() / "dev.json"


def instance_file(port: int) -> Path:
    return state_dir() / "instances" / f"{port}.json"


def write_dev_state(settings: Settings, extra: dict[str, Any]) -> Path:
    path = instance_file(int(extra["port"])) if extra.get("port") else state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"endpoint": settings.aws_endpoint, "region": settings.region, "tables": settings.table_names,
               "kms_key_id": settings.kms_key_id, "pid": os.getpid(), **extra}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.chmod(tmp, 0o600)  # holds the demo key id and the local endpoint: owner-only
    tmp.replace(path)
    return path


def remove_dev_state(path: Path) -> None:
    """Remove a registry entry only if it is still this process's (never another instance's)."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


def _alive(pid: Any) -> bool:
    if not pid:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def running_instances() -> list[tuple[Path, dict[str, Any]]]:
    """Registry entries of live dev servers (entries of servers that died are ignored)."""
    found = []
    for path in [state_file(), *sorted((state_dir() / "instances").glob("*.json"))]:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and _alive(state.get("pid")):
            found.append((path, state))
    return found


class TargetError(Exception):
    """No Meterline to talk to, or more than one and no way to choose: the message says which."""


def read_dev_state() -> dict[str, Any] | None:
    """The running dev server's entry: the only one, or the one on METERLINE_DEV_PORT."""
    found = running_instances()
    wanted = os.environ.get("METERLINE_DEV_PORT")
    if wanted:
        found = [(p, s) for p, s in found if str(s.get("port")) == wanted]
        if not found:
            raise TargetError(f"no `meterline dev` is running on port {wanted} (METERLINE_DEV_PORT; looked in "
                              f"{state_dir() / 'instances'})")
    if len(found) > 1:
        ports = ", ".join(str(s.get("port", "?")) for _, s in found)
        raise TargetError(f"several `meterline dev` servers are running (ports {ports}); choose one with "
                          "METERLINE_DEV_PORT=<port>")
    if not found:
        return None
    path, state = found[0]
    return {**state, "registry": str(path)}


def describe(context: dict[str, Any]) -> str:
    """Which Meterline the CLI talked to, for error messages."""
    if context.get("stack"):
        return f"stack {context['stack']}"
    if context.get("registry"):
        return (f"the `meterline dev` server on port {context.get('port', '?')} (pid {context.get('pid')}, "
                f"embedded AWS {context.get('endpoint')}, from {context['registry']})")
    endpoint = os.environ.get("METERLINE_AWS_ENDPOINT")
    return f"the AWS endpoint {endpoint}" if endpoint else "AWS with the environment's credentials and table names"


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


# The last target resolved, so that an error anywhere can name the server the CLI looked for.
resolved: dict[str, Any] = {}


def resolve(stack: str | None = None) -> tuple[Settings, dict[str, Any]]:
    """(settings, context); context may name a default workspace (from `meterline dev`)."""
    stack = stack or os.environ.get("METERLINE_STACK")
    resolved.clear()
    if stack:
        resolved["stack"] = stack
        return settings_from_stack(stack), {"stack": stack}
    state = read_dev_state()
    if state is not None:
        resolved.update(state)
    if state is not None:
        for name, value in {"AWS_ACCESS_KEY_ID": "meterline-dev", "AWS_SECRET_ACCESS_KEY": "meterline-dev",
                            # The embedded AWS applies one call at a time and takes seconds to serialize
                            # a full 1 MB Query page (moto's response serializer, ~2.5 ms per ledger
                            # record): a report over a busy day must wait for it, not time out at 5 s.
                            "METERLINE_AWS_READ_TIMEOUT": "120"}.items():
            os.environ.setdefault(name, value)
        # The dev server is local: its providers may be local too (over http, on loopback).
        return Settings(region=state["region"], aws_endpoint=state["endpoint"], table_names=state["tables"],
                        kms_key_id=state["kms_key_id"], egress_allow_hosts=LOCAL_HOSTS), state
    return Settings.from_env(), {}


def workspace_of(args: Any, context: dict[str, Any]) -> str:
    """--workspace, else METERLINE_WORKSPACE, else the running `meterline dev`'s demo workspace."""
    import sys

    ws = getattr(args, "workspace", None) or os.environ.get("METERLINE_WORKSPACE") or context.get("workspace")
    if not ws:
        looked = "" if context.get("stack") else (
            f"; no running `meterline dev` was found (looked in {state_dir() / 'instances'}): start one with "
            "`scripts/meterline dev`, or pass --stack")
        sys.exit(f"error: --workspace is required (or set METERLINE_WORKSPACE){looked}")
    return ws


def ops(args: Any) -> tuple[Any, dict[str, Any]]:
    """The control-plane operations for the CLI's target, acting as the local user (audited)."""
    from meterline.admin.ops import Ops

    settings, context = resolve(getattr(args, "stack", None))
    return Ops(settings, actor=f"cli:{os.environ.get('USER', 'unknown')}"), context
