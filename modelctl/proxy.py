"""The OpenAI-compatible proxy of `modelctl serve`: `/v1/...` routed by the request's model.

A request names a model (the JSON body's `model`, or the path for GET /v1/models/{id}); the
proxy finds its profile in the catalog (name, served model name or alias), asks the swap
scheduler (scheduler.py) for that model - which makes it the active model through the service's
one worker, so proxy switches serialize with API and CLI switches - and forwards the request to
the model's server, streaming the answer back chunk by chunk. A client that goes away leaves the
queue, or has its upstream request closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .catalog import Catalog
from .errors import ModelctlError, UnknownProfileError, UpstreamError, UsageError
from .http_errors import http_status
from .metrics import Metrics
from .scheduler import Scheduler

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
JSON_IN_THREAD_BYTES = 1 << 20  # parse bodies above this size off the event loop

# The profile name of the model that is loaded and answers, or None (a read beside the worker).
LoadedModel = Callable[[], Awaitable[str | None]]


# --- responses ----------------------------------------------------------------------------


class UpstreamResponse(Response):
    """The model's answer, passed through as it arrives (SSE chunk by chunk); closes the upstream
    request when the client goes away, and releases the request's slot at the end, whatever happens."""

    def __init__(self, upstream: httpx.Response, release: Callable[[], None]) -> None:
        self.upstream = upstream
        self.release = release
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = [
            (k.lower(), v)
            for k, v in upstream.headers.raw
            if k.decode("latin-1").lower() not in HOP_BY_HOP - {"content-length"}
        ]

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
    def __init__(
        self,
        catalog: Catalog,
        scheduler: Scheduler,
        metrics: Metrics,
        loaded_model: LoadedModel,
        *,
        default_profile: str | None,
        strip_authorization: bool,
    ) -> None:
        self.catalog = catalog
        self.scheduler = scheduler
        self.metrics = metrics
        self.loaded_model = loaded_model
        self.default_profile = default_profile
        # The service's own bearer token is modelctl's, never the model server's.
        self.strip_authorization = strip_authorization
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
        name = request.path_params["model"]
        profile = (await asyncio.to_thread(self.catalog.load)).find(name)
        entry = next(e for e in await self._model_entries() if e["profile"] == profile.name)
        return JSONResponse(entry)

    # --- everything else under /v1 -------------------------------------------------------

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        data = None
        if body:
            try:
                data = (
                    await asyncio.to_thread(json.loads, body) if len(body) > JSON_IN_THREAD_BYTES else json.loads(body)
                )
            except ValueError:
                data = None
        model = data.get("model") if isinstance(data, dict) else None
        if model is None:
            model = self.default_profile
            if not model:
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
                f"The model `{model}` does not exist: modelctl has no profile, served model name or alias "
                f"'{model}' (known: {', '.join(sorted(profiles.profiles)) or 'none'})",
                hint="GET /v1/models lists the models",
            ) from None
        if isinstance(data, dict) and data.get("model") != profile.served_name:
            data["model"] = profile.served_name  # the server knows only its served name (or none was named)
            body = json.dumps(data).encode()
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]
        if self.strip_authorization:
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
            self.metrics.requests.labels(profile.name, "499").inc()
            return Response(status_code=499)
        try:
            upstream = work.result()
        except ModelctlError as error:
            self.metrics.requests.labels(profile.name, str(http_status(error))).inc()
            raise
        self.metrics.requests.labels(profile.name, str(upstream.status_code)).inc()
        return UpstreamResponse(upstream, lambda: self.scheduler.release(profile.name))

    async def _send(
        self, profile: str, path: str, query: str, method: str, headers: list, body: bytes
    ) -> httpx.Response:
        """Acquire the model, send the request upstream, return the response with its body unread."""
        for attempt in (1, 2):
            url = await self.scheduler.acquire(profile)
            request = self.client.build_request(
                method, f"{url}{path}" + (f"?{query}" if query else ""), headers=headers, content=body
            )
            try:
                response = await self.client.send(request, stream=True)
                if attempt == 1 and method == "POST" and response.status_code == 404:
                    response = await _model_missing(response)
            except httpx.ConnectError as exc:
                # Stopped or switched behind the proxy's back (the CLI on the host): switch again, once.
                self.scheduler.release(profile)
                self.scheduler.forget(profile)
                if attempt == 2:
                    raise UpstreamError(
                        f"{profile}'s server at {url} refused the connection: {exc}",
                        hint=f"see `modelctl logs {profile}`",
                    ) from None
                continue
            except httpx.TransportError as exc:
                self.scheduler.release(profile)
                raise UpstreamError(
                    f"{profile}'s server at {url} failed: {type(exc).__name__}: {exc}",
                    hint=f"see `modelctl logs {profile}`",
                ) from None
            except BaseException:
                self.scheduler.release(profile)
                raise
            if response is not None:
                return response
            # Another model answers on its port (switched on the host, same port): switch again, once.
            self.scheduler.release(profile)
            self.scheduler.forget(profile)
        raise AssertionError("unreachable")
