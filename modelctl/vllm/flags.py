"""vLLM's command line as modelctl writes it: the flags it manages, what each image's vLLM accepts,
and the argv of a model server.

Checked against `vllm serve`'s argument parser (vllm/engine/arg_utils.py and
vllm/entrypoints/openai/cli_args.py) of 0.11.1 and 0.33.0; the flags each version accepts are the
lists `modelctl/standin/flags-<version>.txt`, generated from that version's source by
`scripts/vllm-flags.py` (the stand-in image uses the same lists).

What modelctl passes depends on the image's vLLM version only where it must, and the version is
read from the TAG of a `vllm/vllm-openai` image (any registry): `v0.33.0`, `0.33.0`,
`v0.33.0-cu130`, or the stand-in's `standin-0.33.0` (`image_version`). A tag that names no version
(`latest`, `nightly`, a digest) and every other image (a private build's tag is not vLLM's
version) is "unknown" and gets what works on every version modelctl knows: `--model`, nothing
added since 0.11.

- The model: `--model MODEL`, for every version whose flag list has `--model` (0.11.1 and 0.33.0
  both do) and for unknown tags. Why not the positional `vllm serve MODEL`, which vLLM recommends
  since 0.11 (`--model` is deprecated, "will be removed in a future version", 0.33.0
  vllm/utils/argparse_utils.py:330-335): an image whose entrypoint is still
  `python3 -m vllm.entrypoints.openai.api_server` (0.11's) parses a positional model and never
  uses it, so it SILENTLY serves its default `Qwen/Qwen3-0.6B` under the served name modelctl asks
  for (0.11.1 api_server.py:2084-2096, config/model.py:109), and which tag moved the entrypoint to
  `vllm serve` is not verified (REPORT.md section 3). `--model` works under both entrypoints: under
  `vllm serve` vLLM moves it into the positional slot itself (the same model, one deprecation
  warning in the log). Only for a version whose flag list exists and LACKS `--model` (one that
  removed it, and so has the `vllm serve` entrypoint) is the model passed positionally, first.
- `--shutdown-timeout N` (drain in-flight requests for N seconds on SIGTERM, 0.33.0
  engine/arg_utils.py:1940-1945): only for versions from `SHUTDOWN_TIMEOUT_SINCE` on (the oldest
  version modelctl has a list for that has it; a version between 0.11.1 and 0.33.0 may have it too,
  but is not assumed to), never for unknown tags, and N is MODELCTL_STOP_GRACE less
  `SHUTDOWN_MARGIN_S`, so the drain ends before Docker's SIGKILL; none when that leaves nothing, or
  when the profile's vllm_args set it themselves.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from . import runs_vllm_server

Version = tuple[int, int, int]

# Flags modelctl derives from the profile and the GPU; a profile setting them in vllm_args would
# silently fight the plan, so they are refused with a pointer to the key that owns them.
MANAGED_FLAGS = {
    "--model": "model",
    "--port": "port",
    "--host": "MODELCTL_HOST",
    "--served-model-name": "served_model_name",
    "--max-model-len": "max_model_len",
    "--max-num-seqs": "max_num_seqs",
    "--gpu-memory-utilization": "vram_gib (modelctl computes the utilization from it)",
}

# The oldest listed version with --shutdown-timeout (0.33.0 engine/arg_utils.py:1940-1945; not in 0.11.1).
SHUTDOWN_TIMEOUT_SINCE: Version = (0, 33, 0)
# Seconds of MODELCTL_STOP_GRACE left to vLLM after the drain: the engine core and the API server
# still have to stop (0.33.0 entrypoints/launchers/launcher.py:270-276) before Docker's SIGKILL.
SHUTDOWN_MARGIN_S = 2

# vLLM's default --gpu-memory-utilization: 0.9 in 0.11.1 (vllm/config/cache.py:50), 0.92 in 0.33.0
# (vllm/config/cache.py:215). Which release between them changed it is not known: before 0.33.0,
# and for unknown tags, the lower figure (an estimate from it never asks for more than vLLM took).
DEFAULT_UTILIZATION_OLD = 0.9
DEFAULT_UTILIZATION_NEW = 0.92
DEFAULT_UTILIZATION_NEW_SINCE: Version = (0, 33, 0)

# [name-]vX.Y.Z[.W][rcN][-suffix]: v0.33.0, 0.33.0, v0.10.1.1, v0.33.0-cu130, standin-0.33.0.
_TAG_VERSION = re.compile(r"(?:[A-Za-z][A-Za-z0-9_]*-)?v?(\d+)\.(\d+)\.(\d+)(?:\.\d+)?(?:rc\d+)?(?:[-+_.].*)?")


def image_tag(image: str) -> str | None:
    """The tag of an image reference (`repo:tag`, `registry:5000/repo:tag`), None when it has none."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return (last.partition(":")[2] or None) if ":" in last else None


