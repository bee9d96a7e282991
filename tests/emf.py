"""CloudWatch embedded metric format (EMF): the rules a document must meet for CloudWatch Logs to extract
its metrics (the EMF specification, "Specification: Embedded metric format"), and a reader that gives
each directive's dimension set and metrics exactly.

A document is one JSON object on one line with `_aws: {Timestamp, CloudWatchMetrics: [directive...]}`;
each directive names a Namespace, Dimensions (a list of dimension sets) and Metrics ({Name, Unit}); the
values are root members of the document: a metric's a number or a list of numbers, a dimension's a string.
"""

from __future__ import annotations

import json
import time
from typing import Any

UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}
MAX_EVENT_BYTES = 256 * 1024  # a CloudWatch Logs event (the EMF limit is the same as any event's)


def lines(out: str) -> list[dict[str, Any]]:
    """Every JSON object line in captured stdout."""
    parsed = []
    for line in out.splitlines():
        if line.startswith("{"):
            parsed.append(json.loads(line))
    return parsed


def documents(out: str) -> list[dict[str, Any]]:
    """The EMF documents in captured stdout (lines with `_aws`), each checked against the rules."""
    docs = [doc for doc in lines(out) if "_aws" in doc]
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            assert len(line.encode()) < MAX_EVENT_BYTES
    for doc in docs:
        validate(doc)
    return docs


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(doc: dict[str, Any]) -> None:
    """Assert that a document meets the EMF rules, so CloudWatch would extract every metric it names."""
    meta = doc["_aws"]
    assert isinstance(meta, dict)
    stamp = meta["Timestamp"]  # milliseconds since the epoch, as an integer
    assert isinstance(stamp, int) and not isinstance(stamp, bool)
    assert abs(stamp - time.time() * 1000) < 3_600_000, "Timestamp is not epoch milliseconds of about now"
    directives = meta["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    for directive in directives:
        assert set(directive) <= {"Namespace", "Dimensions", "Metrics"}
        namespace = directive["Namespace"]
        assert isinstance(namespace, str) and 1 <= len(namespace) <= 255
        assert isinstance(directive["Dimensions"], list)
        for dimension_set in directive["Dimensions"]:
            assert isinstance(dimension_set, list) and len(dimension_set) <= 30
            assert len(set(dimension_set)) == len(dimension_set)
            for key in dimension_set:  # every dimension key a string member of the root
                assert isinstance(key, str) and isinstance(doc.get(key), str), key
                assert 1 <= len(doc[key]) <= 1024
        metrics = directive["Metrics"]
        assert isinstance(metrics, list) and 1 <= len(metrics) <= 100
        names = [metric["Name"] for metric in metrics]
        assert len(set(names)) == len(names)
        for metric in metrics:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            assert isinstance(metric["Name"], str) and 1 <= len(metric["Name"]) <= 1024
            assert metric.get("Unit", "None") in UNITS
            assert metric.get("StorageResolution", 60) in (1, 60)
            value = doc.get(metric["Name"])  # every metric a number (or a list of up to 100) at the root
            if isinstance(value, list):
                assert 1 <= len(value) <= 100 and all(_is_number(v) for v in value), metric["Name"]
            else:
                assert _is_number(value), metric["Name"]


def series(doc: dict[str, Any]) -> dict[tuple[str, ...], dict[str, tuple[str, Any]]]:
    """{sorted dimension keys: {metric name: (unit, value)}} of one document, one entry per dimension set."""
    out: dict[tuple[str, ...], dict[str, tuple[str, Any]]] = {}
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            key = tuple(sorted(dimension_set))
            assert key not in out, f"dimension set {key} in two directives of one document"
            out[key] = {m["Name"]: (m.get("Unit", "None"), doc[m["Name"]]) for m in directive["Metrics"]}
    return out


def value(v: Any) -> Any:
    """A metric's value whether written as a number or a one-element list."""
    if isinstance(v, list):
        assert len(v) == 1
        return v[0]
    return v
