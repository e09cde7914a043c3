"""Settings from MODELCTL_* environment variables (DESIGN.md: the CLI contract)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "modelctl"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELCTL_", extra="ignore")

    profiles_dir: Path = Path("profiles")
    # "all", "none", or comma-separated device ids ("0", "0,1").
    gpus: str = "all"
    # GPU size to assume where NVML cannot tell (no driver, no GPU, MODELCTL_GPUS=none).
    gpu_total_gib: float = Field(default=12.0, gt=0)
    state_dir: Path = Field(default_factory=_default_state_dir)
    # Address model ports are published on. Loopback by default: a model server has no auth.
    host: str = "127.0.0.1"
    # Whole seconds a stopped container gets between SIGTERM and SIGKILL (Docker counts in seconds).
    stop_grace: int = Field(default=10, ge=0)
    # Host directory mounted as the containers' Hugging Face cache.
    hf_cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "huggingface")
    # Seconds to wait, after the stop, until the GPU has the memory the next model needs.
    release_timeout: float = Field(default=60.0, gt=0)
    # Default seconds to wait for /v1/models when a profile sets no startup_timeout.
    ready_timeout: float = Field(default=900.0, gt=0)
    # The service (`modelctl serve`): its listener, its bearer token, the model it keeps up.
    listen: str = "127.0.0.1:8080"
    api_token: SecretStr | None = None
    default_profile: str | None = None
    # With MODELCTL_URL set, the CLI asks the service at that URL instead of the engine.
    url: str | None = None
    # Hugging Face token passed to the containers; never printed (SecretStr masks it).
    hf_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("MODELCTL_HF_TOKEN", "HF_TOKEN"))

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
        """Address to reach published ports from this machine."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host


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
