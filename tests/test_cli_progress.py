"""The CLI through the service (MODELCTL_URL) shows the same progress as the local CLI: without a
terminal, plain phase lines on stderr, from the service's event stream, before the result; the
same exit codes. The event parsing on its own needs no engine."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from test_service import start_service  # noqa: F401 (a fixture)

from modelctl.client import sse_events

PHASE_LINE = re.compile(r"^\[\s*(\d+\.\d)s\] (\w+)(?: (.*))?$")


def test_sse_events_are_parsed_as_the_service_sends_them():
    lines = [
        "retry: 2000",
        "",
        "id: 1",
        "event: state",
        'data: {"active": null}',
        "",
        ": keep-alive",
        "",
        "id: 2",
        "event: switch",
        'data: {"op": "x",',
        'data:  "phase": "plan"}',
        "",
        "event: log",
        "data: not json",
        "",
    ]
    assert list(sse_events(iter(lines))) == [("state", {"active": None}), ("switch", {"op": "x", "phase": "plan"})]


def phases_of(output: str) -> list[str]:
    """The phases told, less those a switch has only when the image or the weights are missing."""
    told = [m.group(2) for line in output.splitlines() if (m := PHASE_LINE.match(line))]
    return [phase for phase in told if phase not in ("pull", "fetch")]


def cli(workspace, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI with stderr and stdout in one pipe: the order they were written in."""
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args],
        env={**workspace.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


@pytest.mark.engine
def test_switch_stop_and_run_through_the_service_show_the_phases_before_the_result(engine, workspace, start_service):
    workspace.profile("slow", env={"STANDIN_LOAD_SECONDS": "2"})
    workspace.profile("demo-b")
    workspace.profile("broken", env={"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_FAIL": "cuda-oom"})
    service = start_service()
    service.wait_idle()
    remote = {"MODELCTL_URL": service.url}

    done = cli(workspace, "switch", "slow", env=remote)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    result = next(i for i, line in enumerate(lines) if line.startswith("switched to slow in"))
    assert phases_of("\n".join(lines[:result])) == ["queued", "plan", "lock", "stop", "release", "start", "load"]
    assert phases_of("\n".join(lines[result:])) == []

    # The local CLI tells the same phases (the service adds `queued`: it may wait for another operation).
    local = cli(workspace, "switch", "demo-b", env={})
    assert local.returncode == 0, local.stdout
    assert phases_of(local.stdout) == ["plan", "lock", "stop", "release", "start", "load"]

    failed = cli(workspace, "switch", "broken", env=remote)
    assert failed.returncode == 4, failed.stdout
    lines = failed.stdout.splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    told = phases_of("\n".join(lines[:error]))
    assert told[:7] == ["queued", "plan", "lock", "stop", "release", "start", "load"] and "rollback" in told
    assert "CUDA ran out of memory" in failed.stdout and "rolled back to demo-b" in failed.stdout

    stopped = cli(workspace, "stop", env=remote)
    assert stopped.returncode == 0, stopped.stdout
    assert phases_of(stopped.stdout) == ["queued", "stop"]
    assert stopped.stdout.splitlines()[-1] == "stopped modelctl-demo-b"

    ran = cli(workspace, "run", "slow", "--", "sh", "-c", "echo ran; exit 3", env=remote)
    assert ran.returncode == 3, ran.stdout
    lines = ran.stdout.splitlines()
    assert phases_of(ran.stdout)[-1] == "load"
    assert lines.index("ran") > max(i for i, line in enumerate(lines) if PHASE_LINE.match(line))

    # --json: one document, no progress lines.
    quiet = cli(workspace, "switch", "demo-b", "--json", env=remote)
    assert quiet.returncode == 0 and quiet.stdout.lstrip().startswith("{") and phases_of(quiet.stdout) == []
