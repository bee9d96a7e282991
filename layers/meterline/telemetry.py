"""Request telemetry: one JSON line per request that is both its log line and its CloudWatch metrics.

On Lambda (logs.configure turned the JSON log on) a request costs one pre-shaped line on stdout: the
request log fields Powertools' logger wrote (level, location, message "request", timestamp, service,
name, xray_trace_id when set, and `request`: the request's fields) plus an embedded-metric-format
(EMF) `_aws` block whose directives read metrics and dimensions from the same root members:

    {service}            Requests, Rejections, UpstreamErrors, CostMicroUsd, InputTokens, OutputTokens,
                         CacheHits, SavedMicroUsd (all levers), LatencyMs, GatewayAddedMs, ColdStart
    {endpoint, service}  Requests
    {lever, service}     SavedMicroUsd of one lever: in the same line when one lever saved; when several
                         did, one small EMF line per lever after it (a root member has one value)

The directives are encoded once per shape (namespace, metric names, lever directive or not) and
memoised; a request's line is that prefix plus one json encoding of its root members, written with
one write. Dimensions are bounded (service, endpoint, lever), never a tenant, key or model string, so
CloudWatch cardinality (and cost) stays fixed. Nothing here logs a secret: the context carries no
provider key, and the virtual key is identified only by its public id.

Elsewhere (tests, `meterline dev`) the request line goes through the `meterline.requests` logger when
someone listens (the dev shell's request lines), and metrics are printed only with METERLINE_METRICS=1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from meterline import logs

if TYPE_CHECKING:
    from meterline.gateway.context import RequestContext

log = logging.getLogger("meterline.requests")
SERVICE = "gateway"  # the {service} dimension's value: the dashboard and alarms read service=gateway
LOCATION = "record_request"  # Powertools' `location` (function:line) of the line this replaces
# True until this process has recorded its first request: that request emits ColdStart=1. A SnapStart
# snapshot is taken before any request, so every restored environment starts True as well. (Powertools'
# capture_cold_start_metric needs its lambda_handler decorator, which the web adapter's uvicorn never runs.)
_cold = True

COUNT, MILLISECONDS = "Count", "Milliseconds"
UNITS = {"Requests": COUNT, "Rejections": COUNT, "UpstreamErrors": COUNT, "CostMicroUsd": COUNT,
         "InputTokens": COUNT, "OutputTokens": COUNT, "CacheHits": COUNT, "SavedMicroUsd": COUNT,
         "LatencyMs": MILLISECONDS, "GatewayAddedMs": MILLISECONDS, "ColdStart": COUNT}
_encode = json.JSONEncoder(separators=(",", ":")).encode
# (namespace, metric names, lever in this line) -> the encoded CloudWatchMetrics array
_directives: dict[tuple[str, tuple[str, ...], bool], str] = {}
_lever_lines: dict[tuple[str, str], str] = {}  # (namespace, lever) -> a lever line's template
_clock: tuple[int, str, str] = (-1, "", "")  # (second, its "%Y-%m-%d %H:%M:%S", its "%z")


def metrics_enabled() -> bool:
    default = "1" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "0"
    return os.environ.get("METERLINE_METRICS", default) == "1"


def _namespace() -> str:
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Meterline"


def _directive(namespace: str, dimensions: list[str], names: Any) -> dict[str, Any]:
    return {"Namespace": namespace, "Dimensions": [dimensions],
            "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in names]}


def _directives_for(namespace: str, names: tuple[str, ...], lever: bool) -> str:
    key = (namespace, names, lever)
    encoded = _directives.get(key)
    if encoded is None:
        directives = [_directive(namespace, ["service"], names),
                      _directive(namespace, ["endpoint", "service"], ["Requests"])]
        if lever:
            directives.append(_directive(namespace, ["lever", "service"], ["SavedMicroUsd"]))
        encoded = _directives[key] = _encode(directives)
    return encoded


def _lever_line(namespace: str, lever: str, timestamp_ms: int, micros: int) -> str:
    """An EMF line of its own for one lever's saving ({lever, service}), when several levers saved."""
    template = _lever_lines.get((namespace, lever))
    if template is None:
        directives = _encode([_directive(namespace, ["lever", "service"], ["SavedMicroUsd"])])
        template = _lever_lines[(namespace, lever)] = (
            '{"_aws":{"Timestamp":%d,"CloudWatchMetrics":' + directives.replace("%", "%%") + '},"service":'
            + _encode(SERVICE) + ',"lever":' + _encode(lever).replace("%", "%%") + ',"SavedMicroUsd":%d}\n')
    return template % (timestamp_ms, micros)


