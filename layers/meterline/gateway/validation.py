"""Request validation for the OpenAI-compatible endpoints. Pure; raises InvalidRequestError with
the offending `param`, as OpenAI does, so SDKs surface a precise BadRequestError."""

from __future__ import annotations

import json
from typing import Any

from meterline.errors import InvalidRequestError

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    return body


def _positive_int(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidRequestError(f"Invalid '{name}': expected a positive integer.", code="invalid_type", param=name)


def validate_chat(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError("Missing required parameter: 'model'.", code="missing_required_parameter",
                                  param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("Missing required parameter: 'messages' (a non-empty array).",
                                  code="missing_required_parameter", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise InvalidRequestError(
                f"Invalid 'messages[{i}]': each message needs a 'role' of {sorted(_ROLES)}.",
                code="invalid_value", param=f"messages[{i}].role",
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("Invalid 'stream': expected a boolean.", code="invalid_type", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequestError("Invalid 'stream_options': expected an object.", code="invalid_type",
                                  param="stream_options")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        _positive_int(body, name)
