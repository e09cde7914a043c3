"""Plans, switch results and status as JSON documents: one shape for the CLI and the service.

Each `*_json` renderer has its `*_from_json` reader next to it: the service renders typed results
with the first, the CLI's service backend reads them back with the second, and the CLI renders
what it read exactly as it renders its own (the round trip is this module's business alone).

The status document is a contract (README "In CI and scripts"): scripts read `active` and `containers`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ModelctlError, NotReadyError
from .footprints import Footprint
from .gpu import GpuBudget, GpuDevice, GpuState
from .plan import Plan
from .results import ActiveModel, GpuHolder, GpuReport, Status, SwitchResult
from .runtime import ContainerInfo
from .secrets import mask_env, redact_words


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
        "command": redact_words(plan.spec.command),
        "env": mask_env(plan.spec.env),  # names kept, credentials masked
        "docker_run": plan.docker_run_line(),
    }


def phases_text(phases: dict[str, float]) -> str:
    """`stop 0.14s, start 0.25s, ...`: the one-line phase times of a switch."""
    return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in phases.items())


def switch_json(result: SwitchResult) -> dict[str, Any]:
    return asdict(result)


def switch_from_json(data: dict[str, Any]) -> SwitchResult:
    """A switch result as the service rendered it; keys a newer service adds are left out."""
    known = {f.name for f in fields(SwitchResult)}
    return SwitchResult(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class OperationInfo:
    """The operation the service's worker runs now (`switch` in /api/status): only it knows."""

    operation: str  # "switch", "stop" or "reconcile"
    target: str | None
    phase: str
    detail: str
    since: str  # ISO 8601, UTC


def operation_json(op: OperationInfo | None) -> dict[str, Any] | None:
    return None if op is None else asdict(op)


def operation_from_json(data: dict[str, Any] | None) -> OperationInfo | None:
    if data is None:
        return None
    return OperationInfo(
        operation=data["operation"],
        target=data.get("target"),
        phase=data.get("phase") or "",
        detail=data.get("detail") or "",
        since=data.get("since") or "",
    )


def status_json(status: Status) -> dict[str, Any]:
    """The status document (a contract, README): active, containers, gpu."""
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
            {
                "name": c.name,
                "profile": c.profile,
                "state": c.state,
                "image": c.image,
                "id": c.id[:12],
                # Sleep mode: true asleep, false awake (or stopped), null where sleep mode is off.
                "sleeping": status.sleeping.get(c.id),
                "residual_gib": status.residual_gib.get(c.id),
            }
            for c in status.containers
        ],
        "gpu": gpu_json(status.gpu),
        "measured": {
            name: {"measured_gib": fp.measured_gib, "vram_gib": fp.vram_gib, "exceeds": fp.exceeds}
            for name, fp in status.footprints.items()
        },
    }


def status_from_json(data: dict[str, Any]) -> Status:
    """The status document read back; `status_json` of it is the document again.

    What the document does not carry is left empty: a container's labels (plan hash, served model,
    port), a footprint's plan hash and time, the profile warnings.
    """
    active = data["active"]
    return Status(
        active=None
        if active is None
        else ActiveModel(
            profile=active["profile"],
            container=active["container"],
            served_model=active["served_model"],
            ready=active["ready"],
            url=active["url"],
        ),
        containers=[
            ContainerInfo(
                id=c["id"],
                name=c["name"],
                image=c["image"],
                state=c["state"],
                profile=c["profile"],
                plan_hash=None,
                served_model=None,
                port=None,
            )
            for c in data["containers"]
        ],
        gpu=gpu_from_json(data["gpu"]),
        footprints={
            name: Footprint(measured_gib=m["measured_gib"], vram_gib=m["vram_gib"], plan_hash="", measured_at=0.0)
            for name, m in data["measured"].items()
        },
        sleeping={c["id"]: c.get("sleeping") for c in data["containers"]},
        residual_gib={c["id"]: c["residual_gib"] for c in data["containers"] if c.get("residual_gib") is not None},
    )


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
        # Sleepers: container -> GiB it keeps asleep; measured through NVML by process, or assumed.
        "asleep": {name: round(gib, 3) for name, gib in report.asleep.items()},
        "asleep_measured": report.asleep_measured,
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


def gpu_from_json(data: dict[str, Any]) -> GpuReport:
    """`gpu --json` read back. A device's own process list is not in the document (the holders
    are): a device that lists them gets an empty list, one that cannot gets None."""
    state = GpuState(
        mode=data["mode"],
        reason=data["reason"] or "",
        driver_version=data["driver_version"],
        devices=[
            GpuDevice(
                index=d["index"],
                name=d["name"],
                total_gib=d["total_gib"],
                free_gib=d["free_gib"],
                used_gib=d["used_gib"],
                processes=[] if d["processes_listed"] else None,
            )
            for d in data["devices"]
        ],
    )
    holders = data["processes"]
    return GpuReport(
        state=state,
        budget=GpuBudget(total_gib=data["total_gib"], source=data["source"]),
        holders=None
        if holders is None
        else [
            GpuHolder(
                device=h["device"], pid=h["pid"], name=h["name"], used_gib=h["used_gib"], container=h["container"]
            )
            for h in holders
        ],
        estimated_used_gib=data["estimated_used_gib"],
        asleep=dict(data.get("asleep") or {}),
        asleep_measured=bool(data.get("asleep_measured")),
    )


def error_json(error: ModelctlError) -> dict[str, Any]:
    """`{"error": {"message", "code", "hint", "log_tail"}}`: the CLI's --json failure and the API's error body."""
    body: dict[str, Any] = {"message": error.message, "code": error.exit_code}
    if error.hint:
        body["hint"] = error.hint
    if isinstance(error, NotReadyError) and error.log_tail:
        body["log_tail"] = error.log_tail
    return {"error": body}
