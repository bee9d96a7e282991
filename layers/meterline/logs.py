"""Logging setup. On Lambda: Powertools' JSON logger (with the invocation's request id) applied to
every `meterline.*` logger. Locally: warnings and errors only, plain text."""

from __future__ import annotations

import logging
import os


def configure(service: str) -> None:
    if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        logging.getLogger("meterline").setLevel(logging.WARNING)
        return
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    source = Logger(service=service)
    logging.getLogger("meterline")  # make sure the package logger is registered before copying
    copy_config_to_registered_loggers(source_logger=source, include={"meterline"})
