"""boto3 clients, created once per process on first use (never at import time).

boto3 clients are thread-safe once built, which lets the async gateway hand DynamoDB calls to
worker threads. `METERLINE_AWS_ENDPOINT` points every client at the embedded moto server under
`meterline dev` and in tests.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from meterline.config import Settings

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str], Any] = {}


def client(service: str, settings: Settings) -> Any:
    cache_key = (service, settings.aws_endpoint, settings.region)
    found = _clients.get(cache_key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(cache_key)
        if found is None:
            import boto3  # heavy: imported on first use, off the module import path
            from botocore.config import Config

            config = Config(
                max_pool_connections=64,
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=2,
                # 5 s against DynamoDB. The test suite's embedded store (moto, one call at a time, in
                # the test process) can take far longer on a loaded CI machine: it sets a generous value.
                read_timeout=float(os.environ.get("METERLINE_AWS_READ_TIMEOUT") or 5),
                tcp_keepalive=True,
            )
            kwargs: dict[str, Any] = {"region_name": settings.region, "config": config}
            if settings.aws_endpoint:
                kwargs["endpoint_url"] = settings.aws_endpoint
            found = boto3.session.Session().client(service, **kwargs)
            _clients[cache_key] = found
    return found


def reset_clients() -> None:
    """Forget every client (tests switch endpoints between sessions)."""
    with _lock:
        _clients.clear()
