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
