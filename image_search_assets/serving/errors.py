"""The service's one error format, `{"error": code, "detail": text}`, for the app and the server.

The HTTP protocol answers some requests before the app sees them (a header too large, a
request line it cannot parse, a client too slow); it writes the same body as the app does.
"""

from __future__ import annotations

import http
import json
from collections.abc import Mapping

from fastapi.responses import JSONResponse

# The code of a status the app or the server raises without naming one.
CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    431: "headers_too_large",
    500: "internal_error",
    503: "unavailable",
}


def code_of(status: int) -> str:
    return CODES.get(status, "error" if status >= 500 else "bad_request")


def error_json(code: str, detail: str) -> bytes:
    return json.dumps({"error": code, "detail": detail}).encode()


def raw_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for the protocol to write."""
    body = error_json(code, detail)
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += [
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The app's error response."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)
