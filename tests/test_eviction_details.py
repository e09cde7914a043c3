"""decide(), edge by edge: the host reserve (most recent sleeper first, exact edge, what pins
nothing), the GPU room's edge, and each reason as the switch prints it."""

from __future__ import annotations

from test_eviction import on_port, sleeper, target  # noqa: F401 (target: a fixture)

from modelctl.eviction import Room, decide


def names(containers) -> list[str]:
    return [c.name for c in containers]


def test_the_most_recent_sleeper_gets_the_host_memory_first(target):
    a, b = on_port(1, "demo-a", 8001), on_port(2, "demo-c", 8003)
    sleepers = {a.id: sleeper(a, asleep=False, used=100, pin=4.0), b.id: sleeper(b, asleep=False, used=50, pin=4.0)}
    # 10 available: a (the most recent) pins 4 -> 6 left >= 4; b would leave 6 - 4 = 2 < 4: b stops
    got = decide(target, [b, a], sleepers=sleepers, room=Room(100.0, host_available_gib=10.0, host_reserve_gib=4.0))
    assert names(got.sleep) == ["modelctl-demo-a"] and names(got.stop) == ["modelctl-demo-c"]
    assert got.reasons == {
        "modelctl-demo-c": "its level-1 sleep would pin ~4.0 GiB of host memory, leaving 2.0 GiB available, "
        "under MODELCTL_SLEEP_HOST_RESERVE_GIB=4"
    }


def test_each_sleep_takes_its_pin_from_what_is_available(target):
    a, b = on_port(1, "demo-a", 8001), on_port(2, "demo-c", 8003)
    sleepers = {a.id: sleeper(a, asleep=False, used=100, pin=4.0), b.id: sleeper(b, asleep=False, used=50, pin=4.0)}
    # 20 available: a leaves 16, b leaves 12: both sleep
    got = decide(target, [a, b], sleepers=sleepers, room=Room(100.0, host_available_gib=20.0, host_reserve_gib=4.0))
    assert names(got.sleep) == ["modelctl-demo-a", "modelctl-demo-c"] and got.stop == [] and got.reasons == {}


def test_leaving_exactly_the_reserve_is_allowed(target):
    a = on_port(1, "demo-a", 8001)
    # 9 - 5 = 4 = the reserve: it sleeps
    got = decide(target, [a], sleepers={a.id: sleeper(a, asleep=False, pin=5.0)}, room=Room(100.0, 9.0, 4.0))
    assert names(got.sleep) == ["modelctl-demo-a"] and got.reasons == {}


def test_what_pins_nothing_is_never_stopped_for_host_memory(target):
    asleep, level2, small = on_port(1, "asleep", 8001), on_port(2, "level2", 8002), on_port(3, "small", 8003)
    sleepers = {
        asleep.id: sleeper(asleep, asleep=True, used=300, pin=5.0),  # asleep: its sleep is done
        level2.id: sleeper(level2, asleep=False, used=200, pin=0.0, level=2),  # level 2 pins nothing
        small.id: sleeper(small, asleep=False, used=100, pin=0.5),
    }
    # 2 GiB available, under the 4 GiB reserve already: only the one that would pin (0.5 GiB) stops
    got = decide(target, [asleep, level2, small], sleepers=sleepers, room=Room(100.0, 2.0, 4.0))
    assert names(got.stop) == ["modelctl-small"]
    assert names(got.sleep) == ["modelctl-level2"]
    assert got.reasons["modelctl-small"].startswith("its level-1 sleep would pin ~0.5 GiB of host memory, leaving 1.5")


def test_an_asleep_sleeper_first_does_not_end_the_host_check(target):
    asleep, awake = on_port(1, "asleep", 8001), on_port(2, "awake", 8002)
    sleepers = {
        asleep.id: sleeper(asleep, asleep=True, used=100),
        awake.id: sleeper(awake, asleep=False, used=50, pin=5),
    }
    got = decide(target, [asleep, awake], sleepers=sleepers, room=Room(100.0, 6.0, 4.0))  # 6 - 5 = 1 < 4
    assert names(got.stop) == ["modelctl-awake"]


def test_the_lru_reasons_say_the_need_the_room_and_what_the_others_keep(target):
    old, mid, new = on_port(1, "old", 8001), on_port(2, "mid", 8002), on_port(3, "new", 8003)
    sleepers = {
        old.id: sleeper(old, asleep=True, kept=4, used=10),
        mid.id: sleeper(mid, asleep=True, kept=4, used=20),
        new.id: sleeper(new, asleep=False, kept=4, used=30),
    }
    got = decide(target, [old, mid, new], sleepers=sleepers, room=Room(12.0))
    # demo-b: 4 / 12 -> 0.34; 0.34 x 12 = 4.08, + 0.6 = 4.68 GiB. 12 + 4.68 > 12: old stops (8 kept by
    # the others); 8 + 4.68 > 12: mid stops (4 kept); 4 + 4.68 <= 12: new stays
    assert got.reasons == {
        "modelctl-old": "least recently used sleeper: demo-b needs 4.68 GiB of the 12.00 GiB models may hold, "
        "beside 8.00 GiB kept by the other sleepers",
        "modelctl-mid": "least recently used sleeper: demo-b needs 4.68 GiB of the 12.00 GiB models may hold, "
        "beside 4.00 GiB kept by the other sleepers",
    }


def test_a_target_that_fits_exactly_beside_the_sleepers_keeps_them(target):
    a = on_port(1, "demo-a", 8001)
    room = Room(models_gib=4.0 + target.start_needs_gib)  # the sleeper's 4 GiB plus the target's need
    got = decide(target, [a], sleepers={a.id: sleeper(a, asleep=True, kept=4)}, room=room)
    assert got.stop == [] and got.reasons == {}


def test_without_room_or_without_a_target_nothing_is_measured(target):
    a = on_port(1, "demo-a", 8001)
    sleepers = {a.id: sleeper(a, asleep=True, kept=50)}
    assert decide(target, [a], sleepers=sleepers, room=None).stop == []
    assert decide(None, [a], sleepers=sleepers, room=Room(1.0)).stop == []
