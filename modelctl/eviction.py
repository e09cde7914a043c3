"""Eviction: which running vLLM containers stop, and which go to sleep, before a model starts or
wakes. Pure, no I/O: the controller measures, this module decides.

Without sleep mode the answer is "every one but the container kept": one model on one GPU. With
it (profile `sleep_level`), modelctl's sleep-enabled containers may stay as sleepers beside the
one awake model, as long as they all fit:

- every foreign vLLM server stops (it would hold memory the plan counts on), and so does every
  modelctl container without sleep mode, the target's own container when it is not kept, and a
  sleeper on the target's host port (a sleeper keeps its port);
- the awake sleep-enabled model goes to sleep - unless its sleep would pin more host memory (level
  1 moves the weights to pinned host RAM) than leaves `host_reserve_gib` available;
- then, while the target's need plus what the sleepers keep on the GPU exceeds the room, the least
  recently used sleeper stops (the one going to sleep now counts as the most recent).

The seam for several GPUs stays here too (evict only on the target's GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .plan import Plan
from .runtime import ContainerInfo


@dataclass(frozen=True)
class Sleeper:
    """A running modelctl container started with sleep mode, as the switch found it."""

    container: ContainerInfo
    level: int  # 1 or 2
    asleep: bool
    # GPU memory it keeps while asleep: measured now (asleep, NVML by process), else the last
    # measurement of its plan, else the profile's sleep_vram_gib.
    residual_gib: float
    last_used: float  # unix time it last served: its last sleep, or now when awake
    host_pin_gib: float = 0.0  # host memory its sleep would pin (an awake level-1 model; 0 when asleep)


@dataclass(frozen=True)
class Room:
    """What the target may count on."""

    # GPU memory vLLM containers may hold together: the total minus what everything else holds.
    models_gib: float
    # The host's available memory now (None: unknown, no host check), and what must stay available.
    host_available_gib: float | None = None
    host_reserve_gib: float = 4.0


@dataclass
class Eviction:
    stop: list[ContainerInfo] = field(default_factory=list)
    sleep: list[ContainerInfo] = field(default_factory=list)
    # Sleep-enabled containers stopped instead of kept asleep: name -> why (for the switch's warnings).
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def leaving(self) -> list[ContainerInfo]:
        return [*self.stop, *self.sleep]


def evictions(
    target: Plan | None, running: list[ContainerInfo], *, keep: ContainerInfo | None = None
) -> list[ContainerInfo]:
    """The containers to stop so that `target` (None: nothing new) runs alone beside `keep`.

    Every foreign vLLM server goes: it would hold memory the plan counts on.
    """
    return [c for c in running if c is not keep]


def decide(
    target: Plan | None,
    running: list[ContainerInfo],
    *,
    keep: ContainerInfo | None = None,
    sleepers: dict[str, Sleeper] | None = None,
    room: Room | None = None,
) -> Eviction:
    """Who stops and who sleeps so that `target` runs (or wakes) beside `keep` and the sleepers.

    `sleepers`: the running sleep-enabled containers by id (awake or asleep). `room`: None when
    nothing needs memory (stop, reconcile): then every sleeper that can stay, stays. The order of
    `running` is kept in both lists; the input is not changed.
    """
    sleepers = sleepers or {}
    leaving = evictions(target, running, keep=keep)
    own_name, own_port = (target.spec.name, target.spec.port) if target else (None, None)
    # A sleeper keeps its port: one on the target's port (a profile without sleep mode may share
    # it) stops, and so does the target's own container when it is not the one kept.
    candidates = [
        sleepers[c.id]
        for c in leaving
        if c.id in sleepers and not c.foreign and c.name != own_name and c.port != own_port
    ]
    reasons: dict[str, str] = {}

    # Host memory: a sleep that would pin more than leaves the reserve is a stop.
    if room is not None and room.host_available_gib is not None:
        available = room.host_available_gib
        for s in sorted(candidates, key=lambda s: -s.last_used):
            if s.asleep or s.host_pin_gib <= 0:
                continue
            if available - s.host_pin_gib < room.host_reserve_gib:
                reasons[s.container.name] = (
                    f"its level-{s.level} sleep would pin ~{s.host_pin_gib:.1f} GiB of host memory, leaving "
                    f"{available - s.host_pin_gib:.1f} GiB available, under MODELCTL_SLEEP_HOST_RESERVE_GIB="
                    f"{room.host_reserve_gib:g}"
                )
            else:
                available -= s.host_pin_gib
    kept = [s for s in candidates if s.container.name not in reasons]

    # GPU memory: the least recently used sleepers stop until the target fits beside the rest.
    if room is not None and target is not None:
        kept.sort(key=lambda s: -s.last_used)
        need = target.start_needs_gib
        while kept and sum(s.residual_gib for s in kept) + need > room.models_gib:
            lru = kept.pop()
            reasons[lru.container.name] = (
                f"least recently used sleeper: {target.profile.name} needs {need:.2f} GiB of the "
                f"{room.models_gib:.2f} GiB models may hold, beside {sum(s.residual_gib for s in kept):.2f} GiB "
                "kept by the other sleepers"
            )

    staying = {s.container.id for s in kept}
    awake_staying = {s.container.id for s in kept if not s.asleep}
    return Eviction(
        stop=[c for c in leaving if c.id not in staying],
        sleep=[c for c in leaving if c.id in awake_staying],
        reasons=reasons,
    )
