"""The switch lock: exclusive, bounded wait, released by the kernel when its holder dies; never
follows a link, never open to other users, one location whoever runs modelctl."""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import socket
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from modelctl import lock
from modelctl.errors import LockTimeoutError, UsageError
from modelctl.lock import switch_lock

REPO = Path(__file__).resolve().parent.parent
ME = pwd.getpwuid(os.geteuid()).pw_name
DOCKER = lock.docker_gid()

# A second process: takes the lock through modelctl, or flocks switch.lock itself and writes what it
# likes into it. It says "held" once it holds it and lets go when its stdin closes: no sleeps.
HOLDER = """
import fcntl, os, sys
from pathlib import Path
from modelctl.lock import switch_lock
how, state = sys.argv[1], Path(sys.argv[2])
if how == "modelctl":
    with switch_lock(state, timeout_s=5):
        print("held", flush=True)
        sys.stdin.read()
else:
    fd = os.open(state / "switch.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, sys.argv[3].encode(), 0)
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def holder(how: str, state: Path, written: str = ""):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, how, str(state), written],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()  # lets go
        proc.wait(timeout=10)


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user (os.chown); CI runs the tests as root")


NOBODY = ("nobody", "nogroup")


def foreign_ids() -> tuple[int, int]:
    needs_root()
    try:
        return pwd.getpwnam(NOBODY[0]).pw_uid, grp.getgrnam(NOBODY[1]).gr_gid
    except KeyError:
        pytest.skip("no user nobody or group nogroup on this machine to play the other user")


# --- waiting, and saying who holds it ---------------------------------------------------------


def test_second_holder_times_out_naming_the_first(tmp_path):
    with switch_lock(tmp_path, timeout_s=1):
        with pytest.raises(LockTimeoutError) as caught:
            with switch_lock(tmp_path, timeout_s=0.1):
                pass
    assert caught.value.exit_code == 6
    assert str(caught.value.message) == (
        f"another switch holds {tmp_path}/switch.lock, held by pid {os.getpid()} (user {ME}), after waiting 0.1 s"
    )
    assert "--lock-timeout" in caught.value.hint
    with switch_lock(tmp_path, timeout_s=0.1):  # released on exit
        pass


def test_another_process_holding_the_lock_is_named_with_what_to_do(tmp_path):
    with holder("modelctl", tmp_path) as other:
        with pytest.raises(LockTimeoutError) as caught:
            with switch_lock(tmp_path, timeout_s=0.3):
                pass
        assert (tmp_path / "switch.lock").read_text() == f"{other.pid} {os.geteuid()}\n"  # the waiter wrote nothing
    assert (tmp_path / "switch.lock").read_text() == ""  # emptied by the holder as it let go
    assert caught.value.message == (
        f"another switch holds {tmp_path}/switch.lock, held by pid {other.pid} (user {ME}), after waiting 0.3 s"
    )
    assert caught.value.hint == (
        f"wait for it to finish, or raise --lock-timeout; if pid {other.pid} is stuck, stop it (kill {other.pid}): "
        "the kernel releases the lock when it exits"
    )


def test_a_pid_written_into_the_lock_file_is_not_believed(tmp_path, monkeypatch):
    with switch_lock(tmp_path, timeout_s=1):  # creates switch.lock as modelctl makes it
        pass
    with holder("flock", tmp_path, "1 0\n") as other:  # claims to be init
        with pytest.raises(LockTimeoutError) as caught:
            with switch_lock(tmp_path, timeout_s=0.3):
                pass
        assert f"held by pid {other.pid} (user {ME})" in caught.value.message  # the kernel's word
        assert "pid 1 " not in caught.value.message

    # Without the kernel's list: a written pid that is not alive as the written user is not named.
    monkeypatch.setattr(lock, "PROC_LOCKS", tmp_path / "no-proc-locks")
    with holder("flock", tmp_path, "1 4242\n"):
        with pytest.raises(LockTimeoutError) as caught:
            with switch_lock(tmp_path, timeout_s=0.3):
                pass
    path = tmp_path / "switch.lock"
    assert caught.value.message == f"another switch holds {path}, held by another process, after waiting 0.3 s"
    assert caught.value.hint == (
        f"wait for it to finish, or raise --lock-timeout; to find the holder: fuser -v {path} (or lsof {path}); "
        "stopping it releases the lock"
    )


def test_killed_holder_leaves_no_stale_lock(tmp_path):
    with holder("modelctl", tmp_path) as other:
        with pytest.raises(LockTimeoutError, match=rf"pid {other.pid}"):
            with switch_lock(tmp_path, timeout_s=0.1):
                pass
        other.kill()
        other.wait(timeout=10)
        with switch_lock(tmp_path, timeout_s=5):  # the kernel released it with the process
            pass


# --- deleted or replaced while held ------------------------------------------------------------


def test_deleting_the_lock_file_while_held_lets_no_second_holder_in(tmp_path):
    with holder("modelctl", tmp_path) as other:
        (tmp_path / "switch.lock").unlink()  # `rm switch.lock`: "it looked stale"
        with pytest.raises(LockTimeoutError) as caught:
            with switch_lock(tmp_path, timeout_s=0.3):
                pass
        assert caught.value.message == (
            f"another switch holds the state directory {tmp_path} (its lock file was deleted or replaced while "
            f"held), held by pid {other.pid} (user {ME}), after waiting 0.3 s"
        )
    with switch_lock(tmp_path, timeout_s=1):  # once the first holder is gone, the next one goes on
        pass


def test_a_lock_file_replaced_before_the_flock_is_not_the_one_held(tmp_path, monkeypatch):
    path = tmp_path / "switch.lock"
    with switch_lock(tmp_path, timeout_s=1):
        pass
    real_flock = fcntl.flock
    swapped = []

    def flock_after_a_swap(fd, operation):
        if not swapped and stat.S_ISREG(os.fstat(fd).st_mode):
            swapped.append(True)  # between our open and our flock, someone renames a new file in
            newer = tmp_path / "newer"
            newer.write_text("")
            newer.chmod(0o600)
            newer.replace(path)
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_swap)
    with switch_lock(tmp_path, timeout_s=1):
        monkeypatch.setattr(fcntl, "flock", real_flock)
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # the file the path names now is the one held
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert swapped == [True]


# --- links and other users' files --------------------------------------------------------------


@pytest.mark.parametrize("target_exists", [True, False], ids=["to-a-file", "dangling"])
def test_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path, target_exists):
    state, target = tmp_path / "state", tmp_path / "root-only"
    state.mkdir(mode=0o700)
    if target_exists:
        target.write_bytes(b"precious\n")
        target.chmod(0o640)
    (state / "switch.lock").symlink_to(target)
    with pytest.raises(UsageError) as caught:
        with switch_lock(state, timeout_s=0.1):
            pass
    assert caught.value.exit_code == 2
    assert caught.value.message == (
        f"refusing the lock file {state}/switch.lock: it is a symbolic link; modelctl never follows one there"
    )
    assert caught.value.hint == f"remove it (rm {state}/switch.lock); whoever planted it can write {state}"
    if target_exists:
        assert target.read_bytes() == b"precious\n"
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
    else:
        assert not target.exists()


def test_lock_file_of_another_user_is_refused(tmp_path):
    uid, gid = foreign_ids()
    path = tmp_path / "switch.lock"
    path.write_text("1 0\n")
    os.chown(path, uid, gid)
    with pytest.raises(UsageError) as caught:
        with switch_lock(tmp_path, timeout_s=0.1):
            pass
    assert caught.value.message == (
        f"refusing the lock file {path}: it belongs to user nobody, not to you, root or the docker group"
    )
    assert caught.value.hint == f"someone may be trying to take over the switch lock: remove it (sudo rm {path})"
    assert path.read_text() == "1 0\n"


def test_lock_file_of_a_docker_group_member_is_shared(tmp_path):
    uid, _ = foreign_ids()
    if DOCKER is None:
        pytest.skip("no docker group on this machine")
    os.chown(tmp_path, -1, DOCKER)
    tmp_path.chmod(0o2770)
    path = tmp_path / "switch.lock"
    path.write_text("")
    os.chown(path, uid, DOCKER)  # created by another member of the group
    path.chmod(0o660)
    with switch_lock(tmp_path, timeout_s=0.1):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o660


def test_lock_file_is_never_world_writable(tmp_path):
    state = tmp_path / "state"
    with switch_lock(state, timeout_s=0.1):
        pass
    created = (state / "switch.lock").stat()
    if DOCKER is not None and os.stat(state).st_gid == DOCKER:
        assert (stat.S_IMODE(created.st_mode), created.st_gid) == (0o660, DOCKER)
    else:
        assert stat.S_IMODE(created.st_mode) == 0o600

    legacy = tmp_path / "legacy"  # as modelctl made it before: 0666
    legacy.mkdir(mode=0o700)
    (legacy / "switch.lock").write_text("")
    (legacy / "switch.lock").chmod(0o666)
    with switch_lock(legacy, timeout_s=0.1):
        assert stat.S_IMODE((legacy / "switch.lock").stat().st_mode) == 0o600


# --- the state directory -----------------------------------------------------------------------


def test_state_directory_is_created_private(tmp_path):
    state = tmp_path / "new" / "state"
    with switch_lock(state, timeout_s=0.1):
        pass
    st = state.stat()
    if DOCKER is not None and (os.geteuid() == 0 or DOCKER in os.getgroups()):
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o2770, DOCKER)
    else:
        assert stat.S_IMODE(st.st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775], ids=["world", "world-sticky", "group-not-docker"])
def test_state_directory_others_can_write_is_refused(tmp_path, mode):
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, -1, os.getegid() if os.getegid() != DOCKER else 0)
    state.chmod(mode)
    with pytest.raises(UsageError) as caught:
        with switch_lock(state, timeout_s=0.1):
            pass
    assert caught.value.message == f"refusing the state directory {state}: others can write it (mode {mode:04o})"
    assert "MODELCTL_STATE_DIR" in caught.value.hint
    assert list(state.iterdir()) == []  # no lock file made there


def test_state_directory_others_can_read_is_made_private(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)  # `mkdir -p`: anyone could open it and hold the directory lock
    with switch_lock(state, timeout_s=0.1):
        pass
    if DOCKER is not None and state.stat().st_gid == DOCKER:
        assert stat.S_IMODE(state.stat().st_mode) == 0o750
    else:
        assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_symlinked_state_directory_of_another_user_is_refused(tmp_path):
    uid, gid = foreign_ids()
    real, link = tmp_path / "real", tmp_path / "state"
    real.mkdir(mode=0o700)
    link.symlink_to(real)
    with switch_lock(link, timeout_s=0.1):  # a link of ours (or root's) is followed
        pass
    os.lchown(link, uid, gid)
    with pytest.raises(UsageError) as caught:
        with switch_lock(link, timeout_s=0.1):
            pass
    assert caught.value.message == f"refusing the state directory {link}: it is a symbolic link owned by user nobody"


def test_unusable_state_directory_is_a_clear_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match=r"(?s)cannot use the state directory .*MODELCTL_STATE_DIR"):
        with switch_lock(blocker / "state", timeout_s=0.1):
            pass


# --- where it is -------------------------------------------------------------------------------


def test_default_state_directory_does_not_depend_on_who_runs_modelctl(tmp_path, monkeypatch):
    from modelctl.settings import Settings

    monkeypatch.delenv("MODELCTL_STATE_DIR", raising=False)
    monkeypatch.setattr(lock, "docker_gid", lambda: 4242)
    monkeypatch.setattr(lock, "SHARED_STATE_DIR", tmp_path / "var-lib-modelctl")
    for home, tmpdir in [("/root", "/tmp"), ("/home/alice", "/home/alice/tmp")]:  # sudo, a user's shell
        monkeypatch.setenv("HOME", home)
        monkeypatch.setenv("TMPDIR", tmpdir)
        assert Settings().state_dir == Path("/tmp/modelctl-4242")
    (tmp_path / "var-lib-modelctl").mkdir()  # `sudo install -d -m 2770 -g docker /var/lib/modelctl`
    assert Settings().state_dir == tmp_path / "var-lib-modelctl"
    monkeypatch.setenv("MODELCTL_STATE_DIR", str(tmp_path / "mine"))
    assert Settings().state_dir == tmp_path / "mine"


def test_docker_group_is_the_sockets_where_none_is_named_docker(tmp_path, monkeypatch):
    needs_root()
    monkeypatch.setattr(lock, "DOCKER_GROUP", "no-such-group-here")
    monkeypatch.setattr(lock, "DOCKER_SOCKET", tmp_path / "docker.sock")
    assert lock.docker_gid() is None
    with socket.socket(socket.AF_UNIX) as server:  # as in the Compose service: the host's socket, mounted
        server.bind(str(tmp_path / "docker.sock"))
        os.chown(tmp_path / "docker.sock", -1, 4242)
        assert lock.docker_gid() == 4242


def test_state_directory_of_another_user_is_refused(tmp_path):
    uid, gid = foreign_ids()
    state = tmp_path / "modelctl-0"  # squatted before anyone who may switch made it
    state.mkdir(mode=0o700)
    os.chown(state, uid, gid)
    with pytest.raises(UsageError) as caught:
        with switch_lock(state, timeout_s=0.1):
            pass
    assert caught.value.message == (
        f"refusing the state directory {state}: it belongs to user nobody, not to you, root or the docker group"
    )
    assert caught.value.hint.startswith(f"remove it if you do not know why it is there (sudo rm -r {state}); or set")
    assert list(state.iterdir()) == []
