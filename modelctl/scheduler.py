"""The proxy's swap scheduler: when to swap models, and which requests go upstream.

It depends only on `SwapEffects` (what runs, start a swap, stop) and lives on one asyncio event
loop, so its state needs no locks; unit tests drive it with a recording fake.

- requests for the active model go straight through (counted in flight);
- a request for another model waits in a bounded queue (beyond `max_queue`: QueueFull, 503 with
  Retry-After from the measured swap times); requests for the model being loaded join it;
- a swap begins when the active model has been resident `min_residency` seconds and has nothing
  in flight, or when a waiting request has waited `max_wait` seconds; then the active model stops
  taking new requests, its requests in flight drain, and the model whose request waited longest
  is loaded; all its queued requests go together;
- with nothing queued or in flight for `idle_ttl` seconds, the model is stopped, or replaced by
  the fallback (the default profile);
- a client that goes away leaves the queue; a swap under way always runs to its end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

from .errors import ModelctlError, QueueFull
from .metrics import Metrics

log = logging.getLogger("modelctl.proxy")

DEFAULT_RETRY_AFTER_S = 10  # before any swap was measured


@dataclass(frozen=True)
class Swapped:
    """A swap that worked: where the model answers, and whether it had to be started."""

    url: str
    switched: bool  # False: it was running already
    generation: int  # the effects' generation the swap ran as


class SwapEffects(Protocol):
    """What the scheduler asks of the rest of the service."""

    @property
    def generation(self) -> int:
        """Moves on whenever anything (an API switch or stop, a reconcile, a swap) changes what runs."""
        ...

    async def swap(self, profile: str, origin: str) -> Swapped:
        """Make `profile` the model that runs; raises ModelctlError on failure."""
        ...

    async def stop_model(self) -> None:
        """Stop the model that runs (idle TTL without a fallback)."""
        ...

    def fallback(self) -> str | None:
        """The profile to go back to when idle (the default profile), or None to stop."""
        ...


@dataclass(frozen=True)
class SchedulerLimits:
    max_queue: int = 1024
    max_wait: float = 30.0
    min_residency: float = 10.0
    idle_ttl: float = 0.0  # 0: never


@dataclass(eq=False)
class _Waiter:
    profile: str
    future: asyncio.Future[str]
    since: float = field(default_factory=time.monotonic)


class Scheduler:
    """Decides when to swap and who goes upstream; all its state lives on the event loop."""

    def __init__(self, effects: SwapEffects, limits: SchedulerLimits, metrics: Metrics) -> None:
        self.effects = effects
        self.limits = limits
        self.metrics = metrics
        self.current: str | None = None  # the profile the scheduler last made active
        self.url = ""
        self.generation = -1  # the effects' generation `current` was established at
        self.loaded_at = 0.0
        self.last_used = time.monotonic()
        self.target: str | None = None  # the profile a swap is loading (or stopping) now
        self.draining = False
        self.inflight: Counter[str] = Counter()
        self.waiting: dict[str, deque[_Waiter]] = {}
        self.swap_times: deque[float] = deque(maxlen=20)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._swaps: set[asyncio.Task[None]] = set()  # held so that the loop does not drop them

    # --- what clients call -----------------------------------------------------------------

    def queued(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def retry_after(self) -> int:
        """Seconds a refused client should wait: a swap per model that waits, as measured so far."""
        per_swap = sum(self.swap_times) / len(self.swap_times) if self.swap_times else DEFAULT_RETRY_AFTER_S
        swaps = max(1, len([p for p, q in self.waiting.items() if q]))
        return max(1, math.ceil(per_swap * swaps))

    async def acquire(self, profile: str) -> str:
        """Wait until `profile` is active and may take a request; returns its URL. Pair with release()."""
        self._ensure_started()
        self._check_fresh()
        if profile == self.current and self.target is None and not self.draining:
            self._admitted(profile)
            return self.url
        if self.queued() >= self.limits.max_queue:
            self.metrics.rejected.inc()
            raise QueueFull(
                f"{self.queued()} requests already wait for their model (MODELCTL_PROXY_MAX_QUEUE)",
                self.retry_after(),
            )
        waiter = _Waiter(profile, asyncio.get_running_loop().create_future())
        self.waiting.setdefault(profile, deque()).append(waiter)
        self.metrics.queue_length.set(self.queued())
        self._poke()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(profile)  # admitted just as the client went away
            else:
                queue = self.waiting.get(profile)
                if queue and waiter in queue:
                    queue.remove(waiter)
                    self.metrics.queue_length.set(self.queued())
                self._poke()
            raise

    def release(self, profile: str) -> None:
        self.inflight[profile] -= 1
        self.metrics.inflight.labels(profile).set(self.inflight[profile])
        self.last_used = time.monotonic()
        if self.inflight[profile] <= 0:
            self._poke()

    def forget(self, profile: str) -> None:
        """The model's server did not answer: what runs is no longer known."""
        if self.current == profile:
            self.current = None
            self._poke()

    async def aclose(self) -> None:
        for task in [self._task, *self._swaps]:
            if task is not None:
                task.cancel()

    # --- the dispatcher --------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="modelctl-proxy-scheduler")

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _check_fresh(self) -> None:
        """Another operation (an API switch or stop, a reconcile) ran since ours: re-check what runs."""
        if self.current is not None and self.effects.generation != self.generation and self.target is None:
            self.current = None

    def _admitted(self, profile: str) -> None:
        self.inflight[profile] += 1
        self.metrics.inflight.labels(profile).set(self.inflight[profile])
        self.last_used = time.monotonic()

    def _admit_all(self, profile: str) -> None:
        queue = self.waiting.pop(profile, deque())
        now = time.monotonic()
        for waiter in queue:
            if not waiter.future.done():
                self._admitted(profile)
                waiter.future.set_result(self.url)
                self.metrics.queue_wait.labels(profile).observe(now - waiter.since)
        self.metrics.queue_length.set(self.queued())

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                timeout = self._step()
            except Exception:  # a bug here must not leave every client waiting forever
                log.exception("proxy scheduler: unexpected error")
                timeout = 1.0
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    def _step(self) -> float | None:
        """One decision; returns when to look again (None: when something changes)."""
        if self.target is not None:
            return None  # a swap runs; it pokes when it ends
        self._check_fresh()
        now = time.monotonic()
        waiting = {p: q for p, q in self.waiting.items() if q}
        current = self.current
        if current is not None and current in waiting and not self.draining:
            self._admit_all(current)
            del waiting[current]
        if not waiting:
            self.draining = False
            return self._idle(now)
        target = min(waiting, key=lambda p: waiting[p][0].since)
        waited = now - waiting[target][0].since
        if current is not None and not self.draining:
            resident = now - self.loaded_at
            busy = self.inflight[current] > 0
            if waited < self.limits.max_wait and (busy or resident < self.limits.min_residency):
                later = [self.limits.max_wait - waited]
                if not busy:
                    later.append(self.limits.min_residency - resident)
                return max(0.005, min(later))
            self.draining = True  # no new requests for the current model; let its requests finish
        if current is not None and self.inflight[current] > 0:
            return None  # release() pokes
        self.draining = False
        self._start(self._swap(target, "proxy"), target)
        return None

    def _idle(self, now: float) -> float | None:
        """Idle TTL: with nothing queued or in flight for that long, stop the model (or go to the fallback)."""
        current = self.current
        if not self.limits.idle_ttl or current is None or self.inflight[current] > 0:
            return None
        idle = now - max(self.last_used, self.loaded_at)
        if idle < self.limits.idle_ttl:
            return self.limits.idle_ttl - idle
        fallback = self.effects.fallback()
        if fallback == current:
            self.last_used = now  # the default stays
            return self.limits.idle_ttl
        if fallback:
            log.info("proxy: %s idle for %.0fs; back to the default %s", current, idle, fallback)
            self._start(self._swap(fallback, "idle"), fallback)
        else:
            log.info("proxy: %s idle for %.0fs; stopping it", current, idle)
            self._start(self._stop_idle(), current)
        return None

    def _start(self, work, target: str) -> None:
        self.target = target
        task = asyncio.create_task(work, name=f"modelctl-proxy-swap-{target}")
        self._swaps.add(task)
        task.add_done_callback(self._swaps.discard)

    async def _stop_idle(self) -> None:
        try:
            await self.effects.stop_model()
        except Exception as exc:
            log.warning("proxy: idle stop failed: %s", exc)
        finally:
            self.current, self.target = None, None
            self.metrics.active.clear()
            self._poke()

    async def _swap(self, target: str, origin: str) -> None:
        """Make `target` active; then let its waiters in, or fail them with the cause."""
        began = time.monotonic()
        try:
            swapped = await self.effects.swap(target, origin)
        except Exception as exc:
            error = exc if isinstance(exc, ModelctlError) else ModelctlError(f"unexpected error ({type(exc).__name__})")
            self.current = None
            for waiter in self.waiting.pop(target, deque()):
                if not waiter.future.done():
                    waiter.future.set_exception(error)
                    waiter.future.exception()  # marked retrieved: a waiter gone meanwhile logs nothing
            self.metrics.queue_length.set(self.queued())
        else:
            if swapped.switched:
                self.swap_times.append(time.monotonic() - began)
            if self.current != target:
                self.metrics.active.clear()
                self.metrics.active.labels(target).set(1)
                self.loaded_at = time.monotonic()
            self.current, self.url, self.generation = target, swapped.url.rstrip("/"), swapped.generation
            self._admit_all(target)
        finally:
            self.target = None
            self._poke()
