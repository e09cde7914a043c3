"""On a real NVIDIA GPU (skipped elsewhere): run with `python -m pytest -m gpu -s tests/test_gpu_real.py`.

Proves, against the real driver, that a process holding N GiB is listed with its memory, that
the wait blocks while it lives and passes right after its exit, and the plan for a 12 GiB
budget on this card. Needs PyTorch with CUDA for the allocating process.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import pytest

from modelctl.gpu import GpuBudget, NvmlGpu
from modelctl.plan import make_plan
from modelctl.profiles import Profile
from modelctl.settings import Settings

pytestmark = pytest.mark.gpu

HOLD_GIB = 2

HOLDER = f"""
import sys, torch
block = torch.empty({HOLD_GIB} * 1024**3, dtype=torch.uint8, device="cuda:0")
torch.cuda.synchronize()
print("holding", flush=True)
sys.stdin.read()  # until the test closes our stdin or kills us
"""


@pytest.fixture(scope="module")
def gpu():
    state = NvmlGpu(Settings(gpus="0")).read()
    if state.mode != "nvml":
        pytest.skip(f"no NVIDIA GPU here: {state.reason}")
    return NvmlGpu(Settings(gpus="0"))


@pytest.fixture
def holder():
    pytest.importorskip("torch")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding", "the holder could not allocate"
    yield proc
    proc.kill()
    proc.wait(timeout=30)


def test_a_process_holding_memory_is_listed_with_it(gpu, holder):
    device = gpu.read().planning_device
    print(f"\n{device.name}: total {device.total_gib:.2f} GiB, free {device.free_gib:.2f} GiB")
    if device.processes is None:
        pytest.skip("NVML cannot list processes on this machine")
    mine = [p for p in device.processes if p.pid == holder.pid]
    assert mine, f"pid {holder.pid} not among {[(p.pid, p.name) for p in device.processes]}"
    print(f"holder pid {holder.pid} ({mine[0].name}) listed with {mine[0].used_gib:.2f} GiB")
    assert mine[0].used_gib is None or mine[0].used_gib >= HOLD_GIB


def test_the_wait_blocks_while_the_holder_lives_and_passes_at_its_exit(gpu, holder):
    free_with_holder = gpu.read().planning_device.free_gib
    need = free_with_holder + HOLD_GIB * 0.9  # only reachable once the holder's memory is back
    freed, waited, _ = gpu.wait_until_free(need, timeout_s=0.5)
    assert not freed, "the memory cannot be free while the holder lives"

    exited_at: list[float] = []

    def release() -> None:
        time.sleep(0.5)
        holder.kill()
        holder.wait()
        exited_at.append(time.monotonic())

    threading.Thread(target=release).start()
    freed, waited, _ = gpu.wait_until_free(need, timeout_s=30)
    returned_at = time.monotonic()
    assert freed
    latency_ms = (returned_at - exited_at[0]) * 1000 if exited_at else float("nan")
    print(f"\nwait returned {latency_ms:.1f} ms after the holder's exit was reaped (waited {waited:.3f} s)")


def test_plan_for_a_12_gib_budget_on_this_card(gpu):
    budget = gpu.read().budget(Settings())
    profile = Profile(
        name="twelve", model="m", image="vllm/vllm-openai:v0.11.1", vram_gib=12.0, max_model_len=8192, max_num_seqs=4
    )
    plan = make_plan(profile, GpuBudget(budget.total_gib, budget.source), Settings(gpus="0"))
    expected = math.ceil(round(12.0 / budget.total_gib * 100, 6)) / 100
    print(f"\n12 GiB on {budget.source} ({budget.total_gib:.2f} GiB): --gpu-memory-utilization {plan.utilization}")
    assert plan.utilization == expected
    assert plan.utilization * budget.total_gib >= 12.0


# --- sleep mode: what a sleeper keeps -----------------------------------------------------------------

# A process that does what vLLM's sleep does to GPU memory, through the CUDA driver API alone (no
# PyTorch): its context stays, its allocations go (vLLM's CuMemAllocator unmaps weights and KV cache).
SLEEPER = f"""
import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
def ok(code):
    if code != 0:
        raise SystemExit(f"CUDA driver error {{code}}")
ok(cuda.cuInit(0))
device = ctypes.c_int()
ok(cuda.cuDeviceGet(ctypes.byref(device), 0))
context = ctypes.c_void_p()
ok(cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device))
block = ctypes.c_uint64()
ok(cuda.cuMemAlloc_v2(ctypes.byref(block), ctypes.c_size_t({HOLD_GIB} * 1024**3)))
print("awake", flush=True)
sys.stdin.readline()
ok(cuda.cuMemFree_v2(block))
print("asleep", flush=True)
sys.stdin.readline()
"""


def held_by(gpu: NvmlGpu, pid: int) -> float | None:
    device = gpu.read().planning_device
    if device.processes is None:
        pytest.skip("NVML cannot list processes on this machine")
    return next((p.used_gib for p in device.processes if p.pid == pid), None)


def test_a_sleepers_residual_is_measured_by_process(gpu):
    """What modelctl records for a sleeper (controller._record_residual): NVML's figure for its
    process once its allocations are gone - the CUDA context and what the driver keeps with it."""
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLEEPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
    except OSError as exc:
        pytest.skip(f"cannot start the sleeper: {exc}")
    try:
        if proc.stdout.readline().strip() != "awake":
            pytest.skip("libcuda.so.1 could not allocate here")
        awake = held_by(gpu, proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "asleep"
        asleep = held_by(gpu, proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    print(f"\nawake {awake} GiB, asleep (the residual) {asleep} GiB")
    if awake is None or asleep is None:
        pytest.skip("NVML lists the process without its memory here (WSL2, MIG)")
    assert awake >= HOLD_GIB
    assert 0 < asleep < 1.0, "a context without allocations keeps well under the 1 GiB sleep_vram_gib default"


def test_a_real_vllm_sleepers_residual(gpu, tmp_path):
    """With vLLM installed and MODELCTL_GPU_VLLM_MODEL naming a small local model: start it with sleep
    mode, put it to sleep at level 1 through modelctl's HTTP client, and measure what it keeps."""
    import os
    import socket

    model = os.environ.get("MODELCTL_GPU_VLLM_MODEL")
    if not model:
        pytest.skip("set MODELCTL_GPU_VLLM_MODEL to a local model directory (and install vllm)")
    from modelctl.vllm.readiness import wait_until_ready
    from modelctl.vllm.sleep import sleep, wake

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "vllm.log", "w")  # noqa: SIM115  (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model, "--port", str(port),
         "--enable-sleep-mode", "--gpu-memory-utilization", "0.3", "--max-model-len", "2048"],
        env={**os.environ, "VLLM_SERVER_DEV_MODE": "1"}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(url, model, timeout_s=600, is_alive=lambda: server.poll() is None)
        awake = sum(p.used_gib or 0 for p in gpu.read().planning_device.processes or [])
        took = sleep(url, 1, timeout_s=120)
        time.sleep(1)
        asleep = sum(p.used_gib or 0 for p in gpu.read().planning_device.processes or [])
        woke = wake(url, model, 1, timeout_s=120, is_alive=lambda: server.poll() is None)
        print(f"\nvLLM: awake {awake:.2f} GiB, asleep {asleep:.2f} GiB; sleep {took:.2f} s, wake {woke:.2f} s")
        assert asleep < awake
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
        print((tmp_path / "vllm.log").read_text()[-3000:])
