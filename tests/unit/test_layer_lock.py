"""The layer's pinned dependency set (layers/constraints.txt) is the set the tests run on."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_ENV = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "aarch64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def _name(raw: str) -> str:
    return raw.lower().replace("_", "-").replace(".", "-")


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "layers/constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            out[_name(name)] = version
    return out


def closure() -> set[str]:
    """Every distribution the runtime dependencies need on Lambda (markers evaluated for it)."""
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    seen: set[str] = set()
    todo = [(Requirement(r), ("",)) for r in runtime]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({**LAMBDA_ENV, "extra": e}) for e in extras):
            continue
        name = _name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for sub in distribution(req.name).requires or []:
            todo.append((Requirement(sub), tuple(req.extras) or ("",)))
    return {k.split("[")[0] for k in seen}


def test_every_runtime_dependency_is_pinned_and_installed_at_its_pin():
    pinned = pins()
    needed = closure()
    missing = {name: distribution(name).version for name in needed - set(pinned)}
    assert not missing, f"pin these in layers/constraints.txt (name==version, the tested one): {missing}"
    for name in needed:
        try:
            installed = distribution(name).version
        except PackageNotFoundError:  # pragma: no cover - closure() would have failed first
            raise AssertionError(f"{name} is not installed") from None
        assert installed == pinned[name], f"{name}: tests run {installed}, the layer ships {pinned[name]}"


def test_the_layer_build_and_the_bootstrap_use_the_pins():
    from infra_cdk import layer
    from infra_cdk.settings import DeploySettings

    args = layer.pip_install_args(["fastapi"], "/out", DeploySettings())
    assert args[args.index("--constraint") + 1] == str(ROOT / "layers/constraints.txt")
    assert '-c "$root/layers/constraints.txt"' in (ROOT / "scripts/bootstrap.sh").read_text()
