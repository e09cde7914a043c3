"""The Docker engine: the only module of modelctl that imports `docker`.

It finds every vLLM OpenAI server container (modelctl's by label, foreign ones by image or
command line), stops them, starts a model container from a ContainerSpec, and reads state and
logs. It knows nothing of profiles or plans beyond the spec and the labels.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import docker
import docker.errors
from docker.types import DeviceRequest

from ..errors import EngineUnreachableError, NotReadyError
from ..vllm.diagnosis import diagnose
from . import HF_CACHE_IN_CONTAINER, ContainerInfo, ContainerSpec, EngineInfo, container_info, is_vllm_server


class DockerRuntime:
    """Connects on first use, so that commands refused for a bad profile never need the engine."""

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._given = client

    @functools.cached_property
    def _client(self) -> docker.DockerClient:
        try:
            client = self._given or docker.from_env(timeout=30)
            client.ping()
        except docker.errors.DockerException as exc:
            host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            raise EngineUnreachableError(
                f"Docker engine unreachable at {host}: {_short(exc)}",
                hint="start Docker, or point DOCKER_HOST at a running engine",
            ) from None
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

    def follow_logs(self, container_id: str, tail: int | str = 50):
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
        """Rename a container, replacing a stopped one that holds the name."""
        holder = self.container(name)
        if holder and holder.id != container_id:
            self.remove(holder.id)
        self._api.rename(container_id, name)

    def remove(self, container_id: str) -> None:
        try:
            self._api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass

    def run(self, spec: ContainerSpec, secret_env: dict[str, str]) -> ContainerInfo:
        """Create and start the model container (replacing a stopped one of the same name).

        No restart policy yet: it is set only once the model is ready, so a crashing model is
        never restarted in a loop.
        """
        existing = self.container(spec.name)
        if existing:
            self.remove(existing.id)
        device_requests = []
        if spec.gpu_device_ids is None:
            device_requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        elif spec.gpu_device_ids:
            device_requests = [DeviceRequest(device_ids=spec.gpu_device_ids, capabilities=[["gpu"]])]
        host_config = self._api.create_host_config(
            port_bindings={f"{spec.port}/tcp": (spec.host_ip, spec.port)},
            binds=[f"{spec.hf_cache}:{HF_CACHE_IN_CONTAINER}"],
            device_requests=device_requests or None,
            ipc_mode="host" if spec.ipc_host else None,
            shm_size=None if spec.ipc_host else "8g",
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
            raise _start_failure(spec, exc) from None
        try:
            self._api.start(created["Id"])
        except docker.errors.APIError as exc:
            self.remove(created["Id"])  # never leave a half-made container behind
            raise _start_failure(spec, exc) from None
        info = self.container(created["Id"])
        assert info is not None, "a container just started must be listed"
        return info

    def set_restart_policy(self, container_id: str, policy: str = "unless-stopped") -> None:
        self._api.update_container(container_id, restart_policy={"Name": policy})


def _start_failure(spec: ContainerSpec, exc: docker.errors.APIError) -> NotReadyError:
    reason = _short(exc)
    found = diagnose(reason)
    return NotReadyError(
        f"{spec.name} could not start: {found.cause if found else reason}",
        hint=found.advice if found else None,
        log_tail=reason,
    )


def _short(exc: Exception) -> str:
    """The engine's own explanation, without docker-py's URL noise."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return explanation.decode() if isinstance(explanation, bytes) else str(explanation)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
