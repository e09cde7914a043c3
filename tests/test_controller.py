"""The controller, driven through its Protocols with fakes (tests/fakes.py): no engine, no GPU.

The integration tests (test_switch.py, test_vram.py) show the same behaviours on a real engine;
these pin the algorithm: what is called in which order, what a failure leaves running, and what
the messages say. Expected values are written out literally.
"""

from __future__ import annotations

import json
import logging

import pytest
from fakes import LOADING, World, crash, hang

from modelctl.errors import (
    DoesNotFitError,
    EngineUnreachableError,
    Interrupted,
    ModelctlError,
    NotReadyError,
    ProfileError,
    UsageError,
)
from modelctl.footprints import Footprint
from modelctl.gpu import GpuBudget, GpuProcess
from modelctl.progress import PhaseClock
from modelctl.results import ActiveModel, GpuHolder

OOM_LOG = (
    "INFO 05-01 10:00:00 Loading model weights took 1.02 GiB\n"
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}\n"
)
NO_CACHE_LOG = "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`.\n"
OOM_CAUSE = "CUDA ran out of memory while the model loaded or profiled"


def cid(n: int) -> str:
    """The id the fake runtime gives its n-th container."""
    return f"{n:012d}" + "f" * 52


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ("HF_TOKEN", "MODELCTL_HF_TOKEN", "MODELCTL_STATE_DIR", "MODELCTL_HOST", "MODELCTL_GPUS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def world(tmp_path) -> World:
    """Degraded GPU (MODELCTL_GPUS=none, 12 GiB assumed); demo-a on 8001, demo-b on 8002."""
    w = World(tmp_path)
    w.profile("demo-a", port=8001)
    w.profile("demo-b", port=8002)
    return w


@pytest.fixture
def nvml(tmp_path) -> World:
    """An NVML GPU of 11.99 GiB; demo-a holds 4 GiB while it runs, demo-b 5 GiB, demo-c 8 GiB."""
    w = World(tmp_path, gpu_mode="nvml")
    w.profile("demo-a", port=8001)
    w.profile("demo-b", port=8002, vram_gib=5.0)
    w.profile("demo-c", port=8003, vram_gib=8.0)
    w.gpu.held_gib.update({"modelctl-demo-a": 4.0, "modelctl-demo-b": 5.0, "modelctl-demo-c": 8.0})
    return w


def switched_to_a(w: World) -> None:
    """demo-a runs (container 1); the calls so far are forgotten."""
    assert w.controller.switch("demo-a").outcome == "switched"
    w.runtime.calls.clear()
    w.servers.calls.clear()
    w.gpu.calls.clear()


# --- switching -----------------------------------------------------------------------------------


def test_switch_from_nothing(world):
    heard = []
    result = world.controller.switch("demo-a", clock=PhaseClock(lambda phase, detail: heard.append((phase, detail))))
    assert (result.profile, result.container, result.url, result.served_model) == (
        "demo-a",
        "modelctl-demo-a",
        "http://127.0.0.1:8001/v1",
        "demo-a",
    )
    assert result.outcome == "switched" and result.stopped == [] and result.warnings == []
    assert world.runtime.actions() == [
        ("run", "modelctl-demo-a"),
        ("set_restart_policy", cid(1), "unless-stopped"),
    ]
    assert world.runtime.running_names() == ["modelctl-demo-a"]
    assert world.runtime.by_name("modelctl-demo-a").restart_policy == "unless-stopped"
    assert world.servers.calls == [("wait_until_ready", "http://127.0.0.1:8001/v1", "demo-a", 30.0)]
    # 4 GiB of an assumed 12 GiB: utilization 0.34, so 0.34 x 12 + 0.6 GiB must be free.
    # Read to plan, read to check the room, wait for the memory, read to measure the footprint.
    assert world.gpu.calls == [("read",), ("read",), ("wait_until_free", 4.68, 5.0), ("read",)]
    assert list(result.phases) == ["plan", "lock", "stop", "release", "start", "load"]
    assert heard == [
        ("plan", ""),
        ("lock", ""),
        ("stop", ""),
        ("release", "4.68 GiB free needed"),
        ("start", "modelctl-demo-a"),
        ("load", "org/demo-a"),
    ]
    assert world.runtime.last_secret_env == {}


def test_switch_between_two_stops_the_old_one_before_the_new_one_starts(world):
    switched_to_a(world)
    result = world.controller.switch("demo-b")
    assert result.outcome == "switched" and result.stopped == ["modelctl-demo-a"]
    assert world.runtime.actions() == [
        ("stop", ("modelctl-demo-a",), 2),
        ("run", "modelctl-demo-b"),
        ("set_restart_policy", cid(2), "unless-stopped"),
    ]
    assert world.runtime.states() == {"modelctl-demo-a": "exited", "modelctl-demo-b": "running"}


def test_same_switch_twice_is_a_no_op(world):
    switched_to_a(world)
    result = world.controller.switch("demo-a")
    assert result.outcome == "unchanged" and result.stopped == []
    assert world.runtime.actions() == []
    assert world.servers.calls == [("is_serving", "http://127.0.0.1:8001/v1", "demo-a")]
    assert world.runtime.running_names() == ["modelctl-demo-a"]
    assert list(result.phases) == ["plan", "lock", "stop"]


def test_foreign_vllm_containers_are_stopped_and_others_left_alone(world):
    world.runtime.add_foreign("vllm-by-hand")
    world.runtime.add_foreign("postgres", image="postgres:16", command="postgres", port=5432, served_model=None)
    world.runtime.add_foreign("compose-vllm", image="example/llm:1", command="python -m vllm.entrypoints.openai")
    result = world.controller.switch("demo-a")
    assert result.stopped == ["compose-vllm", "vllm-by-hand"]
    assert world.runtime.actions()[0] == ("stop", ("compose-vllm", "vllm-by-hand"), 2)
    assert world.runtime.running_names() == ["modelctl-demo-a", "postgres"]


def test_a_foreign_container_is_stopped_in_the_no_op_too(world):
    switched_to_a(world)
    world.runtime.add_foreign("vllm-by-hand")
    result = world.controller.switch("demo-a")
    assert result.outcome == "unchanged" and result.stopped == ["vllm-by-hand"]
    assert world.runtime.actions() == [("stop", ("vllm-by-hand",), 2)]
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_running_but_not_answering_is_not_a_no_op(world):
    world.runtime.will("modelctl-demo-a", LOADING)
    switched_to_a(world)
    world.runtime.by_name("modelctl-demo-a").behaviour = hang()  # stopped answering since
    result = world.controller.switch("demo-a")
    assert result.outcome == "switched" and result.stopped == ["modelctl-demo-a"]
    # Same plan, so set aside and replaced; removed once the new one answers.
    assert world.runtime.actions() == [
        ("stop", ("modelctl-demo-a",), 2),
        ("rename", cid(1), "modelctl-demo-a-previous"),
        ("run", "modelctl-demo-a"),
        ("set_restart_policy", cid(2), "unless-stopped"),
        ("remove", cid(1)),
    ]
    assert world.runtime.states() == {"modelctl-demo-a": "running"}


def test_the_load_phase_shows_the_containers_last_log_line(world):
    world.runtime.will("modelctl-demo-a", LOADING)
    heard = []
    world.controller.switch("demo-a", clock=PhaseClock(lambda phase, detail: heard.append((phase, detail))))
    assert heard[-2:] == [("load", "org/demo-a"), ("load", "INFO Loading weights took 12.34 seconds")]


def test_hf_token_is_passed_as_secret_env(tmp_path):
    w = World(tmp_path, settings_overrides={"HF_TOKEN": "hf_secret123"})
    w.profile("demo-a", port=8001)
    w.controller.switch("demo-a")
    assert w.runtime.last_secret_env == {"HF_TOKEN": "hf_secret123"}


def test_dry_run_changes_nothing(world):
    result = world.controller.switch("demo-a", dry_run=True)
    assert result.outcome == "planned" and result.container == "modelctl-demo-a"
    assert world.runtime.calls == []
    assert not world.state_dir.exists(), "not even the lock was taken"


# --- failures and the rollback -------------------------------------------------------------------


def test_crash_rolls_back_to_the_previous_profile(world):
    switched_to_a(world)
    world.runtime.will("modelctl-demo-b", crash(OOM_LOG, exit_code=1))
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-b")
    error = caught.value
    assert error.exit_code == 4
    assert error.message == (
        "demo-b exited (code 1) before it was ready: CUDA ran out of memory while the model loaded or profiled"
        "; rolled back to demo-a"
    )
    assert error.rolled_back is True
    assert error.hint == (
        "lower max_num_seqs or max_model_len, add --enforce-eager to vllm_args, "
        "or free the GPU of other processes (`modelctl gpu`)"
    )
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in error.log_tail
    assert world.runtime.actions() == [
        ("stop", ("modelctl-demo-a",), 2),
        ("run", "modelctl-demo-b"),
        ("stop", ("modelctl-demo-b",), 2),  # the failed one: stopped, kept for `modelctl logs`
        ("run", "modelctl-demo-a"),
        ("set_restart_policy", cid(3), "unless-stopped"),
    ]
    assert world.runtime.states() == {"modelctl-demo-b": "exited", "modelctl-demo-a": "running"}
    assert world.runtime.by_name("modelctl-demo-b").exit_code == 1
    assert world.controller.status().active.ready is True


def test_timeout_rolls_back(world):
    world.profile("hangs", port=8003, startup_timeout=2)
    switched_to_a(world)
    world.runtime.will("modelctl-hangs", hang())
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("hangs")
    error = caught.value
    assert error.message == (
        "hangs was not ready after 2 s (last seen: ConnectError): the log shows no start-up step modelctl "
        "recognises; its last lines: INFO Loading model weights...; rolled back to demo-a"
    )
    assert error.hint == (
        "read the whole log (`modelctl logs hangs`); a longer startup_timeout helps only once the log shows "
        "vLLM loading, compiling or capturing CUDA graphs"
    )
    assert error.exit_code == 4 and error.rolled_back is True
    assert world.servers.calls[0] == ("wait_until_ready", "http://127.0.0.1:8003/v1", "hangs", 2.0)
    assert world.runtime.states() == {"modelctl-hangs": "exited", "modelctl-demo-a": "running"}


def test_a_root_cause_buried_in_a_long_traceback_heads_the_log_tail(world):
    traceback = "".join(f'  File "/usr/lib/python3/vllm/engine.py", line {n}, in run\n' for n in range(1, 31))
    world.runtime.will("modelctl-demo-a", crash(NO_CACHE_LOG + traceback, exit_code=1))
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-a", rollback=False)
    lines = caught.value.log_tail.splitlines()
    assert lines[:2] == [
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`.",
        "...",
    ]
    assert lines[2] == '  File "/usr/lib/python3/vllm/engine.py", line 11, in run' and len(lines) == 22


def test_timeout_given_to_the_switch_wins_over_the_profiles(world):
    world.profile("hangs", port=8003, startup_timeout=2)
    world.runtime.will("modelctl-hangs", hang(last_seen="HTTP 503"))
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("hangs", timeout_s=7)
    assert caught.value.message == (
        "hangs was not ready after 7 s (last seen: HTTP 503): the log shows no start-up step modelctl recognises; "
        "its last lines: INFO Loading model weights...; nothing ran before, so nothing was rolled back"
    )
    assert caught.value.rolled_back is False
    assert world.runtime.running_names() == []


def test_no_rollback_leaves_nothing_running(world):
    switched_to_a(world)
    world.runtime.will("modelctl-demo-b", crash(OOM_LOG))
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-b", rollback=False)
    assert caught.value.message == f"demo-b exited (code 1) before it was ready: {OOM_CAUSE}"
    assert caught.value.rolled_back is False
    assert world.runtime.running_names() == []


def test_replanned_profile_is_set_aside_and_put_back_when_the_new_plan_fails(world):
    switched_to_a(world)
    old_hash = world.runtime.by_name("modelctl-demo-a").labels["modelctl.plan-hash"]
    world.profile("demo-a", port=8001, max_model_len=8192)  # edited: a new plan under the same name
    world.runtime.will("modelctl-demo-a", crash(OOM_LOG))
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-a")
    assert caught.value.message == f"demo-a exited (code 1) before it was ready: {OOM_CAUSE}; rolled back to demo-a"
    assert caught.value.rolled_back is True
    assert world.runtime.actions() == [
        ("stop", ("modelctl-demo-a",), 2),
        ("rename", cid(1), "modelctl-demo-a-previous"),
        ("run", "modelctl-demo-a"),
        ("stop", ("modelctl-demo-a",), 2),
        ("remove", cid(2)),  # the failed one goes: its log tail is in the error
        ("rename", cid(1), "modelctl-demo-a"),
        ("start_existing", cid(1)),
    ]
    back = world.runtime.by_name("modelctl-demo-a")
    assert back.id == cid(1) and back.state == "running" and back.labels["modelctl.plan-hash"] == old_hash
    assert world.runtime.states() == {"modelctl-demo-a": "running"}


def test_replanned_profile_that_works_replaces_the_old_container(world):
    switched_to_a(world)
    world.profile("demo-a", port=8001, max_model_len=8192)
    result = world.controller.switch("demo-a")
    assert result.outcome == "switched" and result.stopped == ["modelctl-demo-a"]
    assert world.runtime.actions() == [
        ("stop", ("modelctl-demo-a",), 2),
        ("rename", cid(1), "modelctl-demo-a-previous"),
        ("run", "modelctl-demo-a"),
        ("set_restart_policy", cid(2), "unless-stopped"),
        ("remove", cid(1)),
    ]
    assert world.runtime.states() == {"modelctl-demo-a": "running"}
    assert "--max-model-len 8192" in world.runtime.by_name("modelctl-demo-a").command


def test_replanned_profile_whose_old_container_does_not_answer_again(world):
    switched_to_a(world)
    world.profile("demo-a", port=8001, max_model_len=8192)
    world.runtime.will("modelctl-demo-a", crash(OOM_LOG), hang())  # the new one crashes, the old one hangs
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-a")
    assert caught.value.message == (
        f"demo-a exited (code 1) before it was ready: {OOM_CAUSE}"
        "; rollback failed too: modelctl-demo-a as it ran before did not answer again"
    )
    assert caught.value.rolled_back is False
    assert world.runtime.running_names() == []


def test_rollback_that_fails_too_says_so_and_leaves_nothing_running(world):
    switched_to_a(world)
    world.runtime.will("modelctl-demo-b", crash(OOM_LOG))
    world.runtime.will("modelctl-demo-a", crash(NO_CACHE_LOG, exit_code=1))
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-b")
    error = caught.value
    assert error.message == (
        f"demo-b exited (code 1) before it was ready: {OOM_CAUSE}"
        "; rollback failed too: demo-a exited (code 1) before it was ready: "
        "no GPU memory was left for the KV cache after loading the weights"
    )
    assert error.rolled_back is False and error.exit_code == 4
    assert world.runtime.running_names() == []
    assert world.runtime.states() == {"modelctl-demo-b": "exited", "modelctl-demo-a": "exited"}


def test_rollback_restarts_the_foreign_container_that_ran_before(world):
    world.runtime.add_foreign("vllm-by-hand")
    world.runtime.will("modelctl-demo-a", crash(OOM_LOG))
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-a")
    assert caught.value.message == (
        f"demo-a exited (code 1) before it was ready: {OOM_CAUSE}; restarted vllm-by-hand, which ran before"
    )
    assert caught.value.rolled_back is True
    assert world.runtime.actions()[-1] == ("start_existing", cid(1))
    assert world.runtime.running_names() == ["vllm-by-hand"]


def test_rollback_to_a_removed_foreign_container_says_so(world):
    world.runtime.add_foreign("vllm-by-hand", auto_remove=True)  # `docker run --rm`: gone once stopped
    world.runtime.will("modelctl-demo-a", crash(OOM_LOG))
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-a")
    assert caught.value.message == (
        f"demo-a exited (code 1) before it was ready: {OOM_CAUSE}; rollback failed too: "
        f"container 000000000001 could not be started again: No such container: {cid(1)}"
    )
    assert caught.value.rolled_back is False
    assert world.runtime.running_names() == []


def test_engine_error_in_the_middle_of_the_stop_propagates(world):
    """The stop is inside the rollback's try: the first failure stays the error (exit 5), and the
    model the failed stop never reached is left running, untouched; the lock is released, so the
    next switch finishes the job."""
    switched_to_a(world)
    world.runtime.add_foreign("vllm-by-hand")  # crept in: two run, the newest first
    world.runtime.fail_on("stop_one", 2)
    with pytest.raises(EngineUnreachableError) as caught:
        world.controller.switch("demo-b")
    assert caught.value.exit_code == 5
    assert caught.value.message == (
        "Docker engine unreachable at unix:///var/run/docker.sock: gone; demo-a was never stopped and still runs"
    )
    assert caught.value.rolled_back is True
    assert world.runtime.actions() == [("stop", ("vllm-by-hand", "modelctl-demo-a"), 2)]
    assert world.runtime.running_names() == ["modelctl-demo-a"]
    # The engine is back: the next switch takes the lock and finishes the job.
    result = world.controller.switch("demo-b")
    assert result.outcome == "switched" and result.stopped == ["modelctl-demo-a"]
    assert world.runtime.running_names() == ["modelctl-demo-b"]


def test_engine_error_while_starting_rolls_back_and_keeps_exit_code_5(world):
    switched_to_a(world)
    world.runtime.fail_on("run", 1)
    with pytest.raises(EngineUnreachableError) as caught:
        world.controller.switch("demo-b")
    assert caught.value.exit_code == 5
    assert caught.value.message == (
        "Docker engine unreachable at unix:///var/run/docker.sock: gone; rolled back to demo-a"
    )
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_unexpected_error_after_ready_stops_the_new_model_and_rolls_back(world):
    switched_to_a(world)
    world.runtime.fail_on("set_restart_policy", 1, RuntimeError("boom"))
    with pytest.raises(ModelctlError) as caught:
        world.controller.switch("demo-b")
    assert type(caught.value) is ModelctlError and caught.value.exit_code == 1
    assert caught.value.message == "the switch to demo-b failed unexpectedly: RuntimeError: boom; rolled back to demo-a"
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert world.runtime.states() == {"modelctl-demo-b": "exited", "modelctl-demo-a": "running"}


def test_interrupt_while_loading_puts_the_previous_model_back_and_exits_130(world):
    switched_to_a(world)
    world.runtime.fail_on("is_running", 1, KeyboardInterrupt())
    with pytest.raises(Interrupted) as caught:
        world.controller.switch("demo-b")
    assert caught.value.exit_code == 130
    assert caught.value.message == "the switch to demo-b was interrupted in phase load; rolled back to demo-a"
    assert world.runtime.actions() == [
        ("stop", ("modelctl-demo-a",), 2),
        ("run", "modelctl-demo-b"),
        ("stop", ("modelctl-demo-b",), 2),
        ("run", "modelctl-demo-a"),
        ("set_restart_policy", "000000000003" + "f" * 52, "unless-stopped"),
    ]
    assert world.runtime.running_names() == ["modelctl-demo-a"]
    assert world.controller.switch("demo-b").outcome == "switched", "the lock was released"


def test_a_port_held_by_another_process_is_refused_before_anything_stops(world):
    switched_to_a(world)
    world.runtime.calls.clear()
    world.host.busy_ports.add(8002)
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-b")
    assert caught.value.exit_code == 4
    assert caught.value.message == (
        "port 8002 on 127.0.0.1 is in use by another process, so demo-b could not listen there; nothing was stopped"
    )
    assert world.runtime.actions() == []
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_a_port_held_by_a_leaving_vllm_container_is_fine(world):
    world.profile("demo-c", port=8001)  # demo-a's port
    switched_to_a(world)
    world.host.busy_ports.add(8001)  # docker-proxy of demo-a holds it until demo-a stops
    assert world.controller.switch("demo-c").outcome == "switched"
    world.runtime.add_foreign("vllm-by-hand")  # a foreign one may hold any port: its ports are not labelled
    world.host.busy_ports.add(8002)
    assert world.controller.switch("demo-b").outcome == "switched"


def test_a_missing_hf_cache_directory_is_made_before_the_stop_and_an_unwritable_one_refused(world):
    switched_to_a(world)
    assert world.host.made[-1] == world.root / "hf"
    world.host.unwritable.add(world.root / "hf")
    world.runtime.calls.clear()
    with pytest.raises(UsageError) as caught:
        world.controller.switch("demo-b")
    assert caught.value.message == (
        f"cannot create the Hugging Face cache {world.root / 'hf'} (MODELCTL_HF_CACHE): Permission denied"
    )
    assert world.runtime.actions() == []


def test_missing_image_is_pulled_before_anything_stops(world):
    world.profile("demo-b", port=8002, image="vllm/vllm-openai:v0.33.0")
    switched_to_a(world)
    world.runtime.missing_images.add("vllm/vllm-openai:v0.33.0")
    result = world.controller.switch("demo-b")
    assert result.outcome == "switched"
    assert world.runtime.actions()[:2] == [("pull", "vllm/vllm-openai:v0.33.0"), ("stop", ("modelctl-demo-a",), 2)]
    assert "pull" in result.phases


def test_a_failed_pull_stops_nothing(world):
    world.profile("demo-b", port=8002, image="vllm/vllm-openai:v9.9.9")
    switched_to_a(world)
    world.runtime.missing_images.add("vllm/vllm-openai:v9.9.9")
    world.runtime.unpullable["vllm/vllm-openai:v9.9.9"] = "manifest unknown"
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-b")
    assert caught.value.exit_code == 4
    assert caught.value.message == (
        "image vllm/vllm-openai:v9.9.9 is not on this engine and could not be pulled: manifest unknown"
    )
    assert world.runtime.actions() == [("pull", "vllm/vllm-openai:v9.9.9")]
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_too_big_is_refused_before_anything(world):
    world.profile("big", port=8009, vram_gib=20.0)
    switched_to_a(world)
    with pytest.raises(DoesNotFitError) as caught:
        world.controller.switch("big")
    assert caught.value.exit_code == 3
    assert caught.value.message == (
        "big needs 20 GiB but this GPU (assumed (MODELCTL_GPU_TOTAL_GIB): MODELCTL_GPUS=none, 12.00 GiB) "
        "gives a model at most 11.40 GiB (95%): 8.60 GiB short"
    )
    assert caught.value.hint.startswith("fits this GPU: demo-a (4 GiB), demo-b (4 GiB);")
    assert world.runtime.calls == []


def test_unknown_profile_is_refused_before_anything(world):
    with pytest.raises(ModelctlError) as caught:
        world.controller.switch("nope")
    assert caught.value.exit_code == 2
    assert caught.value.message == "unknown profile 'nope' (known: demo-a, demo-b)"
    assert world.runtime.calls == []


# --- GPU memory (NVML) -----------------------------------------------------------------------------


def test_memory_held_by_a_host_process_is_refused_before_any_stop(nvml):
    nvml.gpu.host.append(GpuProcess(4242, "python", 7.0))
    switched_to_a(nvml)
    with pytest.raises(DoesNotFitError) as caught:
        nvml.controller.switch("demo-b")
    assert caught.value.exit_code == 3
    assert caught.value.message == (
        "demo-b needs 5.64 GiB free to start, but even after stopping the vLLM containers only 4.99 GiB "
        "of 11.99 GiB would be: 7.0 GiB held by pid 4242 python"
    )
    assert nvml.runtime.actions() == []
    assert nvml.runtime.running_names() == ["modelctl-demo-a"]


def test_memory_that_never_frees_fails_after_the_stop_and_rolls_back(nvml):
    switched_to_a(nvml)  # pid 1001
    nvml.gpu.never_frees.add("modelctl-demo-a")  # a zombie keeps its 4 GiB once stopped
    with pytest.raises(DoesNotFitError) as caught:
        nvml.controller.switch("demo-c")
    error = caught.value
    assert error.exit_code == 3 and error.rolled_back is True
    assert error.message == (
        "GPU memory did not come free within 5 s: demo-c needs 8.63 GiB free, 7.99 GiB is; "
        "4.0 GiB held by pid 1001 python3; rolled back to demo-a"
    )
    assert nvml.runtime.actions() == [
        ("stop", ("modelctl-demo-a",), 2),
        ("run", "modelctl-demo-a"),
        ("set_restart_policy", cid(2), "unless-stopped"),
    ]
    assert nvml.runtime.running_names() == ["modelctl-demo-a"]


def test_memory_that_never_frees_where_nvml_cannot_name_holders(nvml):
    nvml.gpu.lists_processes = False  # WSL2: memory is reported, its holders are not
    switched_to_a(nvml)
    nvml.gpu.never_frees.add("modelctl-demo-a")
    with pytest.raises(DoesNotFitError) as caught:
        nvml.controller.switch("demo-c", rollback=False)
    assert caught.value.message == (
        "GPU memory did not come free within 5 s: demo-c needs 8.63 GiB free, 7.99 GiB is; NVML cannot say by whom here"
    )
    assert nvml.runtime.running_names() == []


def test_memory_of_unknown_amount_held_by_the_leaving_model_is_left_to_the_release_wait(nvml):
    """NVML lists demo-a's process but not how much it holds: the stop may free enough, so the
    check before the stop must not refuse; the release wait sees the memory come free."""
    nvml.gpu.hides_amounts = True
    switched_to_a(nvml)
    result = nvml.controller.switch("demo-c")
    assert result.outcome == "switched" and result.stopped == ["modelctl-demo-a"]
    assert nvml.gpu.calls[-2] == ("wait_until_free", 8.6333, 5.0)
    assert nvml.runtime.running_names() == ["modelctl-demo-c"]


def test_footprint_is_recorded_after_a_ready_switch(nvml):
    nvml.gpu.held_gib["modelctl-demo-a"] = 5.25  # more than its vram_gib 4
    nvml.controller.switch("demo-a")
    recorded = json.loads((nvml.state_dir / "footprints.json").read_text())
    assert list(recorded) == ["demo-a"]
    assert recorded["demo-a"]["measured_gib"] == 5.25 and recorded["demo-a"]["vram_gib"] == 4.0
    assert recorded["demo-a"]["plan_hash"] == nvml.runtime.by_name("modelctl-demo-a").labels["modelctl.plan-hash"]
    footprint = nvml.controller.status().footprints["demo-a"]
    assert (footprint.measured_gib, footprint.vram_gib, footprint.exceeds) == (5.25, 4.0, True)


def test_no_footprint_where_nvml_cannot_list_processes(nvml):
    nvml.gpu.lists_processes = False
    nvml.controller.switch("demo-a")
    assert not (nvml.state_dir / "footprints.json").exists()


def test_a_footprint_that_cannot_be_recorded_does_not_fail_the_switch(nvml, caplog):
    nvml.runtime.fail_on("container_pids", 2, RuntimeError("engine hiccup"))  # 1: the room check; 2: the footprint
    with caplog.at_level(logging.WARNING, logger="modelctl"):
        result = nvml.controller.switch("demo-a")
    assert result.outcome == "switched"
    assert "could not record the footprint of demo-a: engine hiccup" in caplog.text


def test_gpu_report_with_nvml_names_the_holders(nvml):
    nvml.gpu.host.append(GpuProcess(777, "Xorg", 0.25))
    nvml.controller.switch("demo-a")
    report = nvml.controller.gpu_report()
    assert report.budget == GpuBudget(11.99, "NVML: GPU 0 NVIDIA GeForce RTX 4070 Ti")
    assert report.holders == [
        GpuHolder(0, 1001, "python3", 4.0, "modelctl-demo-a"),
        GpuHolder(0, 777, "Xorg", 0.25, None),
    ]
    assert report.estimated_used_gib is None


def test_gpu_report_in_degraded_mode_estimates_from_the_running_plans(world):
    tier = {"vram_gib": 6.5, "max_model_len": 8192, "max_num_seqs": 4}
    world.profile("demo-a", port=8001, tiers={12: tier})  # the 12 GiB tier applies: 6.5 GiB
    world.controller.switch("demo-a")
    world.runtime.add_foreign("vllm-by-hand")  # not ours: no plan to estimate from
    report = world.controller.gpu_report()
    assert report.state.mode == "degraded" and report.state.reason == "MODELCTL_GPUS=none"
    assert report.budget == GpuBudget(12.0, "assumed (MODELCTL_GPU_TOTAL_GIB): MODELCTL_GPUS=none")
    assert report.holders is None
    assert report.estimated_used_gib == 6.5


# --- invalid profile files -----------------------------------------------------------------------


def test_invalid_profile_beside_valid_ones(world):
    (world.profiles_dir / "broken.yaml").write_text(
        "name: broken\nmodel: org/broken\nimage: vllm/vllm-openai:v0.11.1\nvram_gib: 4\n"
        "max_model_len: lots\nmax_num_seqs: 2\n"
    )
    result = world.controller.switch("demo-a")
    assert result.outcome == "switched"
    assert result.warnings == [
        f"skipped invalid profile {world.profiles_dir}/broken.yaml: "
        "key 'max_model_len': expected a whole number, got 'lots'"
    ]
    assert world.controller.status().warnings == result.warnings
    world.runtime.calls.clear()
    with pytest.raises(ProfileError) as caught:
        world.controller.switch("broken")
    assert caught.value.exit_code == 2
    assert caught.value.message == (
        f"{world.profiles_dir}/broken.yaml: key 'max_model_len': expected a whole number, got 'lots'"
    )
    assert world.runtime.calls == []
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_switch_to_an_invalid_profile_touches_nothing(world):
    (world.profiles_dir / "broken.yaml").write_text("name: broken\nvram_gb: 4\n")
    with pytest.raises(ProfileError):
        world.controller.switch("broken")
    assert world.runtime.calls == []
    assert not world.state_dir.exists()


# --- stop, status, reconcile ---------------------------------------------------------------------


def test_stop_stops_every_vllm_container(world):
    switched_to_a(world)
    world.runtime.add_foreign("vllm-by-hand")
    world.runtime.add_foreign("postgres", image="postgres:16", command="postgres", port=5432, served_model=None)
    assert world.controller.stop() == ["vllm-by-hand", "modelctl-demo-a"]
    assert world.runtime.actions() == [("stop", ("vllm-by-hand", "modelctl-demo-a"), 2)]
    assert world.runtime.running_names() == ["postgres"]


def test_status_names_the_active_model_and_every_container(world):
    switched_to_a(world)
    world.controller.switch("demo-b")
    world.runtime.add_foreign("vllm-stopped", running=False)
    status = world.controller.status()
    assert status.active == ActiveModel(
        profile="demo-b",
        container="modelctl-demo-b",
        served_model="demo-b",
        ready=True,
        url="http://127.0.0.1:8002/v1",
    )
    assert [(c.name, c.state, c.profile) for c in status.containers] == [
        ("vllm-stopped", "created", None),
        ("modelctl-demo-b", "running", "demo-b"),
        ("modelctl-demo-a", "exited", "demo-a"),
    ]
    assert status.gpu.estimated_used_gib == 4.0
    assert status.footprints == {} and status.warnings == []


def test_status_of_a_model_still_loading_is_not_ready(world):
    world.runtime.run(world.controller.plan_for("demo-a").spec, {})  # a switch killed mid-load
    world.runtime.by_name("modelctl-demo-a").behaviour = LOADING
    assert world.controller.status().active.ready is False


def test_status_with_nothing_running(world):
    world.runtime.add_foreign("vllm-by-hand")  # foreign: never the active model
    status = world.controller.status()
    assert status.active is None
    assert [c.name for c in status.containers] == ["vllm-by-hand"]


def test_reconcile_adopts_the_healthy_model_and_stops_the_extras(world):
    switched_to_a(world)
    world.runtime.will("modelctl-demo-b", hang())
    world.runtime.run(world.controller.plan_for("demo-b").spec, {})  # left behind, never answering
    world.runtime.add_foreign("vllm-by-hand")
    world.runtime.calls.clear()
    assert world.controller.reconcile() == ["vllm-by-hand", "modelctl-demo-b"]
    assert world.runtime.actions() == [
        ("stop", ("vllm-by-hand", "modelctl-demo-b"), 2),
        ("set_restart_policy", cid(1), "unless-stopped"),
    ]
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_reconcile_waits_for_a_model_still_loading_and_adopts_it(world):
    world.profile("demo-a", port=8001, startup_timeout=120)
    world.runtime.will("modelctl-demo-a", LOADING)
    world.runtime.run(world.controller.plan_for("demo-a").spec, {})
    world.runtime.calls.clear()
    assert world.controller.reconcile("demo-b") == []
    assert world.servers.calls == [
        ("is_serving", "http://127.0.0.1:8001/v1", "demo-a"),
        ("wait_until_ready", "http://127.0.0.1:8001/v1", "demo-a", 120.0),
    ]
    assert world.runtime.actions() == [("set_restart_policy", cid(1), "unless-stopped")]
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_reconcile_with_none_answering_stops_them_and_starts_the_default(world):
    world.runtime.will("modelctl-demo-a", hang())
    world.runtime.run(world.controller.plan_for("demo-a").spec, {})
    world.runtime.calls.clear()
    assert world.controller.reconcile("demo-b") == ["modelctl-demo-a"]
    assert world.runtime.actions() == [
        ("stop", ("modelctl-demo-a",), 2),
        ("run", "modelctl-demo-b"),
        ("set_restart_policy", cid(2), "unless-stopped"),
    ]
    assert world.runtime.running_names() == ["modelctl-demo-b"]


def test_reconcile_with_nothing_running_starts_the_default(world):
    assert world.controller.reconcile("demo-a") == []
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_reconcile_without_a_default_starts_nothing(world):
    world.runtime.add_foreign("vllm-by-hand")
    assert world.controller.reconcile() == ["vllm-by-hand"]
    assert world.runtime.actions() == [("stop", ("vllm-by-hand",), 2)]
    assert world.runtime.running_names() == []


def test_reconcile_whose_default_crashes_leaves_nothing_running(world):
    world.runtime.will("modelctl-demo-a", crash(OOM_LOG))
    with pytest.raises(NotReadyError) as caught:
        world.controller.reconcile("demo-a")
    assert caught.value.message == f"demo-a exited (code 1) before it was ready: {OOM_CAUSE}"  # no rollback
    assert world.runtime.running_names() == []


def test_footprint_type_round_trips(nvml):
    """status() reads back what the switch wrote, as the Footprint type."""
    nvml.controller.switch("demo-b")
    footprint = nvml.controller.status().footprints["demo-b"]
    assert isinstance(footprint, Footprint)
    assert (footprint.measured_gib, footprint.vram_gib, footprint.exceeds) == (5.0, 5.0, False)


def test_a_name_held_by_a_container_modelctl_did_not_start_is_refused_before_the_stop(world):
    switched_to_a(world)
    world.runtime.add_foreign("modelctl-demo-b", image="busybox:1", command="sleep 300", served_model=None)
    world.runtime.calls.clear()
    with pytest.raises(UsageError) as caught:
        world.controller.switch("demo-b")
    assert caught.value.exit_code == 2
    assert "a container named modelctl-demo-b" in caught.value.message
    assert world.runtime.actions() == []
    assert set(world.runtime.running_names()) == {"modelctl-demo-a", "modelctl-demo-b"}  # both untouched
