"""Errors over HTTP, in one place: which status each error is answered with, and the two shapes
(modelctl's `{"error": {"message", "code", "hint", "log_tail"}}` and, on `/v1`, OpenAI's)."""

from __future__ import annotations

from typing import Any

from .errors import (
    DoesNotFitError,
    EngineUnreachableError,
    Forbidden,
    LockTimeoutError,
    ModelctlError,
    NotReadyError,
    QueueFull,
    Unauthorized,
    UnknownProfileError,
    UpstreamError,
    UsageError,
)
from .report import error_json

RETRY_AFTER_S = 5  # what a client told "another switch holds the lock" should wait


class UpstreamTimeout(UpstreamError):
    """The model's server sent no byte for MODELCTL_PROXY_IDLE_TIMEOUT seconds, or its request was
    ended by the drain before a swap (HTTP 504)."""


# Most specific first: the HTTP status each error is answered with.
HTTP_STATUS: list[tuple[type[ModelctlError], int]] = [
    (UpstreamTimeout, 504),
    (Unauthorized, 401),
    (Forbidden, 403),
    (UnknownProfileError, 404),
    (UsageError, 400),
    (DoesNotFitError, 409),
    (NotReadyError, 502),
    (EngineUnreachableError, 503),
    (LockTimeoutError, 503),
]


class HttpRefusal(UsageError):
    """The web framework's own refusals (no such path, wrong method), in the service's error shape."""

    def __init__(
        self,
        message: str,
        status: int,
        headers: dict[str, str] | None = None,
        *,
        hint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.headers = dict(headers or {})
        self.code = code  # OpenAI's `code` on /v1 (e.g. "request_too_large")


def http_status(error: ModelctlError) -> int:
    if isinstance(error, HttpRefusal):
        return error.status
    return next((status for kind, status in HTTP_STATUS if isinstance(error, kind)), 500)


def error_headers(error: ModelctlError) -> dict[str, str]:
    headers = dict(error.headers) if isinstance(error, HttpRefusal) else {}
    if isinstance(error, QueueFull):
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, LockTimeoutError):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def openai_error_json(error: ModelctlError, status: int) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` as OpenAI's API answers, plus modelctl's details."""
    if isinstance(error, UnknownProfileError):
        kind, code, param = "invalid_request_error", "model_not_found", "model"
    elif isinstance(error, UpstreamTimeout):
        kind, code, param = "server_error", "upstream_timeout", None
    elif isinstance(error, HttpRefusal) and error.code:
        kind, code, param = ("invalid_request_error" if status < 500 else "server_error"), error.code, None
    elif isinstance(error, QueueFull):
        kind, code, param = "server_error", "queue_full", None
    elif isinstance(error, NotReadyError):
        kind, code, param = "server_error", "model_not_ready", "model"
    elif status == 401:
        kind, code, param = "invalid_request_error", "invalid_api_key", None
    elif status < 500:
        kind, code, param = "invalid_request_error", None, None
    else:
        kind, code, param = "server_error", None, None
    body: dict[str, Any] = {
        "message": error.message,
        "type": kind,
        "param": param,
        "code": code,
        "modelctl_code": error.exit_code,
    }
    if error.hint:
        body["hint"] = error.hint
    if isinstance(error, NotReadyError) and error.log_tail:
        body["log_tail"] = error.log_tail
    return {"error": body}


def error_document(error: ModelctlError, path: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """(body, status, headers) for an error answered on `path`: OpenAI's shape under /v1."""
    status = http_status(error)
    body = openai_error_json(error, status) if path == "/v1" or path.startswith("/v1/") else error_json(error)
    return body, status, error_headers(error)
