"""The OpenAI-compatible proxy of `modelctl serve`: `/v1/...` routed by the request's model.

A request names a model (the JSON body's `model`, or the path for GET /v1/models/{id}); the
proxy finds its profile in the catalog (name, served model name or alias), asks the swap
scheduler (scheduler.py) for that model - which makes it the active model through the service's
one worker, so proxy switches serialize with API and CLI switches - and forwards the request to
the model's server, streaming the answer back chunk by chunk. A client that goes away leaves the
queue, or has its upstream request closed.

What is refused before anything is started or forwarded (README "The service"):
- a path under /v1 that is not normalised (`.` or `..` segments, an encoded slash or backslash,
  a double encoding): 400; only `/v1/...` itself is ever forwarded;
- a body over MODELCTL_PROXY_MAX_BODY_MB: 413, before it is read past the limit (Content-Length,
  or counted as a chunked body arrives);
- a body that is not a JSON object (not JSON, another JSON value, nested too deeply): 400; the
  default profile applies only to a well-formed object without `model`;
- a request that would start or swap a model but is not a POST (without an API token): 409. A
  GET only reads: cross-site GETs carry no Origin, so they must never cost a running model.

The model's server gets MODELCTL_PROXY_IDLE_TIMEOUT seconds for each byte: without one, the
request ends (504 before the answer began, an SSE error event in a stream). A request still in
flight when the drain before a swap times out (the scheduler's `abandoned`) ends the same way.

The request path is kept cheap (issue 14; bench/proxy_bench.py measures it): no thread and no file
system per request (the catalog's snapshot while it is fresh), no task per request (`_Watch`:
callbacks cancel the request's own task), the upstream leg on upstream_http.py's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import upstream_http
from .catalog import Catalog, ProfileSet
from .errors import ModelctlError, UnknownProfileError, UpstreamError, UsageError
from .http_errors import HttpRefusal, UpstreamTimeout, http_status, openai_error_json
from .metrics import Metrics
from .scheduler import Lease, Scheduler

log = logging.getLogger("modelctl.proxy")

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
}
JSON_IN_THREAD_BYTES = 1 << 20  # parse and render bodies above this size off the event loop
MIB = 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
LOADING_EVERY_S = 2.0  # a waiting stream's `: modelctl loading` comment (MODELCTL_PROXY_LOADING_EVENTS)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "DELETE"}  # a body is optional for these
HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
NOT_PASSED_BACK = HOP_BY_HOP_BYTES - {b"content-length"}  # of the model server's answer
# The server's callbacks for a lost client connection (service.py's protocols put it in the scope):
# with it, a request notices its client leaving without a task of its own.
CONNECTION_LOST = "modelctl.connection_lost"

# The profile name of the model that is loaded and answers, or None (a read beside the worker).
LoadedModel = Callable[[], Awaitable[str | None]]


# --- what is refused before anything happens -----------------------------------------------


def checked_path(scope: Scope, *, slashes: bool = True) -> str:
    """The request's path as received (still percent-encoded), refused (400) unless it is a
    normalised /v1/... path: no `.` or `..` segment once decoded, no encoded slash or backslash
    (`slashes`), no double encoding, no control character. Returns the part after /v1."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    path = path.partition("?")[0]
    segments = path.split("/")
    why = None
    if segments[:2] != ["", "v1"]:
        why = "it does not begin with /v1/"
    for segment in segments[2:]:
        decoded = unquote(segment, errors="replace") if "%" in segment else segment
        if decoded in (".", ".."):
            why = f"it has a {decoded!r} segment"
        elif slashes and ("/" in decoded or "\\" in decoded):
            why = "it has an encoded slash"
        elif slashes and "%" in decoded:
            why = "it is percent-encoded twice"
        elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
            why = "it has a control character"
        if why:
            break
    if why:
        raise HttpRefusal(
            f"refused the path {path[:200]!r}: {why}; only normalised /v1/... paths are served",
            400,
            code="invalid_path",
        )
    return path.removeprefix("/v1")