def _log_time(now: float) -> str:
    """Powertools' log timestamp ("2026-12-02 02:41:36,094+0000", local time), formatted once a second."""
    global _clock
    second = int(now)
    clock = _clock
    if second != clock[0]:
        local = time.localtime(second)
        clock = _clock = (second, time.strftime("%Y-%m-%d %H:%M:%S", local), time.strftime("%z", local))
    return f"{clock[1]},{int((now - second) * 1000):03d}{clock[2]}"


def _fields(ctx: RequestContext, status: int) -> dict[str, Any]:
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
    return fields


def _metrics(ctx: RequestContext, root: dict[str, Any]) -> None:
    """The {service} metrics' values as root members (EMF target members), in the directive's order."""
    root["Requests"] = 1
    outcome = ctx.outcome
    if outcome == "rejected":
        root["Rejections"] = 1
    elif outcome.startswith("upstream_"):
        root["UpstreamErrors"] = 1
    elif outcome == "cache_hit":
        root["CacheHits"] = 1
    if ctx.cost:
        root["CostMicroUsd"] = ctx.cost.micros
    usage = ctx.usage
    if usage:
        root["InputTokens"] = usage.prompt_total
        root["OutputTokens"] = usage.output
    if ctx.savings:
        root["SavedMicroUsd"] = sum(ctx.savings.values())
    root["LatencyMs"] = round(ctx.elapsed_ms(), 3)  # end to end
    # What the gateway itself added: end to end minus the waits on the provider and on the client.
    root["GatewayAddedMs"] = round(ctx.added_ms(), 3)
    global _cold
    if _cold:  # the first request this execution environment served
        _cold = False
        root["ColdStart"] = 1


def record_request(ctx: RequestContext) -> None:
    status = ctx.error.status if ctx.error else (ctx.upstream_status or 200)
    json_log = logs.json_lines() and log.isEnabledFor(logging.INFO)
    if not json_log and log.isEnabledFor(logging.INFO):  # the dev shell's request line
        log.info("request", extra={"request": _fields(ctx, status)})
    metrics = metrics_enabled()
    if not (json_log or metrics):
        return
    now = time.time()
    root: dict[str, Any] = {}
    if json_log:  # the keys and order of Powertools' JSON formatter, as the line had before
        root["level"], root["location"], root["message"] = "INFO", LOCATION, "request"
        root["timestamp"], root["service"], root["name"] = _log_time(now), SERVICE, log.name
        trace = os.environ.get("_X_AMZN_TRACE_ID")
        if trace:
            root["xray_trace_id"] = trace.split(";")[0].replace("Root=", "")
        root["request"] = _fields(ctx, status)
    if not metrics:
        _write(_encode(root) + "\n")
        return
    timestamp_ms = int(now * 1000)
    namespace = _namespace()
    root["service"] = SERVICE
    root["endpoint"] = ctx.endpoint
    savings = ctx.savings
    one_lever = len(savings) == 1
    if one_lever:  # its {lever, service} series reads the same SavedMicroUsd member (the one lever's)
        root["lever"] = next(iter(savings))
    first = len(root)
    _metrics(ctx, root)
    names = tuple(root)[first:]
    body = _encode(root)
    line = ('{"_aws":{"Timestamp":' + str(timestamp_ms) + ',"CloudWatchMetrics":'
            + _directives_for(namespace, names, one_lever) + "}," + body[1:] + "\n")
    if len(savings) > 1:  # a root member has one value: each lever's saving in a line of its own
        line += "".join(_lever_line(namespace, lever, timestamp_ms, micros)
                        for lever, micros in sorted(savings.items()))
    _write(line)


def _write(text: str) -> None:
    """One write (the buffer flushed at once, as the logger's handler did), never failing the request:
    a closed or broken stdout loses the line, as logging's handlers would."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
