"""Plans: utilization from the real total, refusal with a useful message, the container spec."""

from __future__ import annotations

import pytest

from modelctl.errors import DoesNotFitError
from modelctl.gpu import GpuBudget
from modelctl.plan import START_MARGIN_GIB, check_fits, exposure_warning, make_plan, utilization_for
from modelctl.profiles import Profile, Tier
from modelctl.runtime import SHM_SIZE
from modelctl.settings import Settings


def profile(name: str = "demo", vram_gib: float = 4.2, **keys) -> Profile:
    return Profile(
        name=name,
        model=f"org/{name}",
        image="vllm/vllm-openai:v0.11.1",
        vram_gib=vram_gib,
        max_model_len=4096,
        max_num_seqs=4,
        **keys,
    )


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


def plan(p: Profile, gpu: GpuBudget = GPU12):
    return make_plan(p, gpu, Settings(gpus="none"))


def test_too_big_is_refused_with_how_much_and_what_fits():
    big, small = profile("big", vram_gib=14.0), profile("small", vram_gib=4.2)
    with pytest.raises(DoesNotFitError) as caught:
        check_fits(plan(big), [plan(small)])
    error = caught.value
    assert error.exit_code == 3
    assert "big needs 14 GiB" in error.message and "2.60 GiB short" in error.message
    assert "small (4.2 GiB)" in error.hint and "max_model_len" in error.hint


def test_just_below_the_cap_fits():
    check_fits(plan(profile(vram_gib=11.4)), [])  # 0.95 x 12 = 11.4


def test_start_needs_the_utilization_plus_vllms_own_context():
    assert plan(profile(vram_gib=4.2)).start_needs_gib == pytest.approx(0.35 * 12 + START_MARGIN_GIB)


TIERS = {
    12: Tier(vram_gib=8.5, max_model_len=12288, max_num_seqs=2),
    16: Tier(vram_gib=11.0, max_model_len=16384, max_num_seqs=4),
    24: Tier(vram_gib=16.0, max_model_len=32768, max_num_seqs=8),
}


@pytest.mark.parametrize(
    ("total", "tier", "max_model_len"),
    [
        (11.99, 12, 12288),  # a "12 GB" card reports a little under 12 GiB
        (15.99, 16, 16384),
        (23.99, 24, 32768),
        (79.6, 24, 32768),  # the largest tier on a bigger card
        (8.0, None, 4096),  # below every tier: the profile's own values
    ],
)
def test_plan_takes_the_largest_tier_the_gpu_holds(total, tier, max_model_len):
    chosen = plan(profile(vram_gib=6.0, tiers=TIERS), GpuBudget(total_gib=total, source="test"))
    assert chosen.sizing.tier_gib == tier
    assert chosen.sizing.max_model_len == max_model_len
    assert f"--max-model-len {max_model_len}" in " ".join(chosen.spec.command)
    assert (str(tier) in chosen.sizing.reason) if tier else "no tier of [12, 16, 24] applies" in chosen.sizing.reason


def test_a_tier_that_does_not_fit_its_size_is_skipped():
    greedy = {16: Tier(vram_gib=15.5, max_model_len=8192, max_num_seqs=2)}  # 15.5 / 15.99 > 0.95
    chosen = plan(profile(vram_gib=6.0, tiers=greedy), GpuBudget(total_gib=15.99, source="test"))
    assert chosen.sizing.tier_gib is None and chosen.sizing.vram_gib == 6.0


def test_an_empty_token_in_an_env_file_means_no_token(monkeypatch):
    monkeypatch.setenv("MODELCTL_API_TOKEN", "")
    monkeypatch.setenv("HF_TOKEN", "")
    settings = Settings()
    assert settings.api_token is None and settings.hf_token is None


def test_shared_memory_by_default_host_ipc_only_when_asked(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("MODELCTL_IPC", raising=False)
    private = make_plan(profile(), GPU12, Settings(gpus="none"))
    assert private.spec.ipc_host is False and private.spec.shm_size == SHM_SIZE == "8g"
    assert "--shm-size 8g" in private.docker_run_line() and "--ipc" not in private.docker_run_line()
    host = make_plan(profile(), GPU12, Settings(gpus="none", ipc="host"))
    assert host.spec.ipc_host is True and host.spec.shm_size is None
    assert "--ipc host" in host.docker_run_line() and "--shm-size" not in host.docker_run_line()
    assert host.hash != private.hash, "a container with the host's IPC is not the default plan"


def test_ipc_setting_is_checked(monkeypatch):
    from modelctl.errors import UsageError
    from modelctl.settings import load_settings

    monkeypatch.setenv("MODELCTL_IPC", "shareable")
    with pytest.raises(UsageError, match="MODELCTL_IPC"):
        load_settings()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_need_no_warning(host, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert exposure_warning(host) is None
    assert make_plan(profile(), GPU12, Settings(gpus="none", host=host)).warnings == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "myhost.lan"])
def test_a_host_beyond_loopback_warns_that_vllm_has_no_authentication(host, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    [warning] = make_plan(profile(), GPU12, Settings(gpus="none", host=host)).warnings
    assert warning.startswith(f"MODELCTL_HOST={host or '(empty)'} publishes the model server (port 8000)")
    assert "no authentication" in warning and warning == exposure_warning(host, 8000)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_non_finite_gpu_size_is_refused(value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="finite"):
        Settings(gpu_total_gib=value)
