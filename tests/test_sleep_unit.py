"""Sleep mode in the controller, driven through its Protocols with fakes (tests/fakes.py).

The engine tests (test_sleep.py) show the same on a real engine with the stand-in; these pin the
algorithm: who sleeps, who stops, what is woken, what a failure leaves, what is recorded.
"""

from __future__ import annotations

import pytest
from fakes import World, crash

from modelctl.errors import ProfileError, UsageError
from modelctl.footprints import read_footprints
from modelctl.report import status_from_json, status_json


def cid(n: int) -> str:
    return f"{n:012d}" + "f" * 52


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ("HF_TOKEN", "MODELCTL_HF_TOKEN", "MODELCTL_STATE_DIR", "MODELCTL_HOST", "MODELCTL_GPUS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def world(tmp_path) -> World:
    """Degraded GPU (12 GiB assumed); demo-a (level 1) on 8001, demo-b (level 1) on 8002, plain on 8003."""
    w = World(tmp_path)
    w.profile("demo-a", port=8001, sleep_level=1)
    w.profile("demo-b", port=8002, sleep_level=1)
    w.profile("plain", port=8003)
    return w


@pytest.fixture
def nvml(tmp_path) -> World:
    """An NVML GPU of 11.99 GiB: demo-a holds 4 GiB awake, 0.75 asleep; demo-b 5 GiB awake."""
    w = World(tmp_path, gpu_mode="nvml")
    w.profile("demo-a", port=8001, sleep_level=1)
    w.profile("demo-b", port=8002, vram_gib=5.0, sleep_level=2)
    w.gpu.held_gib.update({"modelctl-demo-a": 4.0, "modelctl-demo-b": 5.0})
    w.gpu.asleep_gib.update({"modelctl-demo-a": 0.75, "modelctl-demo-b": 0.5})
    return w


def awake(w: World) -> list[str]:
    return sorted(c.name for c in w.runtime.containers.values() if c.state == "running" and not c.asleep)


def asleep(w: World) -> list[str]:
    return sorted(c.name for c in w.runtime.containers.values() if c.state == "running" and c.asleep)


def forget(w: World) -> None:
    w.runtime.calls.clear()
    w.sleep.calls.clear()
    w.servers.calls.clear()


# --- the plan ------------------------------------------------------------------------------------


def test_a_sleep_profile_starts_with_sleep_mode_and_the_dev_endpoints(world):
    plan = world.controller.plan_for("demo-a")
    assert plan.spec.command[-1] == "--enable-sleep-mode"
    assert plan.spec.env == {"VLLM_SERVER_DEV_MODE": "1"}
    plain = world.controller.plan_for("plain")
    assert "--enable-sleep-mode" not in plain.spec.command and plain.spec.env == {}


# --- hot swap ------------------------------------------------------------------------------------


def test_hot_swap_a_b_a_sleeps_and_wakes_the_same_containers(world):
    first = world.controller.switch("demo-a")
    assert first.slept == [] and not first.woke
    forget(world)

    to_b = world.controller.switch("demo-b")
    assert to_b.outcome == "switched" and to_b.slept == ["modelctl-demo-a"] and to_b.stopped == []
    assert not to_b.woke
    assert world.sleep.calls[-1] == ("sleep", "modelctl-demo-a", 1)
    assert awake(world) == ["modelctl-demo-b"] and asleep(world) == ["modelctl-demo-a"]
    # A sleeper is never restarted by the engine (a reboot would wake them all at once).
    assert world.runtime.by_name("modelctl-demo-a").restart_policy == "no"
    assert "sleep" in to_b.phases and list(to_b.phases)[-2:] == ["start", "load"]
    forget(world)

    back = world.controller.switch("demo-a")
    assert back.outcome == "switched" and back.woke and back.slept == ["modelctl-demo-b"] and back.stopped == []
    assert ("wake", "modelctl-demo-a", 1) in world.sleep.calls
    assert world.runtime.by_name("modelctl-demo-a").id == cid(1), "the same container, woken"
    assert awake(world) == ["modelctl-demo-a"] and asleep(world) == ["modelctl-demo-b"]
    assert world.runtime.by_name("modelctl-demo-a").restart_policy == "unless-stopped"
    assert "wake" in back.phases and "start" not in back.phases and "load" not in back.phases
    # Nothing was started or stopped: one sleep, one wake.
    assert [a[0] for a in world.runtime.actions()] == ["set_restart_policy", "set_restart_policy"]


def test_switching_to_the_awake_model_is_unchanged_even_with_sleepers(world):
    world.controller.switch("demo-a")
    world.controller.switch("demo-b")
    forget(world)
    result = world.controller.switch("demo-b")
    assert result.outcome == "unchanged" and result.stopped == [] and result.slept == []
    assert asleep(world) == ["modelctl-demo-a"]


def test_a_sleeping_target_is_not_taken_for_an_awake_one(world):
    """A sleeper still lists its model in /v1/models: only /is_sleeping tells."""
    world.controller.switch("demo-a")
    world.controller.switch("demo-b")
    result = world.controller.switch("demo-a")
    assert result.outcome == "switched" and result.woke


def test_level_2_wakes_with_its_level(tmp_path):
    w = World(tmp_path)
    w.profile("demo-a", port=8001, sleep_level=2)
    w.profile("demo-b", port=8002, sleep_level=2)
    w.controller.switch("demo-a")
    w.controller.switch("demo-b")
    assert ("sleep", "modelctl-demo-a", 2) in w.sleep.calls
    w.controller.switch("demo-a")
    assert ("wake", "modelctl-demo-a", 2) in w.sleep.calls


def test_switching_to_a_plain_profile_puts_the_sleep_enabled_one_to_sleep(world):
    world.controller.switch("demo-a")
    result = world.controller.switch("plain")
    assert result.slept == ["modelctl-demo-a"]
    result = world.controller.switch("demo-b")
    assert result.stopped == ["modelctl-plain"] and result.slept == []
    assert asleep(world) == ["modelctl-demo-a"] and awake(world) == ["modelctl-demo-b"]


def test_a_sleeper_on_the_targets_port_stops(world):
    world.profile("shares-a", port=8001)  # no sleep mode: it may share demo-a's port
    world.controller.switch("demo-a")
    result = world.controller.switch("shares-a")
    assert result.stopped == ["modelctl-demo-a"] and result.slept == []


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["error", "exit", "hang"])
def test_a_failed_wake_stops_the_sleeper_and_starts_it_cold(world, how):
    world.controller.switch("demo-a")
    world.controller.switch("demo-b")
    world.sleep.wake_fails["modelctl-demo-a"] = how
    result = world.controller.switch("demo-a")
    assert result.outcome == "switched" and not result.woke
    assert any("the wake of demo-a failed" in w and "it was started cold" in w for w in result.warnings)
    new = world.runtime.by_name("modelctl-demo-a")
    assert new.id != cid(1), "a new container"
    assert awake(world) == ["modelctl-demo-a"] and asleep(world) == ["modelctl-demo-b"]
    assert "start" in result.phases and "load" in result.phases


