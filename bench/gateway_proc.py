"""The gateway in its own process for the benchmark; on SIGUSR1 it writes its counters to a file.

Settings come from the environment (Settings.from_env), as on Lambda. With BENCH_PROFILE=<file>,
SIGUSR2 starts a CPU-time sampling profile (bench/cpuprof.py) and the next SIGUSR2 writes it there.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import uvicorn

from meterline.config import Settings
from meterline.gateway.app import create_app
from meterline.gateway.services import Services


def main() -> None:
    port, stats_path = int(sys.argv[1]), sys.argv[2]
    services = Services.build(Settings.from_env())

    def dump(*_: object) -> None:
        stats = {
            "key_misses": services.key_cache.misses, "key_refreshes": services.key_cache.refreshes,
            "workspace_misses": services.workspace_cache.misses,
            "workspace_refreshes": services.workspace_cache.refreshes,
            "kms_decrypts": services.secrets.kms_decrypts, "ledger_writes": services.calls.after_upstream,
            "dynamo_calls": services.dynamo.calls, "dynamo_busy_s": services.dynamo.busy_s,
            "enforcement_misses": services.enforcement_cache.misses,
            "window_writes": services.budgets.window_writes, "pool_writes": services.budgets.pool_writes,
            "alone_writes": services.budgets.alone_writes, "settle_writes": services.budgets.settle_writes,
            "ledger_settlements": services.budgets.ledger_settlements,
        }
        with open(stats_path, "w") as f:
            json.dump(stats, f)

    signal.signal(signal.SIGUSR1, dump)
    profile_path = os.environ.get("BENCH_PROFILE")
    if profile_path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from cpuprof import CpuSampler

        sampler = CpuSampler()

        def toggle(*_: object) -> None:
            if sampler.running:
                sampler.stop()
                sampler.write(profile_path)
            else:
                sampler.start()

        signal.signal(signal.SIGUSR2, toggle)
    uvicorn.run(create_app(services=services), host="127.0.0.1", port=port, log_level="error", access_log=False,
                proxy_headers=False)


if __name__ == "__main__":
    main()
