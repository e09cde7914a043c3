"""Plans, switch results and status as JSON documents: one shape for the CLI and the service.

The status document is a contract (DESIGN.md): scripts read `active` and `containers`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .controller import Status, SwitchResult
from .plan import Plan, fits


def plan_json(plan: Plan) -> dict[str, Any]:
    p = plan.profile
    return {
        "profile": p.name,
        "model": p.model,
        "image": p.image,
        "served_model": p.served_name,
        "vram_gib": p.vram_gib,
        "max_model_len": p.max_model_len,
        "max_num_seqs": p.max_num_seqs,
        "port": p.port,
        "gpu": {"total_gib": plan.gpu.total_gib, "source": plan.gpu.source},
        "gpu_memory_utilization": plan.utilization,
        "fits": fits(p, plan.gpu),
        "container": plan.spec.name,
        "url": plan.url,
        "plan_hash": plan.hash,
        "command": plan.spec.command,
        "docker_run": plan.docker_run_line(),
    }


def switch_json(result: SwitchResult) -> dict[str, Any]:
    return asdict(result)


def status_json(status: Status) -> dict[str, Any]:
    """The status document of DESIGN.md (contract): active, containers, gpu."""
    active = status.active
    return {
        "active": None if active is None else {
            "profile": active.profile, "container": active.container, "ready": active.ready,
            "url": active.url, "served_model": active.served_model,
        },
        "containers": [
            {"name": c.name, "profile": c.profile, "state": c.state, "image": c.image, "id": c.id[:12]}
            for c in status.containers
        ],
        "gpu": {"total_gib": status.gpu.total_gib, "source": status.gpu.source},
    }  # fmt: skip