def test_a_failed_wake_whose_cold_start_fails_too_rolls_back(world):
    world.controller.switch("demo-a")
    world.controller.switch("demo-b")
    world.sleep.wake_fails["modelctl-demo-a"] = "error"
    world.runtime.will("modelctl-demo-a", crash("torch.OutOfMemoryError: CUDA out of memory.\n"))
    with pytest.raises(Exception) as caught:
        world.controller.switch("demo-a")
    assert "rolled back to demo-b (woken)" in caught.value.message
    assert awake(world) == ["modelctl-demo-b"]


def test_a_failed_sleep_stops_the_model(world):
    world.controller.switch("demo-a")
    world.sleep.sleep_fails["modelctl-demo-a"] = "error"
    result = world.controller.switch("demo-b")
    assert result.stopped == ["modelctl-demo-a"] and result.slept == []
    assert any("modelctl-demo-a could not sleep and was stopped" in w for w in result.warnings)
    assert world.runtime.running_names() == ["modelctl-demo-b"]


def test_a_crash_of_the_new_model_wakes_the_one_put_to_sleep(world):
    world.controller.switch("demo-a")
    world.runtime.will("modelctl-demo-b", crash("torch.OutOfMemoryError: CUDA out of memory.\n"))
    with pytest.raises(Exception) as caught:
        world.controller.switch("demo-b")
    assert "rolled back to demo-a (woken)" in caught.value.message
    assert awake(world) == ["modelctl-demo-a"] and asleep(world) == []


