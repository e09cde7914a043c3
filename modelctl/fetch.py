"""Nothing downloaded while the GPU stands idle: a model's weights are fetched into the Hugging Face
cache before the running model is stopped (the switch's `fetch` phase), or ahead of time by
`modelctl pull`.

The fetch runs in a throwaway container of the profile's own image (its huggingface_hub, the
profile's env, HF_TOKEN, the cache mounted where the model container mounts it), so it downloads
exactly where and how vLLM would look. `fetch_script.py` is what runs there.

How modelctl knows the weights are missing, cheaply on the common path (weights present):
- a host directory cache (MODELCTL_HF_CACHE=/path): modelctl reads the cache layout itself
  (`fetch_script.missing_reason`: refs -> snapshot -> weights files and every indexed shard, no
  `.incomplete` blob): a few stat calls, no container, no network;
- a Docker volume (MODELCTL_HF_CACHE=name), or a profile that moves the cache (HF_HOME or
  HF_HUB_CACHE in its env): only a container sees it, so a throwaway container runs the same
  test (`check`: no network, no huggingface_hub import) - a container start, under a second;
- skipped: HF_HUB_OFFLINE=1 in the profile's env (the user said: never download), and a model
  that is a path rather than a Hugging Face repo id.
Only then, when something is missing, `fetch` runs `snapshot_download`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import fetch_script
from .errors import NotReadyError
from .plan import Plan
from .progress import PhaseClock
from .runtime import LABEL_PROFILE, LABEL_ROLE, ROLE_FETCH, Runtime, TaskSpec
from .settings import Settings
from .vllm.diagnosis import diagnose

# Seconds a fetch may take before it is killed (a 7 GB model at 10 MB/s takes 12 minutes).
FETCH_TIMEOUT_S = 3600.0
CHECK_TIMEOUT_S = 120.0  # the cache check in a container (a cold image on a slow disk)
# A Hugging Face repo id: NAME or ORG/NAME (huggingface_hub's validate_repo_id).
_REPO_ID = re.compile(r"^[\w.-]{1,96}(/[\w.-]{1,96})?$")
_CACHE_ENV = ("HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME")


@dataclass(frozen=True)
class Fetched:
    """What the fetch of one profile's weights found and did."""

    profile: str
    outcome: str  # "present", "fetched", "skipped"
    detail: str = ""  # why skipped, or what was missing
    seconds: float = 0.0


def targets(plan: Plan) -> tuple[list[str], str]:
    """The repos (REPO or REPO@REVISION) vLLM will download for this plan, or ([], why none)."""
    profile = plan.profile
    if profile.env.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return [], "HF_HUB_OFFLINE=1 in the profile's env"
    if not _REPO_ID.match(profile.model) or profile.model.startswith((".", "-")):
        return [], f"{profile.model} is a path, not a Hugging Face repo id"
    args = _flag_values(profile.vllm_args)
    if "--download-dir" in args:
        return [], "--download-dir puts the weights outside the mounted cache"
    revision = args.get("--revision")
    found = [f"{profile.model}@{revision}" if revision else profile.model]
    tokenizer = args.get("--tokenizer")
    if tokenizer and tokenizer != profile.model and _REPO_ID.match(tokenizer):
        tokenizer_revision = args.get("--tokenizer-revision")
        found.append(f"{tokenizer}@{tokenizer_revision}" if tokenizer_revision else tokenizer)
    return found, ""


def _flag_values(args: list[str]) -> dict[str, str]:
    """`--flag value` and `--flag=value` of vllm_args (the last one wins, as in argparse)."""
    values: dict[str, str] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg.partition("=")
        name = name.replace("_", "-")
        if eq:
            values[name] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            values[name] = args[i + 1]
        else:
            values[name] = ""
    return values


