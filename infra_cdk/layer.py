"""The two Lambda layers, built at synth time on this machine (no Docker needed).

    DependenciesLayer  python/<site-packages>  the runtime dependencies of pyproject.toml, resolved
                                               by pip for the Lambda platform (manylinux wheels of
                                               the target architecture and Python version)
    AppLayer           python/meterline        the application package (layers/meterline)

Both are `lambda.Code.from_asset(..., bundling=BundlingOptions(local=...))`: CDK calls the local
bundler first and only falls back to Docker (the SAM build image) when context
`meterline:docker-bundling=true` is set, in which case no local bundler is passed at all.

boto3/botocore ARE installed into the layer, on purpose: the runtime's bundled boto3 lags behind
and changes under us when AWS patches the runtime, aws-encryption-sdk depends on boto3 anyway, and
the layer stays far below Lambda's 250 MB unzipped limit (~90 MB in all, ~31 MB of it botocore).
The functions put /opt/python ahead of the runtime's own copy on sys.path, so the pinned one wins.

With context `meterline:skip-layer-install=true` (tests, offline synths) the dependencies layer is
an empty placeholder and nothing touches the network; such a synth must not be deployed, and the
stack carries a warning saying so.

Bytecode: /opt is read-only on Lambda, so modules without a matching .pyc are compiled on every
cold start. When an interpreter of the runtime's Python version is found (the synth interpreter,
$METERLINE_LAYER_PYTHON, or `pythonX.Y` on PATH), both layers get .pyc files compiled with
`--invalidation-mode unchecked-hash` (valid whatever the file times after unzipping). Without one
a deployable synth fails (install pythonX.Y, set METERLINE_LAYER_PYTHON or use docker bundling): a
layer without .pyc doubles import CPU on every cold start. The .pyc files are part of the asset
hash, so a changed compile publishes a new layer version.

Pinned and hashed: pip installs `--require-hashes -r layers/requirements-py<X.Y>.lock` (written by
scripts/lock_layer.py from pyproject's dependencies and layers/constraints.txt, the tested set: every
wheel's sha256 for both architectures), with the constraints as a second guard, and accepts every
manylinux tag from 2_17 to 2_34 (pip expands only the legacy `manylinux2014` alias itself).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling, RemovalPolicy, Stage
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.settings import DeploySettings

# Lambda's limit for a function and all its layers, unzipped.
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
PLACEHOLDER_NOTE = (
    "Placeholder built with context meterline:skip-layer-install=true.\n"
    "It holds no dependencies: a stack synthesized this way must not be deployed.\n"
)
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".pytest_cache")


class LayerBuildError(RuntimeError):
    """A layer could not be built (pip failed, or the result does not fit in a Lambda)."""


def runtime_requirements(pyproject: Path = c.PYPROJECT) -> list[str]:
    """`[project].dependencies` of pyproject.toml: what the functions import at run time."""
    with pyproject.open("rb") as fh:
        project = tomllib.load(fh).get("project", {})
    deps = project.get("dependencies")
    if not deps:
        raise LayerBuildError(f"{pyproject}: [project].dependencies is empty")
    return [str(d) for d in deps]


CONSTRAINTS = c.REPO_ROOT / "layers" / "constraints.txt"


def lock_file(python_version: str) -> Path:
    """The hashed lock the layer is installed from (scripts/lock_layer.py writes it)."""
    return c.REPO_ROOT / "layers" / f"requirements-py{python_version}.lock"


def pip_install_args(target: str, settings: DeploySettings, lock: str | None = None,
                     constraints: str = str(CONSTRAINTS)) -> list[str]:
    """pip arguments that install the hashed lock's wheels for the Lambda platform, never this machine's.

    `--require-hashes -r <lock>`: every distribution pinned and each wheel's sha256 checked, so a synth
    ships the tested set or fails (a dependency missing from the lock fails too: hash mode refuses an
    unlisted requirement). The constraints file is passed as well, a second guard on the versions."""
    args = [
        "install",
        "--require-hashes",
        "--requirement",
        lock or str(lock_file(settings.python_version)),
        "--constraint",
        constraints,
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        settings.python_version,
    ]
    for platform in settings.pip_platforms:
        args += ["--platform", platform]
    args += [
        "--target",
        target,
        "--no-compile",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ]
    return args


def compile_args(directory: str) -> list[str]:
    return ["-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", directory]


def runtime_python(version: str = c.PYTHON_VERSION) -> str | None:
    """An interpreter whose version is the Lambda runtime's, to compile .pyc files; else None."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    candidates = [os.environ.get("METERLINE_LAYER_PYTHON"), shutil.which(f"python{version}")]
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return candidate
    return None


