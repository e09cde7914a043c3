"""The GPU: the only module that imports `pynvml` (from nvidia-ml-py).

It reads the GPUs in MODELCTL_GPUS - name, total, free and used memory, driver version and
the processes holding memory - and waits, polling every 10 ms, until enough memory is free.
Where NVML is missing (no driver, no GPU, MODELCTL_GPUS=none) it reports a degraded mode and
the caller plans for MODELCTL_GPU_TOTAL_GIB; where NVML cannot list processes (WSL2,
NVMLError_NotSupported) the device is read but `processes` is None.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from .settings import Settings

GIB = 1024**3
POLL_INTERVAL_S = 0.01  # an NVML memory query costs microseconds


@dataclass(frozen=True)
class GpuBudget:
    """The GPU memory a plan is made for, and where the figure came from."""

    total_gib: float
    source: str  # e.g. "assumed (MODELCTL_GPU_TOTAL_GIB)" or "NVML: NVIDIA GeForce RTX 4070 Ti"


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used_gib: float | None  # None where the driver does not say (some WSL2 and MIG set-ups)


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    total_gib: float
    free_gib: float
    used_gib: float
    processes: list[GpuProcess] | None  # None: NVML cannot list them here


@dataclass(frozen=True)
class GpuState:
    mode: str  # "nvml" or "degraded"
    reason: str  # why degraded, or "" when NVML answers
    driver_version: str | None
    devices: list[GpuDevice]

    @property
    def planning_device(self) -> GpuDevice | None:
        """vLLM without tensor parallelism runs on the first visible device: plan for that one."""
        return self.devices[0] if self.devices else None

    def budget(self, settings: Settings) -> GpuBudget:
        device = self.planning_device
        if device is None:
            return GpuBudget(
                total_gib=settings.gpu_total_gib, source=f"assumed (MODELCTL_GPU_TOTAL_GIB): {self.reason}"
            )
        return GpuBudget(total_gib=device.total_gib, source=f"NVML: GPU {device.index} {device.name}")


def load_nvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class GpuMonitor(Protocol):
    """What the controller needs from the GPU (NvmlGpu, or a fake in unit tests)."""

    def read(self) -> GpuState: ...

    def wait_until_free(self, need_gib: float, timeout_s: float) -> tuple[bool, float, GpuState]:
        """Wait until the planning device has `need_gib` free: (freed?, seconds waited, last state)."""
        ...


class NvmlGpu:
    """Reads the selected GPUs through an NVML module (pynvml, or a fake of it in unit tests)."""

    def __init__(self, settings: Settings, nvml: ModuleType | None = None, *, use_nvml: bool = True) -> None:
        self.settings = settings
        self.nvml = (nvml or load_nvml()) if use_nvml else None

    def read(self) -> GpuState:
        if self.settings.gpu_device_ids == []:
            return _degraded("MODELCTL_GPUS=none")
        if self.nvml is None:
            return _degraded("nvidia-ml-py (pynvml) is not installed")
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return _degraded(f"NVML unavailable: {exc} (no NVIDIA driver or GPU visible here)")
        try:
            count = nvml.nvmlDeviceGetCount()
            if count == 0:
                return _degraded("NVML sees no GPU")
            wanted = self.settings.gpu_device_ids
            indices = range(count) if wanted is None else [int(i) for i in wanted]
            missing = [i for i in indices if i >= count]
            if missing:
                return _degraded(f"MODELCTL_GPUS names GPU {missing[0]} but NVML sees {count}")
            return GpuState(
                mode="nvml",
                reason="",
                driver_version=_text(nvml.nvmlSystemGetDriverVersion()),
                devices=[self._device(i) for i in indices],
            )
        except nvml.NVMLError as exc:
            return _degraded(f"NVML error: {exc}")
        finally:
            _shutdown(nvml)

    def _device(self, index: int) -> GpuDevice:
        nvml = self.nvml
        assert nvml is not None
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return GpuDevice(
            index=index,
            name=_text(nvml.nvmlDeviceGetName(handle)),
            total_gib=memory.total / GIB,
            free_gib=memory.free / GIB,
            used_gib=memory.used / GIB,
            processes=self._processes(handle),
        )

    def _processes(self, handle: object) -> list[GpuProcess] | None:
        nvml = self.nvml
        assert nvml is not None
        try:
            found = [
                *nvml.nvmlDeviceGetComputeRunningProcesses(handle),
                *nvml.nvmlDeviceGetGraphicsRunningProcesses(handle),
            ]
        except nvml.NVMLError_NotSupported:
            return None  # WSL2: memory is reported, its holders are not
        by_pid: dict[int, GpuProcess] = {}
        for proc in found:
            used = proc.usedGpuMemory
            previous = by_pid.get(proc.pid)
            total = (used or 0) + (previous.used_gib * GIB if previous and previous.used_gib else 0)
            by_pid[proc.pid] = GpuProcess(
                proc.pid, self._process_name(proc.pid), total / GIB if used is not None else None
            )
        return sorted(by_pid.values(), key=lambda p: -(p.used_gib or 0))

    def _process_name(self, pid: int) -> str:
        nvml = self.nvml
        assert nvml is not None
        try:
            return _text(nvml.nvmlSystemGetProcessName(pid)).rsplit("/", 1)[-1]
        except nvml.NVMLError:
            return "?"  # a process in another PID namespace, or gone already

    def wait_until_free(self, need_gib: float, timeout_s: float) -> tuple[bool, float, GpuState]:
        """Poll until the planning device has `need_gib` free; (freed?, seconds waited, last state).

        In degraded mode there is nothing to poll: it returns at once, freed=True.
        """
        started = time.monotonic()
        state = self.read()
        if state.mode != "nvml":
            return True, 0.0, state
        nvml = self.nvml
        assert nvml is not None
        index = state.devices[0].index
        try:
            nvml.nvmlInit()
        except nvml.NVMLError:
            return True, time.monotonic() - started, state  # the driver went away: nothing to wait on
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            freed = Retrying(
                retry=retry_if_result(lambda enough: not enough),
                stop=stop_after_delay(timeout_s),
                wait=wait_fixed(POLL_INTERVAL_S),
                retry_error_callback=lambda _: False,  # out of time: not freed
            )(lambda: nvml.nvmlDeviceGetMemoryInfo(handle).free / GIB >= need_gib)
        finally:
            _shutdown(nvml)
        waited = time.monotonic() - started
        return freed, waited, (state if freed else self.read())


def _degraded(reason: str) -> GpuState:
    return GpuState(mode="degraded", reason=reason, driver_version=None, devices=[])


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _shutdown(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except nvml.NVMLError:
        pass
