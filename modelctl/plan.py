"""Plans: what to start for a profile on this GPU. Pure logic, no I/O.

vLLM's --gpu-memory-utilization is a fraction of the GPU's TOTAL memory, and at start-up vLLM
refuses to run unless the free memory covers it. So the plan turns the profile's absolute need
(`vram_gib`) into that fraction for the GPU that is really there, rounded UP to 0.01 so that
the model always gets at least what its profile says.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import shlex
from dataclasses import dataclass

from . import __version__
from .errors import DoesNotFitError
from .gpu import GpuBudget
from .profiles import Profile
from .runtime import (
    HF_CACHE_IN_CONTAINER,
    LABEL_PLAN_HASH,
    SHM_SIZE,
    VLLM_CACHE_IN_CONTAINER,
    ContainerSpec,
    container_name,
    model_labels,
)
from .secrets import mask_env, redact_words
from .settings import Settings, url_host
from .vllm.flags import image_version, server_argv

GIB = 1024**3
# vLLM's own CUDA context (~0.4-0.6 GiB) is already allocated when it measures free memory at
# start-up, and desktops keep some for the display: a plan above this fraction cannot start.
MAX_UTILIZATION = 0.95

# Admission: the free memory a start needs, as vLLM checks it.
#
# vLLM 0.33.0 (`request_memory`, vllm/v1/worker/utils.py:716-770, called from gpu_worker.py:542):
#     requested = math.ceil(total_memory * gpu_memory_utilization)          # bytes, utils.py:724
#     if free_memory < requested: raise ValueError("Free memory on device ...")   # utils.py:761
# vLLM 0.11.1 (gpu_worker.py:240-255) asks for the same product as a float, without the ceil: the
# ceil is never less, so one rule serves both. `free_memory` and `total_memory` are CUDA's
# (cudaMemGetInfo: torch.cuda.mem_get_info in 0.11.1 vllm/utils/mem_utils.py:85,
# torch.accelerator.get_memory_info in 0.33.0 mem_utils.py:143), read AFTER the engine process
# made its CUDA context, its NCCL state and - on 0.33, on purpose, "so they count as baseline" -
# its cuBLAS/cuBLASLt handles (gpu_worker.py:519-529). That baseline is used, not free, when vLLM
# looks, and it is outside the budget (the profiler counts from that snapshot, mem_utils.py:312).
# So before the container starts, free memory must be
#     ceil(total x utilization) + ENGINE_CONTEXT_GIB.
#
# Which total. modelctl reads NVML (`nvmlDeviceGetMemoryInfo`, v1: total = free + used, where
# `used` includes the memory the driver and firmware reserve for themselves). CUDA's total
# (cudaMemGetInfo) does not include that reserve: it is NVML's total less NVML v2's `reserved`
# ("device memory reserved for system use (driver or firmware)", nvmlMemory_v2_t), a few hundred
# MiB on current drivers (a "12 GB" card: NVML ~11.99 GiB, CUDA ~11.7 GiB; 0 on some older
# drivers, where the two totals are equal). The free figures agree (both are the unallocated
# memory). So the need computed on NVML's total is an UPPER bound of vLLM's request, too high by
# at most utilization x reserve: admission never lets through a start that vLLM's check refuses,
# and the budget vLLM gets, utilization x CUDA's total, is that much under `vram_gib` (the
# profiles' budgets carry more slack than that). TO CONFIRM ON A GPU: NVML v1 total, NVML v2
# reserved and cudaMemGetInfo's total on the same card (nothing was measured on a GPU here).
#
# ENGINE_CONTEXT_GIB: the engine process's CUDA context + NCCL + cuBLAS/cuBLASLt handles at that
# snapshot. An ESTIMATE TO CONFIRM ON A GPU (a CUDA 12 context with lazy loading is ~0.3-0.5 GiB,
# cuBLAS handles and workspaces tens of MiB); read it as vLLM 0.33's `worker init memory snapshot`
# (VLLM_LOGGING_LEVEL=DEBUG) or as the process's NVML usage just before the weights load.
ENGINE_CONTEXT_GIB = 0.6
START_MARGIN_GIB = ENGINE_CONTEXT_GIB  # its former name
# Cards report a little under their nominal size (a "12 GB" RTX 4070 Ti shows 11.99 GiB), so
# tier N applies from N minus this much.
TIER_TOLERANCE_GIB = 0.5


@dataclass(frozen=True)
class Sizing:
    """The values a plan uses: a tier's, or the profile's own."""

    vram_gib: float
    max_model_len: int
    max_num_seqs: int
    tier_gib: int | None
    reason: str


@dataclass(frozen=True)
class Plan:
    profile: Profile
    gpu: GpuBudget
    sizing: Sizing
    utilization: float
    spec: ContainerSpec

    @property
    def fits(self) -> bool:
        return self.utilization <= MAX_UTILIZATION

    @property
    def start_needs_gib(self) -> float:
        """Free GPU memory needed before the start for vLLM's start-up check to pass (admission, above)."""
        return start_needs_bytes(self.utilization, self.gpu.total_gib) / GIB

    @property
    def hash(self) -> str:
        return self.spec.labels[LABEL_PLAN_HASH]

    @property
    def warnings(self) -> list[str]:
        """What a person should know before this plan runs (printed by the CLI, logged by the service)."""
        exposed = exposure_warning(self.spec.host_ip, self.spec.port)
        return [exposed] if exposed else []

    @property
    def url(self) -> str:
        """Base URL of the OpenAI API once the model runs."""
        return f"http://{url_host(self.spec.host_ip)}:{self.spec.port}/v1"

    def docker_run_line(self) -> str:
        """The equivalent `docker run`, for people to read (modelctl never runs a shell)."""
        s = self.spec
        argv = ["docker", "run", "-d", "--name", s.name]
        if s.gpu_device_ids is None:
            argv += ["--gpus", "all"]
        elif s.gpu_device_ids:
            argv += ["--gpus", f'"device={",".join(s.gpu_device_ids)}"']
        if s.ipc_host:
            argv += ["--ipc", "host"]
        elif s.shm_size:
            argv += ["--shm-size", s.shm_size]
        argv += ["-p", f"{s.host_ip}:{s.port}:{s.port}", "-v", f"{s.hf_cache}:{HF_CACHE_IN_CONTAINER}"]
        if s.vllm_cache:
            argv += ["-v", f"{s.vllm_cache}:{VLLM_CACHE_IN_CONTAINER}"]
        for key, value in mask_env(s.env).items():  # a credential in a profile's env is never shown
            argv += ["-e", f"{key}={value}"]
        for key in s.secret_env_names:
            argv += ["-e", key]  # passed through from the environment, value never shown
        for key, value in s.labels.items():
            argv += ["--label", f"{key}={value}"]
        return shlex.join([*argv, s.image, *redact_words(s.command)])


