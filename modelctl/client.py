"""HTTP to the modelctl service at MODELCTL_URL: its JSON documents in, its errors as modelctl's.

The CLI reaches it through `backend.ServiceBackend`, which reads the documents into typed results
(report.py's `*_from_json`). The service's errors carry the CLI's exit code, which becomes the
error type here, so the CLI renders them exactly as it renders its own.

`OperationEvents` follows one operation on `GET /api/events` in a thread of its own: the CLI
subscribes before it asks for the switch (or stop) with the operation id it chose (`?op=`), and
renders that operation's events as they come, as its local live line would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
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
EVENTS_READY_S = 5.0  # how long the CLI waits for the event stream before it asks anyway
EVENTS_END_S = 2.0  # how long it waits, after the answer, for the operation's last events


class ServiceClient:
    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        # trust_env=False: no proxy from the environment between the CLI and its service.
        self._http = httpx.Client(base_url=self.url, headers=self.headers, trust_env=False)

    def status(self) -> dict[str, Any]:
        """`status --json`'s document, plus `switch`: the operation under way, or null."""
        return self._call("GET", "/api/status")

    def stop(self, *, lock_timeout: float, op: str | None = None) -> list[str]:
        params: dict[str, Any] = {"lock_timeout": lock_timeout}
        if op:
            params["op"] = op
        return self._call("POST", "/api/stop", params=params)["stopped"]

    def switch(
        self,
        name: str,
        *,
        timeout: float | None,
        lock_timeout: float,
        rollback: bool,
        dry_run: bool,
        op: str | None = None,
    ) -> dict[str, Any]:
        """The switch result's document; waits as long as the service does. `op`: the id its events carry."""
        params: dict[str, Any] = {"lock_timeout": lock_timeout}
        if op:
            params["op"] = op
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


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, data) for each Server-Sent Event of a stream's lines; comments and other fields skipped."""
    kind, data = "message", []
    for line in lines:
        if not line:
            if data:
                try:
                    yield kind, json.loads("\n".join(data))
                except ValueError:
                    pass
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


class OperationEvents:
    """One operation's events from the service's `GET /api/events`, followed in a daemon thread.

    `start()` subscribes and returns once the stream's first `state` arrived (so that nothing the
    operation does is missed), or False when there is no stream (an older service, an error): the
    operation is then asked for all the same, without progress. `on_event(kind, data)` gets each
    event of the operation `op` (`switch`, `log`, `swap`) in the thread; `finish()` waits briefly
    for its `swap`, so that its progress is told before its result.
    """

    def __init__(self, client: ServiceClient, op: str, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        self.client = client
        self.op = op
        self.on_event = on_event
        self.ready = threading.Event()
        self.ended = threading.Event()
        self.listening = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="modelctl-events", daemon=True)

    def start(self, wait_s: float = EVENTS_READY_S) -> bool:
        self._thread.start()
        self.ready.wait(wait_s)
        return self.listening

    def finish(self, wait_s: float = EVENTS_END_S) -> None:
        if self.listening:
            self.ended.wait(wait_s)
        self._stop.set()  # the thread leaves at the stream's next line (a keep-alive at the latest)

    def _follow(self) -> None:
        try:
            with httpx.Client(base_url=self.client.url, headers=self.client.headers, trust_env=False) as http:
                timeout = httpx.Timeout(60.0, connect=5.0)  # the service sends a keep-alive every 15 s
                with http.stream("GET", "/api/events", timeout=timeout) as response:
                    if not response.is_success:
                        return
                    for kind, data in sse_events(self._lines(response)):
                        if kind == "state":
                            self.listening = True
                            self.ready.set()
                        elif data.get("op") == self.op:
                            self.on_event(kind, data)
                            if kind == "swap":
                                self.ended.set()
                                return
        except Exception:  # progress is a courtesy: the operation's answer says what happened
            pass
        finally:
            self.ready.set()
            self.ended.set()

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            yield line
