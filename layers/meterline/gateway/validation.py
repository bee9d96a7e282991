"""Request validation for each endpoint (OpenAI chat, responses and embeddings; Anthropic messages).
Pure; raises InvalidRequestError with the offending `param`, as OpenAI does, so SDKs surface a
precise BadRequestError. Only what the gateway itself relies on is checked: providers validate the rest."""

from __future__ import annotations

import json
from typing import Any

from meterline.errors import InvalidRequestError

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


MAX_DEPTH = 64  # real requests nest < 20 deep (JSON schemas included); deeper is an attack on recursion


def _too_deep(body: Any, limit: int = MAX_DEPTH) -> bool:
    """Deeper than `limit` containers (walked iteratively, containers only: cheap)."""
    stack = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_json_object(raw: bytes) -> dict[str, Any]:
    invalid = InvalidRequestError("We could not parse the JSON body of your request. The body must be valid JSON.",
                                  code="invalid_json")
    try:
        body = json.loads(raw)
    except RecursionError as exc:
        raise InvalidRequestError(f"The JSON body nests deeper than {MAX_DEPTH} levels.", code="invalid_json") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _too_deep(body):
        # Every later stage (estimates, translators, caches) may recurse over the body.
        raise InvalidRequestError(f"The JSON body nests deeper than {MAX_DEPTH} levels.", code="invalid_json")
    return body


def check_content_type(value: str | None) -> None:
    """JSON only: a body sent as a form or as text is refused (a missing header is read as JSON)."""
    if not value:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise InvalidRequestError(f"Content-Type must be application/json, not {media!r}.",
                                  code="unsupported_content_type", status=415)


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


def _model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError("Missing required parameter: 'model'.", code="missing_required_parameter",
                                  param="model")


def _stream_flag(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("Invalid 'stream': expected a boolean.", code="invalid_type", param="stream")


def _anthropic_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages: Field required (a non-empty array).", code="missing_required_parameter",
                                  param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequestError(f"messages.{i}.role: Input should be 'user' or 'assistant'.",
                                      code="invalid_value", param=f"messages[{i}].role")


def validate_messages(body: dict[str, Any]) -> None:
    """Anthropic `POST /v1/messages`."""
    _model(body)
    _anthropic_messages(body)
    if body.get("max_tokens") is None:
        raise InvalidRequestError("max_tokens: Field required.", code="missing_required_parameter", param="max_tokens")
    _positive_int(body, "max_tokens")
    _stream_flag(body)


def validate_count_tokens(body: dict[str, Any]) -> None:
    """Anthropic `POST /v1/messages/count_tokens`."""
    _model(body)
    _anthropic_messages(body)


def validate_responses(body: dict[str, Any]) -> None:
    """OpenAI `POST /v1/responses`."""
    _model(body)
    value = body.get("input")
    if value is not None and not isinstance(value, str | list):
        raise InvalidRequestError("Invalid 'input': expected a string or an array.", code="invalid_type",
                                  param="input")
    _stream_flag(body)
    _positive_int(body, "max_output_tokens")


def validate_embeddings(body: dict[str, Any]) -> None:
    """OpenAI `POST /v1/embeddings`."""
    _model(body)
    value = body.get("input")
    if not isinstance(value, str | list) or not value:
        raise InvalidRequestError("Missing required parameter: 'input'.", code="missing_required_parameter",
                                  param="input")
