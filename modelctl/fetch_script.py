"""The weights fetch as it runs inside the profile's own image (modelctl/fetch.py starts it), and the
one test of "are this model's weights in the Hugging Face cache?" that the host runs too.

    python3 -c "$MODELCTL_FETCH_SCRIPT" check|fetch REPO[@REVISION]...

- `check` looks at the cache only (no network, no huggingface_hub import: a fraction of a second):
  exit 0 when every REPO is complete, MISSING_EXIT (3) with the reason on stdout when one is not.
- `fetch` downloads what `check` finds missing with huggingface_hub's `snapshot_download`
  (HF_TOKEN and HF_ENDPOINT from the environment, as vLLM would use them), printing one progress
  line a second. A failure ends in huggingface_hub's own traceback and exit 1, which modelctl's
  diagnosis reads (gated repo, repo not found, no network).

"Complete" follows the cache layout huggingface_hub writes (HF_HUB_CACHE, else HF_HOME/hub):
`models--ORG--NAME/refs/REVISION` names a commit (a 40-hex revision is the commit), its
`snapshots/COMMIT/` holds at least one weights file, every shard a `*.index.json` there lists
resolves to a file, and no blob of the repo is still `.incomplete`. What vLLM itself downloads
(the weights and config files) passes the same test, so a model vLLM fetched on an earlier start
is not fetched again.

Python's standard library only, plus huggingface_hub inside `fetch`; it never imports modelctl
(it runs in the vLLM image, where modelctl is not installed).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

MISSING_EXIT = 3
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth")
# vLLM loads safetensors when the repo has them (model_loader/weight_utils.py, allow_patterns in
# order): then the other formats and the `original/` checkpoints are not fetched.
SKIP_BESIDE_SAFETENSORS = ["*.bin", "*.pt", "*.pth", "*.msgpack", "*.h5", "*.ot", "*.onnx", "*.onnx_data", "original/*"]
ALWAYS_SKIP = ["original/*"]
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache(env: dict[str, str] | None = None) -> Path:
    """Where huggingface_hub keeps repositories, as it decides it (constants.py)."""
    env = dict(os.environ) if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def split_target(target: str) -> tuple[str, str | None]:
    repo, _, revision = target.partition("@")
    return repo, revision or None


def repo_folder(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def missing_reason(cache: Path, repo: str, revision: str | None = None) -> str | None:
    """None when the repo's snapshot is complete in `cache`; else why not, in a few words."""
    folder = repo_folder(cache, repo)
    if not folder.is_dir():
        return f"{repo} is not in the cache"
    blobs = folder / "blobs"
    if blobs.is_dir() and any(p.name.endswith(".incomplete") for p in blobs.iterdir()):
        return f"a download of {repo} did not finish"
    if revision and COMMIT.match(revision):
        commit = revision
    else:
        ref = folder / "refs" / (revision or "main")
        if not ref.is_file():
            return f"{repo} has no snapshot of {revision or 'main'} in the cache"
        commit = ref.read_text().strip()
    snapshot = folder / "snapshots" / commit
    if not snapshot.is_dir():
        return f"{repo}'s snapshot {commit[:12]} is not in the cache"
    files = [p for p in snapshot.rglob("*") if not p.is_dir()]
    if not any(p.name.endswith(WEIGHTS) and p.exists() for p in files):
        return f"{repo} has no weights in the cache"
    for index in (p for p in files if p.name.endswith(".index.json")):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            return f"{repo}'s {index.name} cannot be read"
        for shard in sorted(shards):
            if not (index.parent / shard).exists():
                return f"{repo}'s shard {shard} is not in the cache"
    return None


def _size(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in (folder / "blobs").iterdir())
    except OSError:
        return 0


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def fetch(repo: str, revision: str | None, cache: Path) -> None:
    from huggingface_hub import HfApi, snapshot_download

    info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    names = {s.rfilename: s.size or 0 for s in info.siblings or []}
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    skip = SKIP_BESIDE_SAFETENSORS if has_safetensors else ALWAYS_SKIP
    from fnmatch import fnmatch

    total = sum(size for n, size in names.items() if not any(fnmatch(n, pattern) for pattern in skip))
    folder = repo_folder(cache, repo)
    before = _size(folder)
    started = time.monotonic()
    done = threading.Event()

    def report() -> None:
        while not done.wait(1.0):
            got = max(0, _size(folder) - before)
            rate = got / max(time.monotonic() - started, 1e-3) / 2**20
            share = f" ({100 * got / total:.0f}%)" if total else ""
            print(f"fetch {repo}: {_gib(got)} of {_gib(total)} GiB{share}, {rate:.0f} MiB/s", flush=True)

    print(f"fetch {repo}: {len(names)} files, {_gib(total)} GiB to check or download", flush=True)
    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        snapshot_download(repo, revision=revision, ignore_patterns=skip, cache_dir=str(cache))
    finally:
        done.set()
    print(f"fetch {repo}: done in {time.monotonic() - started:.1f} s", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("check", "fetch"):
        print("usage: check|fetch REPO[@REVISION]...", file=sys.stderr)
        return 2
    mode, targets = argv[0], [split_target(t) for t in argv[1:]]
    cache = hub_cache()
    for repo, revision in targets:
        reason = missing_reason(cache, repo, revision)
        if reason is None:
            print(f"fetch {repo}: in the cache", flush=True)
            continue
        if mode == "check":
            print(reason, flush=True)
            return MISSING_EXIT
        fetch(repo, revision, cache)
        reason = missing_reason(cache, repo, revision)
        if reason is not None:
            print(f"fetch {repo}: downloaded, but {reason}", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
