"""The container runtime's contract: what a model container is, how modelctl labels its own, and
the `Runtime` Protocol the controller is typed against.

Nothing here imports `docker`: the engine adapter is `runtime.docker_engine.DockerRuntime`, and
unit tests hand the controller a fake that keeps containers in a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import UsageError
from ..vllm import runs_vllm_server

# The labels modelctl puts on the containers it starts: how it finds them again, and what they run.
LABEL_MANAGED = "modelctl.managed"
LABEL_PROFILE = "modelctl.profile"
LABEL_PLAN_HASH = "modelctl.plan-hash"
LABEL_VERSION = "modelctl.version"
LABEL_SERVED_MODEL = "modelctl.served-model"
LABEL_PORT = "modelctl.port"
# A throwaway container modelctl runs to completion beside the model (the weights fetch): never a
# vLLM server, whatever its image, so never listed, evicted or enforced.
LABEL_ROLE = "modelctl.role"
ROLE_FETCH = "fetch"

HF_CACHE_IN_CONTAINER = "/root/.cache/huggingface"
# vLLM's cache root (VLLM_CACHE_ROOT's default, ~/.cache/vllm of the image's root user): its
# torch.compile artefacts live under torch_compile_cache/<hash of config and code>/, so one mount
# serves every model and version, and a model's second cold start loads what its first compiled.
VLLM_CACHE_IN_CONTAINER = "/root/.cache/vllm"
CONTAINER_PREFIX = "modelctl-"

# Shared memory (/dev/shm) of a model container when it keeps its own IPC namespace (the default;
# `MODELCTL_IPC=host` shares the host's instead). Docker's default of 64 MiB is too small for vLLM:
# vLLM's Docker guide (docs.vllm.ai, "Using Docker") says to give the container either
# `--ipc=host` or `--shm-size`, because PyTorch passes tensors between vLLM's processes through
# shared memory; and vLLM's multi-modal processor cache, which can live in shared memory
# (`--mm-processor-cache-type shm`), defaults to 4 GiB (`mm_processor_cache_gb`, vllm/config/
# multimodal.py). 8 GiB holds that cache with room for the tensors of images and video in flight.
# It is a limit, not an allocation: the tmpfs takes host memory only as it fills.
SHM_SIZE = "8g"


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
    # Mounted at VLLM_CACHE_IN_CONTAINER: a host directory or a volume name (None: not mounted).
    vllm_cache: str | None = None
    # The host's IPC namespace (`--ipc host`, MODELCTL_IPC=host) or the container's own with
    # `shm_size` of shared memory (the default: nothing of the host's IPC is shared).
    ipc_host: bool = False
    shm_size: str | None = SHM_SIZE
    # Values passed to the container but never printed, hashed or logged (HF_TOKEN).
    secret_env_names: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class TaskSpec:
    """A throwaway container run to completion (the weights fetch): no name, no port, no GPU; the
    Hugging Face cache mounted as for the model; removed once it has exited (or been killed)."""

    image: str
    entrypoint: list[str]
    command: list[str]
    env: dict[str, str]
    labels: dict[str, str]
    hf_cache: str


@dataclass(frozen=True)
class TaskResult:
    exit_code: int | None  # None: killed at its deadline
    log: str
    timed_out: bool = False


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
    if labels.get(LABEL_ROLE) == ROLE_FETCH:
        return False  # modelctl's weights fetch runs the profile's image, not its server
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


def foreign_name_error(holder: ContainerInfo) -> UsageError:
    """A container modelctl did not start holds a name modelctl needs: never removed, refused."""
    return UsageError(
        f"a container named {holder.name} ({holder.id[:12]}, image {holder.image or 'unknown'}, {holder.state}) "
        "exists but modelctl did not start it: it is never removed or replaced",
        hint=f"rename it (`docker rename {holder.name} OTHER-NAME`) or remove it (`docker rm -f {holder.name}`), "
        "then retry",
    )


def ensure_names_free(runtime: Runtime, *names: str) -> None:
    """Refuse (exit 2) before anything is stopped when one of modelctl's names is held by a stranger."""
    for name in names:
        holder = runtime.name_taken_by_foreign(name)
        if holder is not None:
            raise foreign_name_error(holder)


class Runtime(Protocol):
    """What the controller needs from a container engine. Every call has a deadline."""

    def vllm_containers(self, *, include_stopped: bool = False) -> list[ContainerInfo]:
        """Every vLLM server container on the engine (modelctl's and foreign), newest first."""
        ...

    def container(self, name_or_id: str) -> ContainerInfo | None: ...

    def name_taken_by_foreign(self, name: str) -> ContainerInfo | None:
        """The container (any image, any state) holding `name` when modelctl did not start it."""
        ...

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
        """Create and start a model container, replacing a stopped one of modelctl's of the same name.

        A container of that name that modelctl did not start is never removed: UsageError (exit 2).
        """
        ...

    def set_restart_policy(self, container_id: str, policy: str = "unless-stopped") -> None: ...

    def run_to_completion(
        self,
        spec: TaskSpec,
        secret_env: dict[str, str],
        timeout_s: float,
        on_line: Callable[[str], None] | None = None,
    ) -> TaskResult:
        """Run a throwaway container until it exits or `timeout_s` passes (then it is killed); its
        newest log line goes to `on_line` as it runs. The container is removed in every case,
        Ctrl-C included."""
        ...


@dataclass(frozen=True)
class StartEvent:
    """The engine started a container (its `start` event)."""

    container_id: str
    time_nano: int
    labels: dict[str, str]


class StartEvents(Protocol):
    """A live stream of start events: iterate it; close() from another thread ends the iteration."""

    def __iter__(self) -> Iterator[StartEvent]: ...

    def close(self) -> None: ...


class WatchedRuntime(Runtime, Protocol):
    """A runtime whose engine reports what happens on it (the service's enforcer reads it)."""

    def container_starts(self, since_nano: int | None = None) -> StartEvents:
        """Start events from now on (or replayed from `since_nano`, the engine's clock)."""
        ...

    def vllm_container(self, container_id: str) -> ContainerInfo | None:
        """The container if it is a vLLM server (modelctl's or foreign), else None (or gone)."""
        ...
