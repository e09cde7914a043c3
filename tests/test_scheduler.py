"""The proxy's swap scheduler (modelctl/scheduler.py) on a recording fake SwapEffects and a fake clock.

No engine, no sleeping: each test runs its own event loop (asyncio.run), the clock moves only when
the test advances it, and the fake's swaps end only when the test completes or fails them. After
each move the test lets the loop run until nothing is ready (`settle`), then asserts what the
scheduler did: the swaps and stops it asked for, with the clock time of each.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import pytest

from modelctl.errors import ModelctlError, NotReadyError, QueueFull
from modelctl.metrics import Metrics
from modelctl.scheduler import Lease, Scheduler, SchedulerLimits, Swapped


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEffects:
    """Records every swap and stop (clock time, what, profile, origin); each waits until the test
    completes or fails it. Its generation moves on when an operation begins, like Operations'."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.generation = 0
        self.fallback_profile: str | None = None
        self.calls: list[tuple] = []
        self.pending: deque[tuple[str, int, asyncio.Future]] = deque()

    async def _operation(self, what: str) -> int:
        self.generation += 1
        future = asyncio.get_running_loop().create_future()
        self.pending.append((what, self.generation, future))
        await future
        return future.result()

    async def swap(self, profile: str, origin: str) -> Swapped:
        self.calls.append((self.clock(), "swap", profile, origin))
        generation = self.generation + 1
        switched = await self._operation(profile)
        return Swapped(url=f"http://{profile}:8000/v1/", switched=switched, generation=generation)

    async def stop_model(self) -> None:
        self.calls.append((self.clock(), "stop"))
        await self._operation("stop")

    def fallback(self) -> str | None:
        return self.fallback_profile

    def complete(self, *, switched: bool = True) -> str:
        what, _, future = self.pending.popleft()
        future.set_result(switched)
        return what

    def fail(self, error: BaseException) -> str:
        what, _, future = self.pending.popleft()
        future.set_exception(error)
        return what


class World:
    def __init__(self, limits: SchedulerLimits) -> None:
        self.clock = FakeClock()
        self.effects = FakeEffects(self.clock)
        self.metrics = Metrics()
        self.scheduler = Scheduler(self.effects, limits, self.metrics, clock=self.clock)

    async def request(self, profile: str) -> asyncio.Task[Lease]:
        """A client asks for `profile` now; the task ends when it is admitted (or refused)."""
        task = asyncio.get_running_loop().create_task(self.scheduler.lease(profile))
        await self.settle()
        return task

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def at(self, when: float) -> None:
        """Move the clock to `when`, wake the dispatcher, let everything run."""
        assert when >= self.clock.now
        self.clock.now = when
        self.scheduler._poke()
        await self.settle()

    async def complete(self, *, switched: bool = True) -> None:
        self.effects.complete(switched=switched)
        await self.settle()

    async def loaded(self, profile: str, when: float) -> Lease:
        """`profile` swapped in at clock time `when` for one request, and that request still in flight."""
        await self.at(when)
        first = await self.request(profile)
        await self.complete()
        assert first.done()
        return first.result()

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def scenario(**limits: float):
    """Run `async def test_x(w: World)` as a plain test on its own loop, with these limits."""

    def wrap(body):
        def test() -> None:
            async def main() -> None:
                world = World(SchedulerLimits(**{"min_residency": 10.0, "max_wait": 30.0, **limits}))
                try:
                    await body(world)
                finally:
                    await world.scheduler.aclose()

            asyncio.run(main())

        test.__name__, test.__doc__ = body.__name__, body.__doc__
        return test

    return wrap


# --- passing through, grouping, order -----------------------------------------------------


@scenario()
async def test_requests_for_the_active_model_pass_straight_through(w: World) -> None:
    first = await w.request("a")
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")]  # nothing ran: swapped in at once
    assert not first.done() and w.scheduler.queued() == 1
    await w.at(4.0)
    await w.complete()
    lease = first.result()
    assert (lease.profile, lease.url, lease.abandoned.is_set()) == ("a", "http://a:8000/v1", False)
    assert w.scheduler.swap_times == deque([4.0])

    second = await w.scheduler.lease("a")  # no queue, no swap
    third = await w.scheduler.acquire("a")  # by name: the URL
    assert second.url == third == "http://a:8000/v1"
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")]
    assert w.scheduler.busy("a") == 3 and w.metric("modelctl_proxy_inflight_requests", profile="a") == 3.0
    assert w.metric("modelctl_proxy_active_model", profile="a") == 1.0

    lease.release()
    lease.release()  # twice: once counted
    w.scheduler.release("a")  # by name
    w.scheduler.release(second)
    w.scheduler.release("a")  # nothing left: never below zero
    assert w.scheduler.busy("a") == 0 and w.metric("modelctl_proxy_inflight_requests", profile="a") == 0.0


