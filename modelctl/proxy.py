"""The OpenAI-compatible proxy of `modelctl serve`: `/v1/...` routed by the request's model.

A request names a model (the JSON body's `model`, or the path for GET /v1/models/{id}); the
proxy finds its profile (name, served model name or alias), makes it the active model through
the service's one worker (so proxy switches serialize with API and CLI switches), and forwards
the request to the model's server, streaming the answer back chunk by chunk.

Swap scheduling (the Scheduler, one asyncio task on the service's event loop):
- requests for the active model go straight through (counted in flight);
- a request for another model waits in a bounded queue (beyond MODELCTL_PROXY_MAX_QUEUE: 503
  with Retry-After from the measured swap times); requests for the model being loaded join it;
- a swap begins when the active model has been resident MODELCTL_PROXY_MIN_RESIDENCY seconds and
  has nothing in flight, or when a waiting request has waited MODELCTL_PROXY_MAX_WAIT seconds;
  then the active model stops taking new requests, its requests in flight drain, and the model
  whose request waited longest is loaded; all its queued requests go together;
- a client that goes away leaves the queue (or has its upstream request closed); a switch under
  way always runs to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .errors import LockTimeoutError, ModelctlError, NotReadyError, UnknownProfileError, UsageError
from .profiles import Profile, find_profile, load_profiles

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("modelctl.proxy")

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length", "expect"}  # fmt: skip
DEFAULT_RETRY_AFTER_S = 10  # before any swap was measured
JSON_IN_THREAD_BYTES = 1 << 20  # parse bodies above this size off the event loop


class QueueFull(LockTimeoutError):
    """Too many proxy requests wait for their model (HTTP 503 with Retry-After, like a busy lock)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, hint=f"retry after {retry_after} s, or raise MODELCTL_PROXY_MAX_QUEUE")
        self.retry_after = retry_after


class UpstreamError(NotReadyError):
    """The model's server could not be reached although its switch said it was ready (HTTP 502)."""


# --- errors in OpenAI's shape -------------------------------------------------------------


