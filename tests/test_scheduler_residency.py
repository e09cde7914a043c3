"""The residency rule scales with what a swap costs, measured per model: a model with work keeps the
GPU as long as swapping away and back would take (a wake is cheap, a cold start is not), never more
than min_residency. On the recording fake and the fake clock of test_scheduler.py."""

from __future__ import annotations

from test_scheduler import World, scenario


async def swap_in(w: World, profile: str, at: float, took: float) -> None:
    """A request for `profile` at `at` swaps it in; the swap takes `took` seconds; the request ends."""
    await w.at(at)
    task = await w.request(profile)
    await w.at(at + took)
    await w.complete()
    assert task.done()
    task.result().release()


@scenario(min_residency=10.0, max_wait=30.0)
async def test_cheap_swaps_keep_a_model_only_as_long_as_a_round_trip(w: World) -> None:
    await swap_in(w, "a", 0.0, 0.3)  # a wake: 0.3 s
    await swap_in(w, "b", 0.5, 0.25)  # b is loaded at 0.75
    assert w.scheduler.swap_cost == {"a": 0.3, "b": 0.25}
    busy = await w.request("b")  # b has work ...
    other = await w.request("a")  # ... when a request for a arrives
    await w.at(0.8)
    busy.result().release()  # b served while a waited: it has work
    await w.at(1.0)
    assert w.effects.calls[-1][2] == "b", "b is protected for a while"
    assert w.scheduler.residency("b", "a") == 0.55
    await w.at(1.3)  # loaded at 0.75 + (0.3 + 0.25)
    assert w.effects.calls[-1] == (1.3, "swap", "a", "proxy")
    await w.complete()
    assert other.done()


@scenario(min_residency=10.0, max_wait=30.0)
async def test_a_cold_start_keeps_the_full_min_residency(w: World) -> None:
    await swap_in(w, "a", 0.0, 12.0)  # a cold start
    await swap_in(w, "b", 13.0, 0.3)  # b is loaded at 13.3
    assert w.scheduler.residency("b", "a") == 10.0, "capped by MODELCTL_PROXY_MIN_RESIDENCY"
    busy = await w.request("b")
    await w.request("a")
    await w.at(13.4)
    busy.result().release()
    await w.at(20.0)
    assert w.effects.calls[-1][2] == "b"
    await w.at(23.3)
    assert w.effects.calls[-1] == (23.3, "swap", "a", "proxy")


@scenario(min_residency=10.0)
async def test_unmeasured_models_get_min_residency(w: World) -> None:
    assert w.scheduler.residency("a", "b") == 10.0
    await swap_in(w, "a", 0.0, 0.3)
    assert w.scheduler.residency("a", "b") == 10.0, "b's swap was never measured"
    await swap_in(w, "b", 1.0, 0.0)  # a swap with nothing to do (switched) counts as measured
    assert w.scheduler.residency("a", "b") == 0.3
