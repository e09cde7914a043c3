"""Measured footprints: what each model's container really held once ready, per profile.

Kept in the state directory (footprints.json) so that `show` and `status` can put the measured
figure next to the profile's vram_gib, and warn when the model takes more than it says.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE = "footprints.json"


@dataclass(frozen=True)
class Footprint:
    measured_gib: float
    vram_gib: float  # what the plan budgeted
    plan_hash: str
    measured_at: float  # unix time

    @property
    def exceeds(self) -> bool:
        return self.measured_gib > self.vram_gib


def read_footprints(state_dir: Path) -> dict[str, Footprint]:
    try:
        raw = json.loads((state_dir / FILE).read_text())
        return {name: Footprint(**entry) for name, entry in raw.items()}
    except (OSError, ValueError, TypeError):
        return {}  # none measured yet, or an old format: measurements are only advice


def record_footprint(state_dir: Path, profile: str, footprint: Footprint) -> None:
    footprints = read_footprints(state_dir)
    footprints[profile] = footprint
    state_dir.mkdir(parents=True, exist_ok=True)
    partial = state_dir / f".{FILE}.{os.getpid()}"
    partial.write_text(json.dumps({name: asdict(fp) for name, fp in footprints.items()}, indent=2))
    partial.replace(state_dir / FILE)  # atomic: a reader never sees half a file
