"""CloudWatch dashboard and alarms.

The gateway emits EMF metrics in namespace `Meterline` (meterline/telemetry.py: in each request's own
JSON log line) with the dimension `service=gateway` (bounded cardinality: workspaces, keys and models
are never dimensions; `Requests` also per {endpoint, service}, `SavedMicroUsd` per {lever, service}):

    Requests, Rejections, UpstreamErrors   Count
    CostMicroUsd                           integer micro-dollars
    InputTokens, OutputTokens              Count
    LatencyMs                              end-to-end latency (provider time included), Milliseconds
    GatewayAddedMs                         gateway-added latency: end to end minus the time spent
                                           waiting on the provider and on the client, Milliseconds
    ColdStart                              1 on the first request an execution environment serves
                                           (emitted by the gateway itself: Powertools' own needs its
                                           handler decorator, which uvicorn behind LWA never runs)

The headline graphs and the alarms read the `service`-only series, so the gateway must emit that
dimension set. A finer breakdown (e.g. an `endpoint` dimension emitted as a second dimension set)
is graphed with a SEARCH expression and needs no change here.

Alarms (no action attached yet: a later issue wires notifications; they show in the console and in
the dashboard's alarm widget):
    GatewayErrorRate          Lambda-level failures (crash, timeout, OOM) per invocation
    GatewayThrottles          any throttled invocation (concurrency limit reached)
    GatewayUpstreamErrorRate  provider errors per request
    RollupDeadLetters         a ledger record could not be aggregated (spend counters are short)
    RollupIteratorAge         aggregation is falling behind the ledger
    LedgerUnreplayed          a failed ledger write could not be replayed (replay dead-letter queue)
    BudgetAlertsErrors        the scheduled alerts function failed in 2 of 3 runs (alert e-mails
                              and the lease sweep are not happening)
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra_cdk import constants as c
from meterline.levers import LEVERS

FIVE_MINUTES = Duration.minutes(5)
GATEWAY_METRICS = (
    "Requests",
    "Rejections",
    "UpstreamErrors",
    "CostMicroUsd",
    "InputTokens",
    "OutputTokens",
    "LatencyMs",
    "GatewayAddedMs",
    "ColdStart",
    "SavedMicroUsd",
    "CacheHits",
)


def app_metric(name: str, statistic: str = "Sum", label: str | None = None,
               lever: str | None = None) -> cw.Metric:
    dimensions = {"service": c.SERVICE_GATEWAY}
    if lever is not None:  # the {service, lever} series: what each cost lever saved
        dimensions["lever"] = lever
    return cw.Metric(
        namespace=c.METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map=dimensions,
        statistic=statistic,
        period=FIVE_MINUTES,
        label=label or name,
    )


def replay_metric(name: str) -> cw.Metric:
    """The replay function's per-invocation counts (functions/replay/handler.py, {service=replay})."""
    return cw.Metric(namespace=c.METRICS_NAMESPACE, metric_name=name, dimensions_map={"service": c.SERVICE_REPLAY},
                     statistic="Sum", period=FIVE_MINUTES, label=name)


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        gateway: lambda_.Function,
        admin: lambda_.Function,
        rollup: lambda_.Function,
        alerts: lambda_.Function,
        dead_letters: sqs.Queue,
        replay: lambda_.Function,
        replay_dead_letters: sqs.Queue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms = [*self._alarms(gateway, rollup, alerts, dead_letters), self._replay_alarm(replay_dead_letters)]
        self.dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.hours(6))
        self._widgets(gateway, admin, rollup, alerts, dead_letters)
        self._replay_widgets(replay, replay_dead_letters)

    def _replay_alarm(self, dlq: sqs.Queue) -> cw.Alarm:
        return dlq.metric_approximate_number_of_messages_visible(
            period=FIVE_MINUTES, statistic="Maximum"
        ).create_alarm(
            self,
            "LedgerUnreplayed",
            alarm_description="Ledger records the gateway failed to write could not be replayed from its "
            "ledger_write_failed log lines: they wait in the replay dead-letter queue (the ledger and "
            "rollups are short by them until they are fixed and replayed)",
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

    def _replay_widgets(self, replay: lambda_.Function, dlq: sqs.Queue) -> None:
        """Failed ledger writes and their way back (infra_cdk/replay.py): what was replayed, what was
        already there (spurious failures), and what is still unreplayed (the dead-letter queue)."""
        unreplayed = dlq.metric_approximate_number_of_messages_visible(
            period=FIVE_MINUTES, statistic="Maximum", label="Unreplayed (dead-letter queue)")
        self.dashboard.add_widgets(
            cw.SingleValueWidget(title="Unreplayed ledger records", metrics=[unreplayed], width=6, height=6),
            cw.GraphWidget(
                title="Ledger replay (failed ledger writes and settlements)",
                left=[replay_metric("LedgerReplayed"), replay_metric("LedgerReplayDuplicates"),
                      replay_metric("LedgerUnreplayable"), replay_metric("BudgetSettlementsReplayed")],
                right=[unreplayed],
                width=12,
                height=6,
            ),
            cw.GraphWidget(
                title="Replay function errors",
                left=[replay.metric_errors(period=FIVE_MINUTES, statistic="Sum", label="Replay Errors"),
                      replay.metric_invocations(period=FIVE_MINUTES, statistic="Sum", label="Replay Invocations")],
                width=6,
                height=6,
            ),
        )

    def _alarms(
        self, gateway: lambda_.Function, rollup: lambda_.Function, alerts: lambda_.Function, dlq: sqs.Queue
    ) -> list[cw.Alarm]:
        error_rate = cw.MathExpression(
            expression="IF(invocations > 0, 100 * errors / invocations, 0)",
            using_metrics={
                "errors": gateway.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
                "invocations": gateway.metric_invocations(period=FIVE_MINUTES, statistic="Sum"),
            },
            label="Gateway error rate (%)",
            period=FIVE_MINUTES,
        )
        upstream_rate = cw.MathExpression(
            expression="IF(requests > 0, 100 * upstream / requests, 0)",
            using_metrics={"upstream": app_metric("UpstreamErrors"), "requests": app_metric("Requests")},
            label="Upstream error rate (%)",
            period=FIVE_MINUTES,
        )
        return [
            error_rate.create_alarm(
                self,
                "GatewayErrorRate",
                alarm_description=f"Gateway invocations failing (crash, timeout, OOM) above "
                f"{c.GATEWAY_ERROR_RATE_PCT}% in 2 of 3 five-minute periods",
                threshold=c.GATEWAY_ERROR_RATE_PCT,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            gateway.metric_throttles(period=FIVE_MINUTES, statistic="Sum").create_alarm(
                self,
                "GatewayThrottles",
                alarm_description="Gateway invocations throttled: the account or function concurrency "
                "limit was reached and callers received 429s from Lambda",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            upstream_rate.create_alarm(
                self,
                "GatewayUpstreamErrorRate",
                alarm_description=f"Provider errors above {c.UPSTREAM_ERROR_RATE_PCT}% of requests in 2 "
                "of 3 five-minute periods",
                threshold=c.UPSTREAM_ERROR_RATE_PCT,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            dlq.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"
            ).create_alarm(
                self,
                "RollupDeadLetters",
                alarm_description="Ledger records that could not be aggregated into rollups are waiting "
                "in the dead-letter queue: spend counters are short until they are replayed",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            rollup.metric("IteratorAge", period=FIVE_MINUTES, statistic="Maximum").create_alarm(
                self,
                "RollupIteratorAge",
                alarm_description="Rollup aggregation is more than 5 minutes behind the ledger stream",
                threshold=c.ROLLUP_ITERATOR_AGE_MS,
                evaluation_periods=3,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            # One run per five minutes: 2 failed periods of 3 is a broken job, not a blip.
            alerts.metric_errors(period=FIVE_MINUTES, statistic="Sum").create_alarm(
                self,
                "BudgetAlertsErrors",
                alarm_description="The scheduled budget-alerts function failed in 2 of 3 five-minute "
                "periods: alert e-mails are not sent and expired reservation leases are not released",
                threshold=1,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        ]

    def _widgets(
        self,
        gateway: lambda_.Function,
        admin: lambda_.Function,
        rollup: lambda_.Function,
        alerts: lambda_.Function,
        dlq: sqs.Queue,
    ) -> None:
        def graph(title: str, left: list[cw.IMetric], **kwargs: object) -> cw.GraphWidget:
            return cw.GraphWidget(title=title, left=left, width=8, height=6, **kwargs)  # type: ignore[arg-type]

        self.dashboard.add_widgets(
            cw.TextWidget(
                markdown="# Meterline gateway\nApp metrics: namespace `Meterline`, `service=gateway`. "
                "Cost is in integer micro-dollars (1,000,000 = $1).",
                width=24,
                height=2,
            )
        )
        self.dashboard.add_widgets(
            graph(
                "Requests",
                [app_metric("Requests"), app_metric("Rejections"), app_metric("UpstreamErrors")],
            ),
            graph("Spend (micro-USD)", [app_metric("CostMicroUsd", label="CostMicroUsd")]),
            graph("Tokens", [app_metric("InputTokens"), app_metric("OutputTokens")]),
        )
        self.dashboard.add_widgets(
            graph("Saved by lever (micro-USD)",
                  [app_metric("SavedMicroUsd", label=lever, lever=lever) for lever in LEVERS]),
            graph("Saved vs spent (micro-USD)", [app_metric("SavedMicroUsd"), app_metric("CostMicroUsd")]),
            graph("Response cache hits", [app_metric("CacheHits"), app_metric("Requests")]),
        )
        self.dashboard.add_widgets(
            graph(
                "Gateway-added latency (ms): end to end minus provider and client time",
                [
                    app_metric("GatewayAddedMs", "p50", "added p50"),
                    app_metric("GatewayAddedMs", "p90", "added p90"),
                    app_metric("GatewayAddedMs", "p99", "added p99"),
                ],
                right=[
                    app_metric("LatencyMs", "p50", "end to end p50"),
                    app_metric("LatencyMs", "p99", "end to end p99"),
                ],
            ),
            graph(
                "Gateway Lambda: invocations, errors, throttles",
                [
                    gateway.metric_invocations(period=FIVE_MINUTES, statistic="Sum"),
                    gateway.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
                    gateway.metric_throttles(period=FIVE_MINUTES, statistic="Sum"),
                ],
            ),
            graph(
                "Gateway Lambda: duration and concurrency",
                [
                    gateway.metric_duration(period=FIVE_MINUTES, statistic="p50", label="Duration p50"),
                    gateway.metric_duration(period=FIVE_MINUTES, statistic="p99", label="Duration p99"),
                ],
                right=[
                    gateway.metric("ConcurrentExecutions", period=FIVE_MINUTES, statistic="Maximum"),
                    app_metric("ColdStart", label="ColdStart (new environments)"),
                ],
            ),
        )
        by_endpoint = cw.MathExpression(
            expression=(
                f'SEARCH(\'{{{c.METRICS_NAMESPACE},endpoint,service}} MetricName="Requests" '
                f"service=\"{c.SERVICE_GATEWAY}\"', 'Sum', 300)"
            ),
            using_metrics={},
            label="",
            period=FIVE_MINUTES,
        )
        self.dashboard.add_widgets(
            graph("Requests by endpoint", [by_endpoint]),
            graph(
                "Admin, rollup and alerts errors",
                [
                    admin.metric_errors(period=FIVE_MINUTES, statistic="Sum", label="Admin Errors"),
                    rollup.metric_errors(period=FIVE_MINUTES, statistic="Sum", label="Rollup Errors"),
                    alerts.metric_errors(period=FIVE_MINUTES, statistic="Sum", label="Alerts Errors"),
                ],
            ),
            graph(
                "Rollup lag and dead letters",
                [rollup.metric("IteratorAge", period=FIVE_MINUTES, statistic="Maximum")],
                right=[dlq.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES)],
            ),
        )
        self.dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24, height=3)
        )
