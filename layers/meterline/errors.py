"""Gateway errors: one hierarchy, mapped to each API dialect's error body at the edge.

    GatewayError                      every failure a caller may see (status, code, safe message)
    ├── AuthenticationError   401     missing, unknown, expired or revoked virtual key
    ├── PermissionDeniedError 403     key may not use this model/provider
    ├── PolicyDenied          403     a request policy refused (413 size, 400 max_tokens reject)
    ├── NotFoundError         404     unknown provider/model, or a model with no price
    ├── InvalidRequestError   400     malformed JSON, schema violation
    ├── PayloadTooLargeError  413     body over the configured limit
    ├── UpstreamError         4xx/5xx provider answered with an error (its status, redacted message)
    ├── UpstreamUnavailable   502     provider could not be reached
    ├── UpstreamTimeout       504     provider did not answer in time
    └── ServiceUnavailable    503     a store the gateway depends on failed

Messages are written for the caller and never contain secrets; `redact` scrubs anything that
came from a provider before it is passed on. Unexpected exceptions never reach a caller as text:
the app maps them to a generic 500.
"""

from __future__ import annotations

from typing import Any

from meterline.redaction import redact as _redact


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.headers = headers or {}


class AuthenticationError(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class InvalidRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class PayloadTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class PolicyDenied(GatewayError):
    """A workspace request policy refused the request; `policy` names it (both dialects carry it)."""

    status = 403
    type = "permission_error"
    code = "policy_denied"

    def __init__(self, message: str, *, policy: str, status: int | None = None, param: str | None = None):
        super().__init__(message, status=status, param=param)
        self.policy = policy
        if self.status in (400, 413):
            self.type = "invalid_request_error"


class UpstreamError(GatewayError):
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


def redact(text: str, *secrets: str | None) -> str:
    """Remove known secrets (in any JSON spelling, prefixes included) and anything shaped like an API
    key from provider-supplied text (meterline.redaction: the one redaction for everything passed on)."""
    return _redact(text, *secrets)


def openai_error_body(error: GatewayError) -> dict[str, Any]:
    body = {"message": error.message, "type": error.type, "param": error.param, "code": error.code}
    policy = getattr(error, "policy", None)
    if policy:
        body["policy"] = policy
    return {"error": body}


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


def anthropic_error_body(error: GatewayError) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(error.status, "api_error")
    body: dict[str, Any] = {"type": kind, "message": error.message}
    policy = getattr(error, "policy", None)
    if policy:  # extra fields the Anthropic SDKs pass through on `error.body`
        body["code"], body["policy"] = error.code, policy
    return {"type": "error", "error": body}
