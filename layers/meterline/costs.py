"""What the Meterline stack itself costs on AWS, per month and per million requests.

Pure arithmetic over three kinds of input, each pinned so it cannot drift silently:
  * the stack's settings (memory, architecture, rollup batch size, alert schedule): DEFAULTS below,
    checked against the synthesized CloudFormation template (tests/infra/test_cdk_costs.py);
  * per-request store calls and write units: STORE_* below, counted through the real gateway on
    moto (tests/functional/test_cost_counts.py) and the rollup aggregator (test_rollups.py);
  * AWS list prices, us-east-1 (PRICES, with the date they were read); a few assumptions that no
    test can count (log bytes, rollup batch duration, instance sizing) are named as such.

`meterline cost-estimate` prints `estimate(...)`; docs/DEPLOY.md has the table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

SECONDS_PER_MONTH = 30 * 86_400
HOURS_PER_MONTH = 730

# us-east-1 list prices (read 2025-11; AWS pricing pages for Lambda, DynamoDB, CloudWatch, EC2).
PRICES = {
    "lambda_gb_s_arm64": 0.0000133334,
    "lambda_gb_s_x86_64": 0.0000166667,
    "lambda_request": 0.20 / 1e6,
    "ddb_write_unit": 0.625 / 1e6,  # on-demand write request unit
    "ddb_read_unit": 0.125 / 1e6,  # on-demand read request unit
    "ddb_storage_gb_month": 0.25,
    "ddb_pitr_gb_month": 0.20,  # continuous backups (PITR is on for every retained table)
    "logs_ingest_gb": 0.50,
    # Lambda Managed Instances: the EC2 on-demand price of the capacity provider's instances plus a
    # 15 % management fee, plus the usual per-request charge. m7g.large is the smallest Graviton size
    # LMI runs (C-family instances start at .xlarge): 2 vCPU, 8 GiB.
    "mi_instance_hour_m7g_large": 0.0816,
    "mi_management_fee": 0.15,
    # The managed-instances VPC (infra_cdk/compute.py): one NAT gateway, per hour and per GB it
    # processes (provider traffic and logs; DynamoDB goes through the free gateway endpoint).
    "nat_gateway_hour": 0.045,
    "nat_gateway_gb": 0.045,
    "hosted_fee_per_request": 0.002 * 0.05,  # a hosted gateway's 5 % fee on a $0.002 request
}


@dataclass(frozen=True)
class StackSettings:
    """The template's settings that drive cost (checked against a synth in tests/infra)."""

    gateway_memory_mb: int = 1024
    architecture: str = "arm64"
    rollup_memory_mb: int = 1024
    rollup_batch_size: int = 100
    alerts_memory_mb: int = 512
    alerts_schedule_minutes: int = 5
    ledger_retention_days: int = 400


DEFAULTS = StackSettings()

# Counted (see the module docstring). Per request on a warm gateway with the default key rate limit:
STORE_CALLS_BASE = 2  # the key's rate window (before the upstream) + the ledger record (after)
STORE_CALLS_PER_BUDGET = 2  # a reservation before the upstream + its settlement after
WRITE_UNITS_RATE_WINDOW = 1
WRITE_UNITS_LEDGER = 2  # a ledger record is 1-2 KB (attribution, tokens by class, prices, timings)
WRITE_UNITS_PER_BUDGET = 2  # reservation + settlement of a small counter item
# Sustained traffic (managed instances: many requests per process): reservations from pools of up to
# 32, settlements on the ledger record, so a budget costs its pools' claims and releases
# (test_cost_counts: 0.06 at 100 requests a second; on-demand Lambda keeps the 2 above).
WRITE_UNITS_PER_BUDGET_SUSTAINED = 0.1
ROLLUP_WRITE_UNITS = 1.8  # per request at 100 records per batch (test_rollups: 1.38-1.78)
LEDGER_RECORD_KB = 1.5

# Assumed (nothing local can count them):
LOG_BYTES_PER_REQUEST = 700  # one structured log/metric line per request (EMF)
ROLLUP_BATCH_SECONDS = 0.25  # one batch: parse + sum 100 records, one ~60-item transaction
ALERTS_RUN_SECONDS = 1.0
MI_VCPUS = 2  # per m7g.large instance
MI_MIN_INSTANCES = 3  # a capacity provider spreads at least three instances over AZs
MI_TARGET_CPU = 0.5  # scale out at 50 % CPU
# The template's managed-instances settings (checked against a synth in tests/infra/test_cdk_compute.py):
# one vCPU per execution environment (one uvicorn process), 2 GiB, 64 concurrent requests each.
MI_ENV_VCPUS = 1
MI_ENV_MEMORY_MB = 2048
MI_ENV_CONCURRENCY = 64
PROVIDER_BYTES_PER_REQUEST = 8_000  # prompt out + streamed answer in, through the NAT gateway
CPU_MS_PER_REQUEST = 3.0  # gateway CPU per request incl. TLS and the store client (bench/overhead.py)


