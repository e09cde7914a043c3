"""The host machine, as far as the switch must look at it before stopping anything: is a port
free, does the Hugging Face cache directory exist, how much memory is available (a level-1
sleeper pins its weights in host memory). `LocalHost` asks the kernel and the file system; unit
tests hand the controller a fake of the `Host` Protocol."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Protocol


class Host(Protocol):
    def port_in_use(self, host: str, port: int) -> bool:
        """True when something on this machine already listens on (host, port)."""
        ...

    def ensure_directory(self, path: Path) -> None:
        """Create `path` (and its parents) unless it exists, owned by the user who ran modelctl."""
        ...

    def available_memory_gib(self) -> float | None:
        """Memory the host can still give without swapping (MemAvailable); None where unknown."""
        ...


class LocalHost:
    def port_in_use(self, host: str, port: int) -> bool:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except OSError:
            return False  # an address this machine cannot bind: Docker says why at the start
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc.errno == errno.EADDRINUSE
        return False

    def ensure_directory(self, path: Path) -> None:
        """Made as the invoking user: under sudo, SUDO_UID/SUDO_GID own it, not root (Docker would
        create a missing bind source itself, owned by root)."""
        missing = [p for p in [path, *path.parents] if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
        if os.geteuid() == 0 and uid and gid and uid.isdigit() and gid.isdigit():
            for made in missing:
                os.chown(made, int(uid), int(gid), follow_symlinks=False)

    def available_memory_gib(self) -> float | None:
        """/proc/meminfo's MemAvailable (Linux >= 3.14); None elsewhere. A container's pinned host
        memory counts here like any process's: the kernel's view is the whole machine's."""
        try:
            with open("/proc/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) / (1024 * 1024)  # kB -> GiB
        except (OSError, ValueError, IndexError):
            return None
        return None
