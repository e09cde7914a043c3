"""The service: `modelctl serve`, the always-on form (README "The service" is the contract).

The HTTP side: routes, authentication, errors. It is asynchronous (Starlette on uvicorn) and
never runs the controller itself: operations that change what runs go to `Operations`' one
worker (operations.py); reads for /api/status and /api/profiles run beside it through
asyncio.to_thread on their own engine connection, so they answer while a switch runs and show
its phase. `/v1/...` is the OpenAI proxy (proxy.py), whose swaps the scheduler (scheduler.py)
decides and `Operations` carries out.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__
from .catalog import Catalog
from .controller import DEFAULT_LOCK_TIMEOUT_S, Controller
from .errors import Forbidden, ModelctlError, Unauthorized, UsageError
from .gpu import NvmlGpu
from .http_errors import HttpRefusal, error_document
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .operations import Operations
from .proxy import Proxy
from .report import plan_json, status_json, switch_json
from .runtime.docker_engine import DockerRuntime
from .scheduler import Scheduler, SchedulerLimits
from .settings import Settings

log = logging.getLogger("modelctl.service")

# The service reads the profiles directory at most this often (edits need no restart).
CATALOG_MAX_AGE_S = 1.0


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.catalog = Catalog(settings.profiles_dir, max_age_s=CATALOG_MAX_AGE_S)
        gpu = NvmlGpu(settings)
        # One engine connection for the worker, one for the reads that run beside it.
        self.operations = Operations(
            Controller(settings, DockerRuntime(), self.catalog, gpu), self.metrics, settings.default_profile
        )
        self.reader = Controller(settings, DockerRuntime(), self.catalog, gpu)
        self._token = settings.api_token.get_secret_value().encode() if settings.api_token else None
        self._listen_host = parse_listen(settings.listen)[0].lower()
        limits = SchedulerLimits(
            max_queue=settings.proxy_max_queue,
            max_wait=settings.proxy_max_wait,
            min_residency=settings.proxy_min_residency,
            idle_ttl=settings.idle_ttl,
        )
        self.proxy = Proxy(
            self.catalog,
            Scheduler(self.operations, limits, self.metrics),
            self.metrics,
            self._loaded_model,
            default_profile=settings.default_profile,
            strip_authorization=self._token is not None,
        )
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

    async def _loaded_model(self) -> str | None:
        """The profile whose model runs and answers, read beside the worker."""
        active = (await asyncio.to_thread(self.reader.status)).active
        return active.profile if active and active.ready else None

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
        self.operations.reconcile_in_background(self.settings.default_profile, "start-up")
        yield
        await self.proxy.aclose()
        self.operations.shutdown()

    # --- routes --------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def status(self, request: Request) -> Response:
        data = status_json(await asyncio.to_thread(self.reader.status))
        op = self.operations.current
        data["switch"] = op.json() if op else None
        return JSONResponse(data)

    async def profiles(self, request: Request) -> Response:
        def plans() -> list[dict[str, Any]]:
            return [plan_json(plan) for plan in self.catalog.plans(self.reader.budget(), self.settings)]

        return JSONResponse(await asyncio.to_thread(plans))

    async def switch(self, request: Request) -> Response:
        name = request.path_params["name"]
        query = request.query_params
        timeout = _number(query, "timeout", None)
        lock_timeout = _number(query, "lock_timeout", DEFAULT_LOCK_TIMEOUT_S)
        rollback = not _flag(query, "no_rollback")
        dry_run = _flag(query, "dry_run")
        if dry_run:
            result = await asyncio.to_thread(lambda: self.reader.switch(name, dry_run=True))
            return JSONResponse(switch_json(result))
        # Unknown (404) or too big (409): refused at once, not after the switch under way.
        await asyncio.to_thread(lambda: self.reader.plan_for(name))
        result, _ = await self.operations.switch(
            name, origin="api", timeout=timeout, lock_timeout=lock_timeout, rollback=rollback
        )
        return JSONResponse(switch_json(result))

    async def metrics_page(self, request: Request) -> Response:
        self.proxy.update_gauges()
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def stop(self, request: Request) -> Response:
        lock_timeout = _number(request.query_params, "lock_timeout", DEFAULT_LOCK_TIMEOUT_S)
        return JSONResponse({"stopped": await self.operations.stop(lock_timeout=lock_timeout)})


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
