"""The switch lock: one kernel file lock in the state directory, shared by everyone who switches.

flock() is released by the kernel when its holder dies, so a switch killed with SIGKILL never
leaves a stale lock behind; the CLI, the service and CI jobs on one machine all take this one.

Who may take it. Switching needs the Docker engine, and access to the engine is root's power
(root, and the members of the `docker` group). The lock is shared by exactly those users and
closed to everyone else, so that no other local user can hold it for ever, plant a symbolic link
for root to follow, or write a pid into it:

- Trusted owner: a state directory or lock file must belong to the running user, to root, or
  carry the docker group (only root and the group's members can give a file that group, and
  they hold Docker access anyway). Anything else is refused (UsageError, exit 2) with what to do.
- The state directory is created 0700, or 2770 with the docker group where that group exists
  and we may give it (the setgid bit hands the group on to the files inside). An existing one is
  refused when others can write it (world-writable, sticky or not; group-writable by a group other
  than the docker group), and its access for others is removed when it is ours: whoever can open
  the directory could hold the directory lock below. Its parent must not let others rename it
  (writable by others only with the sticky bit, like /tmp).
- `switch.lock` is opened with O_NOFOLLOW (a symbolic link is refused, never followed), must be a
  regular file, and is 0660 when its group is the docker group, else 0600 - never world-writable.
- After flock succeeds, the path must still name the locked inode (else retry, within the same
  timeout). And the holder then also flocks the state directory itself: a lock file deleted while
  held (`rm switch.lock`, the habit of clearing a "stale" lock) lets the next switch create and
  lock a new file, but not the directory, so two holders can never both believe they hold it.
- The holder writes "PID UID" into the file (and empties it before letting go). A timeout names
  the holder the kernel reports (/proc/locks), or the written pid only when its writer is trusted
  and the pid is alive as that user; otherwise it says how to find the holder (fuser, lsof).

Where (the default state directory; MODELCTL_STATE_DIR overrides it). It must not depend on who
runs modelctl ($HOME, $TMPDIR, sudo), and a non-root member of the docker group cannot create
anything under /var/lib or /run. So:

- /var/lib/modelctl when that directory exists: the persistent, shared place. modelctl never
  creates it itself - created by a root switch on the fly, it would move root's lock while a
  user's switch holds the other one. An administrator creates it once, while no switch runs:
  `sudo install -d -m 2770 -g docker /var/lib/modelctl`. The Compose deployment mounts it.
- else /tmp/modelctl-GID, GID being the docker group's (0 where there is none): the one place
  root and the group's members can all create without setup. /tmp is sticky, so nobody else can
  remove or rename it; a squatter's directory (not trusted, see above) is refused, never used.
  Being in /tmp, it is emptied at boot (footprints are advice, the lock needs no history), and
  systemd-tmpfiles does not age a directory while it is flocked.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LockTimeoutError, UsageError

LOCK_FILE = "switch.lock"
SHARED_STATE_DIR = Path("/var/lib/modelctl")
FALLBACK_PARENT = Path("/tmp")  # not tempfile.gettempdir(): $TMPDIR differs between users
DOCKER_GROUP = "docker"
DOCKER_SOCKET = Path("/var/run/docker.sock")  # its group where no group is named docker (the Compose service)
PROC_LOCKS = Path("/proc/locks")
_POLL_S = 0.02
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY  # O_NONBLOCK: a FIFO never blocks the open
_HINT_DIR = "set MODELCTL_STATE_DIR to a directory you can write (the CLI and the service must share it)"


# --- where, and whom to trust ------------------------------------------------------------------


def docker_gid() -> int | None:
    """The group that may use Docker: `docker`, else the Docker socket's group (never root's)."""
    try:
        return grp.getgrnam(DOCKER_GROUP).gr_gid
    except KeyError:
        pass
    try:
        socket = os.stat(DOCKER_SOCKET)
    except OSError:
        return None
    return socket.st_gid if stat.S_ISSOCK(socket.st_mode) and socket.st_gid != 0 else None


def default_state_dir() -> Path:
    """/var/lib/modelctl where it exists, else /tmp/modelctl-GID: one place whoever runs modelctl."""
    if SHARED_STATE_DIR.is_dir():
        return SHARED_STATE_DIR
    return FALLBACK_PARENT / f"modelctl-{docker_gid() or 0}"


def trusted(st: os.stat_result, docker: int | None) -> bool:
    """Owned by the running user or root, or carrying the docker group."""
    return st.st_uid in (os.geteuid(), 0) or (docker is not None and st.st_gid == docker)


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def _group_ok(st: os.stat_result, docker: int | None) -> bool:
    return docker is not None and st.st_gid == docker


def _may_chmod(st: os.stat_result) -> bool:
    return os.geteuid() in (0, st.st_uid)


# --- the state directory -----------------------------------------------------------------------


def open_state_dir(state_dir: Path) -> int:
    """The state directory, created private if missing and checked: an O_DIRECTORY descriptor.

    Raises UsageError naming the directory when it cannot be used or must not be trusted.
    """
    path = Path(os.path.abspath(state_dir))
    docker = docker_gid()
    try:
        os.makedirs(path.parent, exist_ok=True)
        _check_parent(path, docker)
        try:
            os.mkdir(path, 0o700)
            created = True
        except FileExistsError:
            created = False
        fd = _open_dir(path, docker)
    except OSError as exc:
        hint = _HINT_DIR
        if exc.errno in (errno.EACCES, errno.EPERM) and os.path.lexists(path):
            hint = f"it is shared by root and the {DOCKER_GROUP} group, whose members may switch; or {_HINT_DIR}"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            hint = (
                f"an administrator can create it for everyone who switches: sudo install -d -m 2770 -g "
                f"{DOCKER_GROUP} {path}; or {_HINT_DIR}"
            )
        raise UsageError(f"cannot use the state directory {state_dir}: {exc.strerror}", hint=hint) from None
    try:
        if created and docker is not None:
            _share_with_group(fd, docker)
        _check_dir(fd, path, docker)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_dir(path: Path, why: str, hint: str) -> UsageError:
    return UsageError(f"refusing the state directory {path}: {why}", hint=f"{hint}; or {_HINT_DIR}")


def _check_parent(path: Path, docker: int | None) -> None:
    parent = os.stat(path.parent)
    if not trusted(parent, docker):
        raise _refuse_dir(
            path,
            f"its parent {path.parent} belongs to {_user(parent.st_uid)}, who could replace it",
            "put it in a directory of yours or root's",
        )
    mode = stat.S_IMODE(parent.st_mode)
    open_to_others = mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not _group_ok(parent, docker))
    if open_to_others and not mode & stat.S_ISVTX:
        raise _refuse_dir(
            path,
            f"others can write its parent {path.parent} (mode {mode:04o}) and so replace it",
            f"chmod o-w,g-w {path.parent} (or +t, like /tmp)",
        )


def _open_dir(path: Path, docker: int | None) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    entry = os.lstat(path)
    if stat.S_ISLNK(entry.st_mode):
        if not trusted(entry, docker):
            raise _refuse_dir(path, f"it is a symbolic link owned by {_user(entry.st_uid)}", f"remove it (rm {path})")
        return os.open(path, flags)  # ours or root's: follow it; the directory found is checked all the same
    if not trusted(entry, docker):  # said before trying to open it: another user's 0700 squat is EACCES
        raise _untrusted_dir(path, entry)
    return os.open(path, flags | os.O_NOFOLLOW)  # a link swapped in since the lstat: ELOOP


def _untrusted_dir(path: Path, st: os.stat_result) -> UsageError:
    return _refuse_dir(
        path,
        f"it belongs to {_user(st.st_uid)}, not to you, root or the {DOCKER_GROUP} group",
        f"remove it if you do not know why it is there (sudo rm -r {path})",
    )


def _share_with_group(fd: int, docker: int) -> None:
    """A directory we just created goes to the docker group, if we may give it that group."""
    try:
        os.fchown(fd, -1, docker)
    except PermissionError:
        return  # not a member: it stays 0700, ours alone
    os.fchmod(fd, 0o2770)


def _check_dir(fd: int, path: Path, docker: int | None) -> None:
    st = os.fstat(fd)
    if not trusted(st, docker):
        raise _untrusted_dir(path, st)
    mode = stat.S_IMODE(st.st_mode)
    group_ok = _group_ok(st, docker)
    if mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not group_ok):
        share = f"chgrp {DOCKER_GROUP} and chmod 2770 to share it with that group"
        raise _refuse_dir(path, f"others can write it (mode {mode:04o})", f"chmod 0700 {path} (or {share})")
    loose = (mode & 0o007) | (0 if group_ok else mode & 0o070)
    if loose:
        if not _may_chmod(st):
            raise _refuse_dir(
                path, f"others can open it (mode {mode:04o}) and so hold the switch lock", f"chmod o-rwx {path}"
            )
        os.fchmod(fd, mode & ~loose)  # our state directory stays private


def _same(now: os.stat_result, fd: int) -> bool:
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _names(dir_fd: int, fd: int) -> bool:
    """Whether switch.lock in the directory still is the file open as fd (not deleted, not replaced)."""
    try:
        return _same(os.stat(LOCK_FILE, dir_fd=dir_fd, follow_symlinks=False), fd)
    except FileNotFoundError:
        return False


def _is_dir(state_dir: Path, dir_fd: int) -> bool:
    """Whether the state directory's path still leads to the directory open as dir_fd."""
    try:
        return _same(os.stat(state_dir), dir_fd)
    except OSError:
        return False


