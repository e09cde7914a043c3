"""Fakes of the controller's outside worlds, for unit tests that need no Docker engine and no GPU.

- `FakeRuntime` keeps containers in a dict (the `Runtime` Protocol), records every call in order
  in `calls`, and fails on request: a container that exits with a given log and exit code when it
  starts, one that never becomes ready, an engine error on the Nth call of a method, a missing
  image that cannot be pulled.
- `FakeGpu` (the `GpuMonitor` Protocol) reads its memory from what the fake runtime runs: each
  running container listed in `held_gib` holds that much under its own pid; host processes hold
  memory too; a stopped container's memory can stay held for ever (a zombie). `wait_until_free`
  answers at once from the state - no real waiting. `FakeGpu.degraded()` has no NVML.
- `FakeModelServers` (the `ModelServers` Protocol) answers from the fake runtime: a running
  container whose behaviour is "ready" serves its model; "crash" has exited already
  (ContainerExited, via the controller's own `is_alive`); "hang" raises ReadyTimeout at once;
  "loading" does not answer `is_serving` yet but becomes ready when waited for.
- `FakeSleepControl` (the `SleepControl` Protocol) puts the fake runtime's containers to sleep and
  wakes them: only a container started with `--enable-sleep-mode` and `VLLM_SERVER_DEV_MODE=1`
  answers; a sleeper still lists its model (like vLLM), holds `FakeGpu.asleep_gib` instead of
  `held_gib`, and its sleep or wake fails on request (an error answer, an exit, a hang).
- `World` builds a Controller from these with a real Catalog over profiles written in tmp_path
  and real Settings (state directory in tmp_path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelctl.catalog import Catalog
from modelctl.controller import Controller
from modelctl.errors import EngineUnreachableError, NotReadyError
from modelctl.gpu import GpuDevice, GpuProcess, GpuState
from modelctl.runtime import (
    LABEL_PORT,
    LABEL_SERVED_MODEL,
    ContainerInfo,
    ContainerSpec,
    TaskResult,
    TaskSpec,
    container_info,
    is_vllm_server,
)
from modelctl.settings import Settings
from modelctl.vllm.readiness import ContainerExited, ReadyTimeout
from modelctl.vllm.sleep import SleepFailed

IMAGE = "vllm/vllm-openai:v0.11.1"
FIRST_PID = 1001


# --- behaviours: what a container does once started ----------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    kind: str  # "ready", "loading", "crash", "hang"
    log: str = ""
    exit_code: int = 0
    last_seen: str = "ConnectError"  # what a hanging server showed last


READY = Behaviour("ready", log="INFO:     Application startup complete.\n")
LOADING = Behaviour("loading", log="INFO Loading weights took 12.34 seconds\n")


def crash(log: str, exit_code: int = 1) -> Behaviour:
    """Exits as soon as it starts, leaving `log` behind."""
    return Behaviour("crash", log=log, exit_code=exit_code)


def hang(log: str = "INFO Loading model weights...\n", last_seen: str = "ConnectError") -> Behaviour:
    """Runs but never answers: the wait for it times out (at once, no real time)."""
    return Behaviour("hang", log=log, last_seen=last_seen)


@dataclass
class FakeContainer:
    id: str
    name: str
    image: str
    command: str
    labels: dict[str, str]
    port: int | None
    served_model: str | None
    behaviour: Behaviour
    seq: int  # creation order: the engine lists the newest first
    first_name: str  # the name it was created under (what FakeGpu.held_gib is keyed by)
    state: str = "created"
    pid: int | None = None
    exit_code: int | None = None
    log: str = ""
    restart_policy: str = "no"
    auto_remove: bool = False  # `docker run --rm`: removed when it stops
    sleep_mode: bool = False  # started with --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1
    asleep: bool = False
    sleep_level: int | None = None

    def info(self) -> ContainerInfo:
        return container_info(id=self.id, name=self.name, image=self.image, state=self.state, labels=self.labels)


# --- the runtime ---------------------------------------------------------------------------------

# Calls that change what runs on the engine (the rest only read).
CHANGING = {"pull", "stop", "start_existing", "rename", "remove", "run", "set_restart_policy"}


class FakeRuntime:
    """The Runtime Protocol over a dict of containers, recording each call as a tuple in `calls`."""

    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple] = []
        self.missing_images: set[str] = set()  # has_image says no; pull fetches them
        self.unpullable: dict[str, str] = {}  # image -> the registry's reason pull fails
        self.pid_owner: dict[int, str] = {}  # every pid ever started -> the first name of its container
        self.last_secret_env: dict[str, str] | None = None  # what the last run was given beside the spec
        self._behaviours: dict[str, list[Behaviour]] = {}
        self._failures: dict[str, tuple[int, BaseException]] = {}
        self._counts: dict[str, int] = {}
        self._seq = 0
        self._next_pid = FIRST_PID

    # --- knobs ---------------------------------------------------------------------------

    def will(self, name: str, *behaviours: Behaviour) -> None:
        """The next starts (run or start_existing) of a container named `name` behave so, in order."""
        self._behaviours.setdefault(name, []).extend(behaviours)

    def fail_on(self, method: str, nth: int = 1, error: BaseException | None = None) -> None:
        """The `nth` call of `method` (counted from now) raises `error` (the engine going away by
        default) before it does anything. "stop_one" counts the containers one stop call stops,
        so a failure can come in the middle of a stop."""
        self._counts[method] = 0
        self._failures[method] = (
            nth,
            error or EngineUnreachableError("Docker engine unreachable at unix:///var/run/docker.sock: gone"),
        )

    def add_foreign(
        self,
        name: str,
        *,
        image: str = IMAGE,
        command: str = "vllm serve Qwen/Qwen3-0.6B --port 8000",
        port: int | None = 8000,
        served_model: str | None = "Qwen/Qwen3-0.6B",
        behaviour: Behaviour = READY,
        auto_remove: bool = False,
        running: bool = True,
    ) -> FakeContainer:
        """A container modelctl did not start (a vLLM server, or anything else)."""
        box = self._create(name, image, command, {}, port, served_model, behaviour)
        box.auto_remove = auto_remove
        if running:
            self._start(box)
        return box

    def by_name(self, name: str) -> FakeContainer:
        return next(c for c in self.containers.values() if c.name == name)

    def running_names(self) -> list[str]:
        """The running containers, vLLM or not, sorted by name."""
        return sorted(c.name for c in self.containers.values() if c.state == "running")

    def states(self) -> dict[str, str]:
        return {c.name: c.state for c in self.containers.values()}

    def actions(self) -> list[tuple]:
        """The calls that changed something (a stop of nothing changes nothing)."""
        return [c for c in self.calls if c[0] in CHANGING and not (c[0] == "stop" and not c[1])]

    # --- internals -----------------------------------------------------------------------

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        self._maybe_fail(method)

    def _maybe_fail(self, method: str) -> None:
        if method not in self._failures:
            return
        self._counts[method] += 1
        nth, error = self._failures[method]
        if self._counts[method] == nth:
            del self._failures[method]
            raise error

    def _create(
        self,
        name: str,
        image: str,
        command: str,
        labels: dict[str, str],
        port: int | None,
        served: str | None,
        behaviour: Behaviour,
    ) -> FakeContainer:
        self._seq += 1
        box = FakeContainer(
            id=f"{self._seq:012d}" + "f" * 52,
            name=name,
            image=image,
            command=command,
            labels=dict(labels),
            port=port,
            served_model=served,
            behaviour=behaviour,
            seq=self._seq,
            first_name=name,
        )
        self.containers[box.id] = box
        return box

    def _start(self, box: FakeContainer) -> None:
        queued = self._behaviours.get(box.name)
        if queued:
            box.behaviour = queued.pop(0)
        box.log += box.behaviour.log
        box.asleep, box.sleep_level = False, None  # a (re)started vLLM is awake
        if box.behaviour.kind == "crash":
            box.state, box.pid, box.exit_code = "exited", None, box.behaviour.exit_code
            return
        box.state, box.exit_code = "running", None
        box.pid = self._next_pid
        self._next_pid += 1
        self.pid_owner[box.pid] = box.first_name

    def _find(self, name_or_id: str) -> FakeContainer | None:
        for box in self.containers.values():
            if name_or_id in (box.id, box.name):
                return box
        return None

    def _listed(self, include_stopped: bool) -> list[FakeContainer]:
        boxes = sorted(self.containers.values(), key=lambda c: -c.seq)
        return [c for c in boxes if include_stopped or c.state in ("running", "restarting")]

    # --- reading (the Protocol) -----------------------------------------------------------

    def vllm_containers(self, *, include_stopped: bool = False) -> list[ContainerInfo]:
        self._call("vllm_containers", include_stopped)
        return [c.info() for c in self._listed(include_stopped) if is_vllm_server(c.image, c.command, c.labels)]

    def container(self, name_or_id: str) -> ContainerInfo | None:
        self._call("container", name_or_id)
        box = self._find(name_or_id)
        return box.info() if box and is_vllm_server(box.image, box.command, box.labels) else None

    def name_taken_by_foreign(self, name: str) -> ContainerInfo | None:
        self._call("name_taken_by_foreign", name)
        box = self._find(name)
        return box.info() if box and box.name == name and box.info().foreign else None

    def is_running(self, container_id: str) -> bool:
        self._call("is_running", container_id)
        box = self.containers.get(container_id)
        return bool(box and box.state == "running")

    def exit_code(self, container_id: str) -> int | None:
        self._call("exit_code", container_id)
        box = self.containers.get(container_id)
        return box.exit_code if box else None

    def container_pids(self) -> dict[int, str]:
        self._call("container_pids")
        return {c.pid: c.name for c in self._listed(False) if c.pid is not None}

    def logs(self, container_id: str, tail: int | str = 200) -> str:
        self._call("logs", container_id, tail)
        box = self.containers.get(container_id)
        if box is None:
            return ""
        lines = box.log.splitlines(keepends=True)
        return "".join(lines if tail == "all" else lines[-int(tail) :])

    def follow_logs(self, container_id: str, tail: int | str = 50) -> Iterator[str]:
        self._call("follow_logs", container_id, tail)
        box = self.containers.get(container_id)
        yield from (box.log.splitlines(keepends=True)[-int(tail) :] if box else [])

    def last_log_line(self, container_id: str) -> str:
        self._call("last_log_line", container_id)
        box = self.containers.get(container_id)
        lines = [line for line in (box.log if box else "").splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def has_image(self, image: str) -> bool:
        self._call("has_image", image)
        return image not in self.missing_images

    # --- changing (the Protocol) ----------------------------------------------------------

    def pull(self, image: str) -> None:
        self._call("pull", image)
        if image in self.unpullable:
            # The docker adapter's message (runtime/docker_engine.py DockerRuntime.pull).
            raise NotReadyError(
                f"image {image} is not on this engine and could not be pulled: {self.unpullable[image]}",
                hint="check the image name and tag, or `docker pull` it",
            )
        self.missing_images.discard(image)

    def stop(self, containers: list[ContainerInfo], grace_s: int) -> None:
        self._call("stop", tuple(c.name for c in containers), grace_s)
        for info in containers:
            self._maybe_fail("stop_one")
            box = self.containers.get(info.id)
            if box is None:
                continue  # already gone: that is what we wanted
            if box.state == "running":
                box.state, box.pid, box.exit_code = "exited", None, 0
            if box.auto_remove:
                del self.containers[box.id]

    def start_existing(self, container_id: str) -> None:
        self._call("start_existing", container_id)
        box = self.containers.get(container_id)
        if box is None:
            raise NotReadyError(
                f"container {container_id[:12]} could not be started again: No such container: {container_id}"
            )
        if box.state != "running":
            self._start(box)

    def rename(self, container_id: str, name: str) -> None:
        self._call("rename", container_id, name)
        holder = self._find(name)
        if holder and holder.id != container_id:
            del self.containers[holder.id]
        self.containers[container_id].name = name

    def remove(self, container_id: str) -> None:
        self._call("remove", container_id)
        self.containers.pop(container_id, None)

    def run(self, spec: ContainerSpec, secret_env: dict[str, str]) -> ContainerInfo:
        self._call("run", spec.name)
        self.last_secret_env = dict(secret_env)
        existing = self._find(spec.name)
        if existing:
            del self.containers[existing.id]
        if spec.image in self.missing_images:
            raise NotReadyError(f"{spec.name} could not start: No such image: {spec.image}")
        box = self._create(
            spec.name,
            spec.image,
            " ".join(spec.command),
            spec.labels,
            int(spec.labels[LABEL_PORT]),
            spec.labels[LABEL_SERVED_MODEL],
            READY,
        )
        box.sleep_mode = "--enable-sleep-mode" in spec.command and spec.env.get("VLLM_SERVER_DEV_MODE") == "1"
        self._start(box)
        return box.info()

    def set_restart_policy(self, container_id: str, policy: str = "unless-stopped") -> None:
        self._call("set_restart_policy", container_id, policy)
        self.containers[container_id].restart_policy = policy

    # The weights fetch's throwaway containers (run_to_completion): what each run answers. None:
    # exit 0 with an empty log. Recorded in `calls` as ("task", mode, repos), not an action.
    task_result: Callable[[TaskSpec], TaskResult] | None = None

    def run_to_completion(
        self,
        spec: TaskSpec,
        secret_env: dict[str, str],
        timeout_s: float,
        on_line: Callable[[str], None] | None = None,
    ) -> TaskResult:
        self._call("task", spec.command[2], tuple(spec.command[3:]))
        result = self.task_result(spec) if self.task_result else TaskResult(0, "")
        for line in result.log.splitlines():
            if on_line is not None and line.strip():
                on_line(line.strip())
        return result


# --- the GPU -------------------------------------------------------------------------------------


class FakeGpu:
    """A GPU whose memory is what the fake runtime's running containers (and host processes) hold."""

    def __init__(
        self,
        runtime: FakeRuntime,
        *,
        mode: str = "nvml",
        total_gib: float = 11.99,
        held_gib: dict[str, float] | None = None,
        host: list[GpuProcess] | None = None,
        lists_processes: bool = True,
        reason: str = "MODELCTL_GPUS=none",
        name: str = "NVIDIA GeForce RTX 4070 Ti",
    ) -> None:
        self.runtime = runtime
        self.mode = mode
        self.total_gib = total_gib
        self.held_gib = dict(held_gib or {})  # container name -> GiB it holds while it runs
        self.host = list(host or [])
        self.lists_processes = lists_processes
        self.reason = reason
        self.name = name
        self.never_frees: set[str] = set()  # containers whose memory stays held once stopped
        self.asleep_gib: dict[str, float] = {}  # container name -> GiB it keeps asleep (default 0.5)
        self.hides_amounts = False  # processes listed, their memory not (some WSL2 and MIG set-ups)
        self.calls: list[tuple] = []

    @classmethod
    def degraded(cls, runtime: FakeRuntime, reason: str = "MODELCTL_GPUS=none") -> FakeGpu:
        return cls(runtime, mode="degraded", reason=reason)

    def processes(self) -> list[GpuProcess]:
        live = {c.pid: c for c in self.runtime.containers.values() if c.state == "running" and c.pid is not None}
        found = []
        for pid, first_name in self.runtime.pid_owner.items():
            if first_name in self.held_gib and (pid in live or first_name in self.never_frees):
                box = live.get(pid)
                held = self.asleep_gib.get(first_name, 0.5) if box and box.asleep else self.held_gib[first_name]
                found.append(GpuProcess(pid, "python3", held))
        return [*found, *self.host]

    def read(self) -> GpuState:
        self.calls.append(("read",))
        return self._state()

    def _state(self) -> GpuState:
        if self.mode != "nvml":
            return GpuState(mode="degraded", reason=self.reason, driver_version=None, devices=[])
        processes = self.processes()
        used = round(sum(p.used_gib or 0 for p in processes), 6)
        if self.hides_amounts:
            processes = [GpuProcess(p.pid, p.name, None) for p in processes]
        device = GpuDevice(
            index=0,
            name=self.name,
            total_gib=self.total_gib,
            free_gib=round(max(0.0, self.total_gib - used), 6),
            used_gib=used,
            processes=processes if self.lists_processes else None,
        )
        return GpuState(mode="nvml", reason="", driver_version="550.54.14", devices=[device])

    def wait_until_free(self, need_gib: float, timeout_s: float) -> tuple[bool, float, GpuState]:
        self.calls.append(("wait_until_free", round(need_gib, 4), timeout_s))
        state = self._state()
        if state.mode != "nvml":
            return True, 0.0, state
        device = state.devices[0]
        freed = device.free_gib >= need_gib
        return freed, (0.0 if freed else timeout_s), state


