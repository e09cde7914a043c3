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

from .errors import LockTimeoutError, UsageError

LOCK_FILE = "switch.lock"


@contextmanager
def switch_lock(state_dir: Path, timeout_s: float) -> Iterator[None]:
    """Hold the exclusive switch lock, waiting at most `timeout_s` for another holder."""
    path = state_dir / LOCK_FILE
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = _open(path)
    except OSError as exc:
        raise UsageError(
            f"cannot use the state directory {state_dir}: {exc.strerror}",
            hint="set MODELCTL_STATE_DIR to a directory you can write (the CLI and the service must share it)",
        ) from None
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # opened read-only (another user's file): the lock holds all the same
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open(path: Path) -> int:
    """The lock file, shared by users: the root-run service and a user's CLI take the same lock.

    Created group- and world-writable; a file another user made read-only for us is opened
    read-only, which flock() accepts just the same.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o666)  # past the umask, so the next user can write the holder's pid
    except PermissionError:
        pass  # not ours to change
    return fd


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
