"""Request telemetry: one structured log line and CloudWatch metrics (EMF) per request.

Metrics go through Powertools' EMF serializer when METERLINE_METRICS is on (the default on Lambda);
dimensions are bounded (service, endpoint, outcome), never a tenant, key or model string, so
CloudWatch cardinality (and cost) stays fixed. Nothing here logs a secret: the context carries
no provider key, and the virtual key is identified only by its public id.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from meterline.gateway.context import RequestContext

log = logging.getLogger("meterline.requests")
_metrics: Any = None
# True until this process has recorded its first request: that request emits ColdStart=1. A SnapStart
# snapshot is taken before any request, so every restored environment starts True as well. (Powertools'
# capture_cold_start_metric needs its lambda_handler decorator, which the web adapter's uvicorn never runs.)
_cold = True


def metrics_enabled() -> bool:
    default = "1" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "0"
    return os.environ.get("METERLINE_METRICS", default) == "1"


def _get_metrics() -> Any:
    global _metrics
    if _metrics is None:
        from aws_lambda_powertools import Metrics

        _metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Meterline"),
                           service="gateway")
    return _metrics


def record_request(ctx: RequestContext) -> None:
    status = ctx.error.status if ctx.error else (ctx.upstream_status or 200)
    if log.isEnabledFor(logging.INFO):  # on Lambda and in the dev shell; elsewhere no line to build
        fields = {
            "request_id": ctx.request_id,
            "endpoint": ctx.endpoint,
            "workspace": ctx.workspace.workspace if ctx.workspace else None,
            "key_id": ctx.key.key_id if ctx.key else None,
            "model": ctx.model_id,
            "status": status,
            "outcome": ctx.outcome,
            "cost_micros": ctx.cost.micros if ctx.cost else 0,
            "latency_ms": round(ctx.elapsed_ms(), 1),
            "added_ms": round(ctx.added_ms(), 1),
        }
        if ctx.usage:  # the dev shell's request line shows them
            fields.update(input_tokens=ctx.usage.prompt_total, output_tokens=ctx.usage.output_total,
                          cached_tokens=ctx.usage.cache_read)
        log.info("request", extra={"request": fields})
    if not metrics_enabled():
        return
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    # One dimension set, {service}: the dashboard and alarms read exactly this series.
    metrics = _get_metrics()
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    if ctx.outcome == "rejected":
        metrics.add_metric(name="Rejections", unit=MetricUnit.Count, value=1)
    if ctx.outcome.startswith("upstream_"):
        metrics.add_metric(name="UpstreamErrors", unit=MetricUnit.Count, value=1)
    if ctx.cost:
        metrics.add_metric(name="CostMicroUsd", unit=MetricUnit.Count, value=ctx.cost.micros)
    if ctx.usage:
        metrics.add_metric(name="InputTokens", unit=MetricUnit.Count, value=ctx.usage.prompt_total)
        metrics.add_metric(name="OutputTokens", unit=MetricUnit.Count, value=ctx.usage.output)
    if ctx.outcome == "cache_hit":
        metrics.add_metric(name="CacheHits", unit=MetricUnit.Count, value=1)
    if ctx.savings:
        metrics.add_metric(name="SavedMicroUsd", unit=MetricUnit.Count, value=sum(ctx.savings.values()))
    metrics.add_metric(name="LatencyMs", unit=MetricUnit.Milliseconds, value=ctx.elapsed_ms())  # end to end
    # What the gateway itself added: end to end minus the waits on the provider and on the client.
    metrics.add_metric(name="GatewayAddedMs", unit=MetricUnit.Milliseconds, value=ctx.added_ms())
    global _cold
    if _cold:  # the first request this execution environment served
        _cold = False
        metrics.add_metric(name="ColdStart", unit=MetricUnit.Count, value=1)
    metrics.flush_metrics()
    # What each cost lever saved, as a bounded series ({lever, service}: six lever names).
    for lever, micros in sorted(ctx.savings.items()):
        with single_metric(name="SavedMicroUsd", unit=MetricUnit.Count, value=micros, namespace=metrics.namespace,
                           default_dimensions={"service": "gateway"}) as metric:
            metric.add_dimension(name="lever", value=lever)
    # Requests per endpoint, as a second, bounded series ({endpoint, service}).
    with single_metric(name="Requests", unit=MetricUnit.Count, value=1, namespace=metrics.namespace,
                       default_dimensions={"service": "gateway"}) as metric:
        metric.add_dimension(name="endpoint", value=ctx.endpoint)