def image_version(image: str) -> Version | None:
    """The vLLM version a vllm/vllm-openai image's tag names; None when it names none (`latest`, a
    digest) or the image is not vLLM's own."""
    if not runs_vllm_server(image, ""):  # with no command line: the image is vllm/vllm-openai
        return None
    tag = image_tag(image)
    match = _TAG_VERSION.fullmatch(tag) if tag else None
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def version_text(version: Version) -> str:
    return ".".join(map(str, version))


@functools.cache
def listed_versions() -> tuple[Version, ...]:
    """The versions modelctl has a flag list for, oldest first."""
    found = []
    for entry in resources.files("modelctl").joinpath("standin").iterdir():
        match = re.fullmatch(r"flags-(\d+)\.(\d+)\.(\d+)\.txt", entry.name)
        if match:
            found.append((int(match[1]), int(match[2]), int(match[3])))
    return tuple(sorted(found))


@functools.cache
def known_flags(version: Version) -> frozenset[str] | None:
    """The long flags `vllm serve` of exactly this version accepts, None when modelctl has no list."""
    if version not in listed_versions():
        return None
    text = resources.files("modelctl").joinpath("standin", f"flags-{version_text(version)}.txt").read_text()
    return frozenset(line.split()[0] for line in text.splitlines() if line.startswith("--"))


def flags_to_check(version: Version | None) -> tuple[Version, frozenset[str]] | None:
    """The list to check a version's flags against: its own, or the newest for a newer version
    (a flag gone by the newest release modelctl knows is not coming back); None when there is none."""
    if version is None:
        return None
    listed = listed_versions()
    if version in listed:
        return version, known_flags(version) or frozenset()
    if listed and version > listed[-1]:
        return listed[-1], known_flags(listed[-1]) or frozenset()
    return None


def flag_name(word: str) -> str | None:
    """The long flag a command-line word names as vLLM's parser reads it (`--max_model_len=5` ->
    `--max-model-len`, `--limit-mm-per-prompt.video` -> `--limit-mm-per-prompt`), else None."""
    if not word.startswith("--") or word == "--":
        return None
    name = word.split("=", 1)[0].split(".", 1)[0]
    return "--" + name[2:].replace("_", "-")


def unknown_flags(args: list[str], known: frozenset[str]) -> list[str]:
    """The long flags in `args` that a parser with these flags would refuse: neither listed nor an
    unambiguous prefix of one (argparse's allow_abbrev, which vLLM leaves on). Short flags pass."""
    refused = []
    for word in args:
        name = flag_name(word)
        if name is None or name in known:
            continue
        if len([flag for flag in known if flag.startswith(name)]) != 1:
            refused.append(name)
    return list(dict.fromkeys(refused))


def default_utilization(version: Version | None) -> float:
    """vLLM's --gpu-memory-utilization when none is given, for this version (None: not known)."""
    if version is not None and version >= DEFAULT_UTILIZATION_NEW_SINCE:
        return DEFAULT_UTILIZATION_NEW
    return DEFAULT_UTILIZATION_OLD


def model_as_flag(version: Version | None) -> bool:
    """Pass `--model MODEL` (True) or the positional model (False): see the module docstring."""
    known = known_flags(version) if version is not None else None
    return known is None or "--model" in known


def shutdown_timeout_for(version: Version | None, stop_grace_s: int) -> int | None:
    """Seconds for --shutdown-timeout, or None where the image lacks it or the grace leaves none."""
    if version is None or version < SHUTDOWN_TIMEOUT_SINCE:
        return None
    seconds = stop_grace_s - SHUTDOWN_MARGIN_S
    return seconds if seconds > 0 else None


def server_argv(
    *,
    model: str,
    served_model: str,
    port: int,
    utilization: float,
    max_model_len: int,
    max_num_seqs: int,
    extra: list[str],
    version: Version | None = None,
    stop_grace_s: int | None = None,
) -> list[str]:
    """The managed flags first, then the profile's. `version` is the image's vLLM version (None:
    unknown, the forms every known version takes); `stop_grace_s` is MODELCTL_STOP_GRACE."""
    model_words = ["--model", model] if model_as_flag(version) else [model]
    argv = [
        *model_words,
        "--served-model-name",
        served_model,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--gpu-memory-utilization",
        f"{utilization:.2f}",
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
    ]
    drain = shutdown_timeout_for(version, stop_grace_s) if stop_grace_s is not None else None
    if drain is not None and "--shutdown-timeout" not in {flag_name(word) for word in extra}:
        argv += ["--shutdown-timeout", str(drain)]
    return [*argv, *extra]
