"""Transitional shim: the old name of `compose_import`, for cli.py's `import-compose` verb until it
calls `compose_import.import_compose_file`. Delete this file with that change.

cli.py passes `{**.env, **os.environ}` as `variables`; the shell's environment must never fill a
`${VAR}`, so every name os.environ has is taken from the `.env` beside `source` or not at all.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import compose_import
from .compose_import import (
    Dropped,
    Imported,
    ImportResult,
    parse_dotenv,
    planned_files,
    profile_name,
    render_profile,
    result_json,
    result_lines,
    write_profiles,
)

__all__ = [
    "Dropped",
    "ImportResult",
    "Imported",
    "import_compose",
    "parse_dotenv",
    "planned_files",
    "profile_name",
    "render_profile",
    "result_json",
    "result_lines",
    "write_profiles",
]


def import_compose(
    text: str, *, gpu_total_gib: float, source: str = "docker-compose.yml", variables: dict[str, str] | None = None
) -> ImportResult:
    dotenv = compose_import.dotenv_beside(Path(source))
    kept = {name: value for name, value in (variables or {}).items() if name not in os.environ}
    return compose_import.import_compose(text, gpu_total_gib=gpu_total_gib, source=source, variables={**kept, **dotenv})
