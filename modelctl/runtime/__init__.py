"""The container runtime's contract: what a model container is, how modelctl labels its own, and
the `Runtime` Protocol the controller is typed against.

Nothing here imports `docker`: the engine adapter is `runtime.docker_engine.DockerRuntime`, and
unit tests hand the controller a fake that keeps containers in a dict.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..vllm import runs_vllm_server

# The labels modelctl puts on the containers it starts: how it finds them again, and what they run.
LABEL_MANAGED = "modelctl.managed"
LABEL_PROFILE = "modelctl.profile"
LABEL_PLAN_HASH = "modelctl.plan-hash"
LABEL_VERSION = "modelctl.version"
LABEL_SERVED_MODEL = "modelctl.served-model"
LABEL_PORT = "modelctl.port"

HF_CACHE_IN_CONTAINER = "/root/.cache/huggingface"
CONTAINER_PREFIX = "modelctl-"


def container_name(profile: str) -> str:
    """The fixed name of a profile's container: one per profile, found again by name."""
    return f"{CONTAINER_PREFIX}{profile}"


def model_labels(*, profile: str, plan_hash: str, served_model: str, port: int, version: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_PROFILE: profile,
        LABEL_PLAN_HASH: plan_hash,
        LABEL_VERSION: version,
        LABEL_SERVED_MODEL: served_model,
        LABEL_PORT: str(port),
    }


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the runtime needs to start one model container; the docker SDK is its business."""

    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    labels: dict[str, str]
    host_ip: str
    port: int
    gpu_device_ids: list[str] | None  # None: all GPUs; []: none
    hf_cache: str
    ipc_host: bool = True
    # Values passed to the container but never printed, hashed or logged (HF_TOKEN).
    secret_env_names: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class EngineInfo:
    version: str
    nvidia_runtime: bool
    cdi: bool  # Container Device Interface specs configured (Docker >= 25)


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    state: str  # Docker's: created, running, restarting, exited, ...
    profile: str | None  # None for a container modelctl did not start
    plan_hash: str | None
    served_model: str | None
    port: int | None

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")

    @property
    def foreign(self) -> bool:
        return self.profile is None


def is_vllm_server(image: str, command: str, labels: dict[str, str]) -> bool:
    """A vLLM OpenAI server, whoever started it: modelctl, a compose file, a script, a person."""
    return labels.get(LABEL_MANAGED) == "true" or runs_vllm_server(image, command)


def container_info(*, id: str, name: str, image: str, state: str, labels: dict[str, str]) -> ContainerInfo:
    """A container as modelctl sees it: its labels read back when modelctl started it."""
    managed = labels.get(LABEL_MANAGED) == "true"
    port = labels.get(LABEL_PORT)
    return ContainerInfo(
        id=id,
        name=name,
        image=image,
        state=state,
        profile=labels.get(LABEL_PROFILE) if managed else None,
        plan_hash=labels.get(LABEL_PLAN_HASH) if managed else None,
        served_model=labels.get(LABEL_SERVED_MODEL) if managed else None,
        port=int(port) if managed and port and port.isdigit() else None,
    )


class Runtime(Protocol):
    """What the controller needs from a container engine. Every call has a deadline."""

    def vllm_containers(self, *, include_stopped: bool = False) -> list[ContainerInfo]:
        """Every vLLM server container on the engine (modelctl's and foreign), newest first."""
        ...

    def container(self, name_or_id: str) -> ContainerInfo | None: ...

    def is_running(self, container_id: str) -> bool: ...

    def exit_code(self, container_id: str) -> int | None: ...

    def container_pids(self) -> dict[int, str]:
        """Host pid -> name of the running container it belongs to."""
        ...

    def logs(self, container_id: str, tail: int | str = 200) -> str: ...

    def follow_logs(self, container_id: str, tail: int | str = 50) -> Iterator[str]: ...

    def last_log_line(self, container_id: str) -> str: ...

    def has_image(self, image: str) -> bool: ...

    def pull(self, image: str) -> None: ...

    def stop(self, containers: list[ContainerInfo], grace_s: int) -> None:
        """Stop them all (SIGTERM, grace, SIGKILL); return once they are stopped."""
        ...

    def start_existing(self, container_id: str) -> None: ...

    def rename(self, container_id: str, name: str) -> None: ...

    def remove(self, container_id: str) -> None: ...

    def run(self, spec: ContainerSpec, secret_env: dict[str, str]) -> ContainerInfo:
        """Create and start a model container, replacing a stopped one of the same name."""
        ...

    def set_restart_policy(self, container_id: str, policy: str = "unless-stopped") -> None: ...
