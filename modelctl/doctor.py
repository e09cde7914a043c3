"""`modelctl doctor`: each check a line with ok / warn / fail and the fix."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from .errors import ModelctlError
from .gpu import gpu_budget
from .plan import MAX_UTILIZATION, check_fits
from .profiles import Profile, load_profiles
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
    checks = [_engine(), _gpu(settings)]
    try:
        profiles = load_profiles(settings.profiles_dir)
    except ModelctlError as exc:
        return [*checks, Check("profiles", "fail", exc.message, exc.hint or "")]
    checks.append(Check("profiles", "ok", f"{len(profiles)} valid in {settings.profiles_dir}"))
    checks += [_fits(p, profiles, settings) for p in profiles.values()]
    checks += _ports(profiles, settings)
    checks.append(_hf_cache(settings))
    return checks


def _engine() -> Check:
    from .runtime import DockerRuntime

    try:
        version = DockerRuntime().engine_version()
    except ModelctlError as exc:
        return Check("docker engine", "fail", exc.message, exc.hint or "")
    return Check("docker engine", "ok", f"Docker {version}")


def _gpu(settings: Settings) -> Check:
    gpu = gpu_budget(settings)
    return Check(
        "gpu",
        "warn",
        f"no GPU reading: planning for {gpu.total_gib:g} GiB, {gpu.source}",
        "set MODELCTL_GPU_TOTAL_GIB to your card's size",
    )


def _fits(profile: Profile, profiles: dict[str, Profile], settings: Settings) -> Check:
    gpu = gpu_budget(settings)
    try:
        check_fits(profile, gpu, [p for p in profiles.values() if p is not profile])
    except ModelctlError as exc:
        return Check(f"profile {profile.name}", "fail", exc.message, exc.hint or "")
    share = profile.vram_gib / gpu.total_gib
    return Check(f"profile {profile.name}", "ok", f"{profile.vram_gib:g} GiB = {share:.0%} of the GPU (max {MAX_UTILIZATION:.0%})")


def _ports(profiles: dict[str, Profile], settings: Settings) -> list[Check]:
    checks = []
    for port in sorted({p.port for p in profiles.values()}):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            in_use = probe.connect_ex((settings.poll_host, port)) == 0
        checks.append(
            Check(f"port {port}", "warn", f"something answers on {settings.poll_host}:{port}",
                  "fine if it is the active model (`modelctl status`); else free the port")
            if in_use else Check(f"port {port}", "ok", f"free on {settings.poll_host}")
        )  # fmt: skip
    return checks


def _hf_cache(settings: Settings) -> Check:
    if settings.hf_cache.is_dir():
        return Check("hf cache", "ok", str(settings.hf_cache))
    return Check(
        "hf cache", "warn", f"{settings.hf_cache} does not exist: every model downloads at its first start",
        "create it, or set MODELCTL_HF_CACHE to your Hugging Face cache",
    )