def is_loopback_host(host: str) -> bool:
    """An address only this machine reaches (127.0.0.0/8, ::1, localhost); a name is never resolved."""
    host = host.strip().lower().removeprefix("[").removesuffix("]").removesuffix(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int | None = None) -> str | None:
    """The warning for a MODELCTL_HOST beyond loopback: vLLM's server has no authentication."""
    if is_loopback_host(host):
        return None
    where = "every interface" if host.strip() in ("", "0.0.0.0", "::", "[::]") else host
    port_text = f" (port {port})" if port is not None else ""
    return (
        f"MODELCTL_HOST={host or '(empty)'} publishes the model server{port_text} on {where}, and vLLM's "
        "server has no authentication: anyone who reaches it can use the model, and with sleep mode put it "
        "to sleep. Keep MODELCTL_HOST=127.0.0.1 and serve others through `modelctl serve` with "
        "MODELCTL_API_TOKEN, or firewall the port."
    )


def vllm_requested_bytes(utilization: float, total_gib: float) -> int:
    """What vLLM 0.33 asks for at start-up: math.ceil(total x utilization) in bytes, on the total
    given (vllm/v1/worker/utils.py:724). `total_gib` is NVML's bytes / 2**30: the bytes come back exact."""
    return math.ceil(round(total_gib * GIB) * utilization)


def start_needs_bytes(utilization: float, total_gib: float) -> int:
    """Free memory before the container starts: vLLM's request plus the engine's own baseline."""
    return vllm_requested_bytes(utilization, total_gib) + round(ENGINE_CONTEXT_GIB * GIB)


def utilization_for(vram_gib: float, total_gib: float) -> float:
    """vram_gib / total, rounded up to 0.01 (never below what the profile needs)."""
    # round() first: 4.2/12*100 is 35.00000000000001 in floats, which must stay 0.35.
    return math.ceil(round(vram_gib / total_gib * 100, 6)) / 100


def choose_sizing(profile: Profile, gpu: GpuBudget) -> Sizing:
    """The largest tier this GPU can hold, else the profile's own values."""
    for size, tier in sorted(profile.tiers.items(), reverse=True):
        if gpu.total_gib >= size - TIER_TOLERANCE_GIB and fits(tier.vram_gib, gpu):
            return Sizing(
                tier.vram_gib,
                tier.max_model_len,
                tier.max_num_seqs,
                size,
                f"tier {size} GiB: the largest of {sorted(profile.tiers)} for a {gpu.total_gib:.2f} GiB GPU",
            )
    reason = "the profile's own values"
    if profile.tiers:
        reason += f" (no tier of {sorted(profile.tiers)} applies to a {gpu.total_gib:.2f} GiB GPU)"
    return Sizing(profile.vram_gib, profile.max_model_len, profile.max_num_seqs, None, reason)


