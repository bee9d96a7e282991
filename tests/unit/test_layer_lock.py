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

    args = layer.pip_install_args("/out", DeploySettings())
    assert args[args.index("--constraint") + 1] == str(ROOT / "layers/constraints.txt")
    assert '-c "$root/layers/constraints.txt"' in (ROOT / "scripts/bootstrap.sh").read_text()


# --- The hashed lock (layers/requirements-py<X.Y>.lock, scripts/lock_layer.py) ---------------------

def parse_lock(path: Path) -> tuple[dict[str, tuple[str, set[str]]], dict[str, str]]:
    """{name: (version, hashes)} of the requirements, and {wheel file: sha256} of the comment lines."""
    requirements: dict[str, tuple[str, set[str]]] = {}
    wheels: dict[str, str] = {}
    text = path.read_text()
    for line in text.splitlines():
        if line.startswith("# ") and ".whl sha256=" in line:
            file, _, digest = line[2:].partition(" sha256=")
            wheels[file] = digest
    for block in text.replace("\\\n", " ").splitlines():
        block = block.strip()
        if not block or block.startswith("#"):
            continue
        spec, *options = block.split()
        name, _, version = spec.partition("==")
        assert version and options, f"{path.name}: not pinned with hashes: {block}"
        assert all(o.startswith("--hash=sha256:") for o in options), block
        requirements[_name(name)] = (version, {o.removeprefix("--hash=sha256:") for o in options})
    return requirements, wheels


def _installable(wheel: str, python: str, machine: str) -> bool:
    """Whether pip would install this wheel on Lambda's python<python>, <machine>, glibc 2.34."""
    from packaging.utils import parse_wheel_filename

    nodot = python.replace(".", "")
    for tag in parse_wheel_filename(wheel)[3]:
        interpreter_ok = tag.interpreter in (f"cp{nodot}", f"py{nodot[0]}", "py3") or (
            tag.abi == "abi3" and tag.interpreter.startswith("cp3") and int(tag.interpreter[3:]) <= int(nodot[1:]))
        abi_ok = tag.abi in (f"cp{nodot}", "abi3", "none")
        platform = tag.platform
        glibc_ok = platform == "any" or (platform.endswith("_" + machine) and (
            platform.startswith("manylinux2014") or (platform.startswith("manylinux_2_")
                                                     and int(platform.split("_")[2]) <= 34)))
        if interpreter_ok and abi_ok and glibc_ok:
            return True
    return False


PYTHONS = ("3.12", "3.13")  # constants.PYTHON_VERSION (on-demand) and MANAGED_PYTHON_VERSION


def test_each_lock_matches_the_constraints_and_covers_every_runtime_dependency():
    pinned = pins()
    needed = closure()
    for python in PYTHONS:
        path = ROOT / f"layers/requirements-py{python}.lock"
        assert path.is_file(), f"{path.name} missing: run scripts/lock_layer.py"
        locked, _ = parse_lock(path)
        missing = needed - set(locked)
        assert not missing, f"{path.name} lacks {sorted(missing)}: re-run scripts/lock_layer.py"
        for name, (version, _) in locked.items():
            assert pinned.get(name) == version, (
                f"{path.name}: {name}=={version} but constraints.txt pins {pinned.get(name)}: re-run the script")


def test_every_locked_distribution_has_a_hashed_wheel_for_each_lambda_target():
    for python in PYTHONS:
        locked, wheels = parse_lock(ROOT / f"layers/requirements-py{python}.lock")
        from packaging.utils import canonicalize_name, parse_wheel_filename

        for name, (version, hashes) in locked.items():
            own = {f: h for f, h in wheels.items() if canonicalize_name(parse_wheel_filename(f)[0]) == name}
            assert {str(parse_wheel_filename(f)[1]) for f in own} == {version}, name
            assert set(own.values()) == hashes, f"{name}: the hashes are not those of its listed wheels"
            for machine in ("aarch64", "x86_64"):
                assert any(_installable(f, python, machine) for f in own), (
                    f"python{python}/{machine}: no hashed wheel of {name}=={version} in the lock")


def test_the_layer_installs_the_lock_of_its_python_with_hashes_required():
    from infra_cdk import layer
    from infra_cdk.settings import DeploySettings

    for settings, python in ((DeploySettings(), "3.12"), (DeploySettings(compute="managed-instances"), "3.13")):
        args = layer.pip_install_args("/out", settings)
        assert "--require-hashes" in args
        assert args[args.index("--requirement") + 1] == str(ROOT / f"layers/requirements-py{python}.lock")
        assert args[args.index("--python-version") + 1] == python
