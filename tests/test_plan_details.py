"""Plans, figure by figure: the docker run line, the hash's inputs, the labels, the tier edges and
the refusal's words. Every expected value is written here, with its arithmetic in a comment."""

from __future__ import annotations

import hashlib
import json

import pytest

from modelctl import __version__
from modelctl.errors import DoesNotFitError
from modelctl.gpu import GpuBudget
from modelctl.plan import (
    check_fits,
    choose_sizing,
    exposure_warning,
    fits,
    is_loopback_host,
    make_plan,
    utilization_for,
)
from modelctl.profiles import Profile, Tier
from modelctl.settings import Settings


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch):
    for name in (
        "HF_TOKEN",
        "MODELCTL_HF_TOKEN",
        "MODELCTL_IPC",
        "MODELCTL_HOST",
        "MODELCTL_GPUS",
        "MODELCTL_HF_CACHE",
        "MODELCTL_VLLM_CACHE",
    ):
        monkeypatch.delenv(name, raising=False)


def profile(name: str = "demo", vram_gib: float = 4.2, **keys) -> Profile:
    values = {"model": f"org/{name}", "image": "vllm/vllm-openai:v0.11.1", "max_model_len": 4096, "max_num_seqs": 4}
    return Profile(name=name, vram_gib=vram_gib, **{**values, **keys})


def settings(**keys) -> Settings:
    return Settings(**{"gpus": "none", "hf_cache": "/data/hf", "vllm_cache": "/data/vllm", **keys})


def gpu(total: float) -> GpuBudget:
    return GpuBudget(total_gib=total, source="test")


GPU12 = gpu(12.0)


def test_the_docker_run_line_says_everything_the_container_gets():
    plan = make_plan(
        profile(port=8011, env={"VLLM_USE_V1": "1", "WANDB_API_KEY": "not-for-eyes"}),
        GPU12,
        settings(gpus="0,1", HF_TOKEN="hf_abcdefghijklmnopqrstuvwxyz", host="127.0.0.2"),
    )
    labels = (
        f"--label modelctl.managed=true --label modelctl.profile=demo --label modelctl.plan-hash={plan.hash} "
        f"--label modelctl.version={__version__} --label modelctl.served-model=demo --label modelctl.port=8011"
    )
    assert plan.docker_run_line() == (
        "docker run -d --name modelctl-demo --gpus '\"device=0,1\"' --shm-size 8g "
        "-p 127.0.0.2:8011:8011 -v /data/hf:/root/.cache/huggingface -v /data/vllm:/root/.cache/vllm "
        "-e VLLM_USE_V1=1 -e 'WANDB_API_KEY=***' -e HF_TOKEN "
        f"{labels} vllm/vllm-openai:v0.11.1 {' '.join(plan.spec.command)}"
    )
    assert "not-for-eyes" not in plan.docker_run_line() and "hf_abc" not in plan.docker_run_line()


def test_the_docker_run_line_with_every_gpu_and_the_hosts_ipc():
    line = make_plan(profile(), GPU12, settings(gpus="all", ipc="host")).docker_run_line()
    assert line.startswith(
        "docker run -d --name modelctl-demo --gpus all --ipc host -p 127.0.0.1:8000:8000 "
        "-v /data/hf:/root/.cache/huggingface -v /data/vllm:/root/.cache/vllm --label modelctl.managed=true "
    )
    assert " -e " not in line, "no env, no token: nothing passed"


def test_the_container_spec_and_its_labels():
    plan = make_plan(profile("ocr", served_model_name="org/ocr-served", port=8011), GPU12, settings())
    spec = plan.spec
    assert spec.name == "modelctl-ocr" and spec.image == "vllm/vllm-openai:v0.11.1"
    assert spec.hf_cache == "/data/hf" and spec.port == 8011 and spec.host_ip == "127.0.0.1"
    assert spec.secret_env_names == (), "no HF_TOKEN in the environment: none passed"
    assert spec.env == {} and spec.gpu_device_ids == []
    assert spec.labels == {
        "modelctl.managed": "true",
        "modelctl.profile": "ocr",
        "modelctl.plan-hash": plan.hash,
        "modelctl.version": __version__,
        "modelctl.served-model": "org/ocr-served",
        "modelctl.port": "8011",
    }
    assert len(plan.hash) == 16 and int(plan.hash, 16) >= 0
    command = spec.command
    assert command[command.index("--port") + 1] == "8011"
    assert command[command.index("--served-model-name") + 1] == "org/ocr-served"
    assert plan.url == "http://127.0.0.1:8011/v1"