# --- model servers -------------------------------------------------------------------------------


class FakeModelServers:
    """`/v1/models` of the fake runtime's containers, found by the port in the URL."""

    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.calls: list[tuple] = []

    def _serving(self, base_url: str) -> FakeContainer | None:
        port = int(base_url.rstrip("/").removesuffix("/v1").rsplit(":", 1)[1])
        return next(
            (c for c in self.runtime._listed(False) if c.port == port and c.state == "running"),
            None,
        )

    def is_serving(self, base_url: str, served_model: str) -> bool:
        self.calls.append(("is_serving", base_url, served_model))
        box = self._serving(base_url)
        return bool(box and box.behaviour.kind == "ready" and box.served_model == served_model)

    def wait_until_ready(
        self,
        base_url: str,
        served_model: str,
        *,
        timeout_s: float,
        is_alive: Callable[[], bool],
        on_poll: Callable[[str], None] = lambda seen: None,
    ) -> float:
        self.calls.append(("wait_until_ready", base_url, served_model, timeout_s))
        if not is_alive():
            raise ContainerExited()
        box = self._serving(base_url)
        if box is None:
            on_poll("ConnectError")
            raise ReadyTimeout(timeout_s, "ConnectError")
        if box.behaviour.kind == "hang":
            on_poll(box.behaviour.last_seen)
            raise ReadyTimeout(timeout_s, box.behaviour.last_seen)
        if box.behaviour.kind == "loading":
            on_poll("ConnectError")
            box.behaviour = READY  # it finished loading while we waited
        if box.served_model != served_model:
            seen = f"serving [{box.served_model!r}], not {served_model!r}"
            on_poll(seen)
            raise ReadyTimeout(timeout_s, seen)
        return 0.0


