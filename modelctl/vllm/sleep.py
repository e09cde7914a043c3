"""vLLM's sleep mode over HTTP: put a server to sleep, wake it, ask whether it sleeps.

The development endpoints exist only in a server started with `--enable-sleep-mode` and
`VLLM_SERVER_DEV_MODE=1` (0.33: `entrypoints/serve/dev/sleep/api_router.py`; 0.11:
`entrypoints/openai/api_server.py:1044-1144`):

- `POST /sleep?level=N` (0.33: `{"status": "sleeping", "level": N}`; 0.11: an empty 200);
- `POST /wake_up[?tags=weights|kv_cache]` (0.33: `{"status": "awake"|"sleeping", "tags": ...}`,
  "sleeping" while some tags still sleep; 0.11: an empty 200);
- `GET /is_sleeping` -> `{"is_sleeping": bool}` (both);
- `POST /collective_rpc {"method": "reload_weights"}` after a level-2 sleep, which drops the weights;
- `POST /reset_prefix_cache` (0.33: `{"success": bool}`; 0.11: an empty 200).

While asleep the server still answers `/health` and lists its model in `/v1/models`: only
`/is_sleeping` tells a sleeper from an awake server. Every call has a deadline. This module speaks
HTTP and nothing else; the controller decides who sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import httpx

from .readiness import POLL_INTERVAL_S, ContainerExited, NotYet, ReadyTimeout, fetch_models

# How long a sleeping server may take to say so after its /sleep answered (0.11's FIXME: "the
# sleep command is sent but does not finish yet when we return a response").
CONFIRM_S = 5.0
# One answer of /is_sleeping (status, reconcile): a server that takes longer is not asked again.
ASK_TIMEOUT_S = 2.0


class SleepFailed(Exception):
    """A sleep or a wake that did not happen; the message says what the server answered."""


def server_root(base_url: str) -> str:
    """`http://host:port` from the OpenAI base URL `http://host:port/v1`."""
    return base_url.rstrip("/").removesuffix("/v1")


def _client(timeout_s: float) -> httpx.Client:
    # trust_env=False: a proxy from the environment must never sit between us and loopback.
    # verify=False: these URLs are plain http on loopback, and loading the CA bundle for a TLS
    # context that is never used costs ~45 ms per client - most of a hot swap's own time.
    return httpx.Client(timeout=httpx.Timeout(timeout_s, connect=1.0), trust_env=False, verify=False)


def _ask_sleeping(client: httpx.Client, root: str) -> bool | None:
    """One GET /is_sleeping: True / False, None when the server does not say (no dev endpoints, down)."""
    try:
        response = client.get(f"{root}/is_sleeping")
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    try:
        value = response.json()["is_sleeping"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, bool) else None


def _post(client: httpx.Client, root: str, what: str, path: str, **kwargs: object) -> httpx.Response:
    """POST, or SleepFailed naming `what` with the server's answer."""
    try:
        response = client.post(f"{root}{path}", **kwargs)  # type: ignore[arg-type]
    except httpx.TimeoutException:
        raise SleepFailed(f"{what}: no answer from {root}{path} in time") from None
    except httpx.TransportError as exc:
        raise SleepFailed(f"{what}: {root}{path} could not be reached ({type(exc).__name__})") from None
    if response.status_code == 404:
        raise SleepFailed(
            f"{what}: {root}{path} does not exist (404): the server was started without "
            "VLLM_SERVER_DEV_MODE=1, or its vLLM has no sleep mode"
        )
    if response.status_code != 200:
        body = " ".join(response.text.split())[:300]
        raise SleepFailed(f"{what}: {root}{path} answered HTTP {response.status_code}: {body or '(no body)'}")
    return response


def _json_or_none(response: httpx.Response) -> object:
    """0.11 answers these endpoints with an empty 200, 0.33 with JSON."""
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError:
        return None


def is_sleeping(base_url: str) -> bool | None:
    with _client(ASK_TIMEOUT_S) as client:
        return _ask_sleeping(client, server_root(base_url))