class WeightsFetcher:
    """Checks and fetches a plan's weights through throwaway containers of its image."""

    def __init__(self, runtime: Runtime, settings: Settings, secret_env: dict[str, str]) -> None:
        self.runtime = runtime
        self.settings = settings
        self.secret_env = secret_env

    def missing(self, plan: Plan, repos: list[str], clock: PhaseClock) -> str | None:
        """None when every repo is complete in the cache, else why not (the check described above).

        The host's look at a directory is quick and untimed; a container's is the phase `fetch`."""
        cache = self.settings.hf_cache
        if cache.is_absolute() and not any(k in plan.profile.env for k in _CACHE_ENV):
            hub = cache / "hub"
            for repo in repos:
                try:
                    reason = fetch_script.missing_reason(hub, *fetch_script.split_target(repo))
                except OSError as exc:  # unreadable here: the container will know
                    reason = f"the cache cannot be read here ({exc.strerror or exc})"
                if reason:
                    return reason
            return None
        with clock.phase("fetch", f"checking the cache ({cache}) for {', '.join(repos)}"):
            task = self._task(plan, "check", repos)
            result = self.runtime.run_to_completion(task, self.secret_env, CHECK_TIMEOUT_S)
        if result.exit_code == 0:
            return None
        if result.exit_code == fetch_script.MISSING_EXIT:
            lines = [line for line in result.log.splitlines() if line.strip()]
            return lines[-1].strip() if lines else "not in the cache"
        return f"the cache check exited with {result.exit_code}"  # the fetch will say more

    def fetch(self, plan: Plan, repos: list[str], on_line: Callable[[str], None], timeout_s: float) -> None:
        """Download what is missing; a failure raises NotReadyError with the download's own words."""
        result = self.runtime.run_to_completion(self._task(plan, "fetch", repos), self.secret_env, timeout_s, on_line)
        if result.exit_code == 0:
            return
        name = plan.profile.name
        tail = "\n".join(result.log.splitlines()[-20:])
        if result.timed_out:
            raise NotReadyError(
                f"fetching the weights of {name} ({', '.join(repos)}) did not finish within {timeout_s:g} s",
                hint=f"run `modelctl pull {name}` ahead of the switch, where it may take as long as it needs",
                log_tail=tail,
            )
        found = diagnose(result.log)
        cause = found.cause if found else f"the download exited with code {result.exit_code}"
        raise NotReadyError(
            f"fetching the weights of {name} ({', '.join(repos)}) failed: {cause}",
            hint=found.advice if found else "see the lines below; `modelctl pull NAME` retries the download",
            log_tail=tail,
        )

    def _task(self, plan: Plan, mode: str, repos: list[str]) -> TaskSpec:
        env = {
            **plan.profile.env,
            "MODELCTL_FETCH_SCRIPT": _script(),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # the script prints one progress line a second
            "PYTHONUNBUFFERED": "1",
        }
        return TaskSpec(
            image=plan.spec.image,
            entrypoint=["python3"],
            command=["-c", "import os; exec(os.environ['MODELCTL_FETCH_SCRIPT'])", mode, *repos],
            env=env,
            labels={LABEL_ROLE: ROLE_FETCH, LABEL_PROFILE: plan.profile.name},
            hf_cache=plan.spec.hf_cache,
        )


def _script() -> str:
    return Path(fetch_script.__file__).read_text(encoding="utf-8")


def ensure_weights(fetcher: WeightsFetcher, plan: Plan, clock: PhaseClock, timeout_s: float | None = None) -> Fetched:
    """Check the cache, download what is missing (the phase `fetch`, its lines the progress)."""
    repos, skipped = targets(plan)
    name = plan.profile.name
    if not repos:
        return Fetched(name, "skipped", skipped)
    began = time.monotonic()
    reason = fetcher.missing(plan, repos, clock)
    if reason is None:
        return Fetched(name, "present", seconds=round(time.monotonic() - began, 3))
    with clock.phase("fetch", reason):
        fetcher.fetch(plan, repos, clock.note, timeout_s or FETCH_TIMEOUT_S)
    return Fetched(name, "fetched", reason, round(time.monotonic() - began, 3))


@dataclass(frozen=True)
class Pulled:
    """`modelctl pull`: one profile's image and weights, made ready ahead of a switch."""

    profile: str
    image: str
    image_pulled: bool  # False: it was on the engine already
    weights: Fetched


def secret_env(settings: Settings) -> dict[str, str]:
    token = settings.hf_token
    return {"HF_TOKEN": token.get_secret_value()} if token is not None else {}


def pull(runtime: Runtime, settings: Settings, plan: Plan, clock: PhaseClock, timeout_s: float | None = None) -> Pulled:
    """The image (when missing), then the weights (when missing); nothing running is touched."""
    image = plan.spec.image
    pulled = not runtime.has_image(image)
    if pulled:
        with clock.phase("pull", image):
            runtime.pull(image)
    cache = settings.hf_cache
    if cache.is_absolute():
        cache.mkdir(parents=True, exist_ok=True)  # else Docker makes it, owned by root
    fetched = ensure_weights(WeightsFetcher(runtime, settings, secret_env(settings)), plan, clock, timeout_s)
    return Pulled(plan.profile.name, image, pulled, fetched)
