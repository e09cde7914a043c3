"""`modelctl doctor`: each check a line with ok / warn / fail and the fix."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .catalog import Catalog
from .errors import ModelctlError
from .gpu import GpuBudget, GpuState, NvmlGpu
from .plan import exposure_warning
from .profiles import Profile
from .settings import Settings, load_settings


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str = ""


def run_checks() -> list[Check]:
    try:
        settings = load_settings()
    except ModelctlError as exc:
        return [Check("settings", "fail", exc.message, exc.hint or "")]
    state = NvmlGpu(settings).read()
    gpu = state.budget(settings)
    checks = [*_engine(), _nvml(state, settings)]
    catalog = Catalog(settings.profiles_dir)
    try:
        found = catalog.load()
    except ModelctlError as exc:
        return [*checks, Check("profiles", "fail", exc.message, exc.hint or "")]
    checks.append(Check("profiles", "ok", f"{len(found.profiles)} valid in {settings.profiles_dir}"))
    checks += [
        Check(f"profile {bad.path.name}", "fail", bad.error.message, bad.error.hint or "") for bad in found.invalid
    ]
    checks += [_fits(catalog, name, gpu, settings) for name in found.profiles]
    checks += _ports(found.profiles, settings)
    checks.append(_exposure(settings))
    checks.append(_hf_cache(settings))
    checks.append(_vllm_cache(settings))
    return checks


def _engine() -> list[Check]:
    from .runtime.docker_engine import DockerRuntime

    try:
        info = DockerRuntime().engine_info()
    except ModelctlError as exc:
        return [Check("docker engine", "fail", exc.message, exc.hint or "")]
    checks = [Check("docker engine", "ok", f"Docker {info.version}")]
    if info.nvidia_runtime or info.cdi:
        how = "nvidia runtime" if info.nvidia_runtime else "CDI"
        checks.append(Check("gpu in containers", "ok", f"the engine has the {how}"))
    else:
        checks.append(
            Check(
                "gpu in containers",
                "warn",
                "the engine has neither the nvidia runtime nor CDI",
                "install nvidia-container-toolkit and run `nvidia-ctk runtime configure --runtime=docker`; "
                "without a GPU, set MODELCTL_GPUS=none",
            )
        )
    return checks


def _nvml(state: GpuState, settings: Settings) -> Check:
    if state.mode == "nvml":
        names = ", ".join(f"{d.index}: {d.name} {d.total_gib:.2f} GiB" for d in state.devices)
        listing = "" if all(d.processes is not None for d in state.devices) else "; processes not listable (WSL2?)"
        return Check("nvml", "ok", f"driver {state.driver_version}, {names}{listing}")
    return Check(
        "nvml",
        "warn",
        f"no GPU: {state.reason}; planning for {settings.gpu_total_gib:g} GiB",
        "set MODELCTL_GPU_TOTAL_GIB to your card's size, or install the NVIDIA driver",
    )


def _fits(catalog: Catalog, name: str, gpu: GpuBudget, settings: Settings) -> Check:
    try:
        plan = catalog.plan(name, gpu, settings)
    except ModelctlError as exc:
        return Check(f"profile {name}", "fail", exc.message, exc.hint or "")
    return Check(f"profile {name}", "ok", f"utilization {plan.utilization:.2f} ({plan.sizing.reason})")


def answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Something accepts TCP connections on host:port (IPv4 or IPv6, brackets or not)."""
    host = host.strip().removeprefix("[").removesuffix("]")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.settimeout(timeout_s)
                if probe.connect_ex(address) == 0:
                    return True
        except OSError:
            continue  # e.g. no IPv6 on this machine
    return False


def _ports(profiles: dict[str, Profile], settings: Settings) -> list[Check]:
    checks = []
    for port in sorted({p.port for p in profiles.values()}):
        in_use = answers(settings.poll_host, port)
        checks.append(
            Check(
                f"port {port}",
                "warn",
                f"something answers on {settings.poll_host}:{port}",
                "fine if it is the active model (`modelctl status`); else free the port",
            )
            if in_use
            else Check(f"port {port}", "ok", f"free on {settings.poll_host}")
        )
    return checks


def _exposure(settings: Settings) -> Check:
    warning = exposure_warning(settings.host)
    if warning:
        return Check("model host", "warn", warning, "set MODELCTL_HOST=127.0.0.1")
    return Check("model host", "ok", f"models are published on {settings.host} only (loopback)")


def _hf_cache(settings: Settings) -> Check:
    cache = str(settings.hf_cache)
    if "/" not in cache:  # a Docker volume name (the Compose deployment's modelctl-hf-cache)
        from .runtime.docker_engine import DockerRuntime

        try:
            exists = DockerRuntime().volume_exists(cache)
        except ModelctlError as exc:
            return Check("hf cache", "warn", f"volume {cache}: {exc.message}")
        if exists:
            return Check("hf cache", "ok", f"Docker volume {cache}")
        return Check(
            "hf cache",
            "warn",
            f"Docker volume {cache} does not exist: every model downloads at its first start",
            "`docker volume create` it, or `up` the Compose deployment once",
        )
    if settings.hf_cache.is_dir():
        return Check("hf cache", "ok", cache)
    return Check(
        "hf cache",
        "warn",
        f"{cache} does not exist: every model downloads at its first start",
        "create it, or set MODELCTL_HF_CACHE to your Hugging Face cache (a directory or a Docker volume)",
    )


def _vllm_cache(settings: Settings) -> Check:
    """The kept vLLM cache (MODELCTL_VLLM_CACHE) and how much it holds: torch.compile artefacts of
    every model started so far, which their next cold start loads instead of compiling."""
    cache = str(settings.vllm_cache)
    if "/" not in cache:  # a Docker volume name (default modelctl-vllm-cache)
        from .runtime.docker_engine import DockerRuntime

        runtime = DockerRuntime()
        try:
            if not runtime.volume_exists(cache):
                return Check(
                    "vllm cache",
                    "ok",
                    f"Docker volume {cache} does not exist yet: the engine creates it at the first model start, "
                    "which compiles; later starts reuse it",
                )
            size = runtime.volume_size(cache)
        except ModelctlError as exc:
            return Check("vllm cache", "warn", f"volume {cache}: {exc.message}")
        shown = "size unknown" if size is None else _size(size)
        return Check("vllm cache", "ok", f"Docker volume {cache}, {shown}")
    path = settings.vllm_cache
    if not path.exists():
        return Check(
            "vllm cache",
            "ok",
            f"{cache} does not exist yet: Docker creates it (owned by root) at the first model start",
            f"create it yourself to own it: mkdir -p {cache}",
        )
    if not path.is_dir():
        return Check("vllm cache", "fail", f"{cache} is not a directory", "point MODELCTL_VLLM_CACHE at a directory")
    size, unreadable = directory_size(path)
    detail = f"{cache}, {_size(size)}"
    if unreadable:
        detail += f" (at least: {unreadable} entries unreadable)"
    return Check("vllm cache", "ok", detail)


def directory_size(root: Path) -> tuple[int, int]:
    """(bytes on disk, as `du` counts them, entries that could not be read) of a directory tree;
    symbolic links are not followed, and a file linked twice is counted once."""
    total, unreadable = 0, 0
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            unreadable += 1
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                unreadable += 1
                continue
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total, unreadable


def _size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
