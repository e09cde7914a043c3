"""A stand-in for the `pynvml` module, for machines without an NVIDIA GPU (CI).

It answers the calls modelctl/gpu.py makes with the types pynvml returns (memory in bytes with
total/free/used, process records with pid/usedGpuMemory, str names) and raises pynvml's own
exception classes, so the except clauses under test are the real ones. Memory and processes
may be callables, to model memory that frees over time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml

GIB = 1024**3

NVMLError = pynvml.NVMLError
NVMLError_NotSupported = pynvml.NVMLError_NotSupported


@dataclass
class FakeProcess:
    pid: int
    name: str
    used_gib: float | None


@dataclass
class FakeDevice:
    name: str = "NVIDIA GeForce RTX 4070 Ti"
    total_gib: float = 11.99  # 12282 MiB, as the card reports itself
    # Free memory now; a callable is asked on every memory query.
    free_gib: float | Callable[[], float] = 11.5
    # None: NVML cannot list processes here (WSL2 answers NVMLError_NotSupported).
    processes: list[FakeProcess] | Callable[[], list[FakeProcess]] | None = field(default_factory=list)
    graphics: list[FakeProcess] = field(default_factory=list)


class FakeNvml:
    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported

    def __init__(self, devices: list[FakeDevice], *, driver: str = "550.54.14", init_error: Exception | None = None):
        self.devices = devices
        self.driver = driver
        self.init_error = init_error
        self.memory_queries = 0
        self.open_sessions = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.open_sessions += 1

    def nvmlShutdown(self) -> None:
        self.open_sessions -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        if index >= len(self.devices):
            raise pynvml.NVMLError_InvalidArgument()
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str:
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> SimpleNamespace:
        self.memory_queries += 1
        free = handle.free_gib() if callable(handle.free_gib) else handle.free_gib
        total = int(handle.total_gib * GIB)
        return SimpleNamespace(total=total, free=int(free * GIB), used=total - int(free * GIB))

    def _records(self, processes: list[FakeProcess]) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(pid=p.pid, usedGpuMemory=None if p.used_gib is None else int(p.used_gib * GIB))
            for p in processes
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[SimpleNamespace]:
        if handle.processes is None:
            raise pynvml.NVMLError_NotSupported()
        processes = handle.processes() if callable(handle.processes) else handle.processes
        return self._records(processes)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeDevice) -> list[SimpleNamespace]:
        if handle.processes is None:
            raise pynvml.NVMLError_NotSupported()
        return self._records(handle.graphics)

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        for device in self.devices:
            found = device.processes() if callable(device.processes) else device.processes or []
            for p in [*found, *device.graphics]:
                if p.pid == pid:
                    return p.name
        raise pynvml.NVMLError_NotFound()
