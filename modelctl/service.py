"""The service: `modelctl serve`, the always-on form (DESIGN.md "The service" is a contract).

The HTTP side is asynchronous (Starlette on uvicorn). The controller is synchronous and runs in
ONE worker thread, so the operations of this process run one after another, and the switch
lock serializes them with the host CLI and CI jobs. Reads for /api/status and /api/profiles go
through asyncio.to_thread, never through the worker, so they answer while a switch runs and
show its phase.

Crash safety: at start-up, and after any switch that failed on the way without putting back what
ran before (a rollback's error says rolled_back), the worker reconciles what runs with what
should run (Controller.reconcile): it adopts the one healthy modelctl model, stops the rest, and
starts MODELCTL_DEFAULT_PROFILE if nothing runs.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import queue
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__
from .controller import Controller, SwitchResult
from .errors import (
    DoesNotFitError,
    EngineUnreachableError,
    LockTimeoutError,
    ModelctlError,
    NotReadyError,
    UnknownProfileError,
    UsageError,
)
from .gpu import Gpu
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .plan import make_plan
from .profiles import load_profiles
from .proxy import Proxy, openai_error_response
from .report import error_json, phases_text, plan_json, status_json, switch_json
from .runtime import DockerRuntime
from .settings import Settings

log = logging.getLogger("modelctl.service")

T = TypeVar("T")
RETRY_AFTER_S = 5  # what a client told "another switch holds the lock" should wait
DEFAULT_LOCK_TIMEOUT_S = 600.0


class Unauthorized(UsageError):
    """The bearer token is missing or wrong (HTTP 401; exit code 2 for the CLI, a bad setting)."""


class Forbidden(UsageError):
    """Without a token: a request from a web page, or for a host name that is not this loopback
    service (DNS rebinding) (HTTP 403)."""


# Most specific first: the HTTP status each error is answered with.
HTTP_STATUS: list[tuple[type[ModelctlError], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (UnknownProfileError, 404),
    (UsageError, 400),
    (DoesNotFitError, 409),
    (NotReadyError, 502),
    (EngineUnreachableError, 503),
    (LockTimeoutError, 503),
]


def http_status(error: ModelctlError) -> int:
    return next((status for kind, status in HTTP_STATUS if isinstance(error, kind)), 500)


class _Abandoned(EngineUnreachableError):
    """The service is stopping while an operation runs (HTTP 503, exit code 5 like a lost service)."""


class _HttpError(UsageError):
    """Starlette's own refusals (no such path, wrong method), in the service's error shape."""

    def __init__(self, message: str, status: int, headers: dict[str, str] | None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


# --- the worker --------------------------------------------------------------------------


class SerialWorker(Executor):
    """One daemon thread that runs submitted calls in order: the controller's only thread.

    A daemon, unlike ThreadPoolExecutor's workers (joined at interpreter exit): a SIGTERM in the
    middle of a 15-minute model load must not keep the process alive. What an interrupted
    operation leaves behind is what the next start-up reconcile repairs.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="modelctl-controller", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, lambda: fn(*args, **kwargs)))
        return future

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to whoever awaits the future
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._jobs.put(None)
        if wait:
            self._thread.join()


@dataclass
class Operation:
    """What the worker does now: shown as `switch` in /api/status, logged when it ends."""

    kind: str  # "switch", "stop" or "reconcile"
    target: str | None
    phase: str = ""
    detail: str = ""
    since: str = ""
    started: float = 0.0
    phase_started: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    ended_in: str = ""  # the phase it was in when it ended

    def begin(self) -> None:
        self.phase, self.detail = self.kind, ""
        self.since = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.started = self.phase_started = time.monotonic()

    def progress(self, phase: str, detail: str) -> None:
        """The controller's progress callback (called in the worker thread)."""
        now = time.monotonic()
        if phase != self.phase:
            if self.phase != self.kind:  # the time before the first phase is not a phase
                self.phases[self.phase] = round(self.phases.get(self.phase, 0.0) + now - self.phase_started, 3)
            self.phase, self.phase_started = phase, now
        self.detail = detail

    def finish(self) -> None:
        """Close the last phase (once)."""
        if self.phase:
            self.ended_in = self.phase
            self.progress("", "")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def json(self) -> dict[str, Any]:
        return {"operation": self.kind, "target": self.target, "phase": self.phase, "detail": self.detail,
                "since": self.since}  # fmt: skip


