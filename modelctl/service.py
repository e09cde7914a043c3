"""The service: `modelctl serve`, the always-on form (README "The service" is the contract).

The HTTP side: routes, authentication, errors. It is asynchronous (Starlette on uvicorn) and
never runs the controller itself: operations that change what runs go to `Operations`' one
worker (operations.py); reads for /api/status and /api/profiles run beside it in the service's
own read threads (never the default pool the proxy uses) on their own engine connection, each
with a deadline, so they answer while a switch runs and show its phase. NVML is read in one
thread of its own (gpu_thread.py). `/v1/...` is the OpenAI proxy (proxy.py), whose swaps the
scheduler (scheduler.py) decides and `Operations` carries out.

`GET /api/events` streams what the service does as Server-Sent Events (events.py): the
operations' phases, log lines and ends, what runs (`state`, on every change and first to each new
subscriber) and the proxy's queue. `GET /` is the dashboard: static files of the package
(modelctl/web/), no build step, rendering the same events.

Under load: at most MODELCTL_MAX_CONNECTIONS connections are served at once (uvicorn answers
503 beyond), a connection that sends no request is closed after KEEP_ALIVE_S like an idle
keep-alive one, the open-files limit is raised to its hard limit, and errors that repeat (a
failing accept() when the limit is reached) are logged once per second at most.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hmac
import ipaddress
import logging
import resource
import select
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import __version__
from .catalog import Catalog
from .controller import DEFAULT_LOCK_TIMEOUT_S, Controller
from .enforcer import Enforcer
from .errors import EngineUnreachableError, Forbidden, ModelctlError, Unauthorized, UsageError
from .events import Event, EventBus
from .gpu import NvmlGpu
from .gpu_thread import ThreadedGpu
from .http_errors import HttpRefusal, error_document
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .operations import Operations, valid_op_id
from .plan import exposure_warning
from .proxy import CONNECTION_LOST, Proxy
from .report import error_json, plan_json, status_json, switch_json
from .runtime import container_name
from .runtime.docker_engine import DockerRuntime
from .scheduler import Scheduler, SchedulerLimits
from .settings import Settings

log = logging.getLogger("modelctl.service")

T = TypeVar("T")

# The service reads the profiles directory at most this often (edits need no restart).
CATALOG_MAX_AGE_S = 1.0
# A read of what runs (Docker, the model server, NVML) that takes longer is answered 503.
READ_DEADLINE_S = 30.0
READ_THREADS = 4
# Seconds a connection may stay open without sending a request (before its first one, or between two).
KEEP_ALIVE_S = 5
# Open files the process needs besides its client connections (engine sockets, logs, NVML).
RESERVED_FILES = 32
# While someone watches /api/events: what runs is read again this often (and after each operation),
# the proxy's queue this often; each is sent only when it changed.
STATE_POLL_S = 5.0
PROXY_POLL_S = 1.0
SWAPS_KEPT = 20  # the last operations' ends, in every `state` event
# The dashboard: its files (modelctl/web/) and their types; nothing else is served from there.
WEB_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
WEB_HEADERS = {
    # Only its own files and its own origin: no inline script, no CDN, no framing by another site.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
LOG_TAIL_MAX = 5000


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        # One model, continuously: a foreign vLLM container started beside ours is stopped (or
        # reported). Its own engine connection: the event stream holds one open.
        self.enforcer = Enforcer(
            DockerRuntime(),
            settings,
            on_foreign=lambda container, action: self.metrics.foreign_containers.labels(action=action).inc(),
        )
        self.catalog = Catalog(settings.profiles_dir, max_age_s=CATALOG_MAX_AGE_S)
        gpu = ThreadedGpu(NvmlGpu(settings))  # NVML in one thread of its own, with a deadline
        # The reads beside the worker, in threads of their own: never the proxy's (the default pool).
        self.reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="modelctl-read")
        # What the service does, for /api/events and the dashboard; the last operations' ends.
        self.events = EventBus()
        self.swaps: deque[dict[str, Any]] = deque(maxlen=SWAPS_KEPT)
        self._state_wanted: asyncio.Event | None = None
        self._watchers: list[asyncio.Task[None]] = []
        # One engine connection for the worker, one for the reads that run beside it.
        self.operations = Operations(
            Controller(settings, DockerRuntime(), self.catalog, gpu),
            self.metrics,
            settings.default_profile,
            events=self._publish,
        )
        self.reader = Controller(settings, DockerRuntime(), self.catalog, gpu)
        self._token = settings.api_token.get_secret_value().encode() if settings.api_token else None
        self._listen_host = parse_listen(settings.listen)[0].lower()
        limits = SchedulerLimits(
            max_queue=settings.proxy_max_queue,
            max_wait=settings.proxy_max_wait,
            min_residency=settings.proxy_min_residency,
            idle_ttl=settings.idle_ttl,
            drain_timeout=settings.proxy_drain_timeout,
        )
        self.proxy = Proxy(
            self.catalog,
            Scheduler(self.operations, limits, self.metrics, idle_ttl=self._idle_ttl),
            self.metrics,
            self._loaded_model,
            default_profile=settings.default_profile,
            strip_authorization=self._token is not None,
            max_body_bytes=int(settings.proxy_max_body_mb * 1024 * 1024),
            idle_timeout=settings.proxy_idle_timeout,
            loading_phase=self._loading_phase if settings.proxy_loading_events else None,
        )
        self.operations.on_reconciled = self._adopt
        self.app = Starlette(
            routes=[
                Route("/", self._local_only(self.dashboard), methods=["GET"]),
                Route("/ui/{file}", self._local_only(self.web_file), methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/api/events", self._guarded(self.event_stream), methods=["GET"]),
                Route("/api/logs/{name}", self._guarded(self.model_logs), methods=["GET"]),
                Route("/api/profiles/invalid", self._guarded(self.invalid_profiles), methods=["GET"]),
                Route("/api/status", self._guarded(self.status), methods=["GET"]),
                Route("/api/profiles", self._guarded(self.profiles), methods=["GET"]),
                Route("/api/switch/{name}", self._guarded(self.switch), methods=["POST"]),
                Route("/api/stop", self._guarded(self.stop), methods=["POST"]),
                Route("/metrics", self._guarded(self.metrics_page), methods=["GET"]),
                *self.proxy.routes(self._guarded),
            ],
            exception_handlers={
                Exception: self.error_response,
                HTTPException: self.error_response,
                ModelctlError: self.error_response,
            },
            lifespan=self._lifespan,
        )

    # --- plumbing ------------------------------------------------------------------------

    def _guarded(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            self._check_token(request)
            self._check_local(request)
            return await endpoint(request)

        return guarded

    def _local_only(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """The dashboard's static files: no token (a browser cannot send one with a page load; the
        page asks for it), but the Host check without one, as for the API."""

        async def local_only(request: Request) -> Response:
            self._check_local(request)
            return await endpoint(request)

        return local_only

    def _check_token(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            client = request.client.host if request.client else "?"
            log.warning(
                "refused %s %s from %s: missing or wrong bearer token", request.method, request.url.path, client
            )
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
        raise Forbidden(
            f"refused: {why}",
            hint="without MODELCTL_API_TOKEN only programs on this machine may call the service, not web pages",
        )

    def _local_host(self, host: str) -> bool:
        return is_loopback(host) or host.lower() == self._listen_host

    async def error_response(self, request: Request, exc: Exception) -> Response:
        """Every error of every route, rendered once (http_errors.py decides status and shape)."""
        if isinstance(exc, HTTPException):
            exc = HttpRefusal(exc.detail, exc.status_code, exc.headers)
        if not isinstance(exc, ModelctlError):  # a bug: the service log has the traceback, the client no internals
            exc = ModelctlError(f"unexpected error ({type(exc).__name__})", hint="see the service log")
        body, status, headers = error_document(exc, request.url.path)
        return JSONResponse(body, status_code=status, headers=headers)

    async def _read(self, call: Callable[[], T]) -> T:
        """A read beside the worker (Docker, the model server, NVML), in the read threads, with a deadline."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self.reads, call), READ_DEADLINE_S)
        except TimeoutError:
            raise EngineUnreachableError(
                f"the Docker engine (or a model server) did not answer within {READ_DEADLINE_S:g} s",
                hint="see `docker info`; the service goes on answering meanwhile",
            ) from None

    async def _loaded_model(self) -> str | None:
        """The profile whose model runs and answers, read beside the worker."""
        active = (await self._read(self.reader.status)).active
        return active.profile if active and active.ready else None

    def _adopt(self, profile: str, url: str, generation: int) -> None:
        """After a reconcile: the proxy sends requests for the model it left running straight through."""
        if self.proxy.scheduler.adopt(profile, url, generation):
            log.info("proxy: %s runs at %s; its requests go straight through", profile, url)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette):
        log.info(
            "modelctl %s serving on %s; profiles in %s; default profile %s; API token %s",
            __version__,
            self.settings.listen,
            self.settings.profiles_dir,
            self.settings.default_profile or "none",
            "required" if self._token else "not set",
        )
        _limit_loop_errors(asyncio.get_running_loop())
        self.events.attach(asyncio.get_running_loop())
        self._state_wanted = asyncio.Event()
        self._watchers = [
            asyncio.create_task(self._watch_state(), name="modelctl-events-state"),
            asyncio.create_task(self._watch_proxy(), name="modelctl-events-proxy"),
        ]
        self.operations.reconcile_in_background(self.settings.default_profile, "start-up")
        if warning := exposure_warning(self.settings.host):
            log.warning(warning)
        self.enforcer.start()
        yield
        for task in self._watchers:
            task.cancel()
        self.enforcer.stop()
        await self.proxy.aclose()
        self.operations.shutdown()
        self.reads.shutdown(wait=False, cancel_futures=True)

    # --- events --------------------------------------------------------------------------

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        """The operations' events (from the worker thread): to the bus; what runs is read again
        when an operation ends or a new model begins to load."""
        if kind == "swap":
            self.swaps.appendleft(data)
        self.events.publish(kind, data)
        if kind == "swap" or (kind == "switch" and data.get("phase") in ("load", "rollback")):
            loop, wanted = self.events.loop, self._state_wanted
            if loop is not None and wanted is not None:
                with suppress(RuntimeError):  # the loop closed: the service is stopping
                    loop.call_soon_threadsafe(wanted.set)

    async def _state(self) -> dict[str, Any]:
        """The `state` event: the /api/status document, the proxy's queue and the last swaps."""
        try:
            data = status_json(await self._read(self.reader.status))
        except ModelctlError as exc:
            data = {"active": None, "containers": [], "gpu": None, "measured": {}, "error": error_json(exc)["error"]}
        op = self.operations.current
        data["switch"] = op.json() if op else None
        data["last_error"] = self.operations.last_error
        data["proxy"] = self._proxy_state()
        data["swaps"] = list(self.swaps)
        return data

    def _proxy_state(self) -> dict[str, Any]:
        """The `proxy` event: requests waiting and in flight per model, and what the scheduler does."""
        scheduler = self.proxy.scheduler
        models: dict[str, dict[str, int]] = {}
        for profile, waiting in scheduler.waiting.items():
            if waiting:
                models.setdefault(profile, {"queued": 0, "in_flight": 0})["queued"] = len(waiting)
        for profile, leases in scheduler.inflight.items():
            if leases:
                models.setdefault(profile, {"queued": 0, "in_flight": 0})["in_flight"] = len(leases)
        return {
            "queued": scheduler.queued(),
            "models": models,
            "active": scheduler.current,
            "loading": scheduler.target,
            "draining": scheduler.draining,
        }

    async def _watch_state(self) -> None:
        """While someone listens: `state` when what runs changed (after each operation, and read
        every STATE_POLL_S for changes made beside the service: the host CLI, a crash)."""
        assert self._state_wanted is not None
        last: dict[str, Any] | None = None
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._state_wanted.wait(), STATE_POLL_S)
            self._state_wanted.clear()
            if not self.events.subscribers:
                last = None
                continue
            try:
                state = await self._state()
            except Exception:  # a bug here must not end the events for good
                log.exception("events: could not read the state")
                continue
            if state != last:
                last = state
                self.events.publish("state", state)

    async def _watch_proxy(self) -> None:
        """While someone listens: `proxy` when the queue or the requests in flight changed (1/s at most)."""
        last: dict[str, Any] | None = None
        while True:
            await asyncio.sleep(PROXY_POLL_S)
            if not self.events.subscribers:
                last = None
                continue
            proxy = self._proxy_state()
            if proxy != last:
                last = proxy
                self.events.publish("proxy", proxy)

    def _idle_ttl(self, profile: str) -> float:
        """The idle TTL of a model: its profile's `idle_ttl`, else MODELCTL_IDLE_TTL (0: never). Read
        from the catalog's last snapshot (the proxy keeps it fresh): no file system on the loop."""
        loaded = self.catalog.snapshot()
        found = loaded.profiles.get(profile) if loaded is not None else None
        own = found.idle_ttl if found is not None else None
        return self.settings.idle_ttl if own is None else own

    def _loading_phase(self, profile: str) -> str:
        """For a streaming request waiting for `profile`: the phase of the operation loading it."""
        op = self.operations.current
        if op is not None and op.kind == "switch" and op.target == profile:
            return op.phase or "queued"
        return "queued"

    # --- routes --------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        # token_required: the dashboard asks for the token before a request of its own is refused.
        return JSONResponse({"status": "ok", "version": __version__, "token_required": self._token is not None})

    async def status(self, request: Request) -> Response:
        data = status_json(await self._read(self.reader.status))
        op = self.operations.current
        data["switch"] = op.json() if op else None
        data["last_error"] = self.operations.last_error
        return JSONResponse(data)

    async def profiles(self, request: Request) -> Response:
        def plans() -> list[dict[str, Any]]:
            return [plan_json(plan) for plan in self.catalog.plans(self.reader.budget(), self.settings)]

        return JSONResponse(await self._read(plans))

    async def switch(self, request: Request) -> Response:
        name = request.path_params["name"]
        query = request.query_params
        timeout = _number(query, "timeout", None)
        lock_timeout = _number(query, "lock_timeout", DEFAULT_LOCK_TIMEOUT_S)
        rollback = not _flag(query, "no_rollback")
        dry_run = _flag(query, "dry_run")
        op_id = _op_id(query)
        if dry_run:
            result = await self._read(lambda: self.reader.switch(name, dry_run=True))
            return JSONResponse(switch_json(result))
        # Unknown (404) or too big (409): refused at once, not after the switch under way.
        await self._read(lambda: self.reader.plan_for(name))
        result, _ = await self.operations.switch(
            name, origin="api", timeout=timeout, lock_timeout=lock_timeout, rollback=rollback, op_id=op_id
        )
        return JSONResponse(switch_json(result))

    async def metrics_page(self, request: Request) -> Response:
        self.proxy.update_gauges()
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def stop(self, request: Request) -> Response:
        lock_timeout = _number(request.query_params, "lock_timeout", DEFAULT_LOCK_TIMEOUT_S)
        stopped = await self.operations.stop(lock_timeout=lock_timeout, op_id=_op_id(request.query_params))
        return JSONResponse({"stopped": stopped})

    async def event_stream(self, request: Request) -> Response:
        """GET /api/events: `state` first, then every event, until the client goes (or falls behind)."""
        subscriber = self.events.subscribe()  # before the state is read: nothing falls in between
        try:
            first = Event(self.events.next_id(), "state", await self._state())
        except BaseException:
            self.events.unsubscribe(subscriber)
            raise
        return StreamingResponse(
            self.events.stream(subscriber, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def model_logs(self, request: Request) -> Response:
        """GET /api/logs/{name}?tail=N: the last lines of a profile's container (kept after a failed start)."""
        name = request.path_params["name"]
        tail = _number(request.query_params, "tail", 200.0)
        assert tail is not None
        lines = max(1, min(int(tail), LOG_TAIL_MAX))

        def read() -> dict[str, Any]:
            profile = self.catalog.find(name)
            info = self.reader.runtime.container(container_name(profile.name))
            if info is None:
                return {"profile": profile.name, "container": None, "state": None, "log": ""}
            return {
                "profile": profile.name,
                "container": info.name,
                "state": info.state,
                "log": self.reader.runtime.logs(info.id, tail=lines),
            }

        return JSONResponse(await self._read(read))

    async def invalid_profiles(self, request: Request) -> Response:
        """GET /api/profiles/invalid: the profile files skipped, each with its error."""
        loaded = await self._read(self.catalog.load)
        return JSONResponse(
            [
                {"file": bad.path.name, "name": bad.path.stem, "error": bad.error.message, "hint": bad.error.hint}
                for bad in loaded.invalid
            ]
        )

    async def dashboard(self, request: Request) -> Response:
        return HTMLResponse(_web_file("index.html"), headers=WEB_HEADERS)

    async def web_file(self, request: Request) -> Response:
        name = request.path_params["file"]
        if name not in WEB_FILES:
            raise HttpRefusal(f"no such file: /ui/{name[:100]}", 404, code="not_found")
        return Response(_web_file(name), media_type=WEB_FILES[name], headers=WEB_HEADERS)


@functools.cache
def _web_file(name: str) -> bytes:
    """A file of the dashboard (modelctl/web/), read once."""
    return resources.files("modelctl").joinpath("web", name).read_bytes()


def _op_id(query: Any) -> str:
    """?op=ID: the id the client chose for the operation's events (it listens before it asks)."""
    op = query.get("op") or ""
    if op and not valid_op_id(op):
        raise UsageError(f"query parameter op: expected 1 to 64 letters, digits, - or _, got {op[:80]!r}")
    return op


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


def check_default_profile(settings: Settings) -> None:
    """Refuse at start-up a MODELCTL_DEFAULT_PROFILE that names no valid profile (exit 2)."""
    name = settings.default_profile
    if not name:
        return
    try:
        Catalog(settings.profiles_dir).find(name)
    except UsageError as exc:
        raise UsageError(
            f"MODELCTL_DEFAULT_PROFILE={name!r}: {exc.message}",
            hint=f"fix or add {settings.profiles_dir}/{name}.yaml, or set MODELCTL_DEFAULT_PROFILE to one of the known profiles",
        ) from None


def raise_open_files_limit() -> int:
    """Raise the open-files limit (RLIMIT_NOFILE) to its hard limit where allowed; returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (hard, 1 << 20):
        if target == resource.RLIM_INFINITY or (soft != resource.RLIM_INFINITY and soft >= target):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class OncePerSecond(logging.Filter):
    """Warnings and errors that repeat are let through once per second at most (the same text):
    a flood of failing accept() calls under load must not become a flood of log."""

    def __init__(self, every_s: float = 1.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) < self.every_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        if len(self._last) > 1000:  # many different texts: forget the old ones
            self._last.clear()
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg, record.args = f"{record.getMessage()} ({dropped} more like it in the last seconds)", None
        return True


ONCE_PER_SECOND = OncePerSecond()
ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _limit_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """The event loop's errors in one line each (a failing accept() needs no traceback), rate-limited."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            log.error(
                "cannot accept connections: %s (open-files limit %d); retrying each second, "
                "idle connections close after %d s",
                exc.strerror or exc,
                soft,
                KEEP_ALIVE_S,
            )
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


class ServiceLoop(asyncio.SelectorEventLoop):
    """The service's event loop: asyncio's, with an accept loop that stops at the first EMFILE.

    CPython's selector loop (3.11) goes on calling accept() after EMFILE, up to `backlog` (2048)
    times per wake-up, logging a traceback and scheduling one more retry timer for each: out of
    open files, a service wrote hundreds of MB of log a minute and never got a file back for
    /health. Here each accept() is one call of asyncio's own, and the loop stops when asyncio has
    paused accepting (it retries a second later) or nothing more waits.
    """

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        for _ in range(backlog):
            super()._accept_connection(protocol_factory, sock, sslcontext, server, 1, *args, **kwargs)  # type: ignore[misc]
            fd = sock.fileno()
            if fd < 0 or self._selector.get_map().get(fd) is None:  # type: ignore[attr-defined]
                return  # accepting paused (EMFILE and the like) or the server closed
            if not select.select([sock], [], [], 0)[0]:
                return  # no more connections wait

    def _start_serving(self, protocol_factory, sock, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        if sock.fileno() < 0:
            return  # the retry after EMFILE, for a server that has closed since
        super()._start_serving(protocol_factory, sock, *args, **kwargs)  # type: ignore[misc]


class _ServiceProtocol:
    """What the service adds to uvicorn's HTTP protocols (h11 and httptools alike):

    - the keep-alive timeout also for a connection that has not sent a whole request yet (uvicorn
      starts it only after a response): sockets opened and left idle, or trickling headers, are
      closed after KEEP_ALIVE_S instead of holding a file for ever;
    - `scope["extensions"]["modelctl.connection_lost"]` (proxy.CONNECTION_LOST): callbacks for the
      client's connection going away, so that a proxied request notices it without a task of its own.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._lost = ConnectionLost(self)
        self._waiting_since = self.loop.time()
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # type: ignore[misc]
        self._lost.fire()

    def _expose(self) -> None:
        """Put the callbacks in the scope of the request just parsed (its task has not run yet)."""
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.setdefault("extensions", {})[CONNECTION_LOST] = self._lost

    def on_response_complete(self) -> None:
        self._waiting_since = self.loop.time()
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is None or self.cycle.response_complete:  # still waiting for a whole request
            self._arm_idle()

    def _arm_idle(self) -> None:
        if self.transport.is_closing() or self.timeout_keep_alive_task is not None:
            return
        remaining = self._waiting_since + self.timeout_keep_alive - self.loop.time()
        self.timeout_keep_alive_task = self.loop.call_later(max(0.0, remaining), self.timeout_keep_alive_handler)


class ConnectionLost:
    """The connection's callbacks for its client going away (see _ServiceProtocol)."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.callbacks: set[Callable[[], None]] = set()

    def add(self, callback: Callable[[], None]) -> None:
        self.callbacks.add(callback)
        self.protocol.flow.resume_reading()  # a closed connection is noticed only while reading

    def discard(self, callback: Callable[[], None]) -> None:
        self.callbacks.discard(callback)

    def fire(self) -> None:
        callbacks, self.callbacks = self.callbacks, set()
        for callback in callbacks:
            callback()


class IdleClosingH11Protocol(_ServiceProtocol, H11Protocol):  # type: ignore[misc]
    """uvicorn's h11 protocol with the service's additions (the tests' server)."""

    def handle_events(self) -> None:
        super().handle_events()
        self._expose()


class IdleClosingHttpToolsProtocol(_ServiceProtocol, HttpToolsProtocol):  # type: ignore[misc]
    """uvicorn's httptools (llhttp) protocol with the service's additions: what `serve` runs."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._expose()


def serve(settings: Settings) -> None:
    """Run the service until SIGTERM or SIGINT, on MODELCTL_LISTEN and nothing else."""
    host, port = parse_listen(settings.listen)
    if settings.api_token is None and not _listens_on_loopback(host):
        raise UsageError(
            f"MODELCTL_LISTEN={settings.listen} is not a loopback address and MODELCTL_API_TOKEN is not set: "
            "refusing to serve an API without authentication beyond this machine",
            hint="set MODELCTL_API_TOKEN, or listen on 127.0.0.1",
        )
    check_default_profile(settings)  # before binding: a typo never gets a service that starts nothing
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s modelctl: %(message)s"))
    handler.addFilter(ONCE_PER_SECOND)
    logging.getLogger("modelctl").addHandler(handler)
    logging.getLogger("modelctl").setLevel(logging.INFO)
    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(ONCE_PER_SECOND)
    files = raise_open_files_limit()
    if files < settings.max_connections + RESERVED_FILES:
        log.warning(
            "the open-files limit (%d) is below MODELCTL_MAX_CONNECTIONS (%d) + %d: connections beyond about %d "
            "cannot be accepted; raise `ulimit -n` (LimitNOFILE=, docker --ulimit nofile=) or lower the setting",
            files,
            settings.max_connections,
            RESERVED_FILES,
            max(files - RESERVED_FILES, 0),
        )
    listener = bind(host, port)  # before anything starts: a taken port fails here, having touched nothing
    service = Service(settings)
    run_server(server_config(service.app, settings), listener)


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


# --- the server set-up of `serve` (bench/proxy_bench.py runs the same) ------------------------


def server_config(app: Any, settings: Settings, *, lifespan: str = "on") -> uvicorn.Config:
    """uvicorn as the service runs it: llhttp (httptools) with the service's protocol additions."""
    return uvicorn.Config(
        app,
        lifespan=lifespan,
        http=IdleClosingHttpToolsProtocol,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        proxy_headers=False,
        server_header=False,
        access_log=False,  # one line per switch, stop and refusal instead of one per status poll
        timeout_graceful_shutdown=5,  # a switch in flight is not waited for: reconcile repairs
        log_level="info",
    )


def run_server(config: uvicorn.Config, listener: socket.socket) -> None:
    """Serve on `listener` until SIGTERM or SIGINT, on the service's event loop."""
    with asyncio.Runner(loop_factory=service_loop_factory()) as runner:
        runner.run(uvicorn.Server(config).serve(sockets=[listener]))


def service_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where it is installed (a dependency on Linux and macOS), else ServiceLoop."""
    try:
        import uvloop
    except ImportError:
        return ServiceLoop
    return uvloop.new_event_loop