# --- sleep mode ----------------------------------------------------------------------------------


class FakeSleepControl:
    """vLLM's development endpoints of the fake runtime's containers, found by the port in the URL.

    `sleep_fails` / `wake_fails`: container name -> how the next sleep / wake of it fails:
    "error" (the endpoint answers an error: SleepFailed), "exit" (the server dies: ContainerExited),
    "hang" (never awake: ReadyTimeout).
    """

    def __init__(self, runtime: FakeRuntime, host: FakeHost | None = None) -> None:
        self.runtime = runtime
        self.host = host
        self.calls: list[tuple] = []
        self.sleep_fails: dict[str, str] = {}
        self.wake_fails: dict[str, str] = {}

    def _box(self, base_url: str) -> FakeContainer | None:
        port = int(base_url.rstrip("/").removesuffix("/v1").rsplit(":", 1)[1])
        return next((c for c in self.runtime._listed(False) if c.port == port and c.state == "running"), None)

    def is_sleeping(self, base_url: str) -> bool | None:
        self.calls.append(("is_sleeping", base_url))
        box = self._box(base_url)
        return box.asleep if box and box.sleep_mode else None

    def sleep(self, base_url: str, level: int, *, timeout_s: float) -> float:
        box = self._box(base_url)
        self.calls.append(("sleep", box.name if box else base_url, level))
        if box is None or not box.sleep_mode:
            raise SleepFailed(f"sleep (level {level}): {base_url}/sleep does not exist (404)")
        failure = self.sleep_fails.pop(box.name, None)
        if failure == "exit":
            box.state, box.pid, box.exit_code = "exited", None, 1
        if failure:
            raise SleepFailed(f"sleep (level {level}): {base_url}/sleep answered HTTP 500: Internal Server Error")
        box.asleep, box.sleep_level = True, level
        if self.host is not None and self.host.after_sleep_gib is not None:
            self.host.available_gib = self.host.after_sleep_gib
        return 0.0

    def wake(
        self, base_url: str, served_model: str, level: int, *, timeout_s: float, is_alive: Callable[[], bool]
    ) -> float:
        box = self._box(base_url)
        self.calls.append(("wake", box.name if box else base_url, level))
        if box is None or not is_alive():
            raise ContainerExited()
        failure = self.wake_fails.pop(box.name, None)
        if failure == "error":
            raise SleepFailed(f"wake: {base_url}/wake_up answered HTTP 500: Internal Server Error")
        if failure == "exit":
            box.state, box.pid, box.exit_code = "exited", None, 1
            box.log += "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
            raise ContainerExited()
        if failure == "hang":
            raise ReadyTimeout(timeout_s, "still sleeping")
        box.asleep, box.sleep_level = False, None
        return 0.0


