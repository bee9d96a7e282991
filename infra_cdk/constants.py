"""Names and fixed numbers of the Meterline stack, in one place.

Anything a user, the CLI or a test needs to find (stack output keys, context keys, environment
variable names) is defined here; the constructs only use these names. Table and key names come
from the shared specs in `meterline.store.schema`, never from here.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = REPO_ROOT / "pyproject.toml"
APP_PACKAGE_DIR = REPO_ROOT / "layers" / "meterline"
FUNCTIONS_DIR = REPO_ROOT / "functions"

STACK_NAME = "Meterline"
STACK_DESCRIPTION = "Meterline: AI FinOps gateway (meter, attribute, limit and optimize LLM spend)"
# Every resource carries this tag, so the gateway's own AWS bill can be filtered in Cost Explorer.
COST_ALLOCATION_TAG = ("meterline:app", "meterline")

# --- Runtime --------------------------------------------------------------------------------------
# One Python version drives both the Lambda runtime and the wheels pip resolves for the dependency
# layer (`--python-version`); change them together. 3.12 is the first version SnapStart supports.
PYTHON_VERSION = "3.12"
# Lambda Managed Instances run Python 3.13+ only: with `meterline:compute=managed-instances` every
# function and both layers move to this version together (DeploySettings.python_version).
MANAGED_PYTHON_VERSION = "3.13"

# --- Context keys (`cdk deploy -c KEY=VALUE`, defaults in cdk.json) -------------------------------
CTX_ARCHITECTURE = "meterline:architecture"  # "arm64" (default) | "x86_64"
CTX_MEMORY = "meterline:memory"  # data plane memory in MB (default 1024)
CTX_SNAPSTART = "meterline:snapstart"  # "true" (default) | "false"
# Reserved concurrency for admin, rollup and alerts, so public gateway traffic can never starve them
# (true by default; needs an account concurrency limit >= 100 + their sum, see docs/DEPLOY.md).
CTX_RESERVED_CONCURRENCY = "meterline:reserved-concurrency"
# A cap on the gateway's concurrent executions (reserved concurrency); unset = no cap.
CTX_GATEWAY_MAX_CONCURRENCY = "meterline:gateway-max-concurrency"
# Tests and offline synths: the dependency layer becomes an empty placeholder (no pip, no network).
CTX_SKIP_LAYER_INSTALL = "meterline:skip-layer-install"
# Build both layers inside the SAM build image instead of on this machine (needs Docker).
CTX_DOCKER_BUNDLING = "meterline:docker-bundling"
# `prices sync` on a schedule: an EventBridge schedule expression ("rate(1 day)", "cron(0 6 * * ? *)")
# invoking the admin function; unset or "off" = no schedule (the default).
CTX_PRICES_SYNC = "meterline:prices-sync"
# Where the scheduled sync reads price data (an https URL); unset = genai-prices' published data.
CTX_PRICES_SYNC_SOURCE = "meterline:prices-sync-source"

# Where the data plane runs: "on-demand" (default; scales to zero) or "managed-instances" (Lambda
# Managed Instances: a capacity provider in a VPC, many requests per execution environment).
CTX_COMPUTE = "meterline:compute"
COMPUTE_ON_DEMAND = "on-demand"
COMPUTE_MANAGED = "managed-instances"
# Managed instances: the capacity provider's vCPU ceiling (the cost ceiling) and the concurrent requests
# one execution environment (one uvicorn process, one vCPU) takes.
CTX_MANAGED_MAX_VCPUS = "meterline:managed-max-vcpus"
CTX_MANAGED_CONCURRENCY = "meterline:managed-concurrency"
DEFAULT_MANAGED_MAX_VCPUS = 32
DEFAULT_MANAGED_CONCURRENCY = 64
# LMI limits: 2 GiB minimum per environment, 2..8 GiB per vCPU, 1..1600 concurrent requests each.
MANAGED_MIN_MEMORY_MB = 2048
MANAGED_MAX_MEMORY_MB = 8192  # one vCPU per environment (uvicorn is one process) at the 8 GiB/vCPU maximum
MANAGED_MAX_CONCURRENCY = 1600
VPC_CIDR = "10.40.0.0/16"
VPC_MAX_AZS = 3  # LMI spreads its (default three) instances across AZs
# An edge in front of the public gateway URL: "none" (default) or "cloudfront-waf".
CTX_EDGE = "meterline:edge"
EDGE_NONE = "none"
EDGE_CLOUDFRONT_WAF = "cloudfront-waf"
CTX_EDGE_RATE_LIMIT = "meterline:edge-rate-limit"  # WAF: requests per client IP per 5 minutes
DEFAULT_EDGE_RATE_LIMIT = 3000
CTX_EDGE_WEB_ACL_ARN = "meterline:edge-web-acl-arn"  # an existing CLOUDFRONT web ACL (us-east-1) instead
OUT_EDGE_DISTRIBUTION = "EdgeDistributionId"

DEFAULT_ARCHITECTURE = "arm64"
DEFAULT_MEMORY_MB = 1024

# --- Functions ------------------------------------------------------------------------------------
# Entry points the application code provides (functions/<name>/...):
GATEWAY_ASSET = FUNCTIONS_DIR / "gateway"
GATEWAY_HANDLER = "run.sh"  # execs uvicorn on $PORT: meterline.gateway.app:create_app --factory
ADMIN_ASSET = FUNCTIONS_DIR / "admin"
ADMIN_HANDLER = "handler.handler"  # a Mangum handler
ROLLUP_ASSET = FUNCTIONS_DIR / "rollup"
ROLLUP_HANDLER = "handler.handler"  # DynamoDB stream batch handler (partial batch responses)
ALERTS_ASSET = FUNCTIONS_DIR / "alerts"
MCP_ASSET = FUNCTIONS_DIR / "mcp"
MCP_HANDLER = "handler.handler"  # a Mangum handler (streamable HTTP, app rebuilt per invocation)
ALERTS_HANDLER = "handler.handler"  # scheduled: budget alert e-mails (SES) + expired lease sweep
FOCUS_ASSET = FUNCTIONS_DIR / "focus"
FOCUS_HANDLER = "handler.handler"  # scheduled: FOCUS 1.2 export of yesterday's rows to S3
WASTE_ASSET = FUNCTIONS_DIR / "waste"
WASTE_HANDLER = "handler.handler"  # scheduled: waste scoring of yesterday's ledger partitions
REPLAY_ASSET = FUNCTIONS_DIR / "replay"
REPLAY_HANDLER = "handler.handler"  # CloudWatch Logs subscription: ledger_write_failed lines -> ledger

GATEWAY_TIMEOUT_S = 900  # streamed responses may run long; the app bounds upstream time itself
ADMIN_MEMORY_MB = 512
ADMIN_TIMEOUT_S = 60
# The event the prices-sync schedule sends the admin function (functions/admin/handler.py).
PRICES_SYNC_TASK = {"meterline_task": "prices.sync"}
# 1024 MB = ~0.58 vCPU: one batcher (all of a hot workspace-day's records go to one, in key order) then
# aggregates ~1,900 records/s with 30 ms transactions, ~1,200 with 60 ms (bench/rollups.py); 512 MB was
# ~1,300 / ~900. It costs ~$0.02 per million requests more.
ROLLUP_MEMORY_MB = 1024
ROLLUP_TIMEOUT_S = 120
ALERTS_MEMORY_MB = 512
ALERTS_TIMEOUT_S = 300  # composing an alert reads up to a month of the workspace's ledger
MCP_MEMORY_MB = 512
MCP_TIMEOUT_S = 60
REPLAY_MEMORY_MB = 256
REPLAY_TIMEOUT_S = 60  # one subscription batch: a few records, one conditional PutItem each
REPLAY_RETRY_ATTEMPTS = 2  # Lambda's asynchronous retries of a failed invocation (store failure)
REPLAY_MAX_EVENT_AGE_H = 6  # the longest Lambda keeps retrying (throttled or failed) before dead-lettering
ENV_REPLAY_DLQ = "METERLINE_REPLAY_DLQ_URL"  # read by functions/replay/handler.py
OUT_REPLAY_DLQ_URL = "LedgerReplayDeadLetterQueueUrl"
ALERTS_SCHEDULE_MINUTES = 5  # EventBridge rule rate(5 minutes)
# Waste scoring streams a whole workspace-day; 1769 MB is one full vCPU (the job is CPU-bound).
# Measured (bench/waste.py): see README "Waste scoring" for records per second and memory.
WASTE_MEMORY_MB = 1769
WASTE_TIMEOUT_S = 900
WASTE_SCHEDULE = {"minute": "30", "hour": "0"}  # daily at 00:30 UTC: yesterday's partitions are closed
FOCUS_MEMORY_MB = 1024
FOCUS_TIMEOUT_S = 900
FOCUS_SCHEDULE = {"minute": "0", "hour": "1"}  # daily at 01:00 UTC
FOCUS_EXPORT_RETENTION_DAYS = 730  # chargeback files: two years, then deleted (lifecycle rule)
FOCUS_EXPORT_IA_AFTER_DAYS = 90  # then Standard-IA (read rarely after the month closes)
ENV_FOCUS_BUCKET = "METERLINE_FOCUS_BUCKET"
OUT_FOCUS_BUCKET = "FocusExportBucket"
# Exact-cache answers too large for a DynamoDB item (store/cache.py): kept one day past the longest
# entry TTL (cache/rules.py MAX_TTL_S, 30 days), then deleted by the lifecycle rule.
CACHE_SPILL_RETENTION_DAYS = 31
OUT_CACHE_SPILL_BUCKET = "CacheSpillBucket"
LOG_RETENTION_DAYS = 30  # = logs.RetentionDays.ONE_MONTH in function.py (CloudWatch allows fixed values)
LOG_LEVEL = "INFO"

# Reserved concurrency per function (CTX_RESERVED_CONCURRENCY). The rollup's covers the ledger
# stream's shards x ROLLUP_PARALLELIZATION for a busy table; alerts runs overlap harmlessly.
# waste, focus: one scheduled run at a time.
# replay: failed ledger writes come in bursts only while the store is down; 2 drain them, the rest wait
# in Lambda's asynchronous queue (retried up to REPLAY_MAX_EVENT_AGE_H).
RESERVED_CONCURRENCY = {"admin": 5, "rollup": 20, "alerts": 2, "waste": 1, "focus": 1, "replay": 2}

# Partition keys of the budgets table the gateway may write (IAM dynamodb:LeadingKeys patterns): counters,
# windows and leases ("<ws>#budget#...", "<ws>#rl#...", "<ws>#loop#...") and the alert outbox; never the
# definitions under the bare "<ws>" (see meterline.store.budgets).
GATEWAY_BUDGET_WRITE_KEYS = ("*#*", "alert")
# The replay function settles budget counters only ("<ws>#budget#<scope>", store.budgets.counter_key).
REPLAY_BUDGET_WRITE_KEY = "*#budget#*"

SERVICE_GATEWAY = "gateway"
SERVICE_ADMIN = "admin"
SERVICE_ROLLUP = "rollup"
SERVICE_ALERTS = "alerts"
SERVICE_MCP = "mcp"
SERVICE_WASTE = "waste"
SERVICE_FOCUS = "focus"
SERVICE_REPLAY = "replay"
METRICS_NAMESPACE = "Meterline"
GATEWAY_ALIAS = "live"
# Encryption context key every vault ciphertext carries (see meterline.store.schema); IAM conditions
# on `kms:EncryptionContext:<key>` tie the vault key's use to this purpose only.
ENCRYPTION_CONTEXT_PURPOSE_KEY = "meterline:purpose"
READINESS_PATH = "/healthz"
GATEWAY_PORT = "8080"

# --- AWS Lambda Web Adapter (LWA) -----------------------------------------------------------------
# Public layer published by AWS in every commercial region under account 753240598075.
# Version 30 = LWA v1.1.0 (the first release with SnapStart hooks; layer 29 was never published for
# use: its release was reverted). Source: aws/aws-lambda-web-adapter, README and PR #871 "docs: point
# docs and examples at v1.1.0 and layer version 30"; examples/fastapi-snapstart-zip uses the same.
LWA_ACCOUNT = "753240598075"
LWA_LAYER_VERSION = 30
LWA_LAYER_NAMES = {"arm64": "LambdaAdapterLayerArm64", "x86_64": "LambdaAdapterLayerX86"}

# SnapStart: supported for the Python 3.12+ managed runtimes on published versions and aliases, and
# LWA >= v1.1.0 bridges the snapshot lifecycle to the web app (PR #790/#837 in the LWA repo; the
# adapter ignores AWS_LWA_ASYNC_INIT under SnapStart so the snapshot is never of a booting app). The
# snapshot therefore holds a running uvicorn with the app imported, which is exactly the cold start
# we want to skip. Optional LWA hooks (AWS_LWA_SNAPSTART_BEFORE_CHECKPOINT_PATH / _AFTER_RESTORE_PATH)
# are NOT set: the app opens no connection during start-up (clients are built on first use), so
# there is nothing to drain; a hook path the app does not serve would fail version publishing.

# --- Outputs (`aws cloudformation describe-stacks` → OutputKey) -----------------------------------
OUT_GATEWAY_URL = "GatewayUrl"
OUT_ADMIN_URL = "AdminUrl"
OUT_MCP_URL = "McpUrl"
OUT_KMS_KEY_ID = "VaultKeyId"
OUT_KMS_KEY_ARN = "VaultKeyArn"
OUT_DASHBOARD = "DashboardName"
OUT_DLQ_URL = "RollupDeadLetterQueueUrl"
OUT_ALERT_SENDER = "AlertSenderAddress"
OUT_ALERT_RECIPIENTS = "AlertRecipientAddresses"


def table_output_key(logical_name: str) -> str:
    """Output key holding a table's physical name: "ledger" -> "LedgerTableName"."""
    return f"{logical_name.capitalize()}TableName"


