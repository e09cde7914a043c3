"""Plans, switch results and status as JSON documents: one shape for the CLI and the service.

The status document is a contract (DESIGN.md): scripts read `active` and `containers`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .errors import ModelctlError, NotReadyError
from .footprints import Footprint
from .plan import Plan
from .results import GpuReport, Status, SwitchResult


def plan_json(plan: Plan, measured: Footprint | None = None) -> dict[str, Any]:
    p, sizing = plan.profile, plan.sizing
    return {
        "profile": p.name,
        "model": p.model,
        "image": p.image,
        "served_model": p.served_name,
        "vram_gib": sizing.vram_gib,
        "max_model_len": sizing.max_model_len,
        "max_num_seqs": sizing.max_num_seqs,
        "tier": sizing.tier_gib,
        "sizing": sizing.reason,
        "measured_gib": measured.measured_gib if measured else None,
        "port": p.port,
        "gpu": {"total_gib": round(plan.gpu.total_gib, 3), "source": plan.gpu.source},
        "gpu_memory_utilization": plan.utilization,
        "start_needs_gib": round(plan.start_needs_gib, 3),
        "fits": plan.fits,
        "container": plan.spec.name,
        "url": plan.url,
        "plan_hash": plan.hash,
        "command": plan.spec.command,
        "docker_run": plan.docker_run_line(),
    }


def phases_text(phases: dict[str, float]) -> str:
    """`stop 0.14s, start 0.25s, ...`: the one-line phase times of a switch."""
    return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in phases.items())


def switch_json(result: SwitchResult) -> dict[str, Any]:
    return asdict(result)


def status_json(status: Status) -> dict[str, Any]:
    """The status document of DESIGN.md (contract): active, containers, gpu."""
    active = status.active
    return {
        "active": None
        if active is None
        else {
            "profile": active.profile,
            "container": active.container,
            "ready": active.ready,
            "url": active.url,
            "served_model": active.served_model,
        },
        "containers": [
            {"name": c.name, "profile": c.profile, "state": c.state, "image": c.image, "id": c.id[:12]}
            for c in status.containers
        ],
        "gpu": gpu_json(status.gpu),
        "measured": {
            name: {"measured_gib": fp.measured_gib, "vram_gib": fp.vram_gib, "exceeds": fp.exceeds}
            for name, fp in status.footprints.items()
        },
    }


def gpu_json(report: GpuReport) -> dict[str, Any]:
    """`modelctl gpu --json`: the mode first, so a script sees at once whether there is a GPU."""
    state = report.state
    return {
        "mode": state.mode,
        "reason": state.reason or None,
        "driver_version": state.driver_version,
        "total_gib": round(report.budget.total_gib, 3),
        "source": report.budget.source,
        "estimated_used_gib": report.estimated_used_gib,
        "devices": [
            {
                "index": d.index,
                "name": d.name,
                "total_gib": round(d.total_gib, 3),
                "free_gib": round(d.free_gib, 3),
                "used_gib": round(d.used_gib, 3),
                "processes_listed": d.processes is not None,
            }
            for d in state.devices
        ],
        "processes": None
        if report.holders is None
        else [
            {"device": h.device, "pid": h.pid, "name": h.name, "used_gib": h.used_gib, "container": h.container}
            for h in report.holders
        ],
    }


def error_json(error: ModelctlError) -> dict[str, Any]:
    """`{"error": {"message", "code", "hint", "log_tail"}}`: the CLI's --json failure and the API's error body."""
    body: dict[str, Any] = {"message": error.message, "code": error.exit_code}
    if error.hint:
        body["hint"] = error.hint
    if isinstance(error, NotReadyError) and error.log_tail:
        body["log_tail"] = error.log_tail
    return {"error": body}