# --- the host: ports and directories ------------------------------------------------------------


class FakeHost:
    """Ports some other process listens on, the directories the controller made, host memory."""

    def __init__(self) -> None:
        self.busy_ports: set[int] = set()
        self.made: list[Path] = []
        self.unwritable: set[Path] = set()
        self.available_gib: float | None = 64.0  # MemAvailable; None: unknown
        self.after_sleep_gib: float | None = None  # what is available once a model went to sleep

    def available_memory_gib(self) -> float | None:
        return self.available_gib

    def port_in_use(self, host: str, port: int) -> bool:
        return port in self.busy_ports

    def ensure_directory(self, path: Path) -> None:
        if path in self.unwritable:
            raise PermissionError(13, "Permission denied")
        self.made.append(path)


# --- a whole world: profiles, settings, fakes and the controller ---------------------------------


@dataclass
class World:
    """Profiles in tmp_path/profiles, state in tmp_path/state, and a Controller over the fakes."""

    root: Path
    gpu_mode: str = "degraded"
    settings_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.profiles_dir.mkdir(parents=True, exist_ok=True)
        self.runtime = FakeRuntime()
        self.gpu = FakeGpu(self.runtime) if self.gpu_mode == "nvml" else FakeGpu.degraded(self.runtime)
        self.servers = FakeModelServers(self.runtime)
        self.host = FakeHost()
        self.sleep = FakeSleepControl(self.runtime, self.host)
        self.catalog = Catalog(self.profiles_dir)
        self.settings = make_settings(self.root, **self.settings_overrides)
        self.controller = Controller(
            self.settings, self.runtime, self.catalog, self.gpu, self.servers, self.host, self.sleep
        )

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def profile(self, name: str, weights_cached: bool = True, **keys: Any) -> dict[str, Any]:
        """Write a profile; its model's weights are in the HF cache (a host directory) unless
        `weights_cached=False`, when a switch's fetch phase downloads them (runtime.task_result)."""
        data = write_profile(self.profiles_dir, name, **keys)
        if weights_cached and self.settings.hf_cache.is_absolute():
            cache_weights(self.settings.hf_cache / "hub", data["model"])
        return data


