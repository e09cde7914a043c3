"""The switch lock: exclusive, bounded wait, released by the kernel when its holder dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from modelctl.errors import LockTimeoutError, UsageError
from modelctl.lock import switch_lock


def test_second_holder_times_out_naming_the_first(tmp_path):
    with switch_lock(tmp_path, timeout_s=1):
        with pytest.raises(LockTimeoutError) as caught:
            with switch_lock(tmp_path, timeout_s=0.1):
                pass
    assert caught.value.exit_code == 6
    assert "--lock-timeout" in caught.value.hint
    with switch_lock(tmp_path, timeout_s=0.1):  # released on exit
        pass


def test_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from modelctl.lock import switch_lock
            with switch_lock(__import__('pathlib').Path({str(tmp_path)!r}), timeout_s=5):
                print('held', flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeoutError, match=rf"pid {holder.pid}"):
            with switch_lock(tmp_path, timeout_s=0.1):
                pass
        holder.kill()
        holder.wait(timeout=10)
        with switch_lock(tmp_path, timeout_s=5):  # the kernel released it with the process
            pass
    finally:
        holder.kill()


def test_unusable_state_directory_is_a_clear_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="(?s)cannot use the state directory .*MODELCTL_STATE_DIR"):
        with switch_lock(blocker / "state", timeout_s=0.1):
            pass