# --- the service -------------------------------------------------------------------------


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker = SerialWorker()
        self.current: Operation | None = None
        # Bumped when an operation begins on the worker: the proxy's "what runs" is stale once it moves.
        self.generation = 0
        self.metrics = Metrics()
        # One engine connection for the worker, one for the reads that run beside it.
        self._worker_runtime = DockerRuntime()
        self._read_runtime = DockerRuntime()
        self._token = settings.api_token.get_secret_value().encode() if settings.api_token else None
        self._listen_host = parse_listen(settings.listen)[0].lower()
        self.proxy = Proxy(self)
        self.app = Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/api/status", self._guarded(self.status), methods=["GET"]),
                Route("/api/profiles", self._guarded(self.profiles), methods=["GET"]),
                Route("/api/switch/{name}", self._guarded(self.switch), methods=["POST"]),
                Route("/api/stop", self._guarded(self.stop), methods=["POST"]),
                Route("/metrics", self._guarded(self.metrics_page), methods=["GET"]),
                *self.proxy.routes(self._guarded),
            ],
            exception_handlers={Exception: self.error_response, HTTPException: self.error_response,
                                ModelctlError: self.error_response},  # fmt: skip
            lifespan=self._lifespan,
        )

    # --- plumbing ------------------------------------------------------------------------

    def _controller(self, runtime: DockerRuntime, progress=lambda phase, detail: None) -> Controller:
        """A controller on the profiles as they are now: editing a profile needs no restart."""
        profiles = load_profiles(self.settings.profiles_dir)
        return Controller(self.settings, runtime, profiles, Gpu(self.settings), progress)

    def _reader(self) -> Controller:
        return self._controller(self._read_runtime)

    def _guarded(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            self._check_token(request)
            self._check_local(request)
            return await endpoint(request)

        return guarded

    def _check_token(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            client = request.client.host if request.client else "?"
            log.warning("refused %s %s from %s: missing or wrong bearer token", request.method, request.url.path, client)
            raise Unauthorized(
                "missing or wrong bearer token",
                hint="send `Authorization: Bearer <token>` with the service's MODELCTL_API_TOKEN",
            )

    def _check_local(self, request: Request) -> None:
        """Without a token the API is for this machine's own programs: not for a web page open in its
        browser (any page can POST here, no-cors), nor for a host name rebound to 127.0.0.1."""
        if self._token is not None:
            return
        host = _authority_host(request.headers.get("host", ""))
        origin = request.headers.get("origin")
        if not self._local_host(host):
            why = f"Host {host or '(none)'!r} is not this service's loopback address"
        elif origin is not None and not self._local_host(urlsplit(origin).hostname or ""):
            why = f"Origin {origin!r} is not a loopback origin"
        else:
            return
        client = request.client.host if request.client else "?"
        log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, why)
        raise Forbidden(f"refused: {why}",
                        hint="without MODELCTL_API_TOKEN only programs on this machine may call the service, "
                             "not web pages")  # fmt: skip

    def _local_host(self, host: str) -> bool:
        return is_loopback(host) or host.lower() == self._listen_host

    async def error_response(self, request: Request, exc: Exception) -> Response:
        """Every error of every route, rendered once: the CLI's JSON error and a fitting status."""
        headers: dict[str, str] = {}
        if isinstance(exc, HTTPException):
            exc = _HttpError(exc.detail, exc.status_code, exc.headers)
        if isinstance(exc, _HttpError):
            error, status, headers = exc, exc.status, exc.headers
        elif isinstance(exc, ModelctlError):
            error, status = exc, http_status(exc)
        else:  # a bug: the service log has the traceback, the client gets no internals
            error, status = ModelctlError(f"unexpected error ({type(exc).__name__})", hint="see the service log"), 500
        if isinstance(error, LockTimeoutError):
            headers["Retry-After"] = str(RETRY_AFTER_S)
        if isinstance(error, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        if request.url.path.startswith("/v1/") or request.url.path == "/v1":
            return openai_error_response(error, status, headers)  # OpenAI's error shape for OpenAI clients
        return JSONResponse(error_json(error), status_code=status, headers=headers)

    async def _in_worker(self, op: Operation, work: Callable[[Controller], T]) -> T:
        """Run `work` on the worker thread, after whatever was submitted before it."""
        try:
            return await asyncio.wrap_future(self.worker.submit(self._run_operation, op, work))
        except asyncio.CancelledError:  # uvicorn's shutdown gave up waiting for this request
            what = f"{op.kind} {op.target or ''}".rstrip()
            log.warning("%s: still under way (phase %s) when the service stopped; its next start repairs what runs",
                        what, op.phase or "queued")  # fmt: skip
            raise _Abandoned(
                f"the modelctl service stopped while the {what} was under way (phase {op.phase or 'queued'})",
                hint="its next start reconciles what runs; see `modelctl status`",
            ) from None

    def _run_operation(self, op: Operation, work: Callable[[Controller], T]) -> T:
        op.begin()
        self.current = op
        self.generation += 1
        try:
            return work(self._controller(self._worker_runtime, op.progress))
        finally:
            op.finish()
            if self.current is op:
                self.current = None

    def reconcile_in_background(self, default_profile: str | None, why: str) -> None:
        """Queue a reconcile on the worker; it logs its own outcome."""
        op = Operation("reconcile", default_profile)
        op.begin()
        self.current = self.current or op  # shown at once at start-up, before the worker picks it up

        def work(controller: Controller) -> None:
            try:
                stopped = controller.reconcile(default_profile)
                op.finish()
            except ModelctlError as error:
                log.error("reconcile (%s): failed with code %d after %.2fs: %s", why, error.exit_code, op.elapsed,
                          error.message)  # fmt: skip
                return
            except Exception:
                log.exception("reconcile (%s): unexpected error after %.2fs", why, op.elapsed)
                return
            started = f"; started {default_profile} ({phases_text(op.phases)})" if "start" in op.phases else ""
            log.info("reconcile (%s): done in %.2fs; stopped %s%s", why, op.elapsed,
                     ", ".join(stopped) or "nothing", started)  # fmt: skip

        self.worker.submit(self._run_operation, op, work)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette):
        log.info("modelctl %s serving on %s; profiles in %s; default profile %s; API token %s", __version__,
                 self.settings.listen, self.settings.profiles_dir, self.settings.default_profile or "none",
                 "required" if self._token else "not set")  # fmt: skip
        self.reconcile_in_background(self.settings.default_profile, "start-up")
        yield
        await self.proxy.aclose()
        self.worker.shutdown(wait=False)

    # --- routes --------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def status(self, request: Request) -> Response:
        data = await asyncio.to_thread(lambda: status_json(self._reader().status()))
        op = self.current
        data["switch"] = op.json() if op else None
        return JSONResponse(data)

    async def profiles(self, request: Request) -> Response:
        def plans() -> list[dict[str, Any]]:
            controller = self._reader()
            budget = controller.budget()
            return [plan_json(make_plan(p, budget, self.settings)) for p in controller.profiles.values()]

        return JSONResponse(await asyncio.to_thread(plans))

    async def switch(self, request: Request) -> Response:
        name = request.path_params["name"]
        query = request.query_params
        timeout = _number(query, "timeout", None)
        lock_timeout = _number(query, "lock_timeout", DEFAULT_LOCK_TIMEOUT_S)
        rollback = not _flag(query, "no_rollback")
        dry_run = _flag(query, "dry_run")
        # Unknown (404) or too big (409): refused at once, not after the switch under way.
        reader = self._reader
        if dry_run:
            return JSONResponse(switch_json(await asyncio.to_thread(lambda: reader().switch(name, dry_run=True))))
        await asyncio.to_thread(lambda: reader().plan_for(name))
        result, _ = await self.switch_model(name, origin="api", timeout=timeout, lock_timeout=lock_timeout,
                                            rollback=rollback)  # fmt: skip
        return JSONResponse(switch_json(result))

    async def switch_model(
        self, name: str, *, origin: str, timeout: float | None = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
        rollback: bool = True,
    ) -> tuple[SwitchResult, int]:
        """Switch on the worker (after whatever was queued before); the API's and the proxy's one way.

        Returns the result and the generation the switch ran as; a failure queues a reconcile.
        """
        op = Operation("switch", name)

        def work(controller: Controller) -> tuple[SwitchResult, int]:
            generation = self.generation  # this operation's: any later one moves it on
            return controller.switch(name, timeout_s=timeout, lock_timeout_s=lock_timeout, rollback=rollback), generation

        try:
            result, generation = await self._in_worker(op, work)
        except _Abandoned:
            raise
        except Exception as exc:
            self.metrics.observe_switch(name, origin, "failed", op.phases, op.elapsed)
            code = exc.exit_code if isinstance(exc, ModelctlError) else 1
            message = exc.message if isinstance(exc, ModelctlError) else f"unexpected {type(exc).__name__}"
            log.log(logging.ERROR if code == 1 else logging.WARNING,
                    "switch %s: failed with code %d after %.2fs in phase %s (%s): %s", name, code, op.elapsed,
                    op.ended_in, phases_text(op.phases), message)  # fmt: skip
            # Usage errors and lock timeouts touched nothing; a rollback put back what ran before.
            if not isinstance(exc, (UsageError, LockTimeoutError)) and not getattr(exc, "rolled_back", False):
                # --no-rollback asked for nothing running: the default is not forced back then.
                self.reconcile_in_background(self.settings.default_profile if rollback else None,
                                             f"after the failed switch to {name}")  # fmt: skip
            raise
        self.metrics.observe_switch(result.profile, origin, result.outcome, result.phases, result.total_s)
        stopped = f"; stopped {', '.join(result.stopped)}" if result.stopped else ""
        via = "" if origin == "api" else f"; for the {origin}"
        log.info("switch %s: %s in %.2fs (%s)%s%s", name, result.outcome, result.total_s, phases_text(result.phases),
                 stopped, via)  # fmt: skip
        return result, generation

    async def metrics_page(self, request: Request) -> Response:
        self.proxy.update_gauges()
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def stop(self, request: Request) -> Response:
        lock_timeout = _number(request.query_params, "lock_timeout", DEFAULT_LOCK_TIMEOUT_S)
        op = Operation("stop", None)
        try:
            stopped = await self._in_worker(op, lambda c: c.stop(lock_timeout_s=lock_timeout))
        except _Abandoned:
            raise
        except ModelctlError as error:
            log.warning("stop: failed with code %d after %.2fs: %s", error.exit_code, op.elapsed, error.message)
            raise
        log.info("stop: stopped %s in %.2fs", ", ".join(stopped) or "nothing", op.elapsed)
        return JSONResponse({"stopped": stopped})


def _number(query: Any, key: str, default: float | None) -> float | None:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"query parameter {key}: expected a number of seconds, got {raw!r}")
    return value