def cache_weights(hub: Path, repo: str, commit: str = "c0ffee" * 6 + "c0ff") -> None:
    """A model's weights as huggingface_hub leaves them in its cache: a blob, a snapshot, a ref."""
    folder = hub / ("models--" + repo.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "blobs" / "weights").write_text("w")
    (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    link = folder / "snapshots" / commit / "model.safetensors"
    if not link.is_symlink():
        link.symlink_to("../../blobs/weights")
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


def write_profile(directory: Path, name: str, **keys: Any) -> dict[str, Any]:
    """Write `NAME.yaml` into `directory`; keys override the defaults. Returns what was written."""
    data: dict[str, Any] = {
        "name": name,
        "model": f"org/{name}",
        "image": IMAGE,
        "vram_gib": 4.0,
        "max_model_len": 4096,
        "max_num_seqs": 2,
        "port": 8000,
    }
    data.update(keys)
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def make_settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "profiles_dir": root / "profiles",
        "state_dir": root / "state",
        "hf_cache": root / "hf",
        "gpus": "none",
        "gpu_total_gib": 12.0,
        "host": "127.0.0.1",
        "stop_grace": 2,
        "release_timeout": 5.0,
        "ready_timeout": 30.0,
    }
    values.update(overrides)
    return Settings(**values)
