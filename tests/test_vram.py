"""VRAM admission on a real engine, with NVML simulated (CI has no GPU).

A SimulatedCard plays the driver: each running modelctl container holds its profile's GiB
under its real host pid (so modelctl's pid -> container mapping is exercised for real), host
processes can hold memory too, and a stopped container's memory can linger for a while or for
ever, the way a driver gives memory back late or a zombie keeps it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import running_vllm
from fake_nvml import FakeDevice, FakeNvml, FakeProcess

from modelctl.catalog import Catalog
from modelctl.controller import Controller
from modelctl.errors import DoesNotFitError
from modelctl.gpu import NvmlGpu
from modelctl.runtime.docker_engine import DockerRuntime
from modelctl.settings import Settings

pytestmark = pytest.mark.engine

TOTAL_GIB = 11.99


class SimulatedCard:
    def __init__(self, engine, held_gib: dict[str, float], host: list[FakeProcess] = (), linger_queries: int = 0):
        self.engine = engine
        self.held_gib = held_gib  # container name -> GiB it holds while it runs
        self.host = list(host)
        self.linger_queries = linger_queries  # -1: a stopped container's memory never comes back
        self.seen: dict[int, str] = {}  # every container pid seen running -> its name
        self.frees_at: dict[int, int] = {}  # pid of a stopped container -> query count it frees at
        self.nvml = FakeNvml([FakeDevice(total_gib=TOTAL_GIB, free_gib=self.free, processes=self.processes)])

    def processes(self) -> list[FakeProcess]:
        running = {c.attrs["State"]["Pid"]: c.name for c in self.engine.containers.list() if c.name in self.held_gib}
        self.seen.update(running)
        now = self.nvml.memory_queries
        holding = dict(running)
        for pid, name in self.seen.items():
            if pid not in running:
                frees_at = self.frees_at.setdefault(pid, now + self.linger_queries)
                if self.linger_queries < 0 or now < frees_at:
                    holding[pid] = name  # the driver has not given it back yet
        return [*(FakeProcess(pid, "python3", self.held_gib[name]) for pid, name in holding.items()), *self.host]

    def free(self) -> float:
        return max(0.0, TOTAL_GIB - sum(p.used_gib or 0 for p in self.processes()))


@pytest.fixture
def controller_for(engine, workspace):
    def make(card: SimulatedCard, **settings) -> Controller:
        base = dict(
            profiles_dir=workspace.profiles_dir,
            state_dir=workspace.state_dir,
            hf_cache=workspace.root / "hf",
            gpus="none",
            stop_grace=2,
            release_timeout=5,
        )
        base.update(settings)
        config = Settings(**base)
        # NVML reads the (simulated) GPU; the containers themselves request none, as CI has none.
        gpu = NvmlGpu(Settings(gpus="all"), card.nvml)
        return Controller(config, DockerRuntime(), Catalog(workspace.profiles_dir), gpu)

    return make


def test_host_process_holding_memory_refuses_before_anything_stops(engine, workspace, controller_for):
    workspace.profile("demo-a")
    workspace.profile("demo-b", vram_gib=5.0)
    card = SimulatedCard(
        engine, {"modelctl-demo-a": 4.0, "modelctl-demo-b": 5.0}, host=[FakeProcess(4242, "python", 7.0)]
    )
    controller = controller_for(card)
    controller.switch("demo-a")
    first = engine.containers.get("modelctl-demo-a").id
    with pytest.raises(DoesNotFitError) as caught:
        controller.switch("demo-b")
    message = caught.value.message
    assert "demo-b needs 5.64 GiB free to start" in message and "only 4.99 GiB of 11.99 GiB" in message
    assert "7.0 GiB held by pid 4242 python" in message
    assert caught.value.exit_code == 3
    assert running_vllm(engine) == ["modelctl-demo-a"] and engine.containers.get("modelctl-demo-a").id == first


def test_switch_waits_until_the_memory_is_really_free(engine, workspace, controller_for):
    workspace.profile("demo-a")
    workspace.profile("demo-b", vram_gib=8.0)
    card = SimulatedCard(engine, {"modelctl-demo-a": 4.0, "modelctl-demo-b": 8.0}, linger_queries=25)
    controller = controller_for(card)
    controller.switch("demo-a")
    before = card.nvml.memory_queries
    result = controller.switch("demo-b")
    assert result.outcome == "switched"
    assert list(result.phases).index("release") < list(result.phases).index("start")
    assert card.nvml.memory_queries - before >= 25, "it polled until the driver gave the memory back"
    assert running_vllm(engine) == ["modelctl-demo-b"]


def test_memory_that_never_frees_fails_naming_the_holder_and_rolls_back(engine, workspace, controller_for):
    workspace.profile("demo-a")
    workspace.profile("demo-b", vram_gib=8.0)
    card = SimulatedCard(engine, {"modelctl-demo-a": 4.0, "modelctl-demo-b": 8.0}, linger_queries=-1)
    controller = controller_for(card, release_timeout=0.3)
    controller.switch("demo-a")
    ghost = engine.containers.get("modelctl-demo-a").attrs["State"]["Pid"]
    with pytest.raises(DoesNotFitError) as caught:
        controller.switch("demo-b")
    message = caught.value.message
    assert "GPU memory did not come free within 0.3 s: demo-b needs 8.63 GiB free" in message
    assert f"4.0 GiB held by pid {ghost} python3" in message
    assert "rolled back to demo-a" in message
    assert running_vllm(engine) == ["modelctl-demo-a"]


def test_measured_footprint_is_recorded_and_a_big_one_warned(engine, workspace, controller_for):
    workspace.profile("demo-a", vram_gib=4.0)
    card = SimulatedCard(engine, {"modelctl-demo-a": 5.25})
    controller_for(card).switch("demo-a")
    recorded = json.loads(Path(workspace.state_dir / "footprints.json").read_text())
    assert recorded["demo-a"]["measured_gib"] == 5.25 and recorded["demo-a"]["vram_gib"] == 4.0
    status = workspace.cli("status")
    assert "demo-a measured 5.25 GiB, more than its vram_gib 4" in status.stdout
    show = workspace.cli_json("show", "demo-a")
    assert show["measured_gib"] == 5.25


def test_degraded_mode_says_so_and_estimates_use(engine, workspace):
    workspace.profile("demo-a", vram_gib=4.0)
    workspace.cli_json("switch", "demo-a")
    gpu = workspace.cli_json("gpu")
    assert gpu["mode"] == "degraded" and gpu["reason"] == "MODELCTL_GPUS=none"
    assert gpu["estimated_used_gib"] == 4.0 and gpu["processes"] is None
    text = workspace.cli("gpu").stdout
    assert "no GPU reading (MODELCTL_GPUS=none) - degraded mode, planning for 12 GiB" in text
    status = workspace.cli_json("status")
    assert status["gpu"]["mode"] == "degraded"


def test_tier_follows_the_gpu_size(workspace):
    workspace.profile(
        "demo-a",
        vram_gib=4.0,
        tiers={
            12: {"vram_gib": 4.0, "max_model_len": 4096, "max_num_seqs": 2},
            16: {"vram_gib": 6.0, "max_model_len": 8192, "max_num_seqs": 4},
        },
    )
    small = workspace.cli_json("show", "demo-a", env={"MODELCTL_GPU_TOTAL_GIB": "12"})
    big = workspace.cli_json("show", "demo-a", env={"MODELCTL_GPU_TOTAL_GIB": "16"})
    assert (small["tier"], small["max_model_len"], small["gpu_memory_utilization"]) == (12, 4096, 0.34)
    assert (big["tier"], big["max_model_len"], big["gpu_memory_utilization"]) == (16, 8192, 0.38)
    assert "tier 16 GiB" in workspace.cli("show", "demo-a", env={"MODELCTL_GPU_TOTAL_GIB": "16"}).stdout


def test_doctor_without_a_gpu_says_so_and_works(engine, workspace):
    workspace.profile("demo-a")
    done = workspace.cli("doctor", "--json")
    report = json.loads(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["docker engine"]["status"] == "ok"
    assert checks["nvml"]["status"] == "warn" and "no GPU" in checks["nvml"]["detail"]
    assert checks["gpu in containers"]["status"] == "warn"
    assert checks["profile demo-a"]["status"] == "ok"
    assert done.returncode == 0, "warnings are not failures"
    text = workspace.cli("doctor").stdout
    assert "no GPU: MODELCTL_GPUS=none" in text
