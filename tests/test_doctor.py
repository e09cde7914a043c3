"""`modelctl doctor` without an engine: IPv6 hosts, a host beyond loopback, non-finite GPU sizes."""

from __future__ import annotations

import socket

import pytest
from conftest import free_port

from modelctl.doctor import answers, run_checks


@pytest.fixture
def doctor_env(monkeypatch, tmp_path, workspace):
    for key, value in workspace.env.items():
        if key.startswith("MODELCTL_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    return workspace


def checks_by_name() -> dict[str, object]:
    return {check.name: check for check in run_checks()}


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_doctor_with_an_ipv6_host(doctor_env, monkeypatch):
    port = free_port()
    doctor_env.profile("demo-a", port=port)
    monkeypatch.setenv("MODELCTL_HOST", "::1")
    checks = checks_by_name()
    assert checks["docker engine"].status == "fail", "no engine here: reported, not raised"
    assert checks[f"port {port}"].status == "ok" and "[::1]" in checks[f"port {port}"].detail
    assert checks["model host"].status == "ok"


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_doctor_sees_a_port_taken_on_ipv6(doctor_env, monkeypatch):
    with socket.socket(socket.AF_INET6) as squatter:
        squatter.bind(("::1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        doctor_env.profile("demo-a", port=port)
        monkeypatch.setenv("MODELCTL_HOST", "::1")
        assert answers("[::1]", port) and answers("::1", port)
        assert checks_by_name()[f"port {port}"].status == "warn"


def test_answers_never_raises():
    assert not answers("no-such-host.invalid", 1)
    assert not answers("[::1]", free_port())


def test_doctor_cli_with_an_ipv6_host(doctor_env):
    doctor_env.profile("demo-a")
    done = doctor_env.cli("doctor", env={"MODELCTL_HOST": "::1", "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert "Traceback" not in done.stderr, done.stderr
    assert "free on [::1]" in done.stdout


def test_doctor_warns_when_models_are_published_beyond_loopback(doctor_env, monkeypatch):
    doctor_env.profile("demo-a")
    monkeypatch.setenv("MODELCTL_HOST", "0.0.0.0")
    check = checks_by_name()["model host"]
    assert check.status == "warn" and "no authentication" in check.detail


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "Infinity"])
def test_a_non_finite_gpu_size_is_refused(doctor_env, monkeypatch, value):
    monkeypatch.setenv("MODELCTL_GPU_TOTAL_GIB", value)
    [check] = run_checks()
    assert check.name == "settings" and check.status == "fail"
    assert "MODELCTL_GPU_TOTAL_GIB" in check.detail


def test_a_non_finite_gpu_size_is_exit_2(doctor_env):
    doctor_env.profile("demo-a")
    done = doctor_env.cli("switch", "demo-a", "--dry-run", env={"MODELCTL_GPU_TOTAL_GIB": "inf"})
    assert done.returncode == 2 and "MODELCTL_GPU_TOTAL_GIB" in done.stderr, done.stderr


def test_doctor_reports_the_size_of_a_vllm_cache_directory(doctor_env, monkeypatch, tmp_path):
    from modelctl.doctor import directory_size

    cache = tmp_path / "vllm-cache"
    graphs = cache / "torch_compile_cache" / "0123456789" / "rank_0_0" / "backbone"
    graphs.mkdir(parents=True)
    (graphs / "artifact").write_bytes(b"x" * 300_000)
    (graphs / "link").symlink_to(graphs / "artifact")  # not followed: counted once
    size, unreadable = directory_size(cache)
    assert unreadable == 0 and 300_000 <= size < 300_000 + 8 * 4096 * 8
    monkeypatch.setenv("MODELCTL_VLLM_CACHE", str(cache))
    check = checks_by_name()["vllm cache"]
    assert check.status == "ok" and check.detail.startswith(f"{cache}, ") and "KiB" in check.detail


def test_doctor_on_a_missing_vllm_cache_directory_says_docker_makes_it(doctor_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELCTL_VLLM_CACHE", str(tmp_path / "not-yet"))
    check = checks_by_name()["vllm cache"]
    assert check.status == "ok" and "does not exist yet" in check.detail and "mkdir -p" in check.fix


def test_doctor_on_a_vllm_cache_volume_without_an_engine_warns(doctor_env, monkeypatch):
    monkeypatch.delenv("MODELCTL_VLLM_CACHE", raising=False)
    check = checks_by_name()["vllm cache"]
    assert check.status == "warn" and check.detail.startswith("volume modelctl-vllm-cache: ")