def sleep(base_url: str, level: int, *, timeout_s: float) -> float:
    """Put the server to sleep at `level` and wait until it says it sleeps; the seconds it took.

    Level 1 offloads the weights to host memory (seconds for a large model), so the answer may take
    a while: `timeout_s` bounds the whole call. Raises SleepFailed.
    """
    started = time.monotonic()
    root = server_root(base_url)
    with _client(timeout_s) as client:
        response = _post(client, root, f"sleep (level {level})", "/sleep", params={"level": str(level)})
        answer = _json_or_none(response)
        if isinstance(answer, dict) and answer.get("status") not in (None, "sleeping"):
            raise SleepFailed(f"sleep (level {level}): the server answered {answer}")
        deadline = time.monotonic() + min(CONFIRM_S, max(0.0, timeout_s - (time.monotonic() - started)))
        while True:
            sleeping = _ask_sleeping(client, root)
            if sleeping:
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                raise SleepFailed(
                    f"sleep (level {level}): /sleep answered 200 but /is_sleeping says {sleeping} "
                    f"{CONFIRM_S:g} s later (is --enable-sleep-mode on?)"
                )
            time.sleep(POLL_INTERVAL_S)


def wake(
    base_url: str,
    served_model: str,
    level: int,
    *,
    timeout_s: float,
    is_alive: Callable[[], bool],
) -> float:
    """Wake a sleeping server and wait until it serves: `/is_sleeping` false and `/v1/models`
    listing `served_model`. The seconds it took.

    Level 1: `POST /wake_up`. Level 2 dropped the weights, so the weights wake first, are reloaded
    from the checkpoint (`collective_rpc reload_weights`), then the KV cache wakes and the prefix
    cache (computed with the old weights' blocks gone) is reset - vLLM's documented level-2 order,
    which never holds the KV cache and the reloading weights at once.

    Raises SleepFailed (an endpoint refused), ContainerExited (`is_alive` said no: the server
    died, e.g. of an out-of-memory on wake), ReadyTimeout.
    """
    started = time.monotonic()
    root = server_root(base_url)
    last_seen = "nothing yet"

    def left() -> float:
        return timeout_s - (time.monotonic() - started)

    with _client(max(1.0, timeout_s)) as client:
        try:
            if level == 2:
                _post(client, root, "wake (weights)", "/wake_up", params={"tags": "weights"})
                rpc = _post(client, root, "reload_weights", "/collective_rpc", json={"method": "reload_weights"})
                del rpc  # 0.33: {"results": [null]} or an empty 200; a failure is a non-200
                _post(client, root, "wake (kv_cache)", "/wake_up", params={"tags": "kv_cache"})
                reset = _json_or_none(_post(client, root, "reset_prefix_cache", "/reset_prefix_cache"))
                if isinstance(reset, dict) and reset.get("success") is False:
                    last_seen = "the prefix cache was not reset (blocks still held)"
            else:
                answer = _json_or_none(_post(client, root, "wake", "/wake_up"))
                if isinstance(answer, dict) and answer.get("status") not in (None, "awake"):
                    last_seen = f"/wake_up answered {answer}"
        except SleepFailed:
            if not is_alive():
                raise ContainerExited() from None
            raise
        while True:
            sleeping = _ask_sleeping(client, root)
            # The container is asked (a Docker call) only when the server does not answer.
            if sleeping is None and not is_alive():
                raise ContainerExited()
            if sleeping is False:
                try:
                    if served_model in fetch_models(client, f"{root}/v1"):
                        return time.monotonic() - started
                    last_seen = f"awake, but /v1/models does not list {served_model!r}"
                except NotYet as exc:
                    last_seen = f"awake, /v1/models: {exc}"
            else:
                last_seen = "still sleeping" if sleeping else "no answer from /is_sleeping"
            if left() <= 0:
                raise ReadyTimeout(time.monotonic() - started, last_seen)
            time.sleep(POLL_INTERVAL_S)


class SleepControl(Protocol):
    """What the controller asks of a sleep-enabled model server (a fake in unit tests)."""

    def is_sleeping(self, base_url: str) -> bool | None: ...

    def sleep(self, base_url: str, level: int, *, timeout_s: float) -> float: ...

    def wake(
        self, base_url: str, served_model: str, level: int, *, timeout_s: float, is_alive: Callable[[], bool]
    ) -> float: ...


class HttpSleepControl:
    """vLLM's development endpoints, asked over HTTP (the functions above)."""

    def is_sleeping(self, base_url: str) -> bool | None:
        return is_sleeping(base_url)

    def sleep(self, base_url: str, level: int, *, timeout_s: float) -> float:
        return sleep(base_url, level, timeout_s=timeout_s)

    def wake(
        self, base_url: str, served_model: str, level: int, *, timeout_s: float, is_alive: Callable[[], bool]
    ) -> float:
        return wake(base_url, served_model, level, timeout_s=timeout_s, is_alive=is_alive)
