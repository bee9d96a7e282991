"""Logging setup. On Lambda: Powertools' JSON logger (with the invocation's request id) applied to
every `meterline.*` logger, and the JSON request line (telemetry.record_request writes it itself, as
one line with the request's metrics). Locally: warnings and errors only, plain text."""

from __future__ import annotations

import logging
import os

_json_lines = False


def json_lines() -> bool:
    """Whether log lines are JSON on stdout (Lambda): telemetry then writes the request line itself."""
    return _json_lines


def configure(service: str) -> None:
    global _json_lines
    if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        logging.getLogger("meterline").setLevel(logging.WARNING)
        return
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    source = Logger(service=service)
    logging.getLogger("meterline")  # make sure the package logger is registered before copying
    copy_config_to_registered_loggers(source_logger=source, include={"meterline"})
    _json_lines = True
