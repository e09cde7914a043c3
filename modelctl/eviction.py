"""Eviction: which running vLLM containers go before a model starts. Pure, no I/O.

Today the answer is "every one but the container kept": one model on one GPU. This is the seam
that sleep mode (keep some asleep) and several GPUs (evict only on the target's GPU) change.
"""

from __future__ import annotations

from .plan import Plan
from .runtime import ContainerInfo


def evictions(
    target: Plan | None, running: list[ContainerInfo], *, keep: ContainerInfo | None = None
) -> list[ContainerInfo]:
    """The containers to stop so that `target` (None: nothing new) runs alone beside `keep`.

    Every foreign vLLM server goes: it would hold memory the plan counts on.
    """
    return [c for c in running if c is not keep]
