"""The Docker engine: the only module of modelctl that imports `docker`.

It finds every vLLM OpenAI server container (modelctl's by label, foreign ones by image or
command line), stops them, starts a model container from a ContainerSpec, reads state and logs,
and streams the engine's start events. It knows nothing of profiles or plans beyond the spec and
the labels.

Every failure of the engine's connection or API that escapes a public method - the docker SDK's
own exceptions, and the `requests` and `urllib3` errors it lets through when the daemon goes away
mid-operation - becomes one `EngineUnreachableError` (exit 5, HTTP 503) with the engine's words
and its address. That translation is made in one place, `_translate_engine_errors`, which the
class decorator `_engine_errors` wraps around every public method (generators included).
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.types import DeviceRequest

from ..errors import EngineUnreachableError, ModelctlError, NotReadyError
from ..vllm.diagnosis import diagnose
from . import (
    HF_CACHE_IN_CONTAINER,
    LABEL_MANAGED,
    VLLM_CACHE_IN_CONTAINER,
    ContainerInfo,
    ContainerSpec,
    EngineInfo,
    StartEvent,
    TaskResult,
    TaskSpec,
    container_info,
    foreign_name_error,
    is_vllm_server,
)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
TASK_POLL_S = 0.5  # how often a throwaway container (run_to_completion) is looked at, at most
# What the engine's connection can raise besides modelctl's own errors.
ENGINE_FAILURES: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    ConnectionError,  # OSError subclasses a socket raises on a stream the SDK reads itself
)

_T = TypeVar("_T")


def engine_address(base_url: str | None = None) -> str:
    """Where the engine is (DOCKER_HOST or the default socket), without any user:password@ part."""
    address = base_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    return re.sub(r"^([a-z+]+://)[^/@]*@", r"\1", address)


@contextmanager
def _translate_engine_errors(address: str) -> Iterator[None]:
    """The one place an engine failure becomes EngineUnreachableError (exit 5)."""
    try:
        yield
    except ModelctlError:
        raise
    except ENGINE_FAILURES as exc:
        if isinstance(exc, docker.errors.APIError) and exc.response is not None:
            what = f"Docker engine at {address} failed: {_short(exc)}"
        else:
            what = f"Docker engine unreachable at {address}: {_short(exc)}"
        raise EngineUnreachableError(
            what, hint="check that Docker runs (`docker info`), or point DOCKER_HOST at a running engine; then retry"
        ) from None


def _engine_call(method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self: DockerRuntime, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with _translate_engine_errors(self.address):
                yield from method(self, *args, **kwargs)

        return generator

    @functools.wraps(method)
    def call(self: DockerRuntime, *args: Any, **kwargs: Any) -> Any:
        with _translate_engine_errors(self.address):
            return method(self, *args, **kwargs)

    return call


def _engine_errors(cls: type[_T]) -> type[_T]:
    """Wrap every public method of the class in the translation of engine failures."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, _engine_call(member))
    return cls