def test_the_plan_hash_is_the_sha256_of_what_runs():
    plan = make_plan(profile(env={"A": "1"}), GPU12, settings(gpus="0"))
    # The inputs written out (in another key order: the hash sorts them), first 16 hex digits.
    document = {
        "secret_env": [],
        "ipc": "private shm 8g",
        "hf_cache": "/data/hf",
        "vllm_cache": "/data/vllm",
        "gpus": ["0"],
        "host_ip": "127.0.0.1",
        "port": 8000,
        "env": {"A": "1"},
        "command": plan.spec.command,
        "image": "vllm/vllm-openai:v0.11.1",
    }
    expected = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
    assert plan.hash == expected
    with_token = make_plan(profile(env={"A": "1"}), GPU12, settings(gpus="0", HF_TOKEN="hf_" + "x" * 30))
    document["secret_env"] = ["HF_TOKEN"]
    assert with_token.hash == hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
    host_ipc = make_plan(profile(env={"A": "1"}), GPU12, settings(gpus="0", ipc="host"))
    document["secret_env"], document["ipc"] = [], "host"
    assert host_ipc.hash == hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def test_start_needs_is_the_utilization_of_the_total_plus_0_6_gib():
    # 4.2 / 12 = 0.35; 0.35 x 12 = 4.2, + 0.6 GiB of vLLM's own CUDA context = 4.8
    assert make_plan(profile(vram_gib=4.2), GPU12, settings()).start_needs_gib == pytest.approx(4.8)
    # 6 / 16 = 0.375 -> 0.38; 0.38 x 16 = 6.08, + 0.6 = 6.68
    assert make_plan(profile(vram_gib=6.0), gpu(16.0), settings()).start_needs_gib == pytest.approx(6.68)


def test_float_noise_is_not_rounded_up_a_real_remainder_is():
    # 0.350000002 / 1 x 100 = 35.0000002: below a millionth of a percent, float noise -> 0.35
    assert utilization_for(0.350000002, 1.0) == 0.35
    # 0.3500003 x 100 = 35.00003: a real remainder -> 0.36
    assert utilization_for(0.3500003, 1.0) == 0.36


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost.", True), ("LOCALHOST", True), (" 127.0.0.1 ", True), ("127.0.0.1.", True), ("[::1]", True)]
    + [(".localhost", False), ("localhost.lan", False), ("10.0.0.1", False), ("::", False)],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback


def test_the_exposure_warning_word_for_word():
    assert exposure_warning("0.0.0.0", 8000) == (
        "MODELCTL_HOST=0.0.0.0 publishes the model server (port 8000) on every interface, and vLLM's "
        "server has no authentication: anyone who reaches it can use the model, and with sleep mode put it "
        "to sleep. Keep MODELCTL_HOST=127.0.0.1 and serve others through `modelctl serve` with "
        "MODELCTL_API_TOKEN, or firewall the port."
    )
    assert exposure_warning("192.168.1.20").startswith(
        "MODELCTL_HOST=192.168.1.20 publishes the model server on 192.168.1.20, and vLLM's server has no"
    )


@pytest.mark.parametrize(
    ("host", "shown", "where"),
    [("", "(empty)", "every interface"), ("::", "::", "every interface"), ("[::]", "[::]", "every interface")]
    + [("10.0.0.5", "10.0.0.5", "10.0.0.5"), ("myhost.lan", "myhost.lan", "myhost.lan")],
)
def test_the_exposure_warning_says_where_the_server_is_published(host, shown, where):
    assert exposure_warning(host, 8011).startswith(
        f"MODELCTL_HOST={shown} publishes the model server (port 8011) on {where}, and vLLM's server"
    )


TIERS = {
    12: Tier(vram_gib=8.5, max_model_len=12288, max_num_seqs=2),
    16: Tier(vram_gib=11.0, max_model_len=16384, max_num_seqs=4),
    24: Tier(vram_gib=16.0, max_model_len=32768, max_num_seqs=8),
}