# --- the lock file -----------------------------------------------------------------------------


def _refuse_file(path: Path, why: str, hint: str) -> UsageError:
    return UsageError(f"refusing the lock file {path}: {why}", hint=hint)


def _open_lock_file(dir_fd: int, path: Path, docker: int | None) -> int:
    """switch.lock, created or opened without following a link, then checked and made private."""
    for _ in range(100):  # only a create/delete race loops
        try:
            fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600, dir_fd=dir_fd)
            created = True
        except FileExistsError:
            created = False
            try:
                fd = _open_existing(dir_fd, path)
            except FileNotFoundError:
                continue  # removed in between: create it
        try:
            _check_lock_file(fd, dir_fd, path, docker, created)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise UsageError(
        f"cannot use the lock file {path}: it keeps being created and removed",
        hint="something else is deleting it: find what and stop it",
    )


def _open_existing(dir_fd: int, path: Path) -> int:
    try:
        return os.open(LOCK_FILE, os.O_RDWR | _OPEN_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        return os.open(LOCK_FILE, os.O_RDONLY | _OPEN_FLAGS, dir_fd=dir_fd)  # flock() works all the same
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            why = "it is a symbolic link; modelctl never follows one there"
            hint = f"remove it (rm {path}); whoever planted it can write {path.parent}"
            raise _refuse_file(path, why, hint) from None
        if exc.errno == errno.EISDIR:
            raise _refuse_file(path, "it is a directory, not a regular file", f"remove it (rm -r {path})") from None
        raise


def _check_lock_file(fd: int, dir_fd: int, path: Path, docker: int | None, created: bool) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse_file(path, "it is not a regular file", f"remove it (rm {path})")
    if not trusted(st, docker):
        raise _refuse_file(
            path,
            f"it belongs to {_user(st.st_uid)}, not to you, root or the {DOCKER_GROUP} group",
            f"someone may be trying to take over the switch lock: remove it (sudo rm {path})",
        )
    if created:
        if docker is not None and st.st_gid != docker and os.fstat(dir_fd).st_gid == docker:
            try:
                os.fchown(fd, -1, docker)  # shared like its directory
            except PermissionError:
                pass
            st = os.fstat(fd)
        os.fchmod(fd, 0o660 if _group_ok(st, docker) else 0o600)
        return
    mode = stat.S_IMODE(st.st_mode)
    extra = mode & ~(0o660 if _group_ok(st, docker) else 0o600)
    if extra and _may_chmod(st):
        os.fchmod(fd, mode & ~extra)
    elif mode & stat.S_IWOTH:
        raise _refuse_file(
            path,
            f"anyone can write it (mode {mode:04o})",
            f"sudo chmod 0660 {path} (0600 unless its group is {DOCKER_GROUP})",
        )


# --- taking it ---------------------------------------------------------------------------------


def _flock(fd: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(_POLL_S, left))


@contextmanager
def switch_lock(state_dir: Path, timeout_s: float) -> Iterator[None]:
    """Hold the exclusive switch lock, waiting at most `timeout_s` for another holder."""
    dir_fd, fd = _acquire(Path(state_dir), timeout_s)
    try:
        try:  # who holds it, for another switch's message; the kernel lock itself is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {os.geteuid()}\n".encode(), 0)
        except OSError:
            pass  # opened read-only: the lock holds all the same
        yield
    finally:
        try:
            os.ftruncate(fd, 0)  # still held: nobody reads a pid that no longer holds it
        except OSError:
            pass
        os.close(fd)  # closing the descriptors releases the locks
        os.close(dir_fd)


def _acquire(state_dir: Path, timeout_s: float) -> tuple[int, int]:
    deadline = time.monotonic() + max(timeout_s, 0.0)
    path = state_dir / LOCK_FILE
    while True:
        dir_fd = open_state_dir(state_dir)
        fd = -1
        try:
            try:
                fd = _open_lock_file(dir_fd, path, docker_gid())
            except OSError as exc:
                raise UsageError(
                    f"cannot use the lock file {path}: {exc.strerror}",
                    hint=f"everyone who switches must be able to open it: chgrp {DOCKER_GROUP} and "
                    f"chmod 0660 it, or {_HINT_DIR}",
                ) from None
            if not _flock(fd, deadline):
                raise _timeout(f"another switch holds {path}", fd, path, timeout_s)
            if not _names(dir_fd, fd):
                # Deleted or replaced between our open and our flock: what we hold guards nothing.
                if time.monotonic() >= deadline:
                    raise _timeout(f"the lock file {path} kept being replaced", None, path, timeout_s)
                os.close(fd)
                os.close(dir_fd)
                continue
            if not _flock(dir_fd, deadline):
                # We hold a lock file, yet another holder has the directory: its file was deleted or
                # replaced while it held it.
                raise _timeout(
                    f"another switch holds the state directory {state_dir} (its lock file was deleted "
                    "or replaced while held)",
                    dir_fd,
                    state_dir,
                    timeout_s,
                )
            if not _is_dir(state_dir, dir_fd):  # renamed away and replaced since we opened it
                if time.monotonic() >= deadline:
                    raise _timeout(f"the state directory {state_dir} kept being replaced", None, path, timeout_s)
                os.close(fd)
                os.close(dir_fd)
                continue
            return dir_fd, fd
        except BaseException:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                os.close(dir_fd)
            except OSError:
                pass
            raise


def _timeout(what: str, fd: int | None, path: Path, timeout_s: float) -> LockTimeoutError:
    pid = _holder(fd) if fd is not None else None
    if pid is not None:
        owner = _proc_uid(pid)
        who = f"held by pid {pid} ({_user(owner)})" if owner is not None else f"held by pid {pid}"
        hint = (
            f"wait for it to finish, or raise --lock-timeout; if pid {pid} is stuck, stop it (kill {pid}): "
            "the kernel releases the lock when it exits"
        )
    else:
        who = "held by another process"
        hint = (
            f"wait for it to finish, or raise --lock-timeout; to find the holder: fuser -v {path} "
            f"(or lsof {path}); stopping it releases the lock"
        )
    return LockTimeoutError(f"{what}, {who}, after waiting {timeout_s:g} s", hint=hint)


def _holder(fd: int) -> int | None:
    """The pid holding the flock on fd's file: the kernel's word, else a pid written by a trusted writer."""
    st = os.fstat(fd)
    kernel = _kernel_holders(st)
    if kernel:
        return kernel[0]
    if stat.S_ISREG(st.st_mode):
        return _written_holder(fd, st)
    return None


def _kernel_holders(st: os.stat_result) -> list[int]:
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = PROC_LOCKS.read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; a waiter's line has "->" after the number.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where and fields[4].isdigit():
            pid = int(fields[4])
            if pid > 0 and _proc_uid(pid) is not None:
                pids.append(pid)
    return pids


def _written_holder(fd: int, st: os.stat_result) -> int | None:
    """The "PID UID" line of the file, believed only from trusted writers and only for a live process of that user."""
    docker = docker_gid()
    mode = stat.S_IMODE(st.st_mode)
    if not trusted(st, docker) or mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not _group_ok(st, docker)):
        return None
    try:
        fields = os.pread(fd, 64, 0).decode("ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        return None
    pid, uid = int(fields[0]), int(fields[1])
    return pid if pid > 0 and _proc_uid(pid) == uid else None


def _proc_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
