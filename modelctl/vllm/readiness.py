"""Readiness: poll `GET /v1/models` until the served model is listed. Speaks HTTP, nothing else.

vLLM listens only once the weights are loaded, the memory profiled and the CUDA graphs
captured, so while it loads a client gets "connection refused", not 503. A refused connect on
loopback costs well under a millisecond, so polling every 20 ms sees the server within ~20 ms
of it listening (llama-swap polls every second). The container is watched on every round by
the caller's `is_alive`, so a crash fails the wait at once instead of at the timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

POLL_INTERVAL_S = 0.02


class NotYet(Exception):
    """The server is not ready yet; the message says what was seen."""


class ContainerExited(Exception):
    """The container stopped while we waited for it."""


class ReadyTimeout(Exception):
    def __init__(self, waited_s: float, last_seen: str) -> None:
        super().__init__(f"not ready after {waited_s:.0f} s (last seen: {last_seen})")
        self.waited_s = waited_s
        self.last_seen = last_seen


def fetch_models(client: httpx.Client, base_url: str) -> list[str]:
    """GET {base_url}/models; raises NotYet for anything short of vLLM's answer."""
    try:
        response = client.get(f"{base_url}/models")
    except httpx.TransportError as exc:
        raise NotYet(f"{type(exc).__name__}") from None
    if response.status_code != 200:
        raise NotYet(f"HTTP {response.status_code}")
    try:
        return [entry["id"] for entry in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise NotYet("an answer that is not an OpenAI model list") from None


def http_client() -> httpx.Client:
    # trust_env=False: a proxy from the environment must never sit between us and loopback.
    return httpx.Client(timeout=httpx.Timeout(2.0, connect=1.0), trust_env=False)


def is_serving(base_url: str, served_model: str) -> bool:
    """One look: does the server at base_url list served_model?"""
    with http_client() as client:
        try:
            return served_model in fetch_models(client, base_url)
        except NotYet:
            return False


def wait_until_ready(
    base_url: str,
    served_model: str,
    *,
    timeout_s: float,
    is_alive: Callable[[], bool],
    on_poll: Callable[[str], None] = lambda seen: None,
) -> float:
    """Block until /v1/models lists `served_model`; return the seconds waited.

    Raises ContainerExited as soon as `is_alive()` says no, ReadyTimeout after `timeout_s`.
    """
    started = time.monotonic()
    last_seen = "nothing yet"

    def look(client: httpx.Client) -> None:
        nonlocal last_seen
        if not is_alive():
            raise ContainerExited()
        try:
            ids = fetch_models(client, base_url)
        except NotYet as exc:
            last_seen = str(exc)
            on_poll(last_seen)
            raise
        if served_model not in ids:
            last_seen = f"serving {ids}, not {served_model!r}"
            on_poll(last_seen)
            raise NotYet(last_seen)

    with http_client() as client:
        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(NotYet),
                stop=stop_after_delay(timeout_s),
                wait=wait_fixed(POLL_INTERVAL_S),
                reraise=True,
            ):
                with attempt:
                    look(client)
        except NotYet:
            raise ReadyTimeout(time.monotonic() - started, last_seen) from None
    return time.monotonic() - started


class ModelServers(Protocol):
    """What the controller asks of model servers over HTTP (a fake in unit tests)."""

    def is_serving(self, base_url: str, served_model: str) -> bool: ...

    def wait_until_ready(
        self,
        base_url: str,
        served_model: str,
        *,
        timeout_s: float,
        is_alive: Callable[[], bool],
        on_poll: Callable[[str], None] = ...,
    ) -> float: ...


class HttpModelServers:
    """vLLM's OpenAI servers, asked over HTTP (the functions above)."""

    def is_serving(self, base_url: str, served_model: str) -> bool:
        return is_serving(base_url, served_model)

    def wait_until_ready(
        self,
        base_url: str,
        served_model: str,
        *,
        timeout_s: float,
        is_alive: Callable[[], bool],
        on_poll: Callable[[str], None] = lambda seen: None,
    ) -> float:
        return wait_until_ready(base_url, served_model, timeout_s=timeout_s, is_alive=is_alive, on_poll=on_poll)