def test_a_tier_applies_from_half_a_gib_under_its_size():
    # tier 12 applies from 12 - 0.5 = 11.5 GiB on: 8.5 / 11.5 = 0.74 fits
    at_edge = choose_sizing(profile(vram_gib=6.0, tiers=TIERS), gpu(11.5))
    assert (at_edge.tier_gib, at_edge.vram_gib, at_edge.max_model_len, at_edge.max_num_seqs) == (12, 8.5, 12288, 2)
    assert at_edge.reason == "tier 12 GiB: the largest of [12, 16, 24] for a 11.50 GiB GPU"
    below = choose_sizing(profile(vram_gib=6.0, tiers=TIERS), gpu(11.49))
    assert (below.tier_gib, below.vram_gib, below.max_model_len, below.max_num_seqs) == (None, 6.0, 4096, 4)
    assert below.reason == "the profile's own values (no tier of [12, 16, 24] applies to a 11.49 GiB GPU)"
    # 16 - 0.5 = 15.5: tier 16 at 15.5, tier 12 just under it
    assert choose_sizing(profile(tiers=TIERS), gpu(15.5)).reason == (
        "tier 16 GiB: the largest of [12, 16, 24] for a 15.50 GiB GPU"
    )
    assert choose_sizing(profile(tiers=TIERS), gpu(15.49)).tier_gib == 12


def test_without_tiers_the_reason_is_the_profiles_own_values():
    sizing = choose_sizing(profile(vram_gib=4.2), gpu(24.0))
    assert (sizing.tier_gib, sizing.vram_gib, sizing.max_model_len, sizing.max_num_seqs) == (None, 4.2, 4096, 4)
    assert sizing.reason == "the profile's own values"


def test_a_tier_at_exactly_95_percent_fits():
    # 11.4 / 12 = 0.95 = the cap: it fits; 11.41 / 12 = 0.9508 -> 0.96 does not
    assert fits(11.4, GPU12) is True and fits(11.41, GPU12) is False
    exact = {12: Tier(vram_gib=11.4, max_model_len=2048, max_num_seqs=1)}
    assert choose_sizing(profile(tiers=exact), GPU12).tier_gib == 12
    over = {12: Tier(vram_gib=11.41, max_model_len=2048, max_num_seqs=1)}
    assert choose_sizing(profile(tiers=over), GPU12).tier_gib is None


def test_the_refusal_names_the_need_the_gpu_the_shortfall_and_what_fits_largest_first():
    big = make_plan(profile("big", vram_gib=14.0), GPU12, settings())
    others = [make_plan(profile(name, vram_gib=v), GPU12, settings()) for name, v in [("a", 4.2), ("b", 6.0)]]
    too_big_too = make_plan(profile("huge", vram_gib=20.0), GPU12, settings())
    with pytest.raises(DoesNotFitError) as caught:
        check_fits(big, [*others, too_big_too])
    # at most 12 x 0.95 = 11.40 GiB; 14 - 11.40 = 2.60 short
    assert caught.value.message == (
        "big needs 14 GiB but this GPU (test, 12.00 GiB) gives a model at most 11.40 GiB (95%): 2.60 GiB short"
    )
    assert caught.value.hint == (
        "fits this GPU: b (6 GiB), a (4.2 GiB); or lower max_model_len / max_num_seqs and vram_gib "
        "in the profile (or add a tier for this GPU size)"
    )
    with pytest.raises(DoesNotFitError) as alone:
        check_fits(big, [too_big_too])
    assert alone.value.hint.startswith("fits this GPU: none of the profiles; or lower max_model_len")


def test_a_sleep_enabled_profile_starts_with_sleep_mode_and_the_dev_endpoints():
    plan = make_plan(profile(sleep_level=1, env={"A": "1"}), GPU12, settings())
    assert plan.spec.command.count("--enable-sleep-mode") == 1
    assert plan.spec.env == {"A": "1", "VLLM_SERVER_DEV_MODE": "1"}
    given = make_plan(profile(sleep_level=2, vllm_args=["--enable-sleep-mode"]), GPU12, settings())
    assert given.spec.command.count("--enable-sleep-mode") == 1, "not twice when the profile has it"
    plain = make_plan(profile(), GPU12, settings())
    assert "--enable-sleep-mode" not in plain.spec.command and plain.spec.env == {}
