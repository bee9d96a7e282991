"""Layer building (pure parts and the local bundlers) and context parsing. No pip runs here."""

from __future__ import annotations

import pytest

pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (pip install -e '.[cdk]')")

from infra_cdk import constants as c
from infra_cdk import layer
from infra_cdk.settings import ContextError, DeploySettings

ARM = DeploySettings()
X86 = DeploySettings(architecture="x86_64")


def test_requirements_come_from_pyproject():
    reqs = layer.runtime_requirements()
    names = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in reqs}
    assert {"fastapi", "uvicorn", "mangum", "aws-lambda-powertools", "aws-encryption-sdk", "boto3"} <= names
    assert any(r.startswith("aws-encryption-sdk[MPL]") for r in reqs)  # v4 needs the MPL extra
    # Test and CDK tooling never ship to Lambda.
    assert not names & {"moto", "pytest", "aws-cdk-lib", "cdk-nag", "cfn-lint"}


def test_requirements_reject_an_empty_list(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = []\n')
    with pytest.raises(layer.LayerBuildError):
        layer.runtime_requirements(pyproject)


@pytest.mark.parametrize(("settings", "machine"), [(ARM, "aarch64"), (X86, "x86_64")])
def test_pip_resolves_for_lambda_not_for_this_machine(settings, machine):
    args = layer.pip_install_args("/out/python", settings)
    assert args[0] == "install"
    assert "--only-binary=:all:" in args
    assert args[args.index("--python-version") + 1] == c.PYTHON_VERSION
    assert args[args.index("--implementation") + 1] == "cp"
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms and all(p.endswith(f"_{machine}") for p in platforms)
    assert f"manylinux2014_{machine}" in platforms
    assert args[args.index("--target") + 1] == "/out/python"
    # Exactly the hashed lock of the runtime's Python: nothing resolved beyond it.
    assert "--require-hashes" in args
    assert args[args.index("--requirement") + 1] == str(layer.lock_file(c.PYTHON_VERSION))


def test_placeholder_layer_needs_no_network(tmp_path, monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError("the placeholder build must not run pip")

    monkeypatch.setattr(layer.subprocess, "run", no_subprocess)
    layer.build_dependencies(tmp_path, DeploySettings(skip_layer_install=True))
    assert [p.name for p in (tmp_path / "python").iterdir()] == ["PLACEHOLDER.txt"]


def test_pip_failure_is_reported(tmp_path, monkeypatch):
    class Failed:
        returncode = 1
        stderr = "ERROR: No matching distribution found for nothing-here"

    monkeypatch.setattr(layer.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(layer.LayerBuildError, match="No matching distribution"):
        layer.build_dependencies(tmp_path, ARM)


def test_app_package_is_copied_without_caches(tmp_path, monkeypatch):
    monkeypatch.setattr(layer, "runtime_python", lambda version=c.PYTHON_VERSION: None)
    package = tmp_path / "src" / "pkg"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "data.json").write_text("{}")
    (package / "sub" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"stale")
    out = tmp_path / "out"
    bundler = layer.LocalBundler(lambda o: layer.build_app_package(o, package, required=False))
    bundler.try_bundle(str(out), None)  # type: ignore[arg-type]
    copied = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert copied == ["python/pkg/__init__.py", "python/pkg/sub/__init__.py", "python/pkg/sub/data.json"]
    # A deployable build refuses to ship without bytecode.
    with pytest.raises(layer.LayerBuildError, match="pyc"):
        layer.build_app_package(tmp_path / "out2", package)


def test_app_layer_ships_fresh_bytecode_that_counts_in_its_hash(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(layer, "runtime_python", lambda version=c.PYTHON_VERSION: sys.executable)
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("X = 1\n")
    out = tmp_path / "out"
    layer.build_app_package(out, package)
    assert list((out / "python/pkg/__pycache__").glob("__init__.*.pyc"))
    app = (c.REPO_ROOT / "infra_cdk/layer.py").read_text()
    assert '"**/__pycache__"' not in app  # .pyc are part of the asset (and its OUTPUT hash)


@pytest.mark.parametrize("machine", ["aarch64", "x86_64"])
def test_manylinux_2_28_wheels_are_accepted(machine):
    from pip._internal.utils.compatibility_tags import _expand_allowed_platforms

    settings = ARM if machine == "aarch64" else X86
    accepted = _expand_allowed_platforms(list(settings.pip_platforms))
    for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux_2_34", "manylinux2014"):
        assert f"{tag}_{machine}" in accepted
    assert f"manylinux_2_35_{machine}" not in accepted  # newer than the runtime's glibc


def test_app_layer_source_is_the_real_package():
    assert (c.APP_PACKAGE_DIR / "__init__.py").is_file()
    assert (c.APP_PACKAGE_DIR / "store" / "schema.py").is_file()


def test_docker_fallback_commands():
    deps = layer.docker_dependencies_command(ARM)[-1]
    assert "pip install --require-hashes --requirement /asset-input/requirements.lock" in deps
    assert "--platform manylinux2014_aarch64" in deps and "--target /asset-output/python" in deps
    app = layer.docker_app_command("meterline")[-1]
    assert "cp -r /asset-input/meterline /asset-output/python/" in app


def test_runtime_python_matches_the_lambda_runtime():
    python = layer.runtime_python()
    if python is not None:  # only checkable where such an interpreter exists
        import subprocess

        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True
        )
        assert out.stdout.decode().strip() == c.PYTHON_VERSION


# --- context --------------------------------------------------------------------------------------


def _settings(**context):
    import aws_cdk as cdk

    return DeploySettings.from_node(cdk.App(context=context).node)


def test_context_defaults():
    s = _settings()
    assert (s.architecture, s.memory_mb, s.snapstart, s.skip_layer_install, s.docker_bundling) == (
        "arm64",
        1024,
        True,
        False,
        False,
    )


def test_context_from_the_command_line_is_strings():
    s = _settings(
        **{
            c.CTX_ARCHITECTURE: "x86_64",
            c.CTX_MEMORY: "2048",
            c.CTX_SNAPSTART: "false",
            c.CTX_SKIP_LAYER_INSTALL: "true",
        }
    )
    assert (s.architecture, s.memory_mb, s.snapstart, s.skip_layer_install) == ("x86_64", 2048, False, True)


@pytest.mark.parametrize(
    "context",
    [{c.CTX_ARCHITECTURE: "sparc"}, {c.CTX_MEMORY: "lots"}, {c.CTX_MEMORY: "64"}, {c.CTX_SNAPSTART: "maybe"}],
)
def test_bad_context_fails_the_synth(context):
    with pytest.raises(ContextError):
        _settings(**context)
