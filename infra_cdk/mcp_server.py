"""The MCP server: spend questions for AI clients over streamable HTTP.

A Mangum handler (`functions/mcp/handler.py: handler`) on a BUFFERED function URL without IAM auth:
MCP clients cannot sign SigV4, so the app authenticates every request itself with a virtual key
that carries an `mcp:*` scope (bearer token) and confines each answer to that key's slice. The
app is stateless (JSON responses), rebuilt per invocation, and accepts only the URL's own host.

Permissions (role of this function only):
    keys                 GetItem (bearer key -> key record)
    workspaces           Query (the workspace config: time zone)
    ledger, rollups      GetItem / Query (reports)
    budgets              GetItem / Query (budget status), PutItem (set_budget, admin keys only)
    waste                GetItem / Query, BatchWriteItem (a period scored on demand keeps its days)
No KMS: the MCP server never touches provider keys.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.function import Shared, make_function
from meterline.store import schema

TABLES = (schema.WORKSPACES, schema.KEYS, schema.LEDGER, schema.ROLLUPS, schema.BUDGETS, schema.WASTE,
          schema.AUDIT)
READ = ["dynamodb:GetItem", "dynamodb:Query"]


class McpServer(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, shared: Shared) -> None:
        super().__init__(scope, construct_id)
        self.function = make_function(
            self,
            "Mcp",
            shared=shared,
            service=c.SERVICE_MCP,
            asset=c.MCP_ASSET,
            handler=c.MCP_HANDLER,
            entrypoint=c.MCP_HANDLER.split(".")[0] + ".py",
            description="Meterline MCP server (streamable HTTP via Mangum; bearer virtual keys with an mcp scope)",
            memory_mb=c.MCP_MEMORY_MB,
            timeout_s=c.MCP_TIMEOUT_S,
            tables=TABLES,
        )
        self.url = self.function.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.NONE,
            invoke_mode=lambda_.InvokeMode.BUFFERED,
        )
        tables = shared.storage.tables
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadKeysAndWorkspaces",
                actions=READ,
                resources=[tables[schema.KEYS.logical_name].table_arn,
                           tables[schema.WORKSPACES.logical_name].table_arn],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(  # the operations it runs are audited (append only)
                sid="AppendAuditRecords",
                actions=["dynamodb:PutItem"],
                resources=[tables[schema.AUDIT.logical_name].table_arn],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadReports",
                actions=READ,
                resources=[tables[schema.LEDGER.logical_name].table_arn,
                           tables[schema.ROLLUPS.logical_name].table_arn],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="WasteScores",
                actions=[*READ, "dynamodb:BatchWriteItem"],
                resources=[tables[schema.WASTE.logical_name].table_arn],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="BudgetStatusAndChanges",
                actions=[*READ, "dynamodb:PutItem"],
                resources=[tables[schema.BUDGETS.logical_name].table_arn],
            )
        )
