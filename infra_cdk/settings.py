"""Deploy-time settings read from CDK context (`-c key=value` or cdk.json).

Context values given on the command line arrive as strings, those in cdk.json as JSON values; both
are accepted. A wrong value fails the synth with a message naming the key.
"""

from __future__ import annotations

import re
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


def _choice(key: str, raw: Any, default: str, choices: dict[str, str]) -> str:
    text = str(raw).strip().lower() if raw is not None else default
    if text not in choices:
        raise ContextError(f"context {key}={raw!r}: expected one of {sorted(set(choices.values()))}")
    return choices[text]


def _int(key: str, raw: Any, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise ContextError(f"context {key}={raw!r}: expected an integer") from None
    if not low <= value <= high:
        raise ContextError(f"context {key}={value}: expected {low}..{high}")
    return value


def _web_acl_arn(raw: Any) -> str | None:
    if raw is None or not str(raw).strip():
        return None
    arn = str(raw).strip()
    if not re.fullmatch(r"arn:aws[a-z-]*:wafv2:us-east-1:\d{12}:global/webacl/[\w-]+/[\w-]+", arn):
        raise ContextError(f"context {c.CTX_EDGE_WEB_ACL_ARN}={raw!r}: expected the ARN of a CLOUDFRONT-scope "
                           "web ACL (arn:aws:wafv2:us-east-1:<account>:global/webacl/<name>/<id>)")
    return arn


COMPUTE_CHOICES = {
    c.COMPUTE_ON_DEMAND: c.COMPUTE_ON_DEMAND, "ondemand": c.COMPUTE_ON_DEMAND, "lambda": c.COMPUTE_ON_DEMAND,
    c.COMPUTE_MANAGED: c.COMPUTE_MANAGED, "managed": c.COMPUTE_MANAGED, "lmi": c.COMPUTE_MANAGED,
}
EDGE_CHOICES = {c.EDGE_NONE: c.EDGE_NONE, "": c.EDGE_NONE, "false": c.EDGE_NONE,
                c.EDGE_CLOUDFRONT_WAF: c.EDGE_CLOUDFRONT_WAF, "cloudfront": c.EDGE_CLOUDFRONT_WAF}
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_CRON = re.compile(r"cron\((\S+ ){5}\S+\)")


def _schedule(raw: Any) -> str | None:
    """An EventBridge schedule expression, checked at synth (EventBridge's own grammar: `rate(1 day)`,
    `rate(6 hours)` - singular unit for 1 -, or a six-field `cron(...)`); unset/off = None. A sync
    fetches and compiles the whole price data, so more often than hourly is refused."""
    if raw is None or str(raw).strip().lower() in ("", "off", "false", "none", "0"):
        return None
    text = str(raw).strip()
    rate = _RATE.fullmatch(text)
    if rate:
        count, unit = int(rate.group(1)), rate.group(2)
        if count < 1 or (count == 1) != (not unit.endswith("s")):
            raise ContextError(f"context {c.CTX_PRICES_SYNC}={text!r}: write rate(1 day) or rate(N days)")
        if unit.startswith("minute"):
            raise ContextError(f"context {c.CTX_PRICES_SYNC}={text!r}: at most hourly, e.g. rate(1 day)")
        return text
    if _CRON.fullmatch(text):
        return text
    raise ContextError(f"context {c.CTX_PRICES_SYNC}={text!r}: expected rate(1 day), rate(N hours|days), "
                       "cron(...) or off")


def _https(raw: Any) -> str | None:
    if raw is None or not str(raw).strip():
        return None
    text = str(raw).strip()
    if not text.startswith("https://"):
        raise ContextError(f"context {c.CTX_PRICES_SYNC_SOURCE}={text!r}: expected an https:// URL")
    return text


@dataclass(frozen=True)
class DeploySettings:
    architecture: str = c.DEFAULT_ARCHITECTURE
    memory_mb: int = c.DEFAULT_MEMORY_MB
    snapstart: bool = True
    skip_layer_install: bool = False
    docker_bundling: bool = False
    reserved_concurrency: bool = True
    gateway_max_concurrency: int | None = None
    compute: str = c.COMPUTE_ON_DEMAND
    managed_max_vcpus: int = c.DEFAULT_MANAGED_MAX_VCPUS
    managed_concurrency: int = c.DEFAULT_MANAGED_CONCURRENCY
    edge: str = c.EDGE_NONE
    edge_rate_limit: int = c.DEFAULT_EDGE_RATE_LIMIT
    edge_web_acl_arn: str | None = None

    @property
    def managed(self) -> bool:
        return self.compute == c.COMPUTE_MANAGED

    @property
    def python_version(self) -> str:
        """Runtime of every function and the layers' wheels (LMI needs 3.13+)."""
        return c.MANAGED_PYTHON_VERSION if self.managed else c.PYTHON_VERSION

    @property
    def gateway_memory_mb(self) -> int:
        """On managed instances an environment has at least 2 GiB; memory is rounded up to whole GiB
        (one vCPU per environment at 2..8 GiB per vCPU)."""
        if not self.managed:
            return self.memory_mb
        gib = -(-self.memory_mb // 1024)
        return min(max(gib * 1024, c.MANAGED_MIN_MEMORY_MB), c.MANAGED_MAX_MEMORY_MB)

    @property
    def gateway_snapstart(self) -> bool:
        """SnapStart is an on-demand feature: managed-instance environments are long-lived and warm."""
        return self.snapstart and not self.managed
    prices_sync_schedule: str | None = None  # EventBridge expression; None = no scheduled sync
    prices_sync_source: str | None = None

    def concurrency_of(self, service: str) -> int | None:
        """Reserved concurrency of a function (None: the account's unreserved pool)."""
        if service == c.SERVICE_GATEWAY:
            return None if self.managed else self.gateway_max_concurrency
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
            compute=_choice(c.CTX_COMPUTE, node.try_get_context(c.CTX_COMPUTE), c.COMPUTE_ON_DEMAND, COMPUTE_CHOICES),
            managed_max_vcpus=_int(c.CTX_MANAGED_MAX_VCPUS, node.try_get_context(c.CTX_MANAGED_MAX_VCPUS),
                                   c.DEFAULT_MANAGED_MAX_VCPUS, 2, 15000),
            managed_concurrency=_int(c.CTX_MANAGED_CONCURRENCY, node.try_get_context(c.CTX_MANAGED_CONCURRENCY),
                                     c.DEFAULT_MANAGED_CONCURRENCY, 1, c.MANAGED_MAX_CONCURRENCY),
            edge=_choice(c.CTX_EDGE, node.try_get_context(c.CTX_EDGE), c.EDGE_NONE, EDGE_CHOICES),
            edge_rate_limit=_int(c.CTX_EDGE_RATE_LIMIT, node.try_get_context(c.CTX_EDGE_RATE_LIMIT),
                                 c.DEFAULT_EDGE_RATE_LIMIT, 10, 2_000_000_000),
            edge_web_acl_arn=_web_acl_arn(node.try_get_context(c.CTX_EDGE_WEB_ACL_ARN)),
            prices_sync_schedule=_schedule(node.try_get_context(c.CTX_PRICES_SYNC)),
            prices_sync_source=_https(node.try_get_context(c.CTX_PRICES_SYNC_SOURCE)),
        )

    def __post_init__(self) -> None:
        if self.managed and self.gateway_max_concurrency is not None:
            # One knob for the data plane's ceiling on managed instances: the capacity provider's vCPUs.
            raise ContextError(
                f"context {c.CTX_GATEWAY_MAX_CONCURRENCY} does not apply to {c.CTX_COMPUTE}={c.COMPUTE_MANAGED}: "
                f"cap the data plane with {c.CTX_MANAGED_MAX_VCPUS} (vCPUs) instead"
            )

    @property
    def pip_platforms(self) -> tuple[str, ...]:
        """Wheel platform tags the Lambda runtime can load (python3.12+ runs on Amazon Linux 2023,
        glibc 2.34). pip takes `manylinux_2_NN` tags literally (it expands only the legacy
        `manylinux2014` alias, down to 2_17), so every glibc from 2_34 down to 2_17 is listed: a
        `manylinux_2_28` wheel (cryptography, pydantic-core, ...) is accepted."""
        machine = "aarch64" if self.architecture == "arm64" else "x86_64"
        return (*(f"manylinux_2_{minor}_{machine}" for minor in range(34, 16, -1)), f"manylinux2014_{machine}")
