"""HTTP responses of the model service: one stable error shape and the security headers.

Every 4xx/5xx body is ``{"error": {"code", "message", "request_id"}}`` (plus ``reasons``
on a policy denial and ``field`` on a validation error). Messages never carry stack
traces, file paths or credentials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

#: Added to every response the service sends (including BentoML's own endpoints).
SECURITY_HEADERS: dict[str, str] = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}
REQUEST_ID_HEADER = "x-request-id"


class ApiError(Exception):
    """A request ended with an HTTP error; the message is safe to show the client.

    Attributes:
        status: the HTTP status code.
        code: a stable machine-readable error code.
        message: a human-readable explanation and how to fix it.
        headers: extra response headers (``WWW-Authenticate``, ``Retry-After``).
        extra: extra fields of the error object (``reasons``, ``field``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def json_response(
    body: Any,
    *,
    status: int = 200,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return a JSON response (compact, no NaN) with the request id header."""
    content = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    response = Response(content, status_code=status, media_type="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def error_body(code: str, message: str, request_id: str, **extra: Any) -> dict[str, Any]:
    """Return the stable error body."""
    return {"error": {"code": code, "message": message, "request_id": request_id, **extra}}


def error_response(err: ApiError, request_id: str) -> Response:
    """Turn an :class:`ApiError` into its JSON response."""
    return json_response(
        error_body(err.code, err.message, request_id, **err.extra),
        status=err.status,
        request_id=request_id,
        headers=err.headers,
    )