@scenario()
async def test_one_swap_admits_every_queued_request_for_its_model(w: World) -> None:
    b1 = await w.request("b")
    await w.at(1.0)
    c1 = await w.request("c")
    await w.at(2.0)
    b2, b3 = await w.request("b"), await w.request("b")  # join the swap under way
    await w.at(5.0)
    await w.complete()
    assert [t.done() for t in (b1, b2, b3, c1)] == [True, True, True, False]
    assert w.effects.calls == [(0.0, "swap", "b", "proxy")]
    assert w.scheduler.busy("b") == 3 and w.scheduler.queued() == 1
    assert w.metric("modelctl_proxy_queue_wait_seconds_count", profile="b") == 3.0
    assert w.metric("modelctl_proxy_queue_wait_seconds_sum", profile="b") == 5.0 + 3.0 + 3.0
    assert w.metric("modelctl_proxy_queue_length") == 1.0

    await w.at(6.0)
    for task in (b1, b2, b3):
        task.result().release()
    await w.settle()
    assert w.scheduler._step() == 15.0  # b served while c waited: it stays its residency
    await w.at(15.0)
    assert w.effects.calls == [(0.0, "swap", "b", "proxy"), (15.0, "swap", "c", "proxy")]


@scenario(min_residency=0.0)
async def test_the_oldest_waiter_is_served_first(w: World) -> None:
    held = await w.loaded("a", 0.0)
    waiting = {}
    for when, profile in [(1.0, "c"), (2.0, "b"), (3.0, "c"), (4.0, "d")]:
        await w.at(when)
        waiting.setdefault(profile, []).append(await w.request(profile))
    await w.settle()
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")]  # a still has a request in flight
    held.release()
    await w.settle()
    for when in (5.0, 6.0, 7.0):
        await w.at(when)
        await w.complete()
        (profile,) = [p for p, tasks in waiting.items() if all(t.done() for t in tasks) and tasks]
        for task in waiting.pop(profile):
            task.result().release()
        await w.settle()
    assert w.effects.calls == [
        (0.0, "swap", "a", "proxy"),
        (4.0, "swap", "c", "proxy"),
        (5.0, "swap", "b", "proxy"),
        (6.0, "swap", "d", "proxy"),
    ]


# --- residency, max wait, drain -----------------------------------------------------------


@scenario()
async def test_minimum_residency_protects_a_model_with_work(w: World) -> None:
    held = await w.loaded("a", 0.0)
    await w.at(2.0)
    b = await w.request("b")
    assert w.scheduler._step() == 32.0  # busy: until b has waited max_wait (release pokes sooner)
    await w.at(4.0)
    held.release()
    await w.settle()
    assert w.scheduler._step() == 10.0  # a worked while b waited: its residency (0 + 10)
    more = await w.scheduler.lease("a")  # not draining: a still takes requests
    more.release()
    await w.at(9.5)
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")] and not b.done()
    await w.at(10.0)
    assert w.effects.calls == [(0.0, "swap", "a", "proxy"), (10.0, "swap", "b", "proxy")]


@scenario()
async def test_a_single_client_alternating_models_never_waits(w: World) -> None:
    """Issue 10: nothing in flight or queued for the loaded model -> the swap starts at once
    (the old rule waited min_residency, here until t=10, on every switch)."""
    lease = await w.loaded("a", 0.0)
    await w.at(1.0)
    lease.release()
    for when, profile in [(2.0, "b"), (4.0, "a"), (6.0, "b")]:
        await w.at(when)
        task = await w.request(profile)
        assert w.effects.calls[-1] == (when, "swap", profile, "proxy")
        await w.at(when + 1.0)
        await w.complete()
        task.result().release()
    assert [c[0] for c in w.effects.calls] == [0.0, 2.0, 4.0, 6.0]


