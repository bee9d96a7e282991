"""MeterlineStack: everything Meterline runs on, in the user's own account.

    Storage       DynamoDB tables (from meterline.store.schema) + the vault KMS key
    layers        runtime dependencies + the meterline package (built at synth time, no Docker)
    Compute       only with meterline:compute=managed-instances: VPC + Lambda capacity provider
    DataPlane     the gateway: uvicorn behind LWA, streaming function URL (public; virtual keys)
    Edge          only with meterline:edge=cloudfront-waf: CloudFront + WAF in front of the gateway URL
    ControlPlane  the admin API: Mangum, buffered function URL (AWS_IAM)
    McpServer     the MCP server: Mangum, buffered function URL (bearer virtual keys, mcp scope)
    Aggregation   ledger stream -> rollups, with a dead-letter queue
    BudgetAlerts  every 5 minutes: budget alert e-mails (SES) and the expired-lease sweep
    WasteScoring  daily: waste signals and grades of yesterday's ledger partitions
    FocusExport   daily: FOCUS 1.2 chargeback rows of yesterday to an encrypted S3 bucket
    LedgerReplay  gateway log lines `ledger_write_failed` -> the ledger (idempotent), with a DLQ
    Monitoring    dashboard + alarms

Outputs are what the `meterline` CLI reads with `describe-stacks` (keys in constants.py).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, CfnOutput, CfnParameter, Fn, Stack, Tags
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.aggregation import Aggregation
from infra_cdk.alerts import BudgetAlerts
from infra_cdk.compute import ManagedCompute
from infra_cdk.control_plane import ControlPlane
from infra_cdk.data_plane import DataPlane
from infra_cdk.edge import Edge
from infra_cdk.focus_export import FocusExport
from infra_cdk.function import Shared
from infra_cdk.layer import AppLayer, DependenciesLayer
from infra_cdk.mcp_server import McpServer
from infra_cdk.monitoring import Monitoring
from infra_cdk.replay import LedgerReplay
from infra_cdk.settings import DeploySettings
from infra_cdk.storage import Storage
from infra_cdk.waste import WasteScoring


class MeterlineStack(Stack):
    def __init__(self, scope: Construct, construct_id: str = c.STACK_NAME, **kwargs: Any) -> None:
        kwargs.setdefault("description", c.STACK_DESCRIPTION)
        super().__init__(scope, construct_id, **kwargs)
        self.settings = DeploySettings.from_node(self.node)
        Tags.of(self).add(*c.COST_ALLOCATION_TAG)
        if self.settings.skip_layer_install:
            Annotations.of(self).add_warning_v2(
                "meterline:placeholder-layer",
                "meterline:skip-layer-install=true: the dependencies layer is an empty placeholder. "
                "Do not deploy this synth.",
            )

        # Parameters for budget alert e-mails (SES), passed to the BudgetAlerts function and echoed
        # as outputs. Empty sender = no e-mail is sent (the lease sweep still runs).
        self.alert_sender = CfnParameter(
            self,
            c.PARAM_ALERT_SENDER,
            type="String",
            default="",
            allowed_pattern=f"^$|^{c.EMAIL_PATTERN}$",
            constraint_description="an e-mail address (a verified SES identity), or empty",
            description="Sender address of budget alert e-mails (must be a verified SES identity)",
        )
        self.alert_recipients = CfnParameter(
            self,
            c.PARAM_ALERT_RECIPIENTS,
            type="String",
            default="",
            allowed_pattern=f"^$|^{c.EMAIL_PATTERN}(,{c.EMAIL_PATTERN})*$",
            constraint_description="comma-separated e-mail addresses without spaces, or empty",
            description="Comma-separated recipients of budget alert e-mails",
        )

        self.storage = Storage(self, "Storage")
        dependencies = DependenciesLayer(self, "Dependencies", settings=self.settings)
        app_layer = AppLayer(self, "App", settings=self.settings)
        shared = Shared(
            settings=self.settings,
            storage=self.storage,
            # Dependencies first: layers are unpacked in order, the app package has no overlap.
            layers=(dependencies.layer, app_layer.layer),
        )
        # Managed instances: the data plane runs on a capacity provider in its own VPC (compute.py).
        self.compute = ManagedCompute(self, "Compute", settings=self.settings) if self.settings.managed else None
        self.data_plane = DataPlane(self, "DataPlane", shared=shared, compute=self.compute)
        # Optional CloudFront + WAF in front of the public URL (edge.py); the gateway then refuses
        # requests that did not come through it.
        self.edge = (Edge(self, "Edge", settings=self.settings, gateway=self.data_plane.function,
                          url=self.data_plane.url)
                     if self.settings.edge == c.EDGE_CLOUDFRONT_WAF else None)
        self.control_plane = ControlPlane(self, "ControlPlane", shared=shared)
        self.mcp = McpServer(self, "McpServer", shared=shared)
        self.aggregation = Aggregation(self, "Aggregation", shared=shared)
        self.budget_alerts = BudgetAlerts(
            self,
            "BudgetAlerts",
            shared=shared,
            sender=self.alert_sender.value_as_string,
            recipients=self.alert_recipients.value_as_string,
        )
        self.waste_scoring = WasteScoring(self, "WasteScoring", shared=shared)
        self.focus_export = FocusExport(self, "FocusExport", shared=shared)
        self.ledger_replay = LedgerReplay(self, "LedgerReplay", shared=shared, gateway=self.data_plane.function)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            gateway=self.data_plane.function,
            admin=self.control_plane.function,
            rollup=self.aggregation.function,
            alerts=self.budget_alerts.function,
            dead_letters=self.aggregation.dead_letters,
            replay=self.ledger_replay.function,
            replay_dead_letters=self.ledger_replay.dead_letters,
        )
        self._outputs()

    def _outputs(self) -> None:
        if self.edge is not None:
            CfnOutput(
                self,
                c.OUT_GATEWAY_URL,
                value=Fn.join("", ["https://", self.edge.distribution.distribution_domain_name, "/v1/"]),
                description="OpenAI/Anthropic SDK base_url (CloudFront + WAF in front of the streaming function URL)",
            )
            CfnOutput(self, c.OUT_EDGE_DISTRIBUTION, value=self.edge.distribution.distribution_id)
        else:
            CfnOutput(
                self,
                c.OUT_GATEWAY_URL,
                value=Fn.join("", [self.data_plane.url.url, "v1/"]),
                description="OpenAI/Anthropic SDK base_url (streaming function URL)",
            )
        CfnOutput(
            self,
            c.OUT_ADMIN_URL,
            value=self.control_plane.url.url,
            description="Admin API (AWS_IAM: requests must be SigV4-signed, service 'lambda')",
        )
        CfnOutput(
            self,
            c.OUT_MCP_URL,
            value=Fn.join("", [self.mcp.url.url, "mcp"]),
            description="MCP server (streamable HTTP): send a virtual key with an mcp scope as a bearer token",
        )
        for name, table in self.storage.tables.items():
            CfnOutput(self, c.table_output_key(name), value=table.table_name, description=f"{name} table")
        CfnOutput(self, c.OUT_KMS_KEY_ID, value=self.storage.vault_key.key_id, description="Vault KMS key id")
        CfnOutput(
            self, c.OUT_KMS_KEY_ARN, value=self.storage.vault_key.key_arn, description="Vault KMS key ARN"
        )
        CfnOutput(self, c.OUT_FOCUS_BUCKET, value=self.focus_export.bucket.bucket_name,
                  description="FOCUS 1.2 daily exports (focus/workspace=<ws>/billing_period=<yyyy-mm>/<day>.csv)")
        CfnOutput(self, c.OUT_CACHE_SPILL_BUCKET, value=self.data_plane.spill_bucket.bucket_name,
                  description="Exact-cache answers too large for a DynamoDB item (cache/<ws>/<key>, 31-day lifecycle)")
        CfnOutput(self, c.OUT_DASHBOARD, value=self.monitoring.dashboard.dashboard_name)
        CfnOutput(self, c.OUT_DLQ_URL, value=self.aggregation.dead_letters.queue_url)
        CfnOutput(self, c.OUT_REPLAY_DLQ_URL, value=self.ledger_replay.dead_letters.queue_url,
                  description="Ledger records that could not be replayed from ledger_write_failed log lines")
        CfnOutput(self, c.OUT_ALERT_SENDER, value=self.alert_sender.value_as_string)
        CfnOutput(self, c.OUT_ALERT_RECIPIENTS, value=self.alert_recipients.value_as_string)
