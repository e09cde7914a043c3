"""Phases of an operation, timed in one place: the CLI's live line, the service's log and metrics,
and every result's `phases` read the same clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# listener(phase, detail): what an operation is doing now, for a live line, a log or an event.
Listener = Callable[[str, str], None]


def ignore(phase: str, detail: str) -> None:
    pass


class PhaseClock:
    """Times each phase of one operation and tells the listener when a phase begins (or says more)."""

    def __init__(self, listener: Listener = ignore) -> None:
        self.listener = listener
        self.phases: dict[str, float] = {}
        self.current = ""  # the phase under way, else the last one (a failure names it)
        self._open: list[str] = []  # a rollback's phases run inside its own
        self.started = time.monotonic()

    @contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[None]:
        self._open.append(name)
        self.current = name
        self.listener(name, detail)
        began = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0) + time.monotonic() - began, 3)
            self._open.pop()
            self.current = self._open[-1] if self._open else name

    def note(self, detail: str) -> None:
        """More about the phase under way (the loading container's newest log line)."""
        self.listener(self.current, detail)

    @property
    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)