@scenario()
async def test_max_wait_forces_a_swap_and_the_model_drains_first(w: World) -> None:
    stuck = await w.loaded("a", 0.0)
    await w.at(1.0)
    b = await w.request("b")
    await w.at(30.0)
    assert (w.scheduler.draining, len(w.effects.calls)) == (False, 1)
    latecomer = await w.scheduler.lease("a")  # still taken before the max wait
    await w.at(31.0)  # b waited 30 s: a drains
    assert w.scheduler.draining and w.effects.calls == [(0.0, "swap", "a", "proxy")]
    queued = await w.request("a")  # no new admissions while draining
    assert not queued.done() and w.scheduler.queued() == 2
    assert w.scheduler._step() == 151.0  # the drain timeout (120 s) from the decision
    stuck.release()
    await w.at(40.0)
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")]  # one request still in flight
    latecomer.release()
    await w.settle()
    assert w.effects.calls == [(0.0, "swap", "a", "proxy"), (40.0, "swap", "b", "proxy")]
    assert not stuck.abandoned.is_set() and not latecomer.abandoned.is_set()
    assert not w.scheduler.draining and not queued.done()
    await w.complete()
    assert b.result().url == "http://b:8000/v1" and not queued.done()  # a waits its turn now


@scenario()
async def test_a_drain_ends_when_the_waiter_it_was_for_leaves(w: World) -> None:
    held = await w.loaded("a", 0.0)
    await w.at(1.0)
    b = await w.request("b")
    await w.at(31.0)
    queued = await w.request("a")
    assert w.scheduler.draining and not queued.done()
    b.cancel()
    await w.settle()
    assert not w.scheduler.draining and queued.done() and w.scheduler.busy("a") == 2
    held.release()
    queued.result().release()
    await w.at(200.0)
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")]


@scenario(drain_timeout=120.0)
async def test_requests_still_in_flight_after_the_drain_timeout_are_abandoned(w: World) -> None:
    """Issue 10: a paused model server cannot block a swap for ever."""
    stuck = await w.loaded("a", 0.0)
    await w.at(1.0)
    b = await w.request("b")
    await w.at(31.0)  # the swap is decided; a drains
    await w.at(150.0)
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")] and not stuck.abandoned.is_set()
    await w.at(151.0)
    assert stuck.abandoned.is_set()
    assert w.effects.calls == [(0.0, "swap", "a", "proxy"), (151.0, "swap", "b", "proxy")]
    assert w.scheduler.busy("a") == 0 and w.metric("modelctl_proxy_inflight_requests", profile="a") == 0.0
    await w.at(155.0)
    await w.complete()
    assert w.scheduler.busy("b") == 1

    stuck.release()  # the proxy ends it late: nothing moves
    w.scheduler.release("a")  # by name too: never below zero
    assert (w.scheduler.busy("a"), w.scheduler.busy("b")) == (0, 1)
    assert w.metric("modelctl_proxy_inflight_requests", profile="b") == 1.0

    # a comes back; a release of the old request does not touch its new one
    b.result().release()
    await w.at(160.0)
    again = await w.request("a")
    await w.complete()
    stuck.release()
    assert w.scheduler.busy("a") == 1 and not again.result().abandoned.is_set()


# --- the queue ----------------------------------------------------------------------------


@scenario(max_queue=1)
async def test_a_full_queue_before_any_swap_was_measured_says_ten_seconds(w: World) -> None:
    first = await w.request("a")
    with pytest.raises(QueueFull) as full:
        await w.scheduler.lease("b")
    assert full.value.retry_after == 10
    assert full.value.message == "1 requests already wait for their model (MODELCTL_PROXY_MAX_QUEUE)"
    assert full.value.hint == "retry after 10 s, or raise MODELCTL_PROXY_MAX_QUEUE"
    assert w.metric("modelctl_proxy_rejected_total") == 1.0
    assert not first.done()


@scenario(max_queue=2)
async def test_a_full_queue_answers_with_retry_after_from_the_measured_swaps(w: World) -> None:
    for start, took, profile in [(0.0, 30.0, "a"), (50.0, 20.0, "c")]:
        await w.at(start)
        task = await w.request(profile)
        await w.at(start + took)
        await w.complete()
        task.result().release()
    await w.at(80.0)
    task = await w.request("b")  # running already: not a swap, not measured
    await w.at(87.0)
    await w.complete(switched=False)
    assert w.scheduler.swap_times == deque([30.0, 20.0])

    busy = task.result()  # b busy: the next two wait
    waiting = [await w.request("a"), await w.request("c")]
    with pytest.raises(QueueFull) as full:
        await w.scheduler.lease("d")
    assert full.value.retry_after == 50  # 25 s a swap, measured; two models wait
    assert w.metric("modelctl_proxy_rejected_total") == 1.0
    assert [t.done() for t in waiting] == [False, False]
    busy.release()


