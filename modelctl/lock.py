"""The switch lock: one kernel file lock in the state directory.

flock() is released by the kernel when its holder dies, so a switch killed with SIGKILL never
leaves a stale lock behind; the CLI, the service and CI jobs on one machine all take this one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from .errors import LockTimeoutError

LOCK_FILE = "switch.lock"


@contextmanager
def switch_lock(state_dir: Path, timeout_s: float) -> Iterator[None]:
    """Hold the exclusive switch lock, waiting at most `timeout_s` for another holder."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(BlockingIOError),
                stop=stop_after_delay(timeout_s),
                wait=wait_fixed(0.02),
                reraise=True,
            ):
                with attempt:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise LockTimeoutError(
                f"another switch holds {path}{holder} after waiting {timeout_s:g} s",
                hint="wait for it to finish, or raise --lock-timeout",
            ) from None
        # Who holds it, for the message above; the kernel lock itself is what counts.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
