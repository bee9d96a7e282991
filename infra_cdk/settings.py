"""Deploy-time settings read from CDK context (`-c key=value` or cdk.json).

Context values given on the command line arrive as strings, those in cdk.json as JSON values; both
are accepted. A wrong value fails the synth with a message naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from constructs import Node

from infra_cdk import constants as c

ARCHITECTURES = ("arm64", "x86_64")


class ContextError(ValueError):
    """A context value that cannot be used (raised at synth time, before anything is built)."""


def _bool(key: str, raw: Any, default: bool) -> bool:
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ContextError(f"context {key}={raw!r}: expected true or false")


def _memory(raw: Any) -> int:
    if raw is None:
        return c.DEFAULT_MEMORY_MB
    try:
        value = int(str(raw))
    except ValueError:
        raise ContextError(f"context {c.CTX_MEMORY}={raw!r}: expected an integer (MB)") from None
    if not 128 <= value <= 10240:
        raise ContextError(f"context {c.CTX_MEMORY}={value}: Lambda memory is 128..10240 MB")
    return value


def _cap(raw: Any) -> int | None:
    if raw is None or str(raw).strip() in ("", "0", "none"):
        return None
    try:
        value = int(str(raw))
    except ValueError:
        raise ContextError(f"context {c.CTX_GATEWAY_MAX_CONCURRENCY}={raw!r}: expected an integer") from None
    if value < 1:
        raise ContextError(f"context {c.CTX_GATEWAY_MAX_CONCURRENCY}={value}: expected a positive integer")
    return value


@dataclass(frozen=True)
class DeploySettings:
    architecture: str = c.DEFAULT_ARCHITECTURE
    memory_mb: int = c.DEFAULT_MEMORY_MB
    snapstart: bool = True
    skip_layer_install: bool = False
    docker_bundling: bool = False
    reserved_concurrency: bool = True
    gateway_max_concurrency: int | None = None

    def concurrency_of(self, service: str) -> int | None:
        """Reserved concurrency of a function (None: the account's unreserved pool)."""
        if service == c.SERVICE_GATEWAY:
            return self.gateway_max_concurrency
        return c.RESERVED_CONCURRENCY.get(service) if self.reserved_concurrency else None

    @classmethod
    def from_node(cls, node: Node) -> DeploySettings:
        arch = str(node.try_get_context(c.CTX_ARCHITECTURE) or c.DEFAULT_ARCHITECTURE).strip().lower()
        arch = {"arm": "arm64", "aarch64": "arm64", "x86": "x86_64", "amd64": "x86_64"}.get(arch, arch)
        if arch not in ARCHITECTURES:
            raise ContextError(f"context {c.CTX_ARCHITECTURE}={arch!r}: expected one of {ARCHITECTURES}")
        return cls(
            architecture=arch,
            memory_mb=_memory(node.try_get_context(c.CTX_MEMORY)),
            snapstart=_bool(c.CTX_SNAPSTART, node.try_get_context(c.CTX_SNAPSTART), True),
            skip_layer_install=_bool(
                c.CTX_SKIP_LAYER_INSTALL, node.try_get_context(c.CTX_SKIP_LAYER_INSTALL), False
            ),
            docker_bundling=_bool(c.CTX_DOCKER_BUNDLING, node.try_get_context(c.CTX_DOCKER_BUNDLING), False),
            reserved_concurrency=_bool(
                c.CTX_RESERVED_CONCURRENCY, node.try_get_context(c.CTX_RESERVED_CONCURRENCY), True
            ),
            gateway_max_concurrency=_cap(node.try_get_context(c.CTX_GATEWAY_MAX_CONCURRENCY)),
        )

    @property
    def pip_platforms(self) -> tuple[str, ...]:
        """Wheel platform tags the Lambda runtime can load (python3.12+ runs on Amazon Linux 2023,
        glibc 2.34). pip takes `manylinux_2_NN` tags literally (it expands only the legacy
        `manylinux2014` alias, down to 2_17), so every glibc from 2_34 down to 2_17 is listed: a
        `manylinux_2_28` wheel (cryptography, pydantic-core, ...) is accepted."""
        machine = "aarch64" if self.architecture == "arm64" else "x86_64"
        return (*(f"manylinux_2_{minor}_{machine}" for minor in range(34, 16, -1)), f"manylinux2014_{machine}")
