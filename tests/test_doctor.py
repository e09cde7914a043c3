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
