"""Budget alerts: a scheduled function that e-mails threshold crossings and sweeps expired leases.

`functions/alerts/handler.py: handler` runs every 5 minutes (EventBridge rule `rate(5 minutes)`):
    1. sends each pending alert of the budgets table's outbox once, with SES (the data plane only
       records crossings; each send is claimed with a conditional write first, so overlapping or
       repeated runs never send twice), to the workspace's own recipients or else `AlertRecipients`,
       from `AlertSender` (both stack parameters; empty sender = nothing is sent, alerts are marked
       `no-recipients`);
    2. releases reservation leases that outlived their call (a crashed or frozen gateway
       invocation), so budget counters do not stay inflated until the next reservation's own sweep.

Scheduling and retries: the run is idempotent and safe under concurrency, so the schedule itself
is the retry. The EventBridge target retries only delivery (Lambda throttled or unavailable) and
drops an event once the next one is due; Lambda's own asynchronous retries of a failed run are off
for the same reason (the next run, at most 5 minutes later, redoes the same work). No dead-letter
queue: a dropped tick carries no data, and persistent failures show as the `BudgetAlertsErrors`
alarm (monitoring.py). Reserved concurrency (constants.RESERVED_CONCURRENCY) keeps it running when the
public URL is busy; overlapping runs are harmless.

Permissions (role of this function only):
    budgets      Query (alert outbox, budget definitions), UpdateItem (claim / mark sent / release
                 leases / fold expired pools and note the alert thresholds a fold crossed), Scan
                 (find counters holding leases), GetItem. No PutItem, no DeleteItem.
    workspaces   Query (a workspace's settings: its own alert recipients, name, timezone)
    rollups      Query (top contributors of a workspace-wide budget's period)
    ledger       Query (top contributors of a scoped budget: the day's newest records, bounded; an
                 expired budget pool's records: a range of under a minute)
    SES          ses:SendEmail only with From = the `AlertSender` parameter (see _grant_ses)
No KMS: provider keys in workspace items are never decrypted here. Environment: the budgets,
workspaces, rollups and ledger table names, METERLINE_ALERT_SENDER and METERLINE_ALERT_RECIPIENTS.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra_cdk import constants as c
from infra_cdk.function import Shared, make_function
from infra_cdk.nag import acknowledge
from meterline.store import schema

TABLES = (schema.BUDGETS, schema.WORKSPACES, schema.LEDGER, schema.ROLLUPS)


class BudgetAlerts(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, shared: Shared, sender: str, recipients: str
    ) -> None:
        """`sender`, `recipients`: the AlertSender / AlertRecipients parameter values (tokens)."""
        super().__init__(scope, construct_id)
        interval = Duration.minutes(c.ALERTS_SCHEDULE_MINUTES)
        self.function = make_function(
            self,
            "Alerts",
            shared=shared,
            service=c.SERVICE_ALERTS,
            asset=c.ALERTS_ASSET,
            handler=c.ALERTS_HANDLER,
            entrypoint=c.ALERTS_HANDLER.split(".")[0] + ".py",
            description="Meterline budget alerts: SES e-mails for threshold crossings, expired lease sweep",
            memory_mb=c.ALERTS_MEMORY_MB,
            timeout_s=c.ALERTS_TIMEOUT_S,
            tables=TABLES,
            environment={c.ENV_ALERT_SENDER: sender, c.ENV_ALERT_RECIPIENTS: recipients},
        )
        # A failed run is redone by the next scheduled one: no asynchronous retries piling up.
        self.function.configure_async_invoke(retry_attempts=0, max_event_age=interval)
        self.schedule = events.Rule(
            self,
            "Schedule",
            description=f"Meterline budget alerts and lease sweep, every {c.ALERTS_SCHEDULE_MINUTES} minutes",
            schedule=events.Schedule.rate(interval),
            targets=[
                targets.LambdaFunction(
                    self.function,
                    # Delivery retries only (throttling, service errors); stale once the next is due.
                    retry_attempts=2,
                    max_event_age=interval,
                )
            ],
        )
        self._grant(shared, sender)

    def _grant(self, shared: Shared, sender: str) -> None:
        fn = self.function
        tables = shared.storage.tables
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="OutboxAndLeases",
                actions=["dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Scan"],
                resources=[tables[schema.BUDGETS.logical_name].table_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadWorkspacesLedgerAndRollups",
                actions=["dynamodb:Query"],
                resources=[
                    tables[schema.WORKSPACES.logical_name].table_arn,
                    tables[schema.LEDGER.logical_name].table_arn,
                    tables[schema.ROLLUPS.logical_name].table_arn,
                ],
            )
        )
        self._grant_ses(sender)

    def _grant_ses(self, sender: str) -> None:
        """ses:SendEmail (the SESv2 SendEmail API) from the AlertSender address only.

        The identity SES authorizes against is either the address itself or its domain, whichever
        the user verified, and the sender is a deploy-time parameter that may be empty (alerts
        off). An ARN built from it would need CloudFormation string surgery to derive the domain and
        a conditional resource for the empty case, and would still guess which of the two is the
        verified one. Instead the statement is scoped to the identities of this account and region
        (`identity/*`) AND conditioned on `ses:FromAddress` = the parameter: the function can send
        from that exact address and no other, through whichever identity covers it. With an empty
        sender the condition matches no send at all.
        """
        stack = Stack.of(self)
        identities = stack.format_arn(service="ses", resource="identity", resource_name="*")
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="SendAlertEmails",
                actions=["ses:SendEmail"],
                resources=[identities],
                conditions={"StringEquals": {"ses:FromAddress": sender}},
            )
        )
        role = self.function.role
        assert role is not None
        # cdk-nag names the finding after the ARN as synthesized: pseudo parameters (environment-
        # agnostic stack) appear as <AWS::Region> etc., a pinned environment as literal values.
        finding = "arn:{}:ses:{}:{}:identity/*".format(
            *(
                f"<AWS::{name}>" if Token.is_unresolved(value) else value
                for name, value in (
                    ("Partition", stack.partition),
                    ("Region", stack.region),
                    ("AccountId", stack.account),
                )
            )
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{finding}]",
            "ses:SendEmail is scoped to this account's and region's SES identities and conditioned on "
            "ses:FromAddress = the AlertSender parameter: only that exact sender address can be used. "
            "The verified identity may be the address or its domain and the parameter may be empty, "
            "so a single identity ARN cannot be derived from it at deploy time.",
        )