# --- room ----------------------------------------------------------------------------------------


def test_no_room_stops_the_least_recently_used_sleepers_first(tmp_path):
    """12 GiB assumed; sleepers keep 2 GiB each; big needs 0.67 x 12 + 0.6 = 8.64 GiB free."""
    w = World(tmp_path)
    for n, name in enumerate(["one", "two", "three"]):
        w.profile(name, port=8001 + n, sleep_level=1, sleep_vram_gib=2.0, vram_gib=3.0)
    w.profile("big", port=8010, vram_gib=8.0)
    for name in ["one", "two", "three"]:
        w.controller.switch(name)
    assert asleep(w) == ["modelctl-one", "modelctl-two"]
    result = w.controller.switch("big")
    # three (going to sleep now) + two + one = 6 GiB beside 8.64: one, then two, go.
    assert result.stopped == ["modelctl-two", "modelctl-one"] and result.slept == ["modelctl-three"]
    assert asleep(w) == ["modelctl-three"] and awake(w) == ["modelctl-big"]


def test_no_room_with_nvml_counts_the_measured_residuals(nvml):
    nvml.profile("demo-c", port=8003, vram_gib=8.0)
    nvml.gpu.held_gib["modelctl-demo-c"] = 8.0
    nvml.controller.switch("demo-a")
    result = nvml.controller.switch("demo-c")
    # demo-c needs 0.67 x 11.99 + 0.6 = 8.63 GiB; demo-a asleep keeps 0.75: 3.36 GiB to spare.
    assert result.slept == ["modelctl-demo-a"]
    nvml.gpu.asleep_gib["modelctl-demo-a"] = 3.5  # a sleeper that keeps more than there is room for
    nvml.controller.switch("demo-a")
    result = nvml.controller.switch("demo-c")
    assert result.stopped == ["modelctl-demo-a"] and result.slept == []


def test_the_residual_is_measured_and_recorded_by_process(nvml):
    nvml.controller.switch("demo-a")
    nvml.controller.switch("demo-b")
    record = read_footprints(nvml.state_dir)["asleep:demo-a"]
    assert record.measured_gib == 0.75 and record.vram_gib == 1.0
    status = nvml.controller.status()
    assert "asleep:demo-a" not in status.footprints, "status's measured footprints are the awake ones"
    assert status.gpu.asleep == {"modelctl-demo-a": 0.75} and status.gpu.asleep_measured


def test_a_level_1_sleep_that_would_eat_the_host_reserve_is_a_stop(world):
    world.host.available_gib = 7.0  # demo-a's weights (its vram_gib, 4 GiB: no log line) leave 3 < 4
    world.controller.switch("demo-a")
    result = world.controller.switch("demo-b")
    assert result.stopped == ["modelctl-demo-a"] and result.slept == []
    assert world.sleep.calls.count(("sleep", "modelctl-demo-a", 1)) == 0


def test_the_weights_size_comes_from_vllms_log(world):
    world.host.available_gib = 7.0
    world.controller.switch("demo-a")
    world.runtime.by_name("modelctl-demo-a").log += "INFO Model loading took 2.5 GiB memory and 3.1 seconds\n"
    result = world.controller.switch("demo-b")
    assert result.slept == ["modelctl-demo-a"], "7 - 2.5 leaves 4.5 GiB, over the reserve"


def test_a_sleeper_is_stopped_when_host_memory_falls_under_the_reserve_after_its_sleep(world):
    world.controller.switch("demo-a")
    world.host.after_sleep_gib = 3.0
    result = world.controller.switch("demo-b")
    assert result.stopped == ["modelctl-demo-a"] and result.slept == []
    assert any("host memory available fell to 3.0 GiB" in w for w in result.warnings)


# --- refusals ------------------------------------------------------------------------------------