def _too_large(limit: int, size: int | None) -> HttpRefusal:
    said = f" ({size / MIB:.1f} MiB)" if size is not None else ""
    return HttpRefusal(
        f"the request body{said} is over the limit of {limit / MIB:g} MiB (MODELCTL_PROXY_MAX_BODY_MB)",
        413,
        code="request_too_large",
        hint="send a smaller request, or raise MODELCTL_PROXY_MAX_BODY_MB on the service",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it is known to be over `limit` bytes: from its
    Content-Length before reading, or counted while a chunked body arrives."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise HttpRefusal(f"invalid Content-Length {length[:40]!r}", 400, code="invalid_request")
        if int(length) > limit:
            raise _too_large(limit, int(length))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, None)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise UsageError("the request body is JSON nested too deeply") from None
    except ValueError as exc:
        raise UsageError(f"the request body is not JSON: {str(exc)[:200]}", hint="send a JSON object") from None
    if not isinstance(data, dict):
        raise UsageError(f"the request body is JSON but not an object (a {type(data).__name__})")
    return data


def _render(data: dict[str, Any]) -> bytes:
    try:
        return json.dumps(data).encode()
    except RecursionError:
        raise UsageError("the request body is JSON nested too deeply") from None


async def _off_loop(call: Callable[[Any], Any], arg: Any, big: bool) -> Any:
    return await asyncio.to_thread(call, arg) if big else call(arg)


# --- what ends a request early ---------------------------------------------------------------


class _Alarm(asyncio.Event):
    """A lease's `abandoned` event that also calls back when the scheduler sets it."""

    def __init__(self, on_set: Callable[[], None]) -> None:
        super().__init__()
        self.on_set: Callable[[], None] | None = on_set

    def set(self) -> None:
        if not self.is_set():
            super().set()
            if self.on_set is not None:
                self.on_set()


class _Watch:
    """What may end a request before its answer does: the client going away, or the scheduler
    abandoning its lease (the drain before a swap timed out). Either cancels the request's own
    task, from a callback: no task per request. The server's protocol (service.py) calls back when
    the client's connection is lost; under another server, one task waits for `http.disconnect`.

    After a CancelledError, `absorb()` says whether it came from here; `gone` / `abandoned` why.
    """

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.task = asyncio.current_task()
        self.gone = False
        self.abandoned = False
        self._cancels = 0
        self._alarm: _Alarm | None = None
        self._hook = scope.get("extensions", {}).get(CONNECTION_LOST)
        self._watcher: asyncio.Task[None] | None = None
        if self._hook is not None:
            self._hook.add(self._client_gone)
        else:
            self._watcher = asyncio.ensure_future(_disconnected(receive))
            self._watcher.add_done_callback(lambda done: done.cancelled() or self._client_gone())

    def follow(self, lease: Lease) -> None:
        """Watch `lease` for abandonment too (in place of any lease followed before)."""
        if self._alarm is not None:
            self._alarm.on_set = None
        if lease.abandoned.is_set():
            self._lease_abandoned()
            return
        self._alarm = lease.abandoned = _Alarm(self._lease_abandoned)

    def _client_gone(self) -> None:
        if not self.gone:
            self.gone = True
            self._cancel()

    def _lease_abandoned(self) -> None:
        if not self.abandoned:
            self.abandoned = True
            self._cancel()

    def _cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self._cancels += 1
            self.task.cancel()

    def absorb(self) -> bool:
        """After a CancelledError: True when this watch caused it and nothing else cancelled the task."""
        if not self._cancels or self.task is None:
            return False
        for _ in range(self._cancels):
            self.task.uncancel()
        self._cancels = 0
        return self.task.cancelling() == 0

    def close(self) -> None:
        if self._hook is not None:
            self._hook.discard(self._client_gone)
            self._hook = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._alarm is not None:
            self._alarm.on_set = None
            self._alarm = None


