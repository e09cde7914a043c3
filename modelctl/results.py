"""What operations return: switch results and status, typed. The CLI, the service, its client and
the JSON renderers (report.py) share these without importing the controller (or docker)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .footprints import Footprint
from .gpu import GpuBudget, GpuState
from .runtime import ContainerInfo


@dataclass
class SwitchResult:
    profile: str
    container: str
    url: str
    served_model: str
    outcome: str  # "switched", "unchanged" (already running and ready), "planned" (--dry-run)
    stopped: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0
    # Invalid profile files that were skipped (the valid ones work regardless).
    warnings: list[str] = field(default_factory=list)
    # Sleep mode: the models put to sleep (not stopped), and whether the target was woken.
    slept: list[str] = field(default_factory=list)
    woke: bool = False


@dataclass
class ActiveModel:
    profile: str
    container: str
    served_model: str | None
    ready: bool
    url: str


@dataclass(frozen=True)
class GpuHolder:
    """A process holding GPU memory, and the container it runs in (None: a host process)."""

    device: int
    pid: int
    name: str
    used_gib: float | None
    container: str | None

    def __str__(self) -> str:
        amount = f"{self.used_gib:.1f} GiB" if self.used_gib is not None else "an unknown amount"
        where = (
            f"container {self.container} (pid {self.pid} {self.name})"
            if self.container
            else f"pid {self.pid} {self.name}"
        )
        return f"{amount} held by {where}"


@dataclass
class GpuReport:
    state: GpuState
    budget: GpuBudget
    holders: list[GpuHolder] | None  # None where NVML cannot list processes (WSL2) or is absent
    # Degraded mode: memory taken by the running modelctl models, by their plans' vram_gib.
    estimated_used_gib: float | None = None
    # Sleepers: container name -> GPU memory it keeps asleep (GiB), measured through NVML by process
    # where `asleep_measured`, else the last measurement of its plan or its profile's sleep_vram_gib.
    asleep: dict[str, float] = field(default_factory=dict)
    asleep_measured: bool = False


@dataclass
class Status:
    active: ActiveModel | None
    containers: list[ContainerInfo]
    gpu: GpuReport
    footprints: dict[str, Footprint] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Container id -> asleep (True), awake (False), not sleep-enabled (None; absent: None).
    sleeping: dict[str, bool | None] = field(default_factory=dict)
    # Container id -> GPU memory a sleeper keeps (GiB), as in GpuReport.asleep.
    residual_gib: dict[str, float] = field(default_factory=dict)