# --- Parameters -----------------------------------------------------------------------------------
PARAM_ALERT_SENDER = "AlertSender"
PARAM_ALERT_RECIPIENTS = "AlertRecipients"
# ...and the environment variables functions/alerts/handler.py reads them from.
ENV_ALERT_SENDER = "METERLINE_ALERT_SENDER"
ENV_ALERT_RECIPIENTS = "METERLINE_ALERT_RECIPIENTS"
EMAIL_PATTERN = r"[^@\s,]+@[^@\s,]+\.[^@\s,]+"

# --- Alarm thresholds -----------------------------------------------------------------------------
GATEWAY_ERROR_RATE_PCT = 5  # Lambda-level failures (crash, timeout, OOM) per invocation, %
UPSTREAM_ERROR_RATE_PCT = 10  # provider errors per request, %
ROLLUP_ITERATOR_AGE_MS = 5 * 60 * 1000  # ledger records waiting > 5 min to be aggregated
ROLLUP_RETRY_ATTEMPTS = 10
ROLLUP_BATCH_SIZE = 100
ROLLUP_PARALLELIZATION = 4  # concurrent batches per ledger stream shard (1-10)
ROLLUP_BATCHING_WINDOW_S = 1  # wait up to 1 s to fill a batch: fewer, fuller transactions