@_engine_errors
class DockerRuntime:
    """Connects on first use, so that commands refused for a bad profile never need the engine.

    `base_url` names an engine other than DOCKER_HOST's (tests); `client` hands one in ready-made.
    """

    def __init__(self, client: docker.DockerClient | None = None, *, base_url: str | None = None) -> None:
        self._given = client
        self._base_url = base_url
        self.address = engine_address(base_url)

    @functools.cached_property
    def _client(self) -> docker.DockerClient:
        with _translate_engine_errors(self.address):
            if self._given is not None:
                client = self._given
            elif self._base_url is not None:
                client = docker.DockerClient(base_url=self._base_url, timeout=30)
            else:
                client = docker.from_env(timeout=30)
            client.ping()
        return client

    @property
    def _api(self) -> docker.APIClient:
        return self._client.api

    # --- reading -------------------------------------------------------------------------

    def engine_info(self) -> EngineInfo:
        info = self._client.info()
        return EngineInfo(
            version=info.get("ServerVersion", "unknown"),
            nvidia_runtime="nvidia" in (info.get("Runtimes") or {}),
            cdi=bool(info.get("CDISpecDirs")),
        )

    def vllm_containers(self, *, include_stopped: bool = False) -> list[ContainerInfo]:
        """Every vLLM server container on the engine; one list call, no per-container inspect."""
        found = []
        for row in self._api.containers(all=include_stopped):
            labels = row.get("Labels") or {}
            if not is_vllm_server(row.get("Image", ""), row.get("Command", ""), labels):
                continue
            found.append(
                container_info(
                    id=row["Id"],
                    name=(row.get("Names") or ["/?"])[0].lstrip("/"),
                    image=row.get("Image", ""),
                    state=row.get("State", "unknown"),
                    labels=labels,
                )
            )
        return found

    def container(self, name_or_id: str) -> ContainerInfo | None:
        for info in self.vllm_containers(include_stopped=True):
            if name_or_id in (info.id, info.name) or info.id.startswith(name_or_id):
                return info
        return None

    def name_taken_by_foreign(self, name: str) -> ContainerInfo | None:
        """The container holding exactly `name` (any image, any state) unless modelctl started it."""
        found = self._inspect(name)
        if found is None:
            return None
        info, labels, _ = found
        if info.name != name or labels.get(LABEL_MANAGED) == "true":
            return None
        return info

    def vllm_container(self, container_id: str) -> ContainerInfo | None:
        """The container if it runs a vLLM server (modelctl's or foreign); None if not, or gone."""
        found = self._inspect(container_id)
        if found is None:
            return None
        info, labels, command = found
        return info if is_vllm_server(info.image, command, labels) else None

    def _inspect(self, name_or_id: str) -> tuple[ContainerInfo, dict[str, str], str] | None:
        try:
            attrs = self._api.inspect_container(name_or_id)
        except docker.errors.NotFound:
            return None
        config = attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        command = " ".join([attrs.get("Path") or "", *(attrs.get("Args") or [])]).strip()
        info = container_info(
            id=attrs["Id"],
            name=(attrs.get("Name") or "/?").lstrip("/"),
            image=config.get("Image", ""),
            state=(attrs.get("State") or {}).get("Status", "unknown"),
            labels=labels,
        )
        return info, labels, command

    def is_running(self, container_id: str) -> bool:
        try:
            state = self._api.inspect_container(container_id)["State"]
        except docker.errors.NotFound:
            return False
        return bool(state.get("Running")) and not state.get("Restarting")

    def exit_code(self, container_id: str) -> int | None:
        try:
            return self._api.inspect_container(container_id)["State"].get("ExitCode")
        except docker.errors.NotFound:
            return None

    def container_pids(self) -> dict[int, str]:
        """Host pid -> name of the running container it belongs to (any container, not only vLLM)."""
        pids: dict[int, str] = {}
        for row in self._api.containers():
            name = (row.get("Names") or ["/?"])[0].lstrip("/")
            try:
                top = self._api.top(row["Id"])
            except docker.errors.APIError:
                continue  # it stopped meanwhile
            column = top["Titles"].index("PID")
            for process in top.get("Processes") or []:
                pids[int(process[column])] = name
        return pids

    def logs(self, container_id: str, tail: int | str = 200) -> str:
        try:
            raw = self._api.logs(container_id, stdout=True, stderr=True, tail=tail)
        except docker.errors.NotFound:
            return ""
        return raw.decode("utf-8", errors="replace")

    def follow_logs(self, container_id: str, tail: int | str = 50) -> Iterator[str]:
        """Yield log text as the container writes it, until it stops."""
        for chunk in self._api.logs(container_id, stdout=True, stderr=True, tail=tail, stream=True, follow=True):
            yield chunk.decode("utf-8", errors="replace")

    def last_log_line(self, container_id: str) -> str:
        lines = [line for line in self.logs(container_id, tail=5).splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def volume_exists(self, name: str) -> bool:
        try:
            self._api.inspect_volume(name)
            return True
        except docker.errors.NotFound:
            return False

    def volume_size(self, name: str) -> int | None:
        """Bytes a volume holds, as `docker system df -v` shows them; None when the engine does not
        say (it computes sizes only for local volumes) or the volume does not exist."""
        for volume in self._api.df().get("Volumes") or []:
            if volume.get("Name") == name:
                size = (volume.get("UsageData") or {}).get("Size")
                return size if isinstance(size, int) and size >= 0 else None
        return None

    # --- events --------------------------------------------------------------------------

    def container_starts(self, since_nano: int | None = None) -> _StartEvents:
        """The engine's container start events from now on, or replayed from `since_nano`."""
        since = f"{since_nano // 1_000_000_000}.{since_nano % 1_000_000_000:09d}" if since_nano else None
        stream = self._api.events(since=since, filters={"type": "container", "event": "start"}, decode=True)
        return _StartEvents(stream, self.address)

    # --- images --------------------------------------------------------------------------

    def has_image(self, image: str) -> bool:
        try:
            self._api.inspect_image(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def pull(self, image: str) -> None:
        """Pull a missing image; a failure names the image and the engine's reason."""
        repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        try:
            self._client.images.pull(repository, tag=tag)
        except docker.errors.APIError as exc:
            reason = _short(exc)
            found = diagnose(reason)
            raise NotReadyError(
                f"image {image} is not on this engine and could not be pulled: {reason}",
                hint=found.advice if found else "check the image name and tag, or `docker pull` it",
            ) from None

    # --- changing ------------------------------------------------------------------------

    def stop(self, containers: list[ContainerInfo], grace_s: int) -> None:
        """Stop all of them at once: SIGTERM, `grace_s` seconds, then SIGKILL; return when stopped."""
        if not containers:
            return
        with ThreadPoolExecutor(max_workers=len(containers)) as pool:
            list(pool.map(lambda info: self._stop_one(info.id, grace_s), containers))

    def _stop_one(self, container_id: str, grace_s: int) -> None:
        try:
            self._api.stop(container_id, timeout=grace_s)
            # stop returns once the process is gone; wait confirms the engine agrees.
            self._api.wait(container_id, timeout=grace_s + 30, condition="not-running")
        except docker.errors.NotFound:
            pass  # already gone: that is what we wanted

    def start_existing(self, container_id: str) -> None:
        try:
            self._api.start(container_id)
        except docker.errors.APIError as exc:  # e.g. gone: a --rm container is removed by its stop
            raise NotReadyError(f"container {container_id[:12]} could not be started again: {_short(exc)}") from None

    def rename(self, container_id: str, name: str) -> None:
        """Rename a container, replacing a stopped one of modelctl's that holds the name.

        A container modelctl did not start that holds the name is never removed (UsageError).
        """
        self._free_name(name, keep=container_id)
        self._api.rename(container_id, name)

    def remove(self, container_id: str) -> None:
        try:
            self._api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass

    def run(self, spec: ContainerSpec, secret_env: dict[str, str]) -> ContainerInfo:
        """Create and start the model container (replacing a stopped one of modelctl's of the same name).

        A container of that name that modelctl did not start is refused (UsageError, exit 2), never
        removed. No restart policy yet: it is set only once the model is ready, so a crashing model
        is never restarted in a loop.
        """
        self._free_name(spec.name)
        device_requests = []
        if spec.gpu_device_ids is None:
            device_requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        elif spec.gpu_device_ids:
            device_requests = [DeviceRequest(device_ids=spec.gpu_device_ids, capabilities=[["gpu"]])]
        binds = [f"{spec.hf_cache}:{HF_CACHE_IN_CONTAINER}"]
        if spec.vllm_cache:  # a volume name is created by the engine on first use
            binds.append(f"{spec.vllm_cache}:{VLLM_CACHE_IN_CONTAINER}")
        host_config = self._api.create_host_config(
            port_bindings={f"{spec.port}/tcp": (spec.host_ip, spec.port)},
            binds=binds,
            device_requests=device_requests or None,
            ipc_mode="host" if spec.ipc_host else "private",
            shm_size=None if spec.ipc_host else spec.shm_size,
        )
        try:
            created = self._api.create_container(
                image=spec.image,
                command=spec.command,
                name=spec.name,
                environment={**spec.env, **secret_env},
                labels=spec.labels,
                ports=[spec.port],
                host_config=host_config,
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and (holder := self.name_taken_by_foreign(spec.name)):
                raise foreign_name_error(holder) from None  # created by someone since the check
            raise _start_failure(spec, exc) from None
        try:
            self._api.start(created["Id"])
        except docker.errors.APIError as exc:
            self.remove(created["Id"])  # never leave a half-made container behind
            raise _start_failure(spec, exc) from None
        info = self.container(created["Id"])
        assert info is not None, "a container just started must be listed"
        return info

    def _free_name(self, name: str, keep: str | None = None) -> None:
        """Remove modelctl's own container holding `name`; refuse one modelctl did not start."""
        holder = self.name_taken_by_foreign(name)
        if holder is not None:
            raise foreign_name_error(holder)
        mine = self.container(name)
        if mine and mine.name == name and mine.id != keep:
            self.remove(mine.id)

    def set_restart_policy(self, container_id: str, policy: str = "unless-stopped") -> None:
        self._api.update_container(container_id, restart_policy={"Name": policy})

    def run_to_completion(
        self,
        spec: TaskSpec,
        secret_env: dict[str, str],
        timeout_s: float,
        on_line: Callable[[str], None] | None = None,
    ) -> TaskResult:
        """Run a throwaway container to its end, or kill it at `timeout_s`; always removed after.

        Polled (inspect, then the log's last line) every TASK_POLL_S at most, sooner at first so
        that a quick one (the cache check) is seen to end within tens of milliseconds.
        """
        host_config = self._api.create_host_config(binds=[f"{spec.hf_cache}:{HF_CACHE_IN_CONTAINER}"])
        try:
            created = self._api.create_container(
                image=spec.image,
                entrypoint=spec.entrypoint,
                command=spec.command,
                environment={**spec.env, **secret_env},
                labels=spec.labels,
                host_config=host_config,
            )
        except docker.errors.APIError as exc:
            raise NotReadyError(f"could not create a container of {spec.image}: {_short(exc)}") from None
        container_id = created["Id"]
        try:
            self._api.start(container_id)
            deadline = time.monotonic() + timeout_s
            pause, shown = 0.02, ""
            while True:
                state = self._api.inspect_container(container_id)["State"]
                if not state.get("Running"):
                    return TaskResult(state.get("ExitCode"), self.logs(container_id, tail=200))
                if on_line is not None:
                    line = self.last_log_line(container_id)
                    if line and line != shown:
                        shown = line
                        on_line(line)
                if time.monotonic() >= deadline:
                    self._api.kill(container_id)
                    return TaskResult(None, self.logs(container_id, tail=200), timed_out=True)
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, TASK_POLL_S)
        finally:
            self.remove(container_id)  # force: kills it first when it still runs (Ctrl-C)


class _StartEvents:
    """Start events read from the engine's event stream; close() ends the iteration from any thread."""

    def __init__(self, stream: Any, address: str) -> None:
        self._stream = stream
        self._address = address
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[StartEvent]:
        with _translate_engine_errors(self._address):
            for event in self._stream:
                actor = event.get("Actor") or {}
                container_id = actor.get("ID") or event.get("id")
                if event.get("Action", event.get("status")) != "start" or not container_id:
                    continue
                time_nano = int(event.get("timeNano") or int(event.get("time") or 0) * 1_000_000_000)
                yield StartEvent(container_id, time_nano, dict(actor.get("Attributes") or {}))
        # The stream ended: closed by us, or the engine went away (the SDK swallows that).
        if not self._closed.is_set():
            raise EngineUnreachableError(f"Docker engine at {self._address} ended its event stream")

    def close(self) -> None:
        self._closed.set()
        try:
            self._stream.close()
        except (OSError, *ENGINE_FAILURES):
            pass  # already closed or broken: either way it ends


def _start_failure(spec: ContainerSpec, exc: docker.errors.APIError) -> NotReadyError:
    reason = _short(exc)
    found = diagnose(reason)
    return NotReadyError(
        f"{spec.name} could not start: {found.cause if found else reason}",
        hint=found.advice if found else None,
        log_tail=reason,
    )


def _short(exc: BaseException) -> str:
    """The engine's own explanation, without docker-py's URL noise."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return explanation.decode() if isinstance(explanation, bytes) else str(explanation)
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
