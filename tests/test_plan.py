"""Plans: utilization from the real total, refusal with a useful message, the container spec."""

from __future__ import annotations

import pytest

from modelctl.errors import DoesNotFitError
from modelctl.plan import GpuBudget, check_fits, make_plan, utilization_for
from modelctl.profiles import Profile
from modelctl.settings import Settings


def profile(name: str = "demo", vram_gib: float = 4.2, **keys) -> Profile:
    return Profile(name=name, model=f"org/{name}", image="vllm/vllm-openai:v0.11.1", vram_gib=vram_gib,
                   max_model_len=4096, max_num_seqs=4, **keys)  # fmt: skip


GPU12 = GpuBudget(total_gib=12.0, source="test")


@pytest.mark.parametrize(
    ("vram", "total", "expected"),
    [(4.2, 12.0, 0.35), (8.0, 12.0, 0.67), (4.4, 11.94, 0.37), (6.0, 12.0, 0.5), (12.0, 80.0, 0.15), (0.01, 16, 0.01)],
)
def test_utilization_rounds_up_to_a_hundredth(vram, total, expected):
    assert utilization_for(vram, total) == expected
    assert utilization_for(vram, total) * total >= vram - 1e-9, "the model gets at least its vram_gib"


def test_plan_flags(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    plan = make_plan(profile(vllm_args=["--trust-remote-code"]), GPU12, Settings(gpus="none"))
    cmd = plan.spec.command
    assert cmd[:2] == ["--model", "org/demo"], "always --model: old entrypoints ignore a positional model"
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.35"
    assert cmd[cmd.index("--max-model-len") + 1] == "4096"
    assert cmd[cmd.index("--max-num-seqs") + 1] == "4"
    assert cmd[-1] == "--trust-remote-code"
    assert plan.spec.gpu_device_ids == [] and plan.spec.host_ip == "127.0.0.1"
    assert plan.url == "http://127.0.0.1:8000/v1"


def test_plan_hash_follows_what_runs(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    settings = Settings(gpus="none")
    same = make_plan(profile(), GPU12, settings).hash
    assert make_plan(profile(), GPU12, settings).hash == same
    assert make_plan(profile(), GpuBudget(total_gib=16.0, source="test"), settings).hash != same
    assert make_plan(profile(env={"A": "1"}), GPU12, settings).hash != same


def test_token_is_passed_by_name_never_shown(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    settings = Settings(gpus="all")
    plan = make_plan(profile(), GPU12, settings)
    assert plan.spec.secret_env_names == ("HF_TOKEN",)
    assert "hf_secret_value" not in plan.docker_run_line()
    assert "hf_secret_value" not in repr(plan) and "hf_secret_value" not in repr(settings)
    assert "-e HF_TOKEN " in plan.docker_run_line() and "--gpus all" in plan.docker_run_line()


def test_too_big_is_refused_with_how_much_and_what_fits():
    big, small = profile("big", vram_gib=14.0), profile("small", vram_gib=4.2)
    with pytest.raises(DoesNotFitError) as caught:
        check_fits(big, GPU12, [small])
    error = caught.value
    assert error.exit_code == 3
    assert "big needs 14 GiB" in error.message and "2.60 GiB short" in error.message
    assert "small (4.2 GiB)" in error.hint and "max_model_len" in error.hint


def test_just_below_the_cap_fits():
    check_fits(profile(vram_gib=11.4), GPU12, [])  # 0.95 x 12 = 11.4