@scenario()
async def test_a_client_that_leaves_the_queue_is_removed(w: World) -> None:
    held = await w.loaded("a", 0.0)
    await w.at(1.0)
    b = await w.request("b")
    assert w.metric("modelctl_proxy_queue_length") == 1.0
    b.cancel()
    await w.settle()
    assert b.cancelled() and w.scheduler.queued() == 0 and w.metric("modelctl_proxy_queue_length") == 0.0
    held.release()
    await w.at(100.0)
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")]  # nobody waits: no swap


@scenario()
async def test_a_client_that_leaves_during_its_swap_neither_stops_it_nor_holds_a_slot(w: World) -> None:
    leaving, staying = await w.request("a"), await w.request("a")
    leaving.cancel()
    await w.settle()
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")] and w.scheduler.queued() == 1
    # admitted in the same turn as it leaves: the slot is given back
    await w.at(1.0)
    late = await w.request("b")
    w.clock.now = 2.0
    w.effects.complete()
    await asyncio.sleep(0)  # the swap task admits a's waiters
    staying.cancel()
    await w.settle()
    assert staying.cancelled() and w.scheduler.busy("a") == 0 and w.scheduler.current == "a"
    assert w.scheduler._step() == 12.0  # a served a request while b waited: its residency
    await w.at(12.0)
    assert w.effects.calls[-1] == (12.0, "swap", "b", "proxy")
    await w.complete()
    assert late.result().url == "http://b:8000/v1"


# --- idle TTL -----------------------------------------------------------------------------


@scenario(idle_ttl=60.0)
async def test_idle_ttl_goes_back_to_the_fallback(w: World) -> None:
    w.effects.fallback_profile = "d"
    lease = await w.loaded("a", 0.0)
    await w.at(5.0)
    lease.release()
    await w.settle()
    assert w.scheduler._step() == 65.0
    await w.at(64.0)
    assert len(w.effects.calls) == 1
    await w.at(65.0)
    assert w.effects.calls[-1] == (65.0, "swap", "d", "idle")
    await w.at(70.0)
    await w.complete()
    assert w.scheduler.current == "d" and w.metric("modelctl_proxy_active_model", profile="d") == 1.0
    assert w.metric("modelctl_proxy_active_model", profile="a") is None


@scenario(idle_ttl=60.0)
async def test_idle_ttl_without_a_fallback_stops_the_model(w: World) -> None:
    (await w.loaded("a", 0.0)).release()
    await w.at(60.0)
    assert w.effects.calls[-1] == (60.0, "stop")
    assert w.scheduler.target == "a"
    await w.complete()
    assert (w.scheduler.current, w.scheduler.target) == (None, None)
    assert w.metric("modelctl_proxy_active_model", profile="a") is None


@scenario(idle_ttl=60.0)
async def test_idle_ttl_keeps_the_fallback_when_it_runs(w: World) -> None:
    w.effects.fallback_profile = "a"
    (await w.loaded("a", 0.0)).release()
    await w.at(60.0)
    assert w.effects.calls == [(0.0, "swap", "a", "proxy")]
    assert w.scheduler._step() == 120.0
    assert w.scheduler.current == "a"


@scenario(idle_ttl=60.0)
async def test_an_idle_stop_that_fails_is_logged_and_what_runs_is_unknown(w: World) -> None:
    (await w.loaded("a", 0.0)).release()
    await w.at(60.0)
    w.effects.fail(NotReadyError("engine gone"))
    await w.settle()
    assert (w.scheduler.current, w.scheduler.target) == (None, None)


@scenario(idle_ttl=60.0)
async def test_idle_ttl_waits_for_requests_in_flight(w: World) -> None:
    lease = await w.loaded("a", 0.0)
    await w.at(500.0)
    assert w.scheduler._step() is None and len(w.effects.calls) == 1
    lease.release()
    await w.at(559.0)
    assert len(w.effects.calls) == 1
    await w.at(560.0)
    assert w.effects.calls[-1] == (560.0, "stop")


# --- failures, other operations, adoption -------------------------------------------------


