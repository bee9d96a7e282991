"""Runtime settings, read once from the environment.

On Lambda, CDK sets the table names and the KMS key id as environment variables. Under
`meterline dev` and in tests, the same variables point at the embedded moto server
(`METERLINE_AWS_ENDPOINT`). Nothing here talks to AWS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from meterline.store.schema import ALL_TABLES, KMS_KEY_ENV_VAR, TableSpec


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


ORIGIN_SECRET_ENV = "METERLINE_ORIGIN_SECRET"
ORIGIN_VERIFY_HEADER = "x-meterline-origin-verify"

# Local development talks to local providers (a fake, a vLLM on loopback): allowed over http there.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CACHE_SPILL_ENV = "METERLINE_CACHE_SPILL_BUCKET"


@dataclass(frozen=True)
class Settings:
    region: str = "us-east-1"
    # Only set for the embedded/local AWS (moto); on Lambda boto3 uses the real endpoints.
    aws_endpoint: str | None = None
    table_names: dict[str, str] = field(default_factory=dict)
    kms_key_id: str = ""
    # Bound on how long a revoked virtual key keeps working on an instance that cached it.
    key_cache_ttl_s: float = 30.0
    # How long a decrypted provider key stays in memory (zero KMS calls on a warm request).
    secret_cache_ttl_s: float = 300.0
    max_body_bytes: int = 4 * 1024 * 1024
    # A buffered provider answer above this is refused instead of held in memory (gateway/proxy.py).
    max_upstream_body_bytes: int = 32 * 1024 * 1024
    upstream_connect_timeout_s: float = 10.0
    upstream_read_timeout_s: float = 600.0
    # One request's whole time at the gateway, all attempts and the stream included: below Lambda's
    # 900 s hard stop, so a cut request is still metered and recorded (gateway/proxy.py).
    request_deadline_s: float = 840.0
    ledger_retention_days: int = 400
    # "http1" (providers/http1.py, the leanest: bench/upstream_transports.py), "aiohttp", "httpx-aiohttp" or "httpx".
    upstream_transport: str = "http1"
    # Behind the AWS Lambda Web Adapter: the caller's IP comes from the request context it passes
    # (x-amzn-request-context), trusted only then (policies/ip.py).
    behind_lambda_adapter: bool = False
    # Request-path store client (store/ddb_http.py): calls on the wire at once, the wait for one
    # call's answer once sent, and one call's whole deadline (slot wait and retries included).
    store_max_in_flight: int = 16
    store_attempt_timeout_s: float = 10.0
    store_deadline_s: float = 30.0
    # Hosts a provider URL may name over plain http, or on a loopback/private address (meterline.egress):
    # empty on AWS unless the owner sets METERLINE_EGRESS_ALLOW (e.g. a vLLM inside the VPC).
    egress_allow_hosts: tuple[str, ...] = ()
    # Behind the optional CloudFront + WAF edge (infra_cdk/edge.py): CloudFront adds this secret as the
    # ORIGIN_VERIFY_HEADER of every request it forwards, so a request that skipped the edge (and its
    # WAF) straight to the function URL is refused. Empty: no edge, nothing checked.
    origin_secret: str = field(default="", repr=False)
    # Exact-cache answers whose compressed form is above a DynamoDB item's room (cache/entry.py) are
    # spilled to this bucket (SSE-KMS, lifecycle-expired); empty: they are not stored.
    cache_spill_bucket: str = ""

    def table(self, spec: TableSpec) -> str:
        return self.table_names.get(spec.logical_name, f"meterline-{spec.logical_name}")

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        names = {spec.logical_name: env[spec.env_var] for spec in ALL_TABLES if env.get(spec.env_var)}
        return cls(
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            aws_endpoint=env.get("METERLINE_AWS_ENDPOINT") or None,
            table_names=names,
            kms_key_id=env.get(KMS_KEY_ENV_VAR, ""),
            key_cache_ttl_s=_float_env("METERLINE_KEY_CACHE_TTL", 30.0),
            secret_cache_ttl_s=_float_env("METERLINE_SECRET_CACHE_TTL", 300.0),
            max_body_bytes=_int_env("METERLINE_MAX_BODY_BYTES", 4 * 1024 * 1024),
            upstream_connect_timeout_s=_float_env("METERLINE_UPSTREAM_CONNECT_TIMEOUT", 10.0),
            upstream_read_timeout_s=_float_env("METERLINE_UPSTREAM_READ_TIMEOUT", 600.0),
            request_deadline_s=_float_env("METERLINE_REQUEST_DEADLINE", 840.0),
            ledger_retention_days=_int_env("METERLINE_LEDGER_RETENTION_DAYS", 400),
            upstream_transport=env.get("METERLINE_UPSTREAM_TRANSPORT", "http1"),
            behind_lambda_adapter=env.get("AWS_LAMBDA_EXEC_WRAPPER") == "/opt/bootstrap"
            or bool(env.get("AWS_LWA_INVOKE_MODE")),
            store_max_in_flight=_int_env("METERLINE_STORE_MAX_IN_FLIGHT", 16),
            store_attempt_timeout_s=_float_env("METERLINE_STORE_ATTEMPT_TIMEOUT", 10.0),
            store_deadline_s=_float_env("METERLINE_STORE_DEADLINE", 30.0),
            egress_allow_hosts=tuple(h.strip() for h in env.get("METERLINE_EGRESS_ALLOW", "").split(",") if h.strip()),
            origin_secret=env.get(ORIGIN_SECRET_ENV, ""),
            cache_spill_bucket=env.get(CACHE_SPILL_ENV, ""),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in another process."""
        env = {spec.env_var: self.table(spec) for spec in ALL_TABLES}
        env[KMS_KEY_ENV_VAR] = self.kms_key_id
        env["AWS_DEFAULT_REGION"] = self.region
        if self.aws_endpoint:
            env["METERLINE_AWS_ENDPOINT"] = self.aws_endpoint
        if self.egress_allow_hosts:
            env["METERLINE_EGRESS_ALLOW"] = ",".join(self.egress_allow_hosts)
        if self.origin_secret:
            env[ORIGIN_SECRET_ENV] = self.origin_secret
        if self.cache_spill_bucket:
            env[CACHE_SPILL_ENV] = self.cache_spill_bucket
        return env