@dataclass(frozen=True)
class Estimate:
    requests_per_month: int
    stream_seconds: float
    compute: str
    budgets: int
    memory_mb: int
    lines: dict[str, float] = field(default_factory=dict)  # USD per month, by component
    # The ledger's storage at steady state (retention days of records): grows with retention, not
    # with the request path, so it is shown beside the per-request figure rather than in it.
    storage: float = 0.0

    @property
    def monthly(self) -> float:
        return sum(self.lines.values())

    @property
    def storage_per_million(self) -> float:
        return self.storage / self.requests_per_month * 1e6 if self.requests_per_month else 0.0

    @property
    def per_million(self) -> float:
        return self.monthly / self.requests_per_month * 1e6 if self.requests_per_month else 0.0

    @property
    def hosted_fee_per_million(self) -> float:
        return PRICES["hosted_fee_per_request"] * 1e6

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "monthly_usd": round(self.monthly, 2), "per_million_usd": round(self.per_million, 2),
                "ledger_storage_per_million_usd": round(self.storage_per_million, 2),
                "hosted_5pct_fee_per_million_usd": round(self.hosted_fee_per_million, 2)}


def estimate(requests_per_month: int, stream_seconds: float, compute: str = "on-demand", budgets: int = 0,
             memory_mb: int | None = None, settings: StackSettings = DEFAULTS) -> Estimate:
    if requests_per_month < 0 or stream_seconds < 0 or budgets < 0:
        raise ValueError("requests, seconds and budgets must not be negative")
    if compute not in ("on-demand", "managed-instances"):
        raise ValueError("compute must be on-demand or managed-instances")
    n = requests_per_month
    memory = memory_mb or settings.gateway_memory_mb
    gb_s = PRICES[f"lambda_gb_s_{settings.architecture}"]
    lines: dict[str, float] = {}

    if compute == "on-demand":
        # Lambda bills the whole invocation, including the wait on the provider.
        lines["gateway compute (Lambda GB-s)"] = n * max(stream_seconds, 0.001) * memory / 1024 * gb_s
    else:
        memory = memory_mb or MI_ENV_MEMORY_MB
        rps = n / SECONDS_PER_MONTH
        # Environments: enough CPU at the scaling target, and enough slots for the requests in flight
        # (a stream holds its slot while it waits on the provider, but burns no CPU).
        by_cpu = rps * CPU_MS_PER_REQUEST / 1000 / MI_TARGET_CPU / MI_ENV_VCPUS
        by_slots = rps * max(stream_seconds, 0.001) / MI_ENV_CONCURRENCY
        vcpus = math.ceil(max(by_cpu, by_slots)) * MI_ENV_VCPUS
        instances = max(MI_MIN_INSTANCES, math.ceil(vcpus / MI_VCPUS))
        ec2 = instances * HOURS_PER_MONTH * PRICES["mi_instance_hour_m7g_large"]
        lines["gateway compute (managed instances + 15 % fee)"] = ec2 * (1 + PRICES["mi_management_fee"])
        nat_gb = n * (PROVIDER_BYTES_PER_REQUEST + LOG_BYTES_PER_REQUEST) / 1e9
        lines["NAT gateway (hours + GB processed)"] = (HOURS_PER_MONTH * PRICES["nat_gateway_hour"]
                                                       + nat_gb * PRICES["nat_gateway_gb"])
    lines["gateway requests"] = n * PRICES["lambda_request"]

    per_budget = WRITE_UNITS_PER_BUDGET if compute == "on-demand" else WRITE_UNITS_PER_BUDGET_SUSTAINED
    request_units = WRITE_UNITS_RATE_WINDOW + WRITE_UNITS_LEDGER + budgets * per_budget
    lines["DynamoDB request-path writes"] = n * request_units * PRICES["ddb_write_unit"]
    lines["DynamoDB rollup writes"] = n * ROLLUP_WRITE_UNITS * PRICES["ddb_write_unit"]
    batches = n / settings.rollup_batch_size
    lines["rollup Lambda"] = batches * (ROLLUP_BATCH_SECONDS * settings.rollup_memory_mb / 1024 * gb_s
                                        + PRICES["lambda_request"])
    runs = SECONDS_PER_MONTH / 60 / settings.alerts_schedule_minutes
    lines["alerts Lambda (schedule)"] = runs * (ALERTS_RUN_SECONDS * settings.alerts_memory_mb / 1024 * gb_s
                                                + PRICES["lambda_request"])
    lines["CloudWatch Logs ingestion"] = n * LOG_BYTES_PER_REQUEST / 1e9 * PRICES["logs_ingest_gb"]
    # Steady state: the ledger holds `retention` days of records (TTL deletes are free).
    ledger_gb = n * LEDGER_RECORD_KB / 1e6 * settings.ledger_retention_days / 30
    storage = ledger_gb * (PRICES["ddb_storage_gb_month"] + PRICES["ddb_pitr_gb_month"])
    return Estimate(n, stream_seconds, compute, budgets, memory, lines, storage)


def table(requests_per_month: int = 100_000_000, stream_seconds: float = 2.0) -> list[tuple[str, Estimate]]:
    """The docs' table: on-demand at 256/512/1024 MB and managed instances."""
    rows = [(f"on-demand {mb} MB", estimate(requests_per_month, stream_seconds, memory_mb=mb))
            for mb in (256, 512, 1024)]
    rows.append(("managed instances", estimate(requests_per_month, stream_seconds, compute="managed-instances")))
    return rows
