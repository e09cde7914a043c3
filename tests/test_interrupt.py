"""A switch interrupted mid-load (Ctrl-C, or SIGTERM from a CI runner or systemd) puts the previous
model back and exits 130 saying what runs now: on the real engine, through the real CLI."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
from conftest import running_vllm
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupted_load_rolls_back_and_exits_130(engine, workspace, sig):
    workspace.profile("demo-a")
    workspace.profile("slow", env={"STANDIN_LOAD_SECONDS": "60"})
    workspace.cli_json("switch", "demo-a")
    switching = subprocess.Popen(
        [sys.executable, "-m", "modelctl", "switch", "slow"],
        env=workspace.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a shell's background job (a CI step run with `&`) starts its children
        # with SIGINT ignored, and Python then installs no Ctrl-C handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Bounded wait until the switch is in its load phase: only the slow model's container runs.
        Retrying(
            retry=retry_if_result(lambda names: names != ["modelctl-slow"]),
            stop=stop_after_delay(60),
            wait=wait_fixed(0.05),
            reraise=True,
        )(lambda: running_vllm(engine))
        switching.send_signal(sig)
        _, stderr = switching.communicate(timeout=90)
    finally:
        switching.kill()
    assert switching.returncode == 130, stderr
    # The container runs from the end of `start`: the signal lands in `start` or `load`.
    assert re.search(r"error: the switch to slow was interrupted in phase (start|load); rolled back to demo-a", stderr)
    assert running_vllm(engine) == ["modelctl-demo-a"]
    assert workspace.cli_json("status")["active"]["ready"] is True
