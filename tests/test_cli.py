"""The CLI without an engine: what it refuses before anything touches Docker, what it imports for
`--help`, and the warnings of a switch. Each runs the real CLI in a subprocess with DOCKER_HOST
pointing at a socket that does not exist: a refusal that reached the engine would exit 5."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

# Never loaded for --help or version: the engine, HTTP, NVML, the service and what only it needs.
HEAVY = ("docker", "httpx", "starlette", "uvicorn", "prometheus_client", "pynvml")
SERVICE_STACK = ("modelctl.service", "modelctl.proxy", "modelctl.operations", "modelctl.scheduler", "modelctl.metrics")


def imported_modules(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "modelctl", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    modules = [line.rsplit("|", 1)[1].strip() for line in lines]
    assert "modelctl.cli" in modules, "importtime output not understood"
    return modules


@pytest.mark.parametrize("args", [["--help"], ["version"], ["switch", "--help"]])
def test_help_and_version_import_nothing_heavy(args):
    modules = imported_modules(*args)
    heavy = [m for m in modules if m.split(".")[0] in HEAVY or m in SERVICE_STACK or m == "modelctl.controller"]
    assert heavy == []


@pytest.fixture
def offline(workspace, tmp_path):
    """A workspace with one valid profile, and an engine that is not there."""
    workspace.profile("demo-a")
    workspace.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    return workspace


def refused(done: subprocess.CompletedProcess, *texts: str) -> None:
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    for text in texts:
        assert text in done.stderr
    assert "engine unreachable" not in done.stdout + done.stderr, "refused only after trying the engine"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["-5", "-0.1", "nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "args",
    [
        ["switch", "demo-a", "--timeout"],
        ["switch", "demo-a", "--lock-timeout"],
        ["stop", "--lock-timeout"],
        ["run", "demo-a", "--timeout"],
        ["run", "demo-a", "--lock-timeout"],
    ],
)
def test_negative_or_non_finite_waits_are_refused(offline, args, value):
    option = args[-1]
    rest = ["--", "true"] if args[0] == "run" else []
    done = offline.cli(*args, value, *rest)
    refused(done, f"error: {option}: expected a number of seconds, 0 or more, got {value}")


def test_a_refused_wait_is_a_json_error_with_json(offline):
    done = offline.cli("switch", "demo-a", "--timeout=-5", "--json")
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == 2 and error["message"].startswith("--timeout: expected a number of seconds")


def test_the_api_refuses_the_same_waits(tmp_path, monkeypatch):
    """The CLI and POST /api/switch agree: what one refuses (exit 2), the other refuses (400)."""
    from starlette.testclient import TestClient

    from modelctl.service import Service
    from modelctl.settings import Settings

    monkeypatch.setenv("MODELCTL_STATE_DIR", str(tmp_path))
    client = TestClient(Service(Settings()).app, base_url="http://127.0.0.1")  # no lifespan: no engine
    for key in ("timeout", "lock_timeout"):
        for value in ("-5", "nan", "inf"):
            response = client.post(f"/api/switch/demo-a?{key}={value}")
            assert response.status_code == 400, (key, value, response.text)
            assert response.json()["error"]["code"] == 2
    assert client.post("/api/stop?lock_timeout=-1").status_code == 400


def test_zero_waits_are_accepted(offline):
    done = offline.cli("switch", "demo-a", "--timeout", "0", "--lock-timeout", "0", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "planned"


@pytest.mark.parametrize("program", ["modelctl-no-such-command", "/nonexistent/cmd", "./not-here"])
def test_run_refuses_a_command_that_cannot_be_found_before_switching(offline, program):
    done = offline.cli("run", "demo-a", "--", program, "--flag")
    refused(done, f"command not found: {program}", "nothing was switched")


def test_run_refuses_a_file_that_is_not_executable_before_switching(offline, tmp_path):
    script = tmp_path / "eval.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # not executable
    refused(offline.cli("run", "demo-a", "--", str(script)), f"cannot run {script}: Permission denied")
    refused(offline.cli("run", "demo-a", "--", str(tmp_path)), f"cannot run {tmp_path}: Permission denied")


def test_run_with_a_command_that_resolves_goes_on_to_the_switch(offline, tmp_path):
    script = tmp_path / "eval.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    for program in ("true", str(script)):
        done = offline.cli("run", "demo-a", "--", program)
        assert done.returncode == 5 and "Docker engine unreachable" in done.stderr, done.stderr


def test_switch_prints_one_warning_line_per_invalid_profile(offline):
    (offline.profiles_dir / "half-edited.yaml").write_text("name: [unclosed\n")
    (offline.profiles_dir / "typo.yaml").write_text("name: typo\nmodel: m\n")
    done = offline.cli("switch", "demo-a", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("would switch to demo-a in ")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, done.stderr
    assert "half-edited.yaml" in warnings[0] and "typo.yaml" in warnings[1]
    assert all(line.startswith("warning: skipped invalid profile ") for line in warnings)

    as_json = offline.cli("switch", "demo-a", "--dry-run", "--json")
    assert as_json.returncode == 0
    assert "warning:" not in as_json.stderr, "with --json the warnings are in the document only"
    assert len(json.loads(as_json.stdout)["warnings"]) == 2


def test_switch_to_the_invalid_profile_still_exits_2(offline):
    (offline.profiles_dir / "typo.yaml").write_text("name: typo\nmodel: m\n")
    done = offline.cli("switch", "typo")
    refused(done, "typo.yaml")


def test_list_shows_an_invalid_profile_as_an_error_row(offline):
    (offline.profiles_dir / "typo.yaml").write_text("name: typo\nmodel: m\n")
    done = offline.cli("list", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "typo" in line or "demo-a" in line]
    assert any("demo-a" in row and "yes" in row for row in rows)
    assert any("typo" in row and "invalid:" in row and "typo.yaml" in row for row in rows), done.stdout
    listed = json.loads(offline.cli("list", "--json").stdout)
    assert [p["profile"] for p in listed] == ["demo-a"], "the JSON list holds the valid profiles only"
