"""Settings from MODELCTL_* environment variables (the README's settings tables are the contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    # One place whoever runs modelctl (root, sudo, the docker group's members, the Compose service):
    # /var/lib/modelctl where it exists, else /tmp/modelctl-<docker gid>. Never under $HOME or
    # $TMPDIR, which differ between users. lock.py's docstring gives the reasons.
    from .lock import default_state_dir

    return default_state_dir()


def url_host(host: str) -> str:
    """The address to reach a port published on `host` from this machine, ready for a URL."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELCTL_", extra="ignore")

    profiles_dir: Path = Path("profiles")
    # "all", "none", or comma-separated device ids ("0", "0,1").
    gpus: str = "all"
    # GPU size to assume where NVML cannot tell (no driver, no GPU, MODELCTL_GPUS=none).
    gpu_total_gib: float = Field(default=12.0, gt=0, allow_inf_nan=False)
    state_dir: Path = Field(default_factory=_default_state_dir)
    # Address model ports are published on. Loopback by default: a model server has no auth.
    host: str = "127.0.0.1"
    # Model containers' IPC: "private" (their own namespace, with runtime.SHM_SIZE of /dev/shm) or
    # "host" (`--ipc host`: the host's IPC namespace, as vLLM's Docker guide shows).
    ipc: Literal["private", "host"] = "private"
    # What the service does with a vLLM container it did not start, started while it runs:
    # "stop" it (within seconds; logged and counted) or only "warn" (log and count).
    enforce: Literal["stop", "warn"] = "stop"
    # Whole seconds a stopped container gets between SIGTERM and SIGKILL (Docker counts in seconds).
    stop_grace: int = Field(default=10, ge=0)
    # Mounted at the containers' Hugging Face cache: a host directory, or a Docker volume name
    # (a name without "/", e.g. the Compose deployment's modelctl-hf-cache).
    hf_cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "huggingface")
    # Mounted at the containers' vLLM cache (/root/.cache/vllm: torch.compile artefacts), so a model's
    # second cold start reuses what its first compiled: a host directory or a Docker volume name.
    vllm_cache: Path = Path("modelctl-vllm-cache")
    # Seconds to wait, after the stop, until the GPU has the memory the next model needs.
    release_timeout: float = Field(default=60.0, gt=0)
    # Default seconds to wait for /v1/models when a profile sets no startup_timeout.
    ready_timeout: float = Field(default=900.0, gt=0)
    # The service (`modelctl serve`): its listener, its bearer token, the model it keeps up.
    listen: str = "127.0.0.1:8080"
    api_token: SecretStr | None = None
    default_profile: str | None = None
    # The OpenAI proxy (/v1): requests waiting for their model beyond this many get 503 + Retry-After;
    # a waiting request forces a swap after max_wait seconds; a model stays at least min_residency
    # seconds once loaded while others wait (unless one of them has waited max_wait).
    proxy_max_queue: int = Field(default=1024, ge=1)
    proxy_max_wait: float = Field(default=30.0, ge=0)
    proxy_min_residency: float = Field(default=10.0, ge=0)
    # Stop the active model after this many seconds without proxy requests (0: never), and go back
    # to MODELCTL_DEFAULT_PROFILE (if set and not the idle one) instead of stopping.
    idle_ttl: float = Field(default=0.0, ge=0)
    # Proxy limits: a request body over max_body_mb MiB gets 413 (before it is read past that); a model
    # server that sends no byte for idle_timeout seconds gets its request ended (504, or an error event
    # in a stream); once a swap is decided, the old model's requests in flight get drain_timeout
    # seconds before they are ended with an error and the swap goes on.
    proxy_max_body_mb: float = Field(default=64.0, gt=0, allow_inf_nan=False)
    proxy_idle_timeout: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    proxy_drain_timeout: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    # A streaming request that waits for its model gets 200 at once and `: modelctl loading` comments.
    proxy_loading_events: bool = False
    # Open connections the service takes at once; beyond, uvicorn answers 503 (idle ones close after 5 s).
    max_connections: int = Field(default=1024, ge=1)
    # A sleep-enabled model (profile sleep_level) is stopped instead of put to sleep when the host's
    # available memory would fall under this many GiB (a level-1 sleeper pins its weights in RAM).
    sleep_host_reserve_gib: float = Field(default=4.0, ge=0, allow_inf_nan=False)
    # With MODELCTL_URL set, the CLI asks the service at that URL instead of the engine.
    url: str | None = None
    # Hugging Face token passed to the containers; never printed (SecretStr masks it).
    hf_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("MODELCTL_HF_TOKEN", "HF_TOKEN"))

    @field_validator("api_token", "hf_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `MODELCTL_API_TOKEN=` in an .env file means "no token", never "the empty token".
        return None if value == "" else value

    @field_validator("hf_cache", "vllm_cache")
    @classmethod
    def _cache_path_or_volume(cls, value: Path) -> Path:
        # Docker takes an absolute path as a bind mount and a bare name as a volume; "~/x" (never
        # expanded by Docker) and "cache/hf" are neither, and fail only after the stop.
        value = value.expanduser()
        if "/" in str(value) and not value.is_absolute():
            raise ValueError(
                f"expected an absolute directory or a Docker volume name, got the relative path {str(value)!r}"
            )
        return value

    @field_validator("gpus")
    @classmethod
    def _check_gpus(cls, value: str) -> str:
        value = value.strip()
        if value in ("all", "none"):
            return value
        ids = [part.strip() for part in value.split(",")]
        if not all(part.isdigit() for part in ids):
            raise ValueError(f"expected 'all', 'none' or device ids like '0' or '0,1', got {value!r}")
        return ",".join(ids)

    @property
    def gpu_device_ids(self) -> list[str] | None:
        """Device ids to request, None for all GPUs; [] for none."""
        if self.gpus == "all":
            return None
        if self.gpus == "none":
            return []
        return self.gpus.split(",")

    @property
    def poll_host(self) -> str:
        """Address to reach published ports from this machine, ready for a URL."""
        return url_host(self.host)


def load_settings() -> Settings:
    from pydantic import ValidationError

    from .errors import UsageError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MODELCTL_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise UsageError(f"invalid setting: {problems}", hint="fix the environment variable and retry") from None
