"""Eviction: which running vLLM containers go before a model starts. Today: every one but `keep`."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.eviction import evictions
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