def test_a_sleep_profile_with_a_non_loopback_host_is_refused_before_anything(tmp_path):
    w = World(tmp_path, settings_overrides={"host": "0.0.0.0"})
    w.profile("demo-a", port=8001, sleep_level=1)
    w.profile("plain", port=8003)
    w.controller.switch("plain")
    forget(w)
    with pytest.raises(UsageError) as caught:
        w.controller.switch("demo-a")
    assert caught.value.exit_code == 2
    assert "published on loopback only" in caught.value.message and "MODELCTL_HOST=0.0.0.0" in caught.value.message
    assert w.runtime.actions() == [] and w.runtime.running_names() == ["modelctl-plain"]


def test_two_sleep_profiles_on_one_port_are_both_invalid(world):
    world.profile("demo-c", port=8001, sleep_level=2)  # demo-a's port
    loaded = world.catalog.load()
    assert sorted(loaded.profiles) == ["demo-b", "plain"]
    for name, other in (("demo-a", "demo-c"), ("demo-c", "demo-a")):
        with pytest.raises(ProfileError) as caught:
            world.controller.switch(name)
        assert caught.value.exit_code == 2
        message = caught.value.message
        assert f"{name}.yaml" in message and f"{other}.yaml" in message and "cannot share port 8001" in message


def test_a_sleep_profile_may_share_a_port_with_a_plain_one(world):
    world.profile("plain-too", port=8001)
    assert "plain-too" in world.catalog.load().profiles and "demo-a" in world.catalog.load().profiles


# --- stop, reconcile, status ---------------------------------------------------------------------


def test_stop_stops_the_sleepers_too(world):
    world.controller.switch("demo-a")
    world.controller.switch("demo-b")
    assert sorted(world.controller.stop()) == ["modelctl-demo-a", "modelctl-demo-b"]
    assert world.runtime.running_names() == []


def test_reconcile_adopts_the_sleepers_and_the_awake_model(world):
    world.controller.switch("demo-a")
    world.controller.switch("demo-b")
    world.runtime.add_foreign("vllm-by-hand", port=9000)
    assert world.controller.reconcile("plain") == ["vllm-by-hand"]
    assert asleep(world) == ["modelctl-demo-a"] and awake(world) == ["modelctl-demo-b"]


def test_reconcile_puts_a_second_awake_sleep_enabled_model_to_sleep(world):
    world.controller.switch("demo-a")
    world.controller.switch("demo-b")
    world.runtime.by_name("modelctl-demo-a").asleep = False  # say the engine restarted it awake
    assert world.controller.reconcile() == []
    assert len(awake(world)) == 1 and len(asleep(world)) == 1


def test_reconcile_with_only_sleepers_wakes_the_default(world):
    world.controller.switch("demo-a")
    world.controller.switch("demo-b")
    world.runtime.by_name("modelctl-demo-b").asleep = True  # both asleep (a killed switch)
    world.controller.reconcile("demo-a")
    assert awake(world) == ["modelctl-demo-a"] and asleep(world) == ["modelctl-demo-b"]
    assert world.runtime.by_name("modelctl-demo-a").id == cid(1)


def test_status_says_who_sleeps_and_round_trips(world):
    world.controller.switch("demo-a")
    world.controller.switch("plain")
    world.controller.switch("demo-b")  # plain stops, demo-a still asleep
    status = world.controller.status()
    assert status.active is not None and status.active.profile == "demo-b"
    by_name = {c.name: status.sleeping.get(c.id) for c in status.containers}
    assert by_name == {"modelctl-demo-a": True, "modelctl-demo-b": False, "modelctl-plain": None}
    a = world.runtime.by_name("modelctl-demo-a")
    assert status.residual_gib == {a.id: 1.0}, "degraded: the profile's sleep_vram_gib"
    document = status_json(status)
    assert {c["name"]: (c["sleeping"], c["residual_gib"]) for c in document["containers"]} == {
        "modelctl-demo-a": (True, 1.0),
        "modelctl-demo-b": (False, None),
        "modelctl-plain": (None, None),
    }
    assert document["gpu"]["asleep"] == {"modelctl-demo-a": 1.0} and document["gpu"]["asleep_measured"] is False
    # 4 GiB awake + 1 GiB asleep, estimated.
    assert document["gpu"]["estimated_used_gib"] == 5.0
    assert status_json(status_from_json(document)) == document
