"""Embedded AWS for `meterline dev` and the tests: a moto server on loopback with the project's
tables and KMS key, created from the same specs the CDK stack uses (meterline.store.schema)."""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from meterline import moto_compact, moto_patches
from meterline.config import LOCAL_HOSTS, Settings
from meterline.store import aws
from meterline.store.keys import KeyRecord, KeyStore
from meterline.store.schema import ALL_TABLES, KMS_KEY_ALIAS
from meterline.store.workspaces import WorkspaceStore
from meterline.vkeys import generate, hash_key

# moto accepts any credentials; set dummies so boto3 never looks for real ones.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "meterline-dev", "AWS_SECRET_ACCESS_KEY": "meterline-dev",
                    "AWS_SESSION_TOKEN": "meterline-dev"}


@dataclass
class EmbeddedAws:
    server: Any
    thread: threading.Thread
    endpoint: str

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


class _Atomic:
    """Applies one AWS request at a time. moto's threaded server otherwise runs concurrent writes to
    one DynamoDB item interleaved (a conditional update can race, or crash on a dict mutated under
    iteration); real DynamoDB serializes writes per item, and the budget invariants rely on that."""

    def __init__(self, app: Any):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with self.lock:
            try:
                return list(self.app(environ, start_response))
            finally:
                moto_compact.pack_pending()  # items this request unpacked go back to compact form


def embedded_app() -> Any:
    """moto's WSGI app, applying one request at a time (see _Atomic)."""
    from moto.server import DomainDispatcherApplication, create_backend_app

    moto_patches.apply()
    return _Atomic(DomainDispatcherApplication(create_backend_app))


def start_moto(host: str = "127.0.0.1", port: int = 0) -> EmbeddedAws:
    for name, value in FAKE_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    import logging

    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per AWS call is noise
    moto_patches.apply()
    app = _Atomic(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="meterline-embedded-aws", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    return EmbeddedAws(server, thread, f"http://{bound_host}:{bound_port}")


def provision(endpoint: str, region: str = "us-east-1", prefix: str = "meterline") -> Settings:
    """Create every table and the vault KMS key; return Settings pointing at them."""
    names = {spec.logical_name: f"{prefix}-{spec.logical_name}" for spec in ALL_TABLES}
    settings = Settings(region=region, aws_endpoint=endpoint, table_names=names)
    ddb = aws.client("dynamodb", settings)
    for spec in ALL_TABLES:
        ddb.create_table(**spec.create_table_kwargs(names[spec.logical_name]))
        if spec.ttl_attribute:
            ddb.update_time_to_live(
                TableName=names[spec.logical_name],
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
            )
    kms = aws.client("kms", settings)
    key = kms.create_key(Description="Meterline vault (embedded)")["KeyMetadata"]
    kms.create_alias(AliasName=f"{KMS_KEY_ALIAS}-{prefix}", TargetKeyId=key["KeyId"])
    spill = f"{prefix}-cache-spill".lower()  # large exact-cache answers (store/cache.py)
    s3 = aws.client("s3", settings)
    s3.create_bucket(Bucket=spill, **({} if region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": region}}))
    return Settings(region=region, aws_endpoint=endpoint, table_names=names, kms_key_id=key["Arn"],
                    egress_allow_hosts=LOCAL_HOSTS, cache_spill_bucket=spill)


def seed_demo(settings: Settings, workspace: str = "demo") -> dict[str, str]:
    """A demo workspace whose default provider is the simulator, and one virtual key for it."""
    WorkspaceStore(settings).create(workspace, "Demo workspace", default_provider="sim")
    key, key_id = generate()
    KeyStore(settings).create(KeyRecord(key_hash=hash_key(key), key_id=key_id, workspace=workspace,
                                        member="demo-user", department="engineering", name="demo"))
    return {"workspace": workspace, "api_key": key, "key_id": key_id}


def new_workspace_id() -> str:
    return "ws_" + secrets.token_hex(6)
