"""The proxy's swap scheduler: when to swap models, and which requests go upstream.

It depends only on `SwapEffects` (what runs, start a swap, stop) and a clock, and lives on one
asyncio event loop, so its state needs no locks; unit tests drive it with a recording fake and a
fake clock (tests/test_scheduler.py).

- requests for the active model go straight through, each as a `Lease` (counted in flight until
  released); a model the service adopted at start-up (`adopt`) counts as active;
- a request for another model waits in a bounded queue (beyond `max_queue`: QueueFull, 503 with
  Retry-After from the measured swap times); requests for the model being loaded join it;
- a swap begins at once when the active model has no work: nothing in flight, nothing queued,
  and no request served since the oldest waiter arrived (one client alternating models never
  waits). A model with work is protected: it stays as long as swapping away and back costs (each
  model's last swap in, measured: a wake is cheap, a cold start is not), at most `min_residency`
  seconds, and until its requests in flight are done, unless a waiting request has waited
  `max_wait` seconds. Then the active model stops taking new requests, its requests in flight
  drain, and the model whose request waited longest is loaded; all its queued requests go
  together;
- the drain is bounded: requests still in flight `drain_timeout` seconds after the swap was
  decided are abandoned (their leases' `abandoned` event is set; the proxy ends them with an
  error) and the swap proceeds; their late release() changes nothing;
- with nothing queued or in flight for `idle_ttl` seconds (the model's own, else the limit's), the
  model is stopped, or replaced by the fallback (the default profile);
- a client that goes away leaves the queue; a swap under way always runs to its end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ModelctlError, QueueFull
from .metrics import Metrics

log = logging.getLogger("modelctl.proxy")

DEFAULT_RETRY_AFTER_S = 10  # before any swap was measured
MIN_WAIT_S = 0.005  # the dispatcher never looks again sooner than this
ERROR_RETRY_S = 1.0  # after an unexpected error in the dispatcher


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
    drain_timeout: float = 120.0  # in-flight requests of a model being swapped away get this long


@dataclass(eq=False)
class Lease:
    """One request admitted upstream: where to send it, and whether the scheduler gave up on it.

    Release it exactly once when the response has ended (a second release does nothing).
    `abandoned` is set when the drain before a swap timed out with this request still in
    flight: the model is being swapped away, so the proxy ends the response with an error.
    """

    profile: str
    url: str
    abandoned: asyncio.Event = field(default_factory=asyncio.Event)
    released: bool = False
    _scheduler: Scheduler | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._scheduler is not None:
            self._scheduler.release(self)


@dataclass(eq=False)
class _Waiter:
    profile: str
    future: asyncio.Future[Lease]
    since: float


class Scheduler:
    """Decides when to swap and who goes upstream; all its state lives on the event loop."""

    def __init__(
        self,
        effects: SwapEffects,
        limits: SchedulerLimits,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        idle_ttl: Callable[[str], float] | None = None,
    ) -> None:
        self.effects = effects
        self.limits = limits
        # A model's idle TTL (its profile's `idle_ttl`); without it, limits.idle_ttl for every model.
        self.idle_ttl = idle_ttl or (lambda profile: limits.idle_ttl)
        self.metrics = metrics
        self.clock = clock
        self.current: str | None = None  # the profile the scheduler last made active (or adopted)
        self.url = ""
        self.generation = -1  # the effects' generation `current` was established at
        self.loaded_at = 0.0
        self.last_used = clock()  # the last admission or release, of any model (idle TTL)
        self.worked_at: dict[str, float] = {}  # the last admission or release, per model
        self.target: str | None = None  # the profile a swap is loading (or stopping) now
        self.draining = False
        self.drain_since = 0.0
        self.inflight: dict[str, set[Lease]] = {}
        self.waiting: dict[str, deque[_Waiter]] = {}
        self.swap_times: deque[float] = deque(maxlen=20)
        self.swap_cost: dict[str, float] = {}  # per model: seconds its last swap in took (wake or start)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._swaps: set[asyncio.Task[None]] = set()  # held so that the loop does not drop them

    # --- what clients call -----------------------------------------------------------------

    def queued(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def busy(self, profile: str) -> int:
        """Requests of `profile` in flight (abandoned ones no longer count)."""
        return len(self.inflight.get(profile, ()))

    def retry_after(self) -> int:
        """Seconds a refused client should wait: a swap per model that waits, as measured so far."""
        per_swap = sum(self.swap_times) / len(self.swap_times) if self.swap_times else DEFAULT_RETRY_AFTER_S
        swaps = max(1, len([p for p, q in self.waiting.items() if q]))
        return max(1, math.ceil(per_swap * swaps))

    async def lease(self, profile: str) -> Lease:
        """Wait until `profile` is active and may take a request. Release the lease when done."""
        self._ensure_started()
        self._check_fresh()
        if profile == self.current and self.target is None and not self.draining:
            return self._admitted(profile)
        if self.queued() >= self.limits.max_queue:
            self.metrics.rejected.inc()
            raise QueueFull(
                f"{self.queued()} requests already wait for their model (MODELCTL_PROXY_MAX_QUEUE)",
                self.retry_after(),
            )
        waiter = _Waiter(profile, asyncio.get_running_loop().create_future(), self.clock())
        self.waiting.setdefault(profile, deque()).append(waiter)
        self.metrics.queue_length.set(self.queued())
        self._poke()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())  # admitted just as the client went away
            else:
                queue = self.waiting.get(profile)
                if queue and waiter in queue:
                    queue.remove(waiter)
                    self.metrics.queue_length.set(self.queued())
                self._poke()
            raise

    async def acquire(self, profile: str) -> str:
        """lease() for callers that release by profile name: returns the URL. Pair with release(profile).

        Prefer lease(): a release by name cannot tell an abandoned request from a new one.
        """
        return (await self.lease(profile)).url

    def release(self, lease: Lease | str) -> None:
        """The request ended. A lease released twice, or after it was abandoned, changes nothing."""
        if isinstance(lease, str):  # by name: any one request of that profile, never below zero
            leases = self.inflight.get(lease)
            if not leases:
                return
            lease = next(iter(leases))
        if lease.released:
            return
        lease.released = True
        leases = self.inflight.get(lease.profile)
        if leases is None or lease not in leases:
            return  # abandoned: its count went with it
        leases.discard(lease)
        self.metrics.inflight.labels(lease.profile).set(len(leases))
        self.last_used = self.worked_at[lease.profile] = self.clock()
        if not leases:
            self._poke()

    def forget(self, profile: str) -> None:
        """The model's server did not answer: what runs is no longer known."""
        if self.current == profile:
            self.current = None
            self._poke()

    def adopt(self, profile: str, url: str, generation: int) -> bool:
        """`profile` runs at `url`, as established by the effects' operation `generation` (the
        service's start-up reconcile): its requests go straight through. Ignored (False) when a
        swap is under way or another operation ran since (the generation moved on)."""
        if self.target is not None or generation != self.effects.generation:
            return False
        if self.current != profile:
            self.metrics.active.clear()
            self.metrics.active.labels(profile).set(1)
            self.loaded_at = self.clock()
        self.current, self.url, self.generation = profile, url.rstrip("/"), generation
        # The dispatcher runs from now on, so the idle TTL applies to a model nobody asks for.
        self._ensure_started()
        self._poke()
        return True

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

    def _admitted(self, profile: str) -> Lease:
        lease = Lease(profile, self.url, _scheduler=self)
        leases = self.inflight.setdefault(profile, set())
        leases.add(lease)
        self.metrics.inflight.labels(profile).set(len(leases))
        self.last_used = self.worked_at[profile] = self.clock()
        return lease

    def _admit_all(self, profile: str) -> None:
        queue = self.waiting.pop(profile, deque())
        now = self.clock()
        for waiter in queue:
            if not waiter.future.done():
                waiter.future.set_result(self._admitted(profile))
                self.metrics.queue_wait.labels(profile).observe(now - waiter.since)
        self.metrics.queue_length.set(self.queued())

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                deadline = self._step()
            except Exception:  # a bug here must not leave every client waiting forever
                log.exception("proxy scheduler: unexpected error")
                deadline = self.clock() + ERROR_RETRY_S
            timeout = None if deadline is None else max(MIN_WAIT_S, deadline - self.clock())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    def _step(self) -> float | None:
        """One decision; returns the time on `clock` to look again at (None: when something changes)."""
        if self.target is not None:
            return None  # a swap runs; it pokes when it ends
        self._check_fresh()
        now = self.clock()
        current = self.current
        others = {p: q for p, q in self.waiting.items() if q and p != current}
        if not others:
            self.draining = False  # whoever the drain was for left the queue
            if current is not None:
                self._admit_all(current)
            return self._idle(now)
        if current is not None and not self.draining:
            self._admit_all(current)
        target = min(others, key=lambda p: others[p][0].since)
        if current is not None and not self.draining:
            later = self._protected_until(current, others[target][0].since, now, target)
            if later is not None:
                return later
            self.draining, self.drain_since = True, now  # no new requests for it; its requests finish
        if current is not None and self.busy(current):
            give_up = self.drain_since + self.limits.drain_timeout
            if now < give_up:
                return give_up  # release() pokes before
            self._abandon(current)
        self.draining = False
        self._start(self._swap(target, "proxy"), target)
        return None

    def _protected_until(self, current: str, since: float, now: float, target: str | None = None) -> float | None:
        """Until when the active model keeps the GPU although a request (waiting since `since`) wants
        another; None: swap now. Only a model with work is protected: requests in flight, or a
        request served while the other one waited (a client in the middle of a series)."""
        forced = since + self.limits.max_wait
        if now >= forced:
            return None
        busy = self.busy(current) > 0
        if not busy and self.worked_at.get(current, -math.inf) <= since:
            return None  # nothing in flight or queued, nobody came since: swap at once
        if busy:
            return forced  # release() pokes before
        resident = self.loaded_at + (self.residency(current, target) if target else self.limits.min_residency)
        if now >= resident:
            return None
        return min(resident, forced)

    def residency(self, current: str, target: str) -> float:
        """How long `current`, once it has work, keeps the GPU against a request for `target`: what
        leaving would cost - the swap to `target` and the swap back, each as last measured for that
        model (a wake is cheap, a cold start is not) - and never more than min_residency. Until
        both were measured, min_residency."""
        there, back = self.swap_cost.get(target), self.swap_cost.get(current)
        if there is None or back is None:
            return self.limits.min_residency
        return min(self.limits.min_residency, there + back)

    def _abandon(self, profile: str) -> None:
        leases = self.inflight.pop(profile, set())
        log.warning(
            "proxy: %d request(s) of %s still in flight after the drain timeout (%.0fs, "
            "MODELCTL_PROXY_DRAIN_TIMEOUT); ending them and swapping",
            len(leases),
            profile,
            self.limits.drain_timeout,
        )
        for lease in leases:
            lease.abandoned.set()
        self.metrics.inflight.labels(profile).set(0)

    def _idle(self, now: float) -> float | None:
        """Idle TTL: with nothing queued or in flight for that long, stop the model (or go to the fallback)."""
        current = self.current
        if current is None or self.busy(current):
            return None
        ttl = self.idle_ttl(current)
        if not ttl:
            return None
        since = max(self.last_used, self.loaded_at)
        if now < since + ttl:
            return since + ttl
        fallback = self.effects.fallback()
        if fallback == current:
            self.last_used = now  # the default stays
            return now + ttl
        if fallback:
            log.info("proxy: %s idle for %.0fs; back to the default %s", current, now - since, fallback)
            self._start(self._swap(fallback, "idle"), fallback)
        else:
            log.info("proxy: %s idle for %.0fs; stopping it", current, now - since)
            self._start(self._stop_idle(), current)
        return None

    def _start(self, work: Coroutine[Any, Any, None], target: str) -> None:
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
        began = self.clock()
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
                self.swap_times.append(self.clock() - began)
                self.swap_cost[target] = self.clock() - began
            if self.current != target:
                self.metrics.active.clear()
                self.metrics.active.labels(target).set(1)
                self.loaded_at = self.clock()
            self.current, self.url, self.generation = target, swapped.url.rstrip("/"), swapped.generation
            self._admit_all(target)
        finally:
            self.target = None
            self._poke()
