"""Eviction: which running vLLM containers go before a model starts: every one but `keep`, except the
sleepers that may stay (decide)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.eviction import Room, Sleeper, decide, evictions
from modelctl.gpu import GpuBudget
from modelctl.plan import Plan, make_plan
from modelctl.profiles import Profile
from modelctl.runtime import ContainerInfo, container_info
from modelctl.settings import Settings


def managed(n: int, profile: str, state: str = "running") -> ContainerInfo:
    return container_info(
        id=f"{n:064d}",
        name=f"modelctl-{profile}",
        image="vllm/vllm-openai:v0.11.1",
        state=state,
        labels={
            "modelctl.managed": "true",
            "modelctl.profile": profile,
            "modelctl.plan-hash": "0123456789abcdef",
            "modelctl.served-model": profile,
            "modelctl.port": "8000",
        },
    )


def foreign(n: int, name: str) -> ContainerInfo:
    return container_info(id=f"{n:064d}", name=name, image="vllm/vllm-openai:v0.11.1", state="running", labels={})


@pytest.fixture
def target(tmp_path: Path) -> Plan:
    profile = Profile(
        name="demo-b",
        model="org/demo-b",
        image="vllm/vllm-openai:v0.11.1",
        vram_gib=4.0,
        max_model_len=4096,
        max_num_seqs=2,
    )
    settings = Settings(state_dir=tmp_path / "state", hf_cache=tmp_path / "hf", gpus="none", host="127.0.0.1")
    return make_plan(profile, GpuBudget(12.0, "assumed"), settings)


def test_nothing_running_evicts_nothing(target):
    assert evictions(target, []) == []


def test_every_running_container_goes_modelctls_and_foreign(target):
    a, hand, compose = managed(1, "demo-a"), foreign(2, "vllm-by-hand"), foreign(3, "compose-vllm-1")
    assert [c.name for c in evictions(target, [compose, hand, a])] == [
        "compose-vllm-1",
        "vllm-by-hand",
        "modelctl-demo-a",
    ]


def test_the_targets_own_container_goes_too_when_not_kept(target):
    """A re-planned profile: its running container is stopped (and set aside by the controller)."""
    b = managed(1, "demo-b")
    assert [c.name for c in evictions(target, [b])] == ["modelctl-demo-b"]


def test_the_kept_container_stays_and_the_rest_go(target):
    b, hand = managed(1, "demo-b"), foreign(2, "vllm-by-hand")
    assert [c.name for c in evictions(target, [hand, b], keep=b)] == ["vllm-by-hand"]


def test_without_a_target_everything_but_keep_goes():
    """`stop` and `reconcile` ask with no target."""
    a, b, hand = managed(1, "demo-a"), managed(2, "demo-b"), foreign(3, "vllm-by-hand")
    assert [c.name for c in evictions(None, [hand, b, a])] == ["vllm-by-hand", "modelctl-demo-b", "modelctl-demo-a"]
    assert [c.name for c in evictions(None, [hand, b, a], keep=a)] == ["vllm-by-hand", "modelctl-demo-b"]


def test_keep_alone_evicts_nothing():
    a = managed(1, "demo-a")
    assert evictions(None, [a], keep=a) == []


def test_the_order_of_what_runs_is_kept_and_the_input_untouched(target):
    running = [foreign(3, "c"), managed(2, "demo-a"), foreign(1, "a")]
    before = list(running)
    assert [c.name for c in evictions(target, running)] == ["c", "modelctl-demo-a", "a"]
    assert running == before


# --- with sleepers: decide() ---------------------------------------------------------------------


def sleeper(c: ContainerInfo, *, asleep: bool, kept: float = 1.0, used: float = 0.0, pin: float = 0.0, level=1):
    return Sleeper(c, level, asleep, kept, used, pin)


def on_port(n: int, profile: str, port: int) -> ContainerInfo:
    c = managed(n, profile)
    return container_info(
        id=c.id,
        name=c.name,
        image=c.image,
        state="running",
        labels={
            "modelctl.managed": "true",
            "modelctl.profile": profile,
            "modelctl.plan-hash": "0123456789abcdef",
            "modelctl.served-model": profile,
            "modelctl.port": str(port),
        },
    )


def test_the_awake_sleeper_sleeps_the_others_stay_and_the_rest_stop(target):
    a, c, plain, hand = (
        on_port(1, "demo-a", 8001),
        on_port(2, "demo-c", 8003),
        on_port(3, "plain", 8004),
        foreign(4, "x"),
    )
    sleepers = {a.id: sleeper(a, asleep=False, used=100), c.id: sleeper(c, asleep=True, used=50)}
    got = decide(target, [a, c, plain, hand], sleepers=sleepers, room=Room(12.0))
    assert [x.name for x in got.sleep] == ["modelctl-demo-a"]
    assert [x.name for x in got.stop] == ["modelctl-plain", "x"]
    assert got.reasons == {}


def test_without_room_the_least_recently_used_sleeper_stops_first(target):
    """demo-b needs 0.34 x 12 + 0.6 = 4.68 GiB; three sleepers keeping 4 GiB each leave room for one."""
    old, mid, new = on_port(1, "old", 8001), on_port(2, "mid", 8002), on_port(3, "new", 8003)
    sleepers = {
        old.id: sleeper(old, asleep=True, kept=4, used=10),
        mid.id: sleeper(mid, asleep=True, kept=4, used=20),
        new.id: sleeper(new, asleep=False, kept=4, used=30),
    }
    got = decide(target, [old, mid, new], sleepers=sleepers, room=Room(12.0))
    assert [x.name for x in got.stop] == ["modelctl-old", "modelctl-mid"]
    assert [x.name for x in got.sleep] == ["modelctl-new"]
    assert "least recently used" in got.reasons["modelctl-old"]


def test_a_level_1_sleep_over_the_host_reserve_is_a_stop(target):
    a = on_port(1, "demo-a", 8001)
    sleepers = {a.id: sleeper(a, asleep=False, pin=5.0)}
    got = decide(target, [a], sleepers=sleepers, room=Room(12.0, host_available_gib=8.0, host_reserve_gib=4.0))
    assert [x.name for x in got.stop] == ["modelctl-demo-a"] and got.sleep == []
    assert "MODELCTL_SLEEP_HOST_RESERVE_GIB=4" in got.reasons["modelctl-demo-a"]
    got = decide(target, [a], sleepers=sleepers, room=Room(12.0, host_available_gib=9.5, host_reserve_gib=4.0))
    assert [x.name for x in got.sleep] == ["modelctl-demo-a"]


def test_a_sleeper_on_the_targets_port_or_with_its_name_stops(target):
    same_port = on_port(1, "demo-a", target.spec.port)
    own = on_port(2, "demo-b", 8009)  # the target's name, a plan not kept
    sleepers = {same_port.id: sleeper(same_port, asleep=True), own.id: sleeper(own, asleep=True)}
    got = decide(target, [same_port, own], sleepers=sleepers, room=Room(100.0))
    assert [x.name for x in got.stop] == ["modelctl-demo-a", "modelctl-demo-b"]


def test_without_a_target_sleepers_stay_and_the_awake_extra_sleeps():
    """reconcile: keep one awake model, keep the sleepers, put another awake one to sleep."""
    a, b, c = on_port(1, "demo-a", 8001), on_port(2, "demo-b", 8002), on_port(3, "demo-c", 8003)
    sleepers = {a.id: sleeper(a, asleep=True), b.id: sleeper(b, asleep=False)}
    got = decide(None, [a, b, c], keep=c, sleepers=sleepers)
    assert got.stop == [] and [x.name for x in got.sleep] == ["modelctl-demo-b"]
