"""Measured footprints: what each model's container really held once ready, per profile.

Kept in the state directory (footprints.json) so that `show` and `status` can put the measured
figure next to the profile's vram_gib, and warn when the model takes more than it says.

Measurements are only advice: a file that is missing, malformed (`[]`, `{"a": 1}`, not JSON), a
symbolic link (never followed), not a regular file, owned by an untrusted user (lock.trusted) or
over 1 MiB is ignored - with one warning on the "modelctl" logger per file as found - and never
breaks `show`, `status` or a switch. It is written through a `mkstemp` file in the state directory
(unpredictable name, O_EXCL, 0600, or 0640 when its group is the docker group so that the group's
members can read it) and renamed over the old one: a reader never sees half a file, and the rename
replaces a planted link instead of following it.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import stat
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .lock import docker_gid, open_state_dir, trusted

FILE = "footprints.json"
MAX_BYTES = 1 << 20

log = logging.getLogger("modelctl")
_warned: set[tuple[object, ...]] = set()  # one warning per file as found (path, inode, size, mtime, why)


@dataclass(frozen=True)
class Footprint:
    measured_gib: float
    vram_gib: float  # what the plan budgeted
    plan_hash: str
    measured_at: float  # unix time

    @property
    def exceeds(self) -> bool:
        return self.measured_gib > self.vram_gib


def read_footprints(state_dir: Path) -> dict[str, Footprint]:
    """Every footprint recorded in the state directory; {} when none or when the file is unusable."""
    path = Path(state_dir) / FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return {}  # none measured yet
    except OSError as exc:
        why = "it is a symbolic link, never followed" if exc.errno == errno.ELOOP else exc.strerror
        _warn(path, _lstat(path), why)
        return {}
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _warn(path, st, "it is not a regular file")
        if not trusted(st, docker_gid()):
            return _warn(path, st, f"it belongs to uid {st.st_uid}, not to you, root or the docker group")
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        return _warn(path, st, f"it is over {MAX_BYTES} bytes")
    try:
        return _parse(json.loads(data))
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return _warn(path, st, f"not a footprints document ({exc})"[:300])


def _parse(raw: object) -> dict[str, Footprint]:
    if not isinstance(raw, dict):
        raise TypeError(f"expected an object of profiles, got {type(raw).__name__}")
    expected = {f.name: f.type for f in fields(Footprint)}
    footprints = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) != set(expected):
            raise TypeError(f"{name!r}: expected an object with {', '.join(expected)}")
        for key, kind in expected.items():
            value = entry[key]
            if kind == "str" and not isinstance(value, str):
                raise TypeError(f"{name!r}: {key} must be a string")
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if kind == "float" and not (number and math.isfinite(value)):
                raise TypeError(f"{name!r}: {key} must be a finite number")
        footprints[name] = Footprint(
            float(entry["measured_gib"]), float(entry["vram_gib"]), entry["plan_hash"], float(entry["measured_at"])
        )
    return footprints


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _warn(path: Path, st: os.stat_result | None, why: str) -> dict[str, Footprint]:
    key = (str(path), why) + ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if st else ())
    if key not in _warned:
        _warned.add(key)
        log.warning("ignoring %s: %s (measurements are only advice; the next switch rewrites it)", path, why)
    return {}


def record_footprint(state_dir: Path, profile: str, footprint: Footprint) -> None:
    footprints = read_footprints(state_dir)
    footprints[profile] = footprint
    os.close(open_state_dir(state_dir))  # created private if missing, refused if others could write it
    fd, partial = tempfile.mkstemp(prefix=f".{FILE}.", suffix=".partial", dir=state_dir)
    try:
        with os.fdopen(fd, "w") as file:
            gid = docker_gid()
            if gid is not None and os.fstat(file.fileno()).st_gid == gid:
                os.fchmod(file.fileno(), 0o640)  # the docker group's members read it too
            json.dump({name: asdict(fp) for name, fp in footprints.items()}, file, indent=2)
        os.replace(partial, Path(state_dir) / FILE)  # atomic: a reader never sees half a file
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