@scenario()
async def test_a_failed_swap_fails_its_waiters_with_the_cause(w: World) -> None:
    (await w.loaded("a", 0.0)).release()
    await w.at(1.0)
    waiters = [await w.request("b"), await w.request("b")]
    error = NotReadyError("b exited (code 1) before it was ready")
    w.effects.fail(error)
    await w.settle()
    assert [t.exception() for t in waiters] == [error, error]
    assert w.scheduler.current is None and w.scheduler.target is None and w.scheduler.queued() == 0

    again = await w.request("a")  # what runs is unknown: a swap, even for the model that ran
    assert w.effects.calls[-1] == (1.0, "swap", "a", "proxy")
    w.effects.fail(RuntimeError("boom"))
    await w.settle()
    assert type(again.exception()) is ModelctlError
    assert again.exception().message == "unexpected error (RuntimeError)"


@scenario()
async def test_another_operation_moving_the_generation_forgets_what_ran(w: World) -> None:
    (await w.loaded("a", 0.0)).release()
    assert (w.scheduler.current, w.scheduler.generation) == ("a", 1)
    w.effects.generation = 2  # an API switch or stop ran
    await w.at(1.0)
    task = await w.request("a")
    assert w.scheduler.current is None and w.effects.calls[-1] == (1.0, "swap", "a", "proxy")
    await w.at(2.0)
    await w.complete(switched=False)  # it ran already: unchanged, not measured
    assert task.result().url == "http://a:8000/v1" and w.scheduler.generation == 3
    assert w.scheduler.swap_times == deque([0.0])


@scenario()
async def test_forget_makes_the_next_request_swap(w: World) -> None:
    lease = await w.loaded("a", 0.0)
    lease.release()
    w.scheduler.forget("b")  # not the current one: nothing
    assert w.scheduler.current == "a"
    w.scheduler.forget("a")
    assert w.scheduler.current is None
    await w.at(3.0)
    await w.request("a")
    await w.settle()
    assert w.effects.calls == [(0.0, "swap", "a", "proxy"), (3.0, "swap", "a", "proxy")]


@scenario()
async def test_an_adopted_model_takes_requests_without_a_swap(w: World) -> None:
    """Issue 10: the model the start-up reconcile adopted is known to the proxy."""
    w.effects.generation = 3  # the reconcile ran as operation 3
    assert w.scheduler.adopt("a", "http://127.0.0.1:8001/v1/", 2) is False  # another ran since
    assert w.scheduler.adopt("a", "http://127.0.0.1:8001/v1/", 3) is True
    leases = [await w.scheduler.lease("a") for _ in range(100)]
    assert {lease.url for lease in leases} == {"http://127.0.0.1:8001/v1"}
    assert w.effects.calls == [] and w.scheduler.queued() == 0
    assert w.metric("modelctl_proxy_active_model", profile="a") == 1.0
    for lease in leases:
        lease.release()

    await w.at(1.0)
    b = await w.request("b")  # a has nothing in flight: swapped at once
    assert w.effects.calls == [(1.0, "swap", "b", "proxy")]
    assert w.scheduler.adopt("a", "http://127.0.0.1:8001/v1", w.effects.generation) is False  # a swap runs
    await w.complete()
    assert b.result().url == "http://b:8000/v1"


@scenario()
async def test_the_dispatcher_survives_its_own_errors(w: World) -> None:
    calls = []
    step = w.scheduler._step

    def failing_once() -> float | None:
        calls.append(w.clock())
        if len(calls) == 1:
            raise RuntimeError("bug")
        return step()

    w.scheduler._step = failing_once
    logging.getLogger("modelctl.proxy").disabled = True
    try:
        task = await w.request("a")
        await w.at(1.0)
    finally:
        logging.getLogger("modelctl.proxy").disabled = False
    assert calls[0] == 0.0 and w.effects.calls == [(1.0, "swap", "a", "proxy")]
    await w.complete()
    assert task.done()


@scenario(max_wait=0.02)
async def test_the_dispatcher_wakes_itself_at_its_deadline(w: World) -> None:
    """Without a poke: the run loop waits (on the real loop) until the deadline _step() gave."""
    held = await w.loaded("a", 0.0)
    b = await w.request("b")
    w.clock.now = 0.02  # b has waited max_wait; nobody pokes
    for _ in range(400):  # at most 2 s; the wait is 20 ms
        if w.scheduler.draining:
            break
        await asyncio.sleep(0.005)
    assert w.scheduler.draining and w.scheduler._step() == 120.02
    held.release()
    await w.settle()
    assert w.effects.calls == [(0.0, "swap", "a", "proxy"), (0.02, "swap", "b", "proxy")]
    await w.complete()
    assert b.done()