def fits(vram_gib: float, gpu: GpuBudget) -> bool:
    return utilization_for(vram_gib, gpu.total_gib) <= MAX_UTILIZATION


def check_fits(plan: Plan, others: list[Plan]) -> None:
    """Refuse a plan this GPU cannot hold, saying by how much and what would fit."""
    if plan.fits:
        return
    gpu, need = plan.gpu, plan.sizing.vram_gib
    usable_gib = gpu.total_gib * MAX_UTILIZATION
    fitting = sorted((p for p in others if p.fits), key=lambda p: -p.sizing.vram_gib)
    alternatives = ", ".join(f"{p.profile.name} ({p.sizing.vram_gib:g} GiB)" for p in fitting) or "none of the profiles"
    raise DoesNotFitError(
        f"{plan.profile.name} needs {need:g} GiB but this GPU ({gpu.source}, {gpu.total_gib:.2f} GiB) "
        f"gives a model at most {usable_gib:.2f} GiB ({MAX_UTILIZATION:.0%}): {need - usable_gib:.2f} GiB short",
        hint=f"fits this GPU: {alternatives}; or lower max_model_len / max_num_seqs and vram_gib "
        "in the profile (or add a tier for this GPU size)",
    )


# vLLM's sleep mode: the flag at start, and the development endpoints (/sleep, /wake_up,
# /is_sleeping, /collective_rpc) that exist only with this variable set. They have no
# authentication: sleep-enabled models are published on loopback only (controller).
SLEEP_FLAG = "--enable-sleep-mode"
DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"


def sleep_flags(profile: Profile) -> list[str]:
    if profile.sleep_level is None or SLEEP_FLAG in profile.vllm_args:
        return []
    return [SLEEP_FLAG]


def model_env(profile: Profile) -> dict[str, str]:
    """The container's environment: the profile's, plus the dev-mode switch of a sleep-enabled one."""
    if profile.sleep_level is None:
        return dict(profile.env)
    return {**profile.env, DEV_MODE_ENV: "1"}


def make_plan(profile: Profile, gpu: GpuBudget, settings: Settings) -> Plan:
    sizing = choose_sizing(profile, gpu)
    utilization = utilization_for(sizing.vram_gib, gpu.total_gib)
    command = server_argv(
        model=profile.model,
        served_model=profile.served_name,
        port=profile.port,
        utilization=utilization,
        max_model_len=sizing.max_model_len,
        max_num_seqs=sizing.max_num_seqs,
        extra=[*profile.vllm_args, *sleep_flags(profile)],
        # What the image's vLLM takes, read from its tag (vllm/flags.py): --model or positional,
        # --shutdown-timeout within MODELCTL_STOP_GRACE where it exists.
        version=image_version(profile.image),
        stop_grace_s=settings.stop_grace,
    )
    secret_env_names = ("HF_TOKEN",) if settings.hf_token is not None else ()
    ipc_host = settings.ipc == "host"
    shm_size = None if ipc_host else SHM_SIZE
    spec_without_labels = {
        "image": profile.image,
        "command": command,
        "env": model_env(profile),
        "port": profile.port,
        "host_ip": settings.host,
        "gpus": settings.gpu_device_ids,
        "hf_cache": str(settings.hf_cache),
        "vllm_cache": str(settings.vllm_cache),
        "secret_env": list(secret_env_names),
        # A container that ran with the host's IPC (every container before MODELCTL_IPC) is not the
        # plan any more: the next switch to it replaces it once.
        "ipc": "host" if ipc_host else f"private shm {shm_size}",
    }
    plan_hash = hashlib.sha256(json.dumps(spec_without_labels, sort_keys=True).encode()).hexdigest()[:16]
    labels = model_labels(
        profile=profile.name,
        plan_hash=plan_hash,
        served_model=profile.served_name,
        port=profile.port,
        version=__version__,
    )
    spec = ContainerSpec(
        name=container_name(profile.name),
        image=profile.image,
        command=command,
        env=model_env(profile),
        labels=labels,
        host_ip=settings.host,
        port=profile.port,
        gpu_device_ids=settings.gpu_device_ids,
        hf_cache=str(settings.hf_cache),
        vllm_cache=str(settings.vllm_cache),
        ipc_host=ipc_host,
        shm_size=shm_size,
        secret_env_names=secret_env_names,
    )
    return Plan(profile=profile, gpu=gpu, sizing=sizing, utilization=utilization, spec=spec)
