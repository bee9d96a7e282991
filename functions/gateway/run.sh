#!/bin/bash
# Data plane entry point under the AWS Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap):
# LWA starts this script, waits for /healthz on $PORT, then streams each invocation through it.
# The meterline package and its dependencies come from the layers (/opt/python).
# --no-proxy-headers: the peer is the adapter on loopback, and uvicorn would otherwise take the
# client's address from any X-Forwarded-For (IP policies read the function URL's request context).
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT:-.}:${PYTHONPATH:-}"
exec python -m uvicorn meterline.gateway.app:create_app --factory \
  --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log --no-proxy-headers --timeout-keep-alive 75 --loop uvloop --http httptools
