"""The GPU a plan is made for.

For now the size comes from MODELCTL_GPU_TOTAL_GIB; the NVML reading (pynvml, this module
alone) replaces the assumption where a driver answers.
"""

from __future__ import annotations

from .plan import GpuBudget
from .settings import Settings


def gpu_budget(settings: Settings) -> GpuBudget:
    return GpuBudget(total_gib=settings.gpu_total_gib, source="assumed (MODELCTL_GPU_TOTAL_GIB)")
