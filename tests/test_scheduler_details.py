"""The scheduler's edges, on the recording fake and fake clock of tests/test_scheduler.py: the
residency edge, an adopted model's first minutes, the retry figure, the log lines an operator reads,
and the dispatcher's own clocks."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest
from test_scheduler import World, scenario

from modelctl import scheduler as scheduler_module
from modelctl.errors import NotReadyError
from modelctl.scheduler import Scheduler


def proxy_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "modelctl.proxy"]


@scenario()
async def test_an_adopted_model_that_served_nothing_is_swapped_at_once(w: World) -> None:
    w.scheduler.adopt("a", "http://127.0.0.1:8001/v1", 0)
    await w.at(1.0)
    b = await w.request("b")
    assert w.effects.calls == [(1.0, "swap", "b", "proxy")]
    await w.complete()
    assert b.done()


@scenario()
async def test_a_request_served_at_the_instant_another_arrives_does_not_protect(w: World) -> None:
    lease = await w.loaded("a", 0.0)
    await w.at(5.0)
    lease.release()  # served until 5.0 ...
    b = await w.request("b")  # ... and b arrives at 5.0: nobody came since
    assert w.effects.calls == [(0.0, "swap", "a", "proxy"), (5.0, "swap", "b", "proxy")]
    await w.complete()
    assert b.done()


@scenario()
async def test_an_adopted_model_is_protected_from_its_adoption(w: World) -> None:
    await w.at(5.0)
    w.scheduler.adopt("a", "http://127.0.0.1:8001/v1", 0)
    held = await w.scheduler.lease("a")
    await w.at(6.0)
    b = await w.request("b")
    await w.at(7.0)
    held.release()  # a served a request while b waited
    await w.settle()
    # adopted at 5.0: resident until 5 + 10 = 15.0
    assert w.scheduler._step() == 15.0 and not b.done()
    await w.at(15.0)
    await w.complete()


@scenario()
async def test_a_request_for_the_active_model_goes_straight_through_without_queueing(w: World) -> None:
    w.scheduler.adopt("a", "http://127.0.0.1:8001/v1", 0)
    lease = await w.scheduler.lease("a")
    assert w.metric("modelctl_proxy_queue_wait_seconds_count", profile="a") is None, "never queued"
    assert w.scheduler.worked_at["a"] == 0.0 and w.scheduler.last_used == 0.0
    lease.release()
    assert lease.released is True


@scenario()
async def test_the_model_being_swapped_away_takes_no_new_request(w: World) -> None:
    (await w.loaded("a", 0.0)).release()
    await w.at(1.0)
    await w.request("b")  # a has no work: the swap to b begins at once
    assert w.scheduler.target == "b"
    late_a = await w.request("a")
    assert not late_a.done(), "a is being swapped away: its request waits"
    await w.complete()


@scenario()
async def test_a_url_keeps_its_path_but_not_its_trailing_slashes(w: World) -> None:
    w.scheduler.adopt("a", "http://127.0.0.1:8001/PREFIX//", 0)
    lease = await w.scheduler.lease("a")
    assert lease.url == "http://127.0.0.1:8001/PREFIX"
    lease.release()


@scenario(idle_ttl=60.0)
async def test_an_adopted_model_that_is_never_asked_for_is_stopped_after_the_idle_ttl(w: World) -> None:
    w.scheduler.adopt("a", "http://127.0.0.1:8001/v1", 0)
    await w.at(59.0)
    assert w.effects.calls == []
    await w.at(60.0)
    assert w.effects.calls == [(60.0, "stop")]
    await w.complete()


@scenario()
async def test_retry_after_is_at_least_one_second_and_averages_the_last_20_swaps(w: World) -> None:
    await w.request("b")  # one model waits
    w.scheduler.swap_times.append(0.4)
    assert w.scheduler.retry_after() == 1  # ceil(0.4 x 1 model) = 1
    w.scheduler.swap_times.extend([100.0] + [2.0] * 20)  # the 0.4 and the 100 fall out of the last 20
    assert list(w.scheduler.swap_times) == [2.0] * 20
    assert w.scheduler.retry_after() == 2  # ceil(2.0 x 1)
    await w.complete()


@scenario()
async def test_the_dispatcher_and_each_swap_are_named_tasks_held_until_done(w: World) -> None:
    await w.request("a")
    assert w.scheduler._task.get_name() == "modelctl-proxy-scheduler"
    assert [task.get_name() for task in w.scheduler._swaps] == ["modelctl-proxy-swap-a"]
    await w.complete()
    assert w.scheduler._swaps == set()


def test_the_drain_timeout_log_line(caplog) -> None:
    @scenario(drain_timeout=120.0, max_wait=30.0)
    async def body(w: World) -> None:
        first, second = await w.loaded("a", 0.0), await w.scheduler.lease("a")
        await w.at(1.0)
        await w.request("b")
        await w.at(31.0)  # b waited max_wait: the drain begins
        await w.at(151.0)  # 120 s later: abandoned
        assert first.abandoned.is_set() and second.abandoned.is_set()
        await w.complete()

    with caplog.at_level(logging.INFO, logger="modelctl.proxy"):
        body()
    assert (
        "proxy: 2 request(s) of a still in flight after the drain timeout (120s, MODELCTL_PROXY_DRAIN_TIMEOUT); "
        "ending them and swapping"
    ) in proxy_log(caplog)


def test_the_idle_log_lines(caplog) -> None:
    @scenario(idle_ttl=60.0)
    async def to_fallback(w: World) -> None:
        w.effects.fallback_profile = "d"
        (await w.loaded("a", 10.0)).release()
        await w.at(85.0)  # idle since 10.0, past the deadline (70.0): idle for 85 - 10 = 75 s
        assert w.scheduler.target == "d", "the fallback is the swap under way"
        await w.complete()

    @scenario(idle_ttl=60.0)
    async def to_nothing(w: World) -> None:
        (await w.loaded("a", 5.0)).release()
        await w.at(66.0)  # idle since 5.0: 66 - 5 = 61 s
        w.effects.fail(NotReadyError("engine gone"))
        await w.settle()

    with caplog.at_level(logging.INFO, logger="modelctl.proxy"):
        to_fallback()
        to_nothing()
    assert proxy_log(caplog) == [
        "proxy: a idle for 75s; back to the default d",
        "proxy: a idle for 61s; stopping it",
        "proxy: idle stop failed: engine gone",
    ]


@scenario(idle_ttl=60.0)
async def test_the_fallback_that_runs_stays_another_idle_ttl(w: World) -> None:
    w.effects.fallback_profile = "a"
    (await w.loaded("a", 0.0)).release()
    w.clock.now = 100.0  # no poke: the decision is the direct call below
    assert w.scheduler._step() == 160.0  # 100 + 60
    assert w.scheduler.last_used == 100.0


@scenario(idle_ttl=60.0)
async def test_a_failed_fallback_swap_leaves_nothing_active_and_no_task_error(w: World) -> None:
    w.effects.fallback_profile = "d"
    (await w.loaded("a", 0.0)).release()
    await w.at(60.0)
    [task] = w.scheduler._swaps
    w.effects.fail(NotReadyError("d exited"))
    await w.settle()
    assert task.done() and task.exception() is None
    assert w.scheduler.current is None and w.scheduler.target is None
    assert w.metric("modelctl_proxy_queue_length") == 0.0


@scenario()
async def test_a_failed_swap_leaves_nothing_active(w: World) -> None:
    waiter = await w.request("b")
    w.effects.fail(NotReadyError("b exited"))
    await w.settle()
    assert w.scheduler.current is None
    assert isinstance(waiter.exception(), NotReadyError)


@scenario()
async def test_a_client_that_leaves_as_its_swap_fails_is_cancelled_cleanly(w: World) -> None:
    waiter = await w.request("b")
    w.effects.fail(NotReadyError("b exited"))
    await asyncio.sleep(0)  # the swap task fails b's waiters ...
    waiter.cancel()  # ... and the client goes away in the same turn
    await w.settle()
    assert waiter.cancelled()
    assert w.scheduler.queued() == 0


@scenario(max_wait=0.05)
async def test_the_dispatcher_wakes_at_its_deadline_on_a_clock_far_from_zero(w: World) -> None:
    await w.at(1000.0)
    held = await w.loaded("a", 1000.0)
    await w.request("b")
    w.clock.now = 1000.05  # b has waited max_wait; nobody pokes: the dispatcher waits 50 ms itself
    for _ in range(400):  # at most 2 s
        if w.scheduler.draining:
            break
        await asyncio.sleep(0.005)
    assert w.scheduler.draining
    held.release()
    await w.settle()
    await w.complete()


@pytest.mark.skipif(
    "idle_ttl" not in inspect.signature(Scheduler).parameters, reason="needs the scheduler's per-model idle TTL"
)
@scenario(idle_ttl=0.0)
async def test_each_model_has_its_own_idle_ttl(w: World) -> None:
    w.scheduler.idle_ttl = lambda profile: {"a": 30.0}.get(profile, 0.0)
    (await w.loaded("a", 0.0)).release()
    await w.at(29.0)
    assert len(w.effects.calls) == 1
    await w.at(30.0)
    assert w.effects.calls[-1] == (30.0, "stop")
    await w.complete()
    (await w.loaded("b", 40.0)).release()
    await w.at(1000.0)
    assert w.effects.calls[-1] == (40.0, "swap", "b", "proxy"), "b has no idle TTL: never stopped"


def test_after_an_error_the_dispatcher_looks_again_after_error_retry_s(monkeypatch, caplog) -> None:
    monkeypatch.setattr(scheduler_module, "ERROR_RETRY_S", 0.5)

    @scenario()
    async def body(w: World) -> None:
        calls: list[float] = []
        step = w.scheduler._step

        def failing_once() -> float | None:
            calls.append(w.clock())
            if len(calls) == 1:
                raise RuntimeError("bug")
            return step()

        w.scheduler._step = failing_once
        task = await w.request("a")
        assert len(calls) == 1
        await asyncio.sleep(0.05)
        assert len(calls) == 1, "not before ERROR_RETRY_S (0.5 s)"
        for _ in range(200):  # at most 2 s
            if len(calls) > 1:
                break
            await asyncio.sleep(0.01)
        assert len(calls) == 2 and w.effects.calls == [(0.0, "swap", "a", "proxy")]
        await w.complete()
        assert task.done()

    with caplog.at_level(logging.ERROR, logger="modelctl.proxy"):
        body()
    assert proxy_log(caplog) == ["proxy scheduler: unexpected error"]
