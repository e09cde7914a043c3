"""Plans: utilization from the real total, refusal with a useful message, the container spec."""

from __future__ import annotations

import math

import pytest

from modelctl.errors import DoesNotFitError
from modelctl.gpu import GpuBudget
from modelctl.plan import (
    ENGINE_CONTEXT_GIB,
    check_fits,
    exposure_warning,
    make_plan,
    start_needs_bytes,
    utilization_for,
    vllm_requested_bytes,
)
from modelctl.profiles import Profile, Tier
from modelctl.runtime import SHM_SIZE, VLLM_CACHE_IN_CONTAINER
from modelctl.settings import Settings
from modelctl.vllm.flags import image_version, known_flags, unknown_flags


def profile(name: str = "demo", vram_gib: float = 4.2, image: str = "vllm/vllm-openai:v0.11.1", **keys) -> Profile:
    return Profile(
        name=name,
        model=f"org/{name}",
        image=image,
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
    assert plan(profile(vram_gib=4.2)).start_needs_gib == pytest.approx(0.35 * 12 + ENGINE_CONTEXT_GIB)


# Admission, with the figures of one card: NVML reports a "12 GB" RTX 4070 Ti as 12,878,610,432 bytes
# (12,282 MiB, 11.994140625 GiB).
NVML_12GB = 12_878_610_432


def test_vllms_request_is_the_ceil_of_total_times_utilization_in_bytes():
    total_gib = NVML_12GB / 2**30
    assert total_gib == 11.994140625
    # vLLM 0.33: math.ceil(12_878_610_432 * 0.71) = ceil(9_143_813_406.72)
    assert vllm_requested_bytes(0.71, total_gib) == 9_143_813_407
    # a product that is whole stays whole: 24 GB card, half of it
    assert vllm_requested_bytes(0.5, 2 * total_gib) == 12_878_610_432
    # 12 GiB exactly x 0.34 = 4_380_866_641.92 -> 4_380_866_642
    assert vllm_requested_bytes(0.34, 12.0) == 4_380_866_642


def test_admission_adds_the_engines_own_context_to_the_request():
    assert ENGINE_CONTEXT_GIB == 0.6  # an estimate to confirm on a GPU (plan.py)
    # 9_143_813_407 + round(0.6 x 2**30) = 9_143_813_407 + 644_245_094
    assert start_needs_bytes(0.71, NVML_12GB / 2**30) == 9_788_058_501
    gpu = GpuBudget(total_gib=NVML_12GB / 2**30, source="test")
    dots_like = make_plan(profile(vram_gib=8.5), gpu, Settings(gpus="none"))
    assert dots_like.utilization == 0.71  # 8.5 / 11.994 = 0.7087 -> 0.71
    assert dots_like.start_needs_gib == 9_788_058_501 / 2**30  # 9.1158... GiB
    assert dots_like.start_needs_gib * 2**30 >= math.ceil(NVML_12GB * 0.71) + 0.6 * 2**30 - 1


def test_admission_is_never_below_vllms_own_check():
    """Free memory at the start minus the engine's baseline must pass vLLM's `free >= ceil(total x u)`."""
    for total in (NVML_12GB, 17_171_480_576, 25_757_220_864, 85_520_809_984):
        for hundredths in range(1, 96):
            u = hundredths / 100
            need = start_needs_bytes(u, total / 2**30)
            free_when_vllm_looks = need - round(ENGINE_CONTEXT_GIB * 2**30)
            assert free_when_vllm_looks >= math.ceil(total * u)


# --- what modelctl passes depends on the image's vLLM version --------------------------------------


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("vllm/vllm-openai:v0.33.0", (0, 33, 0)),
        ("vllm/vllm-openai:0.33.0", (0, 33, 0)),
        ("docker.io/vllm/vllm-openai:v0.10.1.1", (0, 10, 1)),
        ("registry.local:5000/vllm/vllm-openai:v0.33.0-cu130", (0, 33, 0)),
        ("vllm/vllm-openai:standin-0.11.1", (0, 11, 1)),
        ("vllm/vllm-openai:latest", None),
        ("vllm/vllm-openai:nightly-0123abcd", None),
        ("vllm/vllm-openai:standin", None),
        ("vllm/vllm-openai@sha256:0123", None),
        ("my/vllm-build:0.33.0", None),  # not vLLM's image: its tag is not vLLM's version
    ],
)
def test_the_version_is_read_from_the_tag(image, version):
    assert image_version(image) == version