def openai_error_response(error: ModelctlError, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """`{"error": {"message", "type", "param", "code"}}` as OpenAI's API answers, plus modelctl's details."""
    if isinstance(error, UnknownProfileError):
        kind, code, param = "invalid_request_error", "model_not_found", "model"
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
    body: dict[str, Any] = {"message": error.message, "type": kind, "param": param, "code": code,
                            "modelctl_code": error.exit_code}  # fmt: skip
    if error.hint:
        body["hint"] = error.hint
    if isinstance(error, NotReadyError) and error.log_tail:
        body["log_tail"] = error.log_tail
    headers = dict(headers or {})
    if isinstance(error, QueueFull):
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse({"error": body}, status_code=status, headers=headers)


# --- the scheduler ------------------------------------------------------------------------


@dataclass(eq=False)
class _Waiter:
    profile: str
    future: asyncio.Future[str]
    since: float = field(default_factory=time.monotonic)


class Scheduler:
    """Decides when to swap and who goes upstream; all its state lives on the event loop."""

    def __init__(self, service: Service) -> None:
        self.service = service
        settings = service.settings
        self.max_queue = settings.proxy_max_queue
        self.max_wait = settings.proxy_max_wait
        self.min_residency = settings.proxy_min_residency
        self.idle_ttl = settings.idle_ttl
        self.metrics = service.metrics
        self.current: str | None = None  # the profile the proxy last made active
        self.url = ""
        self.generation = -1  # the service generation `current` was established at
        self.loaded_at = 0.0
        self.last_used = time.monotonic()
        self.target: str | None = None  # the profile a swap is loading now
        self.draining = False
        self.inflight: Counter[str] = Counter()
        self.waiting: dict[str, deque[_Waiter]] = {}
        self.swap_times: deque[float] = deque(maxlen=20)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # --- what clients call -----------------------------------------------------------------

    def queued(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def retry_after(self) -> int:
        """Seconds a refused client should wait: a swap per model that waits, as measured so far."""
        per_swap = sum(self.swap_times) / len(self.swap_times) if self.swap_times else DEFAULT_RETRY_AFTER_S
        swaps = max(1, len([p for p, q in self.waiting.items() if q]))
        return max(1, math.ceil(per_swap * swaps))

    async def acquire(self, profile: str) -> str:
        """Wait until `profile` is active and may take a request; returns its URL. Pair with release()."""
        self._ensure_started()
        self._check_fresh()
        if profile == self.current and self.target is None and not self.draining and self.current is not None:
            self._admitted(profile)
            return self.url
        if self.queued() >= self.max_queue:
            self.metrics.rejected.inc()
            raise QueueFull(f"{self.queued()} requests already wait for their model (MODELCTL_PROXY_MAX_QUEUE)",
                            self.retry_after())  # fmt: skip
        waiter = _Waiter(profile, asyncio.get_running_loop().create_future())
        self.waiting.setdefault(profile, deque()).append(waiter)
        self.metrics.queue_length.set(self.queued())
        self._poke()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(profile)  # admitted just as the client went away
            else:
                queue = self.waiting.get(profile)
                if queue and waiter in queue:
                    queue.remove(waiter)
                    self.metrics.queue_length.set(self.queued())
                self._poke()
            raise

    def release(self, profile: str) -> None:
        self.inflight[profile] -= 1
        self.metrics.inflight.labels(profile).set(self.inflight[profile])
        self.last_used = time.monotonic()
        if self.inflight[profile] <= 0:
            self._poke()

    def forget(self, profile: str) -> None:
        """The model's server did not answer: what runs is no longer known."""
        if self.current == profile:
            self.current = None
            self._poke()

    # --- the dispatcher --------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="modelctl-proxy-scheduler")

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _check_fresh(self) -> None:
        """Another operation (an API switch or stop, a reconcile) ran since ours: re-check what runs."""
        if self.current is not None and self.service.generation != self.generation and self.target is None:
            self.current = None

    def _admitted(self, profile: str) -> None:
        self.inflight[profile] += 1
        self.metrics.inflight.labels(profile).set(self.inflight[profile])
        self.last_used = time.monotonic()

    def _admit_all(self, profile: str) -> None:
        queue = self.waiting.pop(profile, deque())
        now = time.monotonic()
        for waiter in queue:
            if not waiter.future.done():
                self._admitted(profile)
                waiter.future.set_result(self.url)
                self.metrics.queue_wait.labels(profile).observe(now - waiter.since)
        self.metrics.queue_length.set(self.queued())

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                timeout = self._step()
            except Exception:  # a bug here must not leave every client waiting forever
                log.exception("proxy scheduler: unexpected error")
                timeout = 1.0
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    def _step(self) -> float | None:
        """One decision; returns when to look again (None: when something changes)."""
        if self.target is not None:
            return None  # a swap runs; it pokes when it ends
        self._check_fresh()
        now = time.monotonic()
        waiting = {p: q for p, q in self.waiting.items() if q}
        current = self.current
        if current is not None and current in waiting and not self.draining:
            self._admit_all(current)
            del waiting[current]
        if not waiting:
            self.draining = False
            return self._idle(now)
        target = min(waiting, key=lambda p: waiting[p][0].since)
        waited = now - waiting[target][0].since
        if current is not None and not self.draining:
            resident = now - self.loaded_at
            busy = self.inflight[current] > 0
            if waited < self.max_wait and (busy or resident < self.min_residency):
                later = [self.max_wait - waited]
                if not busy:
                    later.append(self.min_residency - resident)
                return max(0.005, min(later))
            self.draining = True  # no new requests for the current model; let its requests finish
        if current is not None and self.inflight[current] > 0:
            return None  # release() pokes
        self.draining = False
        self._start_swap(target, "proxy")
        return None

    def _idle(self, now: float) -> float | None:
        """Idle TTL: with nothing queued or in flight for that long, stop the model (or go to the default)."""
        current = self.current
        if not self.idle_ttl or current is None or self.inflight[current] > 0:
            return None
        idle = now - max(self.last_used, self.loaded_at)
        if idle < self.idle_ttl:
            return self.idle_ttl - idle
        default = self.service.settings.default_profile
        try:
            fallback = find_profile(self.service.proxy.profiles(), default).name if default else None
        except ModelctlError:
            fallback = None
        if fallback and fallback != current:
            log.info("proxy: %s idle for %.0fs; back to the default %s", current, idle, fallback)
            self._start_swap(fallback, "idle")
        elif not fallback:
            log.info("proxy: %s idle for %.0fs; stopping it", current, idle)
            self.target = current
            asyncio.create_task(self._stop_idle())
        else:
            self.last_used = now  # the default stays
            return self.idle_ttl
        return None

    async def _stop_idle(self) -> None:
        from .service import Operation  # the service imports this module

        try:
            await self.service._in_worker(Operation("stop", None), lambda c: c.stop())
        except Exception as exc:
            log.warning("proxy: idle stop failed: %s", exc)
        finally:
            self.current, self.target = None, None
            self._poke()

    def _start_swap(self, target: str, origin: str) -> None:
        self.target = target
        asyncio.create_task(self._swap(target, origin), name=f"modelctl-proxy-swap-{target}")

    async def _swap(self, target: str, origin: str) -> None:
        """Make `target` active (through the worker); then let its waiters in, or fail them with the cause."""
        began = time.monotonic()
        try:
            result, generation = await self.service.switch_model(target, origin=origin)
        except Exception as exc:
            error = exc if isinstance(exc, ModelctlError) else ModelctlError(f"unexpected error ({type(exc).__name__})")
            self.current = None
            for waiter in self.waiting.pop(target, deque()):
                if not waiter.future.done():
                    waiter.future.set_exception(error)
                    waiter.future.exception()  # marked retrieved: a waiter gone meanwhile logs nothing
            self.metrics.queue_length.set(self.queued())
        else:
            if result.outcome == "switched":
                self.swap_times.append(time.monotonic() - began)
            if self.current != target:
                self.metrics.active.clear()
                self.metrics.active.labels(target).set(1)
                self.loaded_at = time.monotonic()
            self.current, self.url, self.generation = target, result.url.rstrip("/"), generation
            self._admit_all(target)
        finally:
            self.target = None
            self._poke()


# --- responses ----------------------------------------------------------------------------


class UpstreamResponse(Response):
    """The model's answer, passed through as it arrives (SSE chunk by chunk); closes the upstream
    request when the client goes away, and releases the request's slot at the end, whatever happens."""

    def __init__(self, upstream: httpx.Response, release: Callable[[], None]) -> None:
        self.upstream = upstream
        self.release = release
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = [(k.lower(), v) for k, v in upstream.headers.raw
                            if k.decode("latin-1").lower() not in HOP_BY_HOP - {"content-length"}]  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        pumping = asyncio.create_task(pump())
        watching = asyncio.create_task(_disconnected(receive))
        try:
            done, _ = await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
            if pumping in done:
                exc = pumping.exception()
                if exc is not None and not isinstance(exc, OSError):
                    raise exc
        finally:
            for task in (pumping, watching):
                task.cancel()
            await asyncio.gather(pumping, watching, return_exceptions=True)
            await self.upstream.aclose()
            self.release()


async def _disconnected(receive: Receive) -> None:
    """Returns when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _model_missing(response: httpx.Response) -> httpx.Response | None:
    """None when an upstream 404 says the model does not exist (vLLM's answer for a model it does
    not serve); else the same answer, read (a 404 is small) and ready to pass on."""
    try:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    if b"does not exist" in raw:
        return None
    return httpx.Response(response.status_code, headers=response.headers, content=raw, request=response.request)


# --- the proxy ----------------------------------------------------------------------------


class Proxy:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.scheduler = Scheduler(service)
        self._profiles: dict[str, Profile] = {}
        self._profiles_key: tuple | None = None
        self.client = httpx.AsyncClient(
            trust_env=False,
            timeout=httpx.Timeout(connect=10.0, read=None, write=300.0, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )

    def routes(self, guarded: Callable[[Callable[[Request], Awaitable[Response]]], Any]) -> list[Route]:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [
            Route("/v1/models", guarded(self.list_models), methods=["GET"]),
            Route("/v1/models/{model:path}", guarded(self.get_model), methods=["GET"]),
            Route("/v1/{path:path}", guarded(self.forward), methods=methods),
        ]

    async def aclose(self) -> None:
        await self.client.aclose()

    def profiles(self) -> dict[str, Profile]:
        """The profiles as they are on disk now (edits need no restart), parsed again only when a file changes."""
        directory = self.service.settings.profiles_dir
        try:
            key = tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size)
                               for f in [*directory.glob("*.yaml"), *directory.glob("*.yml")]))  # fmt: skip
        except OSError:
            key = None
        if key is None or key != self._profiles_key:
            self._profiles = load_profiles(directory)
            self._profiles_key = key
        return self._profiles

    def update_gauges(self) -> None:
        self.service.metrics.queue_length.set(self.scheduler.queued())

    # --- GET /v1/models ------------------------------------------------------------------

    async def _model_entries(self) -> list[dict[str, Any]]:
        def read() -> tuple[dict[str, Profile], str | None]:
            reader = self.service._reader()
            active = reader.status().active
            return reader.profiles, active.profile if active and active.ready else None

        profiles, loaded = await asyncio.to_thread(read)
        return [
            {"id": p.served_name, "object": "model", "created": 0, "owned_by": "modelctl", "root": p.model,
             "parent": None, "max_model_len": p.max_model_len, "profile": p.name, "aliases": p.names[1:],
             "loaded": p.name == loaded}
            for p in profiles.values()
        ]  # fmt: skip

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": await self._model_entries()})

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["model"]
        profile = find_profile(await asyncio.to_thread(self.profiles), name)
        entry = next(e for e in await self._model_entries() if e["profile"] == profile.name)
        return JSONResponse(entry)

    # --- everything else under /v1 -------------------------------------------------------

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        data = None
        if body:
            try:
                data = await asyncio.to_thread(json.loads, body) if len(body) > JSON_IN_THREAD_BYTES else json.loads(body)
            except ValueError:
                data = None
        model = data.get("model") if isinstance(data, dict) else None
        if model is None:
            model = self.service.settings.default_profile
            if not model:
                raise UsageError("the request names no model: send JSON with a \"model\" field",
                                 hint="GET /v1/models lists the models")  # fmt: skip
        if not isinstance(model, str):
            raise UsageError(f"\"model\" must be a string, got {type(model).__name__}")
        profiles = await asyncio.to_thread(self.profiles)
        try:
            profile = find_profile(profiles, model)
        except UnknownProfileError:
            self.service.metrics.requests.labels("unknown", "404").inc()
            raise UnknownProfileError(
                f"The model `{model}` does not exist: modelctl has no profile, served model name or alias "
                f"'{model}' (known: {', '.join(sorted(profiles)) or 'none'})",
                hint="GET /v1/models lists the models",
            ) from None
        if isinstance(data, dict) and data.get("model") != profile.served_name:
            data["model"] = profile.served_name  # the server knows only its served name (or none was named)
            body = json.dumps(data).encode()
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]
        if self.service._token is not None:  # that token was modelctl's, not the model server's
            headers = [(k, v) for k, v in headers if k.lower() != b"authorization"]
        path = request.url.path.removeprefix("/v1")
        query = request.url.query

        work = asyncio.create_task(self._send(profile.name, path, query, request.method, headers, body))
        gone = asyncio.create_task(_disconnected(request.receive))
        try:
            done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()  # the client left while waiting: out of the queue (the switch goes on)
        if work not in done:
            with contextlib.suppress(BaseException):
                await work
            self.service.metrics.requests.labels(profile.name, "499").inc()
            return Response(status_code=499)
        try:
            upstream = work.result()
        except ModelctlError as error:
            from .service import http_status

            self.service.metrics.requests.labels(profile.name, str(http_status(error))).inc()
            raise
        self.service.metrics.requests.labels(profile.name, str(upstream.status_code)).inc()
        return UpstreamResponse(upstream, lambda: self.scheduler.release(profile.name))

    async def _send(self, profile: str, path: str, query: str, method: str, headers: list, body: bytes) -> httpx.Response:
        """Acquire the model, send the request upstream, return the response with its body unread."""
        for attempt in (1, 2):
            url = await self.scheduler.acquire(profile)
            request = self.client.build_request(method, f"{url}{path}" + (f"?{query}" if query else ""),
                                                headers=headers, content=body)  # fmt: skip
            try:
                response = await self.client.send(request, stream=True)
                if attempt == 1 and method == "POST" and response.status_code == 404:
                    response = await _model_missing(response)
            except httpx.ConnectError as exc:
                # Stopped or switched behind the proxy's back (the CLI on the host): switch again, once.
                self.scheduler.release(profile)
                self.scheduler.forget(profile)
                if attempt == 2:
                    raise UpstreamError(f"{profile}'s server at {url} refused the connection: {exc}",
                                        hint=f"see `modelctl logs {profile}`") from None  # fmt: skip
                continue
            except httpx.TransportError as exc:
                self.scheduler.release(profile)
                raise UpstreamError(f"{profile}'s server at {url} failed: {type(exc).__name__}: {exc}",
                                    hint=f"see `modelctl logs {profile}`") from None  # fmt: skip
            except BaseException:
                self.scheduler.release(profile)
                raise
            if response is not None:
                return response
            # Another model answers on its port (switched on the host, same port): switch again, once.
            self.scheduler.release(profile)
            self.scheduler.forget(profile)
        raise AssertionError("unreachable")
