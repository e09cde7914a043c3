"""HTTP to the modelctl service at MODELCTL_URL: its JSON documents in, its errors as modelctl's.

The CLI reaches it through `backend.ServiceBackend`, which reads the documents into typed results
(report.py's `*_from_json`). The service's errors carry the CLI's exit code, which becomes the
error type here, so the CLI renders them exactly as it renders its own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from .errors import (
    DoesNotFitError,
    EngineUnreachableError,
    LockTimeoutError,
    ModelctlError,
    NotReadyError,
    UsageError,
)
from .settings import Settings

ERRORS_BY_CODE: dict[int, type[ModelctlError]] = {
    2: UsageError,
    3: DoesNotFitError,
    4: NotReadyError,
    5: EngineUnreachableError,
    6: LockTimeoutError,
}
READ_TIMEOUT_S = 60.0  # status and stop; a switch waits as long as the service does


class ServiceClient:
    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # trust_env=False: no proxy from the environment between the CLI and its service.
        self._http = httpx.Client(base_url=self.url, headers=headers, trust_env=False)

    def status(self) -> dict[str, Any]:
        """`status --json`'s document, plus `switch`: the operation under way, or null."""
        return self._call("GET", "/api/status")

    def stop(self, *, lock_timeout: float) -> list[str]:
        return self._call("POST", "/api/stop", params={"lock_timeout": lock_timeout})["stopped"]

    def switch(
        self, name: str, *, timeout: float | None, lock_timeout: float, rollback: bool, dry_run: bool
    ) -> dict[str, Any]:
        """The switch result's document; waits as long as the service does."""
        params: dict[str, Any] = {"lock_timeout": lock_timeout}
        if timeout is not None:
            params["timeout"] = timeout
        if not rollback:
            params["no_rollback"] = "true"
        if dry_run:
            params["dry_run"] = "true"
        return self._call("POST", f"/api/switch/{quote(name, safe='')}", params=params, read_timeout=None)

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        read_timeout: float | None = READ_TIMEOUT_S,
    ) -> Any:
        try:
            response = self._http.request(method, path, params=params, timeout=httpx.Timeout(read_timeout, connect=5.0))
        except httpx.TransportError as exc:
            raise EngineUnreachableError(
                f"modelctl service unreachable at {self.url}: {str(exc) or type(exc).__name__}",
                hint="start it (`modelctl serve`, or the Compose deployment), or unset MODELCTL_URL to use the engine",
            ) from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success and data is not None:
            return data
        raise _error_from(response, data, self.url)


def _error_from(response: httpx.Response, data: Any, url: str) -> ModelctlError:
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return ModelctlError(
            f"unexpected answer from {url}{response.request.url.path}: HTTP {response.status_code}",
            hint="is MODELCTL_URL the modelctl service?",
        )
    message, hint, code = error["message"], error.get("hint"), error.get("code")
    kind = ERRORS_BY_CODE.get(code, ModelctlError) if isinstance(code, int) else ModelctlError
    if kind is NotReadyError:
        return NotReadyError(message, hint=hint, log_tail=error.get("log_tail") or "")
    return kind(message, hint=hint)


def service_client(settings: Settings) -> ServiceClient | None:
    """The service at MODELCTL_URL, or None when it is not set (the CLI drives the engine)."""
    if not settings.url:
        return None
    token = settings.api_token.get_secret_value() if settings.api_token else None
    return ServiceClient(settings.url, token)