def _compile_bytecode(directory: Path, required: bool = True, version: str = c.PYTHON_VERSION) -> None:
    python = runtime_python(version)
    if python is None and required:
        raise LayerBuildError(
            f"no python{version} found to compile {directory.name}'s .pyc files (a layer without "
            "them doubles import CPU on every cold start): install it, set METERLINE_LAYER_PYTHON, or "
            "synth with -c meterline:docker-bundling=true"
        )
    if python is None:
        print(
            f"meterline: no python{version} found; {directory.name} ships without .pyc files "
            "(set METERLINE_LAYER_PYTHON to precompile)",
            file=sys.stderr,
        )
        return
    # Some third-party files do not compile (templates, py2 leftovers): those simply stay .py only.
    subprocess.run([python, *compile_args(str(directory))], check=False, capture_output=True)


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def build_dependencies(out_dir: Path, settings: DeploySettings) -> None:
    """Fill `out_dir/python` with the runtime dependencies of the hashed lock (or a placeholder)."""
    target = out_dir / "python"
    target.mkdir(parents=True, exist_ok=True)
    if settings.skip_layer_install:
        (target / "PLACEHOLDER.txt").write_text(PLACEHOLDER_NOTE)
        return
    lock = lock_file(settings.python_version)
    if not lock.is_file():
        raise LayerBuildError(f"{lock} is missing: run scripts/lock_layer.py (after changing constraints.txt)")
    cmd = [sys.executable, "-m", "pip", *pip_install_args(str(target), settings)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LayerBuildError(f"pip failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    # Console scripts are useless in a layer (their shebang points at this machine's Python).
    shutil.rmtree(target / "bin", ignore_errors=True)
    _compile_bytecode(target, version=settings.python_version)
    size = _tree_size(target)
    if size > LAMBDA_UNZIPPED_LIMIT_BYTES * 0.8:
        raise LayerBuildError(
            f"dependencies layer is {size / 2**20:.0f} MB unzipped; Lambda allows 250 MB for a "
            "function and its layers together"
        )


def build_app_package(out_dir: Path, package_dir: Path = c.APP_PACKAGE_DIR, required: bool = True,
                      version: str = c.PYTHON_VERSION) -> None:
    """Copy the application package to `out_dir/python/<package>` (no caches, no egg-info)."""
    if not (package_dir / "__init__.py").is_file():
        raise LayerBuildError(f"{package_dir} is not a Python package")
    target = out_dir / "python" / package_dir.name
    shutil.copytree(package_dir, target, ignore=_COPY_IGNORE, dirs_exist_ok=True)
    _compile_bytecode(target, required, version)


def docker_dependencies_command(settings: DeploySettings) -> list[str]:
    """Docker fallback for the dependencies layer (source folder mounted at /asset-input)."""
    pip = " ".join(
        pip_install_args("/asset-output/python", settings, lock="/asset-input/requirements.lock",
                         constraints="/asset-input/constraints.txt")
    )
    compile_ = " ".join(compile_args("/asset-output/python"))
    return [
        "bash",
        "-c",
        f"python -m pip {pip} && rm -rf /asset-output/python/bin && (python {compile_} || true)",
    ]


def docker_app_command(package: str) -> list[str]:
    """Docker fallback for the application layer (layers/ mounted at /asset-input)."""
    compile_ = " ".join(compile_args("/asset-output/python"))
    return [
        "bash",
        "-c",
        f"mkdir -p /asset-output/python && cp -r /asset-input/{package} /asset-output/python/"
        " && find /asset-output/python -name __pycache__ -prune -exec rm -rf {} +"
        f" && (python {compile_} || true)",
    ]


@jsii.implements(ILocalBundling)
class LocalBundler:
    """CDK's local-bundling hook: runs `build(output_dir)` on this machine."""

    def __init__(self, build: Callable[[Path], None]) -> None:
        self._build = build

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        self._build(Path(output_dir))
        return True


def _docker_image(settings: DeploySettings) -> DockerImage:
    return runtime(settings).bundling_image


def runtime(settings: DeploySettings) -> lambda_.Runtime:
    """The managed runtime of the settings' Python (CDK's constant, which knows SnapStart support)."""
    runtime: lambda_.Runtime = getattr(lambda_.Runtime, "PYTHON_" + settings.python_version.replace(".", "_"))
    return runtime


def architecture(settings: DeploySettings) -> lambda_.Architecture:
    return lambda_.Architecture.ARM_64 if settings.architecture == "arm64" else lambda_.Architecture.X86_64


class DependenciesLayer(Construct):
    """Third-party runtime dependencies for every Meterline function."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploySettings) -> None:
        super().__init__(scope, construct_id)
        requirements = runtime_requirements()
        # The asset's source folder only carries the lock and pins for the Docker fallback; the
        # asset hash is taken over the built output, so a changed resolution publishes a new layer.
        pins = CONSTRAINTS.read_text()
        lock_path = lock_file(settings.python_version)
        locked = lock_path.read_text() if lock_path.is_file() else ""
        digest = hashlib.sha256(("\n".join(requirements) + pins + locked).encode()).hexdigest()[:16]
        source = Path(Stage.of(self).outdir) / "meterline-build" / f"deps-{digest}"
        source.mkdir(parents=True, exist_ok=True)
        (source / "requirements.txt").write_text("\n".join(requirements) + "\n")
        (source / "constraints.txt").write_text(pins)
        (source / "requirements.lock").write_text(locked)

        if settings.docker_bundling and not settings.skip_layer_install:
            bundling = BundlingOptions(image=_docker_image(settings), command=docker_dependencies_command(settings))
        else:
            bundling = BundlingOptions(
                image=_docker_image(settings),
                local=LocalBundler(lambda out: build_dependencies(out, settings)),
            )

        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=lambda_.Code.from_asset(
                str(source), asset_hash_type=AssetHashType.OUTPUT, bundling=bundling
            ),
            compatible_runtimes=[runtime(settings)],
            compatible_architectures=[architecture(settings)],
            description=f"Meterline runtime dependencies (python{settings.python_version}, {settings.architecture})",
            removal_policy=RemovalPolicy.DESTROY,
        )


class AppLayer(Construct):
    """The `meterline` package, shared by every function (functions hold only their entry point)."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: DeploySettings) -> None:
        super().__init__(scope, construct_id)
        package = c.APP_PACKAGE_DIR
        if settings.docker_bundling:
            bundling = BundlingOptions(image=_docker_image(settings), command=docker_app_command(package.name))
        else:
            # Offline/test synths (placeholder dependencies) may lack the runtime's Python.
            strict = not settings.skip_layer_install
            bundling = BundlingOptions(image=_docker_image(settings),
                                       local=LocalBundler(lambda out: build_app_package(out, required=strict,
                                                                                     version=settings.python_version)))
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=lambda_.Code.from_asset(
                str(package.parent),
                asset_hash_type=AssetHashType.OUTPUT,
                bundling=bundling,
                # No __pycache__ exclusion: the bundle's .pyc are our own compile (the copy skips the
                # source tree's caches), and excluding them would leave them out of the asset hash.
                exclude=["*.egg-info"],
            ),
            compatible_runtimes=[runtime(settings)],
            compatible_architectures=[architecture(settings)],
            description="Meterline application package",
            removal_policy=RemovalPolicy.DESTROY,
        )