def _flag(query: Any, key: str) -> bool:
    raw = query.get(key)
    if raw is None:
        return False
    if raw.lower() in ("", "1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"query parameter {key}: expected true or false, got {raw!r}")


def is_loopback(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1); a name is never resolved."""
    host = host.strip().lower().removeprefix("[").removesuffix("]").removesuffix(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _authority_host(authority: str) -> str:
    """The host of a Host header: "127.0.0.1:8080" -> "127.0.0.1", "[::1]:8080" -> "::1"."""
    authority = authority.strip()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def _listens_on_loopback(host: str) -> bool:
    if is_loopback(host):
        return True
    try:
        addresses = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return True  # bind() says what is wrong with it
    return all(is_loopback(address[4][0]) for address in addresses)


def parse_listen(listen: str) -> tuple[str, int]:
    """MODELCTL_LISTEN: HOST:PORT, an IPv6 host in brackets ([::1]:8080)."""
    host, sep, port = listen.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"MODELCTL_LISTEN: expected HOST:PORT such as 127.0.0.1:8080, got {listen!r}",
            hint="0.0.0.0:8080 listens on every interface: set MODELCTL_API_TOKEN then",
        )
    return host, int(port)


def serve(settings: Settings) -> None:
    """Run the service until SIGTERM or SIGINT, on MODELCTL_LISTEN and nothing else."""
    host, port = parse_listen(settings.listen)
    if settings.api_token is None and not _listens_on_loopback(host):
        raise UsageError(
            f"MODELCTL_LISTEN={settings.listen} is not a loopback address and MODELCTL_API_TOKEN is not set: "
            "refusing to serve an API without authentication beyond this machine",
            hint="set MODELCTL_API_TOKEN, or listen on 127.0.0.1",
        )
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s modelctl: %(message)s"))
    logging.getLogger("modelctl").addHandler(handler)
    logging.getLogger("modelctl").setLevel(logging.INFO)
    listener = bind(host, port)  # before anything starts: a taken port fails here, having touched nothing
    service = Service(settings)
    config = uvicorn.Config(
        service.app,
        host=host,
        port=port,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        access_log=False,  # one line per switch, stop and refusal instead of one per status poll
        timeout_graceful_shutdown=5,  # a switch in flight is not waited for: reconcile repairs
        log_level="info",
    )
    uvicorn.Server(config).run(sockets=[listener])


def bind(host: str, port: int) -> socket.socket:
    """The one listening socket, on MODELCTL_LISTEN's address and nothing else."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port} (MODELCTL_LISTEN): {exc.strerror or exc}",
            hint="another process may hold the port: stop it, or pick another MODELCTL_LISTEN",
        ) from None
    listener.set_inheritable(True)
    return listener
