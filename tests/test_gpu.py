"""The GPU module at the pynvml boundary (tests/fake_nvml.py stands in for a driver)."""

from __future__ import annotations

import sys

import pynvml
import pytest
from fake_nvml import FakeDevice, FakeNvml, FakeProcess

from modelctl.gpu import NvmlGpu
from modelctl.results import GpuHolder
from modelctl.settings import Settings


def read(nvml, gpus: str = "all"):
    return NvmlGpu(Settings(gpus=gpus, gpu_total_gib=16), nvml).read()


def test_no_python_library_is_degraded(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    state = NvmlGpu(Settings(gpus="all", gpu_total_gib=16)).read()
    assert state.mode == "degraded" and "nvidia-ml-py" in state.reason
    budget = state.budget(Settings(gpu_total_gib=16))
    assert budget.total_gib == 16 and "MODELCTL_GPU_TOTAL_GIB" in budget.source


def test_no_driver_is_degraded():
    state = read(FakeNvml([], init_error=pynvml.NVMLError_DriverNotLoaded()))
    assert state.mode == "degraded" and "no NVIDIA driver or GPU" in state.reason


def test_no_device_is_degraded():
    nvml = FakeNvml([])
    assert read(nvml).reason == "NVML sees no GPU"
    assert nvml.open_sessions == 0, "every nvmlInit is paired with a shutdown"


def test_gpus_none_never_asks_nvml():
    nvml = FakeNvml([FakeDevice()], init_error=AssertionError("must not be called"))
    assert read(nvml, gpus="none").reason == "MODELCTL_GPUS=none"


def test_device_memory_and_processes():
    nvml = FakeNvml(
        [
            FakeDevice(
                free_gib=3.0,
                processes=[FakeProcess(4242, "/usr/bin/python3", 3.9)],
                graphics=[FakeProcess(1201, "Xorg", 0.25)],
            )
        ]
    )
    state = read(nvml)
    assert state.mode == "nvml" and state.driver_version == "550.54.14"
    device = state.planning_device
    assert device.name == "NVIDIA GeForce RTX 4070 Ti"
    assert device.total_gib == pytest.approx(11.99) and device.free_gib == pytest.approx(3.0)
    assert [(p.pid, p.name, round(p.used_gib, 2)) for p in device.processes] == [
        (4242, "python3", 3.9),
        (1201, "Xorg", 0.25),
    ]
    budget = state.budget(Settings())
    assert budget.total_gib == pytest.approx(11.99) and budget.source == "NVML: GPU 0 NVIDIA GeForce RTX 4070 Ti"


def test_wsl2_lists_no_processes_but_still_reads_memory():
    state = read(FakeNvml([FakeDevice(free_gib=10.0, processes=None)]))
    assert state.mode == "nvml" and state.planning_device.processes is None
    assert state.planning_device.free_gib == pytest.approx(10.0)


def test_unknown_memory_per_process():
    state = read(FakeNvml([FakeDevice(processes=[FakeProcess(77, "vllm", None)])]))
    assert state.planning_device.processes[0].used_gib is None


def test_several_gpus_and_a_selection():
    nvml = FakeNvml([FakeDevice(name="RTX 3090", total_gib=24.0), FakeDevice(name="RTX 4070 Ti", total_gib=11.99)])
    assert [d.name for d in read(nvml).devices] == ["RTX 3090", "RTX 4070 Ti"]
    second = read(nvml, gpus="1")
    assert second.planning_device.name == "RTX 4070 Ti" and second.planning_device.index == 1
    assert "names GPU 2 but NVML sees 2" in read(nvml, gpus="2").reason


def test_wait_returns_once_memory_frees_slowly():
    nvml = FakeNvml([])
    nvml.devices.append(FakeDevice(free_gib=lambda: 2.0 if nvml.memory_queries < 8 else 11.0))
    freed, waited, _ = NvmlGpu(Settings(), nvml).wait_until_free(need_gib=9.0, timeout_s=30)
    assert freed and nvml.memory_queries >= 8
    assert waited < 30
    assert nvml.open_sessions == 0


def test_wait_gives_up_on_memory_that_never_frees_and_says_who_holds_it():
    nvml = FakeNvml([FakeDevice(free_gib=2.0, processes=[FakeProcess(4242, "python", 9.5)])])
    freed, _, state = NvmlGpu(Settings(), nvml).wait_until_free(need_gib=9.0, timeout_s=0.2)
    assert not freed
    assert nvml.memory_queries > 5, "it polled, at ~10 ms intervals"
    assert state.planning_device.processes[0].pid == 4242


def test_wait_in_degraded_mode_returns_at_once():
    freed, waited, state = NvmlGpu(Settings(gpus="none"), FakeNvml([])).wait_until_free(need_gib=9.0, timeout_s=30)
    assert freed and waited < 1 and state.mode == "degraded"


def test_holder_sentence():
    assert str(GpuHolder(0, 4242, "python", 3.9, None)) == "3.9 GiB held by pid 4242 python"
    assert str(GpuHolder(0, 77, "vllm", 1.1, "ocr-worker")) == "1.1 GiB held by container ocr-worker (pid 77 vllm)"
