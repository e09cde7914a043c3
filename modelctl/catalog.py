"""The profile catalog: the one place that reads the profiles directory.

It loads every `*.yaml` / `*.yml` file (hidden and non-regular files are skipped: editor lock
files such as `.#a.yaml`, sockets, directories), keeps the valid profiles and reports each invalid
file with its error instead of failing the whole directory: one typo must not take the running
service or the other profiles down. Loads are cached on the files' (name, inode, size, mtime), so
an edited profile is seen by the next call without a restart; `max_age_s` bounds how often the
directory is even looked at (the service's request path asks at most once a second).

Finding a profile by name, served model name or alias, and planning every profile for a GPU
budget, happen here and nowhere else.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ProfileError, UnknownProfileError, UsageError
from .gpu import GpuBudget
from .plan import Plan, check_fits, make_plan
from .profiles import Profile, declared_name, load_profile
from .settings import Settings

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class InvalidProfile:
    """A profile file that could not be used, and why (its message names the file and the key)."""

    path: Path
    error: ProfileError
    # The names a user may call it by: the file's stem, and the `name` it declares if it has one.
    names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ProfileSet:
    """The profiles directory as read at one moment: the valid profiles and the invalid files."""

    directory: Path
    profiles: dict[str, Profile] = field(default_factory=dict)  # by name, in file order
    invalid: list[InvalidProfile] = field(default_factory=list)

    def find(self, name: str) -> Profile:
        """The profile a user or client means by `name`: its name, served model name or an alias.

        A name that only an invalid file answers to raises that file's error (exit 2).
        """
        for profile in self.profiles.values():
            if name in profile.names:
                return profile
        for bad in self.invalid:
            if name in bad.names:
                raise bad.error
        known = ", ".join(sorted(self.profiles)) or "none"
        skipped = f"; skipped as invalid: {', '.join(b.path.name for b in self.invalid)}" if self.invalid else ""
        raise UnknownProfileError(f"unknown profile '{name}' (known: {known}{skipped})", hint="see `modelctl list`")

    def warnings(self) -> list[str]:
        """One line per invalid file, for a command that goes on with the valid ones."""
        return [f"skipped invalid profile {bad.error.message}" for bad in self.invalid]


def read_profiles(directory: Path) -> ProfileSet:
    """Read every profile file of `directory` once; invalid files are reported, not raised."""
    profiles: dict[str, Profile] = {}
    invalid: list[InvalidProfile] = []
    owners: dict[str, Path] = {}  # every client-visible name -> the file that claims it
    for path in _profile_files(directory):
        try:
            profile = load_profile(path)
            clash = next((name for name in profile.names if name in owners), None)
            if clash is not None:
                raise ProfileError(
                    f"{path}: name '{clash}' is already used by {owners[clash]}",
                    hint="give each profile a unique name, served_model_name and aliases",
                )
        except ProfileError as error:
            names = {path.stem, *filter(None, [declared_name(path)])}
            invalid.append(InvalidProfile(path, error, frozenset(names)))
            continue
        for name in profile.names:
            owners[name] = path
        profiles[profile.name] = profile
    _refuse_sleepers_sharing_a_port(profiles, owners, invalid)
    return ProfileSet(directory, profiles, invalid)


def _refuse_sleepers_sharing_a_port(
    profiles: dict[str, Profile], owners: dict[str, Path], invalid: list[InvalidProfile]
) -> None:
    """Two sleep-enabled profiles may run side by side (one awake, one asleep), so they cannot share
    a host port: every one of them is invalid, each error naming the others' files."""
    by_port: dict[int, list[Profile]] = {}
    for profile in profiles.values():
        if profile.sleep_level is not None:
            by_port.setdefault(profile.port, []).append(profile)
    for port, clash in by_port.items():
        if len(clash) < 2:
            continue
        files = [owners[p.name] for p in clash]
        for profile, path in zip(clash, files, strict=True):
            others = ", ".join(str(f) for f in files if f != path)
            error = ProfileError(
                f"{path}: sleep-enabled profiles cannot share port {port} (a sleeper keeps its port): "
                f"{others} uses it too",
                hint="give each sleep-enabled profile its own port",
            )
            del profiles[profile.name]
            invalid.append(InvalidProfile(path, error, frozenset({path.stem, *profile.names})))


def _profile_files(directory: Path) -> list[Path]:
    """The regular, visible `*.yaml` / `*.yml` files of the directory, sorted by name."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        raise UsageError(
            f"profiles directory {directory} does not exist",
            hint="run from the repository root or set MODELCTL_PROFILES_DIR",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read the profiles directory {directory}: {exc.strerror}") from None
    found = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(SUFFIXES):
            continue
        try:
            regular = stat.S_ISREG(os.stat(entry.path).st_mode)  # a symlink to a file counts; a FIFO never
        except OSError:
            continue  # a dangling link, or gone meanwhile
        if regular:
            found.append(Path(entry.path))
    return sorted(found)


def _fingerprint(directory: Path) -> tuple | None:
    """What changes when a profile file is added, removed or edited; None when it cannot be read."""
    try:
        files = _profile_files(directory)
        return tuple((p.name, s.st_ino, s.st_size, s.st_mtime_ns) for p in files for s in [p.stat()])
    except (OSError, UsageError):
        return None


class Catalog:
    """The profiles directory, read again only when a file in it changed."""

    def __init__(self, directory: Path, *, max_age_s: float = 0.0) -> None:
        self.directory = directory
        self.max_age_s = max_age_s
        self._loaded: ProfileSet | None = None
        self._key: tuple | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def load(self) -> ProfileSet:
        """The profiles as they are on disk now (at most `max_age_s` old)."""
        with self._lock:
            now = time.monotonic()
            if self._loaded is not None and now - self._checked_at < self.max_age_s:
                return self._loaded
            key = _fingerprint(self.directory)
            if self._loaded is None or key is None or key != self._key:
                self._loaded = read_profiles(self.directory)  # raises for a missing directory
                self._key = key
            self._checked_at = now
            return self._loaded

    def snapshot(self) -> ProfileSet | None:
        """The last load, however old (None before the first): no file system, for the event loop."""
        return self._loaded

    def fresh(self) -> ProfileSet | None:
        """The last load while it is younger than `max_age_s`, else None (then `load` must look)."""
        loaded = self._loaded
        if loaded is not None and time.monotonic() - self._checked_at < self.max_age_s:
            return loaded
        return None

    def find(self, name: str) -> Profile:
        return self.load().find(name)

    def plans(self, gpu: GpuBudget, settings: Settings) -> list[Plan]:
        """Every valid profile planned for this GPU, in file order."""
        return [make_plan(p, gpu, settings) for p in self.load().profiles.values()]

    def plan(self, name: str, gpu: GpuBudget, settings: Settings) -> Plan:
        """The plan for one profile on this GPU; refuses (exit 3) one that cannot fit, naming what does."""
        profile = self.find(name)
        plans = self.plans(gpu, settings)
        plan = next(p for p in plans if p.profile is profile)
        check_fits(plan, [p for p in plans if p is not plan])
        return plan