def plan_for(image: str, stop_grace: int = 10, **keys):
    return make_plan(profile(image=image, **keys), GPU12, Settings(gpus="none", stop_grace=stop_grace))


def test_033_gets_a_drain_within_the_stop_grace_and_the_model_as_a_flag(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    cmd = plan_for("vllm/vllm-openai:v0.33.0").spec.command
    assert cmd[:2] == ["--model", "org/demo"], "--model: deprecated, still in 0.33, works under every entrypoint"
    assert cmd[cmd.index("--shutdown-timeout") + 1] == "8"  # MODELCTL_STOP_GRACE 10, less 2 s to stop
    assert plan_for("vllm/vllm-openai:v0.33.0", stop_grace=30).spec.command.count("--shutdown-timeout") == 1
    assert "--shutdown-timeout" not in plan_for("vllm/vllm-openai:v0.33.0", stop_grace=2).spec.command
    assert "--shutdown-timeout 29" in " ".join(plan_for("vllm/vllm-openai:v0.40.1", stop_grace=31).spec.command)
    # the profile's own value wins: modelctl adds none
    own = plan_for("vllm/vllm-openai:v0.33.0", vllm_args=["--shutdown-timeout=3"]).spec.command
    assert [w for w in own if "shutdown" in w] == ["--shutdown-timeout=3"]
    assert plan_for("vllm/vllm-openai:v0.33.0").hash != plan_for("vllm/vllm-openai:v0.33.0", stop_grace=20).hash


@pytest.mark.parametrize(
    "image", ["vllm/vllm-openai:v0.11.1", "vllm/vllm-openai:v0.20.0", "vllm/vllm-openai:latest", "my/vllm:0.40.0"]
)
def test_older_and_unknown_tags_get_what_every_known_version_takes(image, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    cmd = plan_for(image).spec.command
    assert cmd[:2] == ["--model", "org/demo"] and "--shutdown-timeout" not in cmd
    assert unknown_flags(cmd, known_flags((0, 11, 1))) == [], "nothing 0.11.1 lacks"


def test_a_version_whose_list_lacks_model_gets_it_positionally(monkeypatch):
    from modelctl.vllm import flags

    monkeypatch.setattr(flags, "known_flags", lambda version: frozenset({"--port", "--served-model-name"}))
    cmd = plan_for("vllm/vllm-openai:v0.33.0").spec.command
    assert cmd[:2] == ["org/demo", "--served-model-name"], "vllm serve MODEL: the positional comes first"


# --- the kept vLLM cache ---------------------------------------------------------------------------


def test_the_vllm_cache_is_mounted_and_in_the_plan(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("MODELCTL_VLLM_CACHE", raising=False)
    default = make_plan(profile(), GPU12, Settings(gpus="none"))
    assert VLLM_CACHE_IN_CONTAINER == "/root/.cache/vllm"
    assert default.spec.vllm_cache == "modelctl-vllm-cache"
    assert "-v modelctl-vllm-cache:/root/.cache/vllm " in default.docker_run_line()
    directory = make_plan(profile(), GPU12, Settings(gpus="none", vllm_cache=tmp_path / "vllm"))
    assert directory.spec.vllm_cache == str(tmp_path / "vllm")
    assert f"-v {tmp_path}/vllm:/root/.cache/vllm " in directory.docker_run_line()
    assert directory.hash != default.hash, "another cache is another container"


@pytest.mark.parametrize("value", ["cache/vllm", "../vllm"])
def test_a_relative_vllm_cache_is_refused(monkeypatch, value):
    from modelctl.errors import UsageError
    from modelctl.settings import load_settings

    monkeypatch.setenv("MODELCTL_VLLM_CACHE", value)
    with pytest.raises(UsageError, match="MODELCTL_VLLM_CACHE"):
        load_settings()


def test_a_vllm_cache_under_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MODELCTL_VLLM_CACHE", "~/vllm-cache")
    assert str(Settings().vllm_cache) == f"{tmp_path}/vllm-cache"


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
