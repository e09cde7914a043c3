"""NVML behind a deadline: every GPU read in ONE dedicated thread, answered within a timeout.

A driver call can hang (a GPU fallen off the bus, a driver being reloaded). Made directly, such a
call would hold whatever thread made it: the service's reads, or the controller's worker in the
middle of a switch, with the switch lock held. `ThreadedGpu` wraps a `GpuMonitor` (NvmlGpu) and
runs its calls on its own thread; a caller waits at most `timeout_s` and then gets the last
reading (or a degraded one when there is none yet). A hung call occupies only that thread: the
calls made meanwhile are not queued behind it one by one, they share the one pending read.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import Any, TypeVar

from .gpu import GpuMonitor, GpuState

log = logging.getLogger("modelctl.gpu")

T = TypeVar("T")

NVML_TIMEOUT_S = 5.0  # an NVML query costs microseconds; five seconds is a driver that hangs
WAIT_SLICE_S = 0.25  # wait_until_free polls in slices, so that reads get their turn in between


class ThreadedGpu:
    """A GpuMonitor whose calls run on one dedicated thread, each awaited at most `timeout_s`."""

    def __init__(self, inner: GpuMonitor, *, timeout_s: float = NVML_TIMEOUT_S) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending_read: Future[GpuState] | None = None
        self._last: GpuState | None = None
        self._last_at = 0.0
        self._warned_at = -float("inf")
        self._thread = threading.Thread(target=self._loop, name="modelctl-nvml", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            future, call = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to whoever waits
                future.set_exception(exc)

    def _submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, call))
        return future

    def _timed_out(self, what: str) -> GpuState:
        """The answer when NVML did not answer: the last reading, marked, or degraded."""
        now = time.monotonic()
        if now - self._warned_at >= 60:  # once a minute at most: a hung driver stays hung
            self._warned_at = now
            log.warning("NVML did not answer %s within %gs: using the last reading", what, self.timeout_s)
        if self._last is None:
            return GpuState(
                mode="degraded",
                reason=f"NVML did not answer within {self.timeout_s:g} s (a hung driver?)",
                driver_version=None,
                devices=[],
            )
        age = now - self._last_at
        return replace(self._last, reason=f"NVML did not answer within {self.timeout_s:g} s: reading {age:.0f} s old")

    def read(self) -> GpuState:
        with self._lock:
            if self._pending_read is None or self._pending_read.done():
                self._pending_read = self._submit(self._read)
            pending = self._pending_read
        try:
            return pending.result(timeout=self.timeout_s)
        except FutureTimeout:
            return self._timed_out("a read")

    def _read(self) -> GpuState:
        state = self.inner.read()
        self._last, self._last_at = state, time.monotonic()
        return state

    def wait_until_free(self, need_gib: float, timeout_s: float) -> tuple[bool, float, GpuState]:
        """The inner wait, in slices on the NVML thread (reads are answered between slices).

        When NVML stops answering, there is nothing to wait on: (True, waited, last reading), as
        in degraded mode, so that a switch goes on (vLLM checks the memory itself) instead of
        holding the switch lock for ever.
        """
        started = time.monotonic()
        while True:
            remaining = max(0.0, timeout_s - (time.monotonic() - started))
            part = min(WAIT_SLICE_S, remaining)
            pending = self._submit(lambda part=part: self.inner.wait_until_free(need_gib, part))
            try:
                freed, _, state = pending.result(timeout=part + self.timeout_s)
            except FutureTimeout:
                return True, time.monotonic() - started, self._timed_out("during the wait for free memory")
            self._last, self._last_at = state, time.monotonic()
            waited = time.monotonic() - started
            if freed or remaining <= part:
                return freed, waited, state