async def _disconnected(receive: Receive) -> None:
    """Returns when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _abandoned_error(profile: str, drain_timeout: float, *, started: bool) -> UpstreamTimeout:
    if started:
        return UpstreamTimeout(
            f"{profile}'s answer was still running when the drain before a swap timed out "
            f"({drain_timeout:g} s, MODELCTL_PROXY_DRAIN_TIMEOUT): it was ended",
            hint="retry; another model was waiting for the GPU",
        )
    return UpstreamTimeout(
        f"{profile}'s server had not answered when the drain before a swap timed out "
        f"({drain_timeout:g} s, MODELCTL_PROXY_DRAIN_TIMEOUT)",
        hint="retry; another model was waiting for the GPU",
    )


# --- responses ----------------------------------------------------------------------------


class UpstreamResponse(Response):
    """The model's answer, passed through as it arrives (SSE chunk by chunk), in the request's own
    task; ends the upstream request when the client goes away, and releases the request's lease
    at the end, whatever happens.

    When the model's server stops sending (no byte for the idle timeout, a dropped connection) or
    the drain before a swap gives up on the request, a stream ends with an SSE error event
    (`data: {"error": {...}}`, which the OpenAI clients raise); another answer is cut short.
    """

    def __init__(self, upstream: upstream_http.Answer, lease: Lease, watch: _Watch, proxy: Proxy) -> None:
        self.upstream = upstream
        self.lease = lease
        self.watch = watch
        self.idle_timeout = proxy.idle_timeout
        self.drain_timeout = proxy.drain_timeout
        self.status_code = upstream.status
        self.background = None
        self.raw_headers = [(k.lower(), v) for k, v in upstream.headers if k.lower() not in NOT_PASSED_BACK]
        self.streaming = (upstream.header(b"content-type") or b"").startswith(b"text/event-stream")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        profile = self.lease.profile
        error: ModelctlError | None = None
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            while chunk := await self.upstream.read_some():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self.watch.absorb():
                raise
            if self.watch.abandoned and not self.watch.gone:
                error = _abandoned_error(profile, self.drain_timeout, started=True)
        except upstream_http.Timeout:
            error = UpstreamTimeout(
                f"{profile}'s server sent nothing for {self.idle_timeout:g} s in the middle of its answer "
                "(MODELCTL_PROXY_IDLE_TIMEOUT): the answer was ended",
                hint=f"see `modelctl logs {profile}`",
            )
        except upstream_http.TransportError as exc:
            error = UpstreamError(
                f"{profile}'s server failed in the middle of its answer: {exc}", hint=f"see `modelctl logs {profile}`"
            )
        except OSError:
            pass  # the client went away while its answer was written
        finally:
            self.watch.close()
            self.upstream.close()
            self.lease.release()
        if error is not None:
            await self._end_with(error, send)

    async def _end_with(self, error: ModelctlError, send: Send) -> None:
        """End a started answer after `error`: an SSE error event in a stream, else cut short."""
        status = http_status(error)
        if not self.streaming:  # returning unfinished: uvicorn closes the connection
            log.warning("proxy: %s; the answer was cut short", error.message)
            return
        log.warning("proxy: %s; the stream ends with an error event", error.message)
        event = b"data: " + json.dumps(openai_error_json(error, status)).encode() + b"\n\n"
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class LoadingResponse(Response):
    """A streaming request that waits for its model (MODELCTL_PROXY_LOADING_EVENTS=1): 200 and the
    SSE headers at once, then `: modelctl loading NAME: PHASE Ns` every LOADING_EVERY_S until the
    model's answer begins, so that clients and proxies in between do not time out on a long load.
    The answer's events follow as they arrive; a load that fails (or an upstream error status) ends
    the stream with an OpenAI-shaped error event (`data: {"error": {...}}`, which the clients raise).
    """

    def __init__(self, proxy: Proxy, profile: str, target: str, method: str, headers: list, body: bytes) -> None:
        self.proxy = proxy
        self.profile = profile
        self.request = (target, method, headers, body)
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxy, profile = self.proxy, self.profile
        began = time.monotonic()
        watch = _Watch(scope, receive)
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def tell() -> None:
            while True:
                await asyncio.sleep(LOADING_EVERY_S)
                assert proxy.loading_phase is not None
                phase = proxy.loading_phase(profile)
                line = f": modelctl loading {profile}: {phase} {time.monotonic() - began:.0f}s\n\n"
                await send({"type": "http.response.body", "body": line.encode(), "more_body": True})

        telling = asyncio.ensure_future(tell())
        error: ModelctlError | None = None
        try:
            upstream, lease = await proxy._send(profile, *self.request, watch)
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            if watch.gone:
                proxy.metrics.count_request(profile, 499)
                return
            error = _abandoned_error(profile, proxy.drain_timeout, started=False)
        except ModelctlError as exc:
            error = exc
        finally:
            telling.cancel()
            await asyncio.gather(telling, return_exceptions=True)
        if error is None and isinstance(upstream, Response):  # a 404 read already
            lease.release()
            error = UpstreamError(f"{profile}'s server answered {upstream.status_code}: {bytes(upstream.body)[:500]!r}")
        elif error is None and upstream.status != 200:
            try:
                raw = await upstream.read_some()
            except upstream_http.TransportError:
                raw = b""
            finally:
                upstream.close()
                lease.release()
            said = raw[:1000].decode(errors="replace")
            error = UpstreamError(f"{profile}'s server answered {upstream.status}: {said}")
        if error is not None:
            watch.close()
            status = http_status(error)
            proxy.metrics.count_request(profile, status)
            log.warning("proxy: %s; the waiting stream ends with an error event", error.message)
            event = b"data: " + json.dumps(openai_error_json(error, status)).encode() + b"\n\n"
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        proxy.metrics.count_request(profile, 200)

        async def body_only(message: Any) -> None:  # the headers went out before the model answered
            if message["type"] != "http.response.start":
                await send(message)

        await UpstreamResponse(upstream, lease, watch, proxy)(scope, receive, body_only)


class _ReadAnswer(Response):
    """An upstream answer read whole (a 404 that was not about the model), passed on as it was."""

    def __init__(self, answer: upstream_http.Answer, body: bytes) -> None:
        super().__init__(body, status_code=answer.status)
        self.raw_headers = [(k.lower(), v) for k, v in answer.headers if k.lower() not in HOP_BY_HOP_BYTES]
        self.raw_headers.append((b"content-length", str(len(body)).encode()))


# --- the proxy ----------------------------------------------------------------------------


class Proxy:
    def __init__(
        self,
        catalog: Catalog,
        scheduler: Scheduler,
        metrics: Metrics,
        loaded_model: LoadedModel,
        *,
        default_profile: str | None,
        strip_authorization: bool,
        max_body_bytes: int = 64 * MIB,
        idle_timeout: float = 600.0,
        loading_phase: Callable[[str], str] | None = None,
    ) -> None:
        self.catalog = catalog
        # MODELCTL_PROXY_LOADING_EVENTS: what a model being loaded is doing (its operation's phase),
        # told to the streaming requests that wait for it; None: they wait in silence.
        self.loading_phase = loading_phase
        self.scheduler = scheduler
        self.metrics = metrics
        self.loaded_model = loaded_model
        self.default_profile = default_profile
        # The service's own bearer token is modelctl's, never the model server's. With a token set,
        # every request is authenticated, so any method may start or swap a model.
        self.strip_authorization = strip_authorization
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        # Each read of the model's server gets the idle timeout: it waits for a byte.
        self.client = upstream_http.Client(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=idle_timeout)
        self._reload: asyncio.Future[ProfileSet] | None = None
        self._not_forwarded = HOP_BY_HOP_BYTES | {b"authorization"} if strip_authorization else HOP_BY_HOP_BYTES

    @property
    def drain_timeout(self) -> float:
        return self.scheduler.limits.drain_timeout

    def routes(self, guarded: Callable[[Callable[[Request], Awaitable[Response]]], Any]) -> list[Route]:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [
            Route("/v1/models", guarded(self.list_models), methods=["GET"]),
            Route("/v1/models/{model:path}", guarded(self.get_model), methods=["GET"]),
            Route("/v1/{path:path}", guarded(self.forward), methods=methods),
        ]

    async def aclose(self) -> None:
        await self.scheduler.aclose()
        await self.client.aclose()

    def update_gauges(self) -> None:
        self.metrics.queue_length.set(self.scheduler.queued())

    async def profiles(self) -> ProfileSet:
        """The catalog's profiles: its snapshot as it is while younger than its max_age_s (no thread,
        no file system); else one load in a thread, shared by every request that asks meanwhile."""
        loaded = self.catalog.fresh()
        if loaded is not None:
            return loaded
        if self._reload is None:
            self._reload = asyncio.ensure_future(asyncio.to_thread(self.catalog.load))
            self._reload.add_done_callback(self._reloaded)
        return await asyncio.shield(self._reload)

    def _reloaded(self, done: asyncio.Future[ProfileSet]) -> None:
        self._reload = None
        if not done.cancelled():
            done.exception()  # retrieved here: the requests that asked raise it

    # --- GET /v1/models ------------------------------------------------------------------

    async def _model_entries(self) -> list[dict[str, Any]]:
        profiles = (await self.profiles()).profiles
        loaded = await self.loaded_model()
        return [
            {
                "id": p.served_name,
                "object": "model",
                "created": 0,
                "owned_by": "modelctl",
                "root": p.model,
                "parent": None,
                "max_model_len": p.max_model_len,
                "profile": p.name,
                "aliases": p.names[1:],
                "loaded": p.name == loaded,
            }
            for p in profiles.values()
        ]

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": await self._model_entries()})

    async def get_model(self, request: Request) -> Response:
        checked_path(request.scope, slashes=False)  # a model id may hold a slash (org/model), encoded
        name = request.path_params["model"]
        profile = (await self.profiles()).find(name)
        entry = next(e for e in await self._model_entries() if e["profile"] == profile.name)
        return JSONResponse(entry)

    # --- everything else under /v1 -------------------------------------------------------

    async def _is_active(self, profile: str) -> bool:
        """Whether `profile` runs (or is being loaded) now: a request for it starts or swaps nothing."""
        if profile in (self.scheduler.current, self.scheduler.target):
            return True
        return await self.loaded_model() == profile

    async def forward(self, request: Request) -> Response:
        path = checked_path(request.scope)
        method = request.method
        body = await read_body(request, self.max_body_bytes)
        big = len(body) > JSON_IN_THREAD_BYTES
        data: dict[str, Any] | None = None
        if body:
            data = await _off_loop(_parse_object, body, big)
        elif method not in SAFE_METHODS:
            raise UsageError(f"the {method} request has no body: send a JSON object")
        named = data.get("model") if data is not None else None
        model = named if named is not None else self.default_profile
        if model is None:
            raise UsageError(
                'the request names no model: send JSON with a "model" field', hint="GET /v1/models lists the models"
            )
        if not isinstance(model, str):
            raise UsageError(f'"model" must be a string, got {type(model).__name__}')
        profiles = await self.profiles()
        try:
            profile = profiles.find(model)
        except UnknownProfileError:
            self.metrics.count_request("unknown", 404)
            raise UnknownProfileError(
                f"The model `{model[:200]}` does not exist: modelctl has no profile, served model name or alias "
                f"'{model[:200]}' (known: {', '.join(sorted(profiles.profiles)) or 'none'})",
                hint="GET /v1/models lists the models",
            ) from None
        name = profile.name
        if method != "POST" and not self.strip_authorization and not await self._is_active(name):
            self.metrics.count_request(name, 409)
            raise HttpRefusal(
                f"{name} is not the active model, and a {method} never starts or swaps one",
                409,
                code="model_not_active",
                hint=f"send the request as a POST to load {name} (or set MODELCTL_API_TOKEN and send it)",
            )
        if data is not None and data.get("model") != profile.served_name:
            data["model"] = profile.served_name  # the server knows only its served name (or none was named)
            body = await _off_loop(_render, data, big)
        headers = [(k, v) for k, v in request.scope["headers"] if k.lower() not in self._not_forwarded]
        query = request.scope.get("query_string", b"")
        target = path + ("?" + query.decode("latin-1") if query else "")
        if self.loading_phase is not None and data is not None and data.get("stream") is True and not self._ready(name):
            return LoadingResponse(self, name, target, method, headers, body)

        # From here the client leaving (while queued, or waiting for the answer) ends the request.
        watch = _Watch(request.scope, request.receive)
        try:
            upstream, lease = await self._send(name, target, method, headers, body, watch)
        except asyncio.CancelledError:
            watch.close()
            if not watch.absorb():
                raise
            if watch.gone:  # out of the queue, or the upstream request closed (a switch goes on)
                self.metrics.count_request(name, 499)
                return Response(status_code=499)
            error = _abandoned_error(name, self.drain_timeout, started=False)
            self.metrics.count_request(name, http_status(error))
            raise error from None
        except ModelctlError as error:
            watch.close()
            self.metrics.count_request(name, http_status(error))
            raise
        except BaseException:
            watch.close()
            raise
        if isinstance(upstream, Response):  # read already
            watch.close()
            lease.release()
            self.metrics.count_request(name, upstream.status_code)
            return upstream
        self.metrics.count_request(name, upstream.status)
        return UpstreamResponse(upstream, lease, watch, self)

    def _ready(self, profile: str) -> bool:
        """Whether a request for `profile` goes straight through now (no swap, no wait)."""
        scheduler = self.scheduler
        return profile == scheduler.current and scheduler.target is None and not scheduler.draining

    async def _send(
        self, profile: str, target: str, method: str, headers: list, body: bytes, watch: _Watch
    ) -> tuple[upstream_http.Answer | _ReadAnswer, Lease]:
        """Lease the model, send the request upstream, return the answer with its body unread
        (read already when it is a 404 that was not about the model)."""
        for attempt in (1, 2):
            lease = await self.scheduler.lease(profile)
            watch.follow(lease)
            url = lease.url
            try:
                answer = await self.client.request(method, url, target, headers, body)
                if attempt == 1 and method == "POST" and answer.status == 404:
                    answer = await _model_missing(answer)
            except upstream_http.ConnectError as exc:
                # Stopped or switched behind the proxy's back (the CLI on the host): switch again, once.
                lease.release()
                self.scheduler.forget(profile)
                if attempt == 2:
                    raise UpstreamError(
                        f"{profile}'s server at {url} refused the connection: {exc}",
                        hint=f"see `modelctl logs {profile}`",
                    ) from None
                continue
            except upstream_http.Timeout as exc:
                lease.release()
                log.warning("proxy: %s's server did not answer within %gs: %s", profile, self.idle_timeout, exc)
                raise UpstreamTimeout(
                    f"{profile}'s server at {url} sent nothing for {self.idle_timeout:g} s "
                    f"(MODELCTL_PROXY_IDLE_TIMEOUT): {type(exc).__name__}",
                    hint=f"see `modelctl logs {profile}`; a paused or overloaded model server answers nothing",
                ) from None
            except upstream_http.TransportError as exc:
                lease.release()
                raise UpstreamError(
                    f"{profile}'s server at {url} failed: {exc}",
                    hint=f"see `modelctl logs {profile}`",
                ) from None
            except BaseException:
                lease.release()
                raise
            if answer is not None:
                return answer, lease
            # Another model answers on its port (switched on the host, same port): switch again, once.
            lease.release()
            self.scheduler.forget(profile)
        raise AssertionError("unreachable")


async def _model_missing(answer: upstream_http.Answer) -> _ReadAnswer | None:
    """None when an upstream 404 says the model does not exist (vLLM's answer for a model it does
    not serve); else the same answer, read (a 404 is small) and ready to pass on."""
    try:
        raw = await answer.read()
    finally:
        answer.close()
    if b"does not exist" in raw:
        return None
    return _ReadAnswer(answer, raw)
