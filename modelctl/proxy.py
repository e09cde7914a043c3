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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import unquote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .catalog import Catalog
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
SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "DELETE"}  # a body is optional for these

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


# --- responses ----------------------------------------------------------------------------


class UpstreamResponse(Response):
    """The model's answer, passed through as it arrives (SSE chunk by chunk); closes the upstream
    request when the client goes away, and releases the request's lease at the end, whatever happens.

    When the model's server stops sending (no byte for the idle timeout, a dropped connection) or
    the drain before a swap gives up on the request, a stream ends with an SSE error event
    (`data: {"error": {...}}`, which the OpenAI clients raise); another answer is cut short.
    """

    def __init__(self, upstream: httpx.Response, lease: Lease, idle_timeout: float, drain_timeout: float) -> None:
        self.upstream = upstream
        self.lease = lease
        self.idle_timeout = idle_timeout
        self.drain_timeout = drain_timeout
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = [
            (k.lower(), v)
            for k, v in upstream.headers.raw
            if k.decode("latin-1").lower() not in HOP_BY_HOP - {"content-length"}
        ]
        self.streaming = upstream.headers.get("content-type", "").startswith("text/event-stream")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        profile = self.lease.profile

        async def pump() -> ModelctlError | None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            try:
                async for chunk in self.upstream.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.TimeoutException:
                return UpstreamTimeout(
                    f"{profile}'s server sent nothing for {self.idle_timeout:g} s in the middle of its answer "
                    "(MODELCTL_PROXY_IDLE_TIMEOUT): the answer was ended",
                    hint=f"see `modelctl logs {profile}`",
                )
            except httpx.TransportError as exc:
                return UpstreamError(
                    f"{profile}'s server failed in the middle of its answer: {type(exc).__name__}: {exc}",
                    hint=f"see `modelctl logs {profile}`",
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return None

        pumping = asyncio.create_task(pump())
        watching = asyncio.create_task(_disconnected(receive))
        abandoned = asyncio.create_task(self.lease.abandoned.wait())
        try:
            done, _ = await asyncio.wait({pumping, watching, abandoned}, return_when=asyncio.FIRST_COMPLETED)
            error: ModelctlError | None = None
            if pumping in done:
                exc = pumping.exception()
                if exc is not None and not isinstance(exc, OSError):
                    raise exc
                error = pumping.result() if exc is None else None
            elif abandoned in done and watching not in done:
                pumping.cancel()
                await asyncio.gather(pumping, return_exceptions=True)
                error = UpstreamTimeout(
                    f"{profile}'s answer was still running when the drain before a swap timed out "
                    f"({self.drain_timeout:g} s, MODELCTL_PROXY_DRAIN_TIMEOUT): it was ended",
                    hint="retry; another model was waiting for the GPU",
                )
            if error is not None:
                await self._end_with(error, send)
        finally:
            for task in (pumping, watching, abandoned):
                task.cancel()
            await asyncio.gather(pumping, watching, abandoned, return_exceptions=True)
            await self.upstream.aclose()
            self.lease.release()

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


async def _unless_abandoned(
    lease: Lease, work: Coroutine[Any, Any, httpx.Response], drain_timeout: float
) -> httpx.Response:
    """`work`, unless the scheduler gives up on the lease first (the drain before a swap timed out)."""
    task = asyncio.ensure_future(work)
    given_up = asyncio.ensure_future(lease.abandoned.wait())
    try:
        done, _ = await asyncio.wait({task, given_up}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        given_up.cancel()
        raise
    given_up.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        late = await task
    except BaseException:
        pass
    else:
        await late.aclose()
    raise UpstreamTimeout(
        f"{lease.profile}'s server had not answered when the drain before a swap timed out "
        f"({drain_timeout:g} s, MODELCTL_PROXY_DRAIN_TIMEOUT)",
        hint="retry; another model was waiting for the GPU",
    )


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
    ) -> None:
        self.catalog = catalog
        self.scheduler = scheduler
        self.metrics = metrics
        self.loaded_model = loaded_model
        self.default_profile = default_profile
        # The service's own bearer token is modelctl's, never the model server's. With a token set,
        # every request is authenticated, so any method may start or swap a model.
        self.strip_authorization = strip_authorization
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        # Each read (and write) of the model's server gets the idle timeout: it waits for a byte.
        self.client = httpx.AsyncClient(
            trust_env=False,
            timeout=httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=idle_timeout, write=idle_timeout, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )

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

    # --- GET /v1/models ------------------------------------------------------------------

    async def _model_entries(self) -> list[dict[str, Any]]:
        profiles = (await asyncio.to_thread(self.catalog.load)).profiles
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
        profile = (await asyncio.to_thread(self.catalog.load)).find(name)
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
        profiles = await asyncio.to_thread(self.catalog.load)
        try:
            profile = profiles.find(model)
        except UnknownProfileError:
            self.metrics.requests.labels("unknown", "404").inc()
            raise UnknownProfileError(
                f"The model `{model[:200]}` does not exist: modelctl has no profile, served model name or alias "
                f"'{model[:200]}' (known: {', '.join(sorted(profiles.profiles)) or 'none'})",
                hint="GET /v1/models lists the models",
            ) from None
        if method != "POST" and not self.strip_authorization and not await self._is_active(profile.name):
            self.metrics.requests.labels(profile.name, "409").inc()
            raise HttpRefusal(
                f"{profile.name} is not the active model, and a {method} never starts or swaps one",
                409,
                code="model_not_active",
                hint=f"send the request as a POST to load {profile.name} (or set MODELCTL_API_TOKEN and send it)",
            )
        if data is not None and data.get("model") != profile.served_name:
            data["model"] = profile.served_name  # the server knows only its served name (or none was named)
            body = await _off_loop(_render, data, big)
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]
        if self.strip_authorization:
            headers = [(k, v) for k, v in headers if k.lower() != b"authorization"]
        query = request.scope.get("query_string", b"").decode("latin-1")

        work = asyncio.create_task(self._send(profile.name, path, query, method, headers, body))
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
            self.metrics.requests.labels(profile.name, "499").inc()
            return Response(status_code=499)
        try:
            upstream, lease = work.result()
        except ModelctlError as error:
            self.metrics.requests.labels(profile.name, str(http_status(error))).inc()
            raise
        self.metrics.requests.labels(profile.name, str(upstream.status_code)).inc()
        return UpstreamResponse(upstream, lease, self.idle_timeout, self.drain_timeout)

    async def _send(
        self, profile: str, path: str, query: str, method: str, headers: list, body: bytes
    ) -> tuple[httpx.Response, Lease]:
        """Lease the model, send the request upstream, return the response with its body unread."""
        for attempt in (1, 2):
            lease = await self.scheduler.lease(profile)
            url = lease.url
            request = self.client.build_request(
                method, f"{url}{path}" + (f"?{query}" if query else ""), headers=headers, content=body
            )
            try:
                response = await _unless_abandoned(lease, self.client.send(request, stream=True), self.drain_timeout)
                if attempt == 1 and method == "POST" and response.status_code == 404:
                    response = await _model_missing(response)
            except httpx.ConnectError as exc:
                # Stopped or switched behind the proxy's back (the CLI on the host): switch again, once.
                lease.release()
                self.scheduler.forget(profile)
                if attempt == 2:
                    raise UpstreamError(
                        f"{profile}'s server at {url} refused the connection: {exc}",
                        hint=f"see `modelctl logs {profile}`",
                    ) from None
                continue
            except httpx.TimeoutException as exc:
                lease.release()
                log.warning("proxy: %s's server did not answer within %gs: %s", profile, self.idle_timeout, exc)
                raise UpstreamTimeout(
                    f"{profile}'s server at {url} sent nothing for {self.idle_timeout:g} s "
                    f"(MODELCTL_PROXY_IDLE_TIMEOUT): {type(exc).__name__}",
                    hint=f"see `modelctl logs {profile}`; a paused or overloaded model server answers nothing",
                ) from None
            except httpx.TransportError as exc:
                lease.release()
                raise UpstreamError(
                    f"{profile}'s server at {url} failed: {type(exc).__name__}: {exc}",
                    hint=f"see `modelctl logs {profile}`",
                ) from None
            except BaseException:
                lease.release()
                raise
            if response is not None:
                return response, lease
            # Another model answers on its port (switched on the host, same port): switch again, once.
            lease.release()
            self.scheduler.forget(profile)
        raise AssertionError("unreachable")
