"""Profiles: one YAML file per model (README "Profiles" is the contract). One file at a time:
the directory is the catalog's business (catalog.py).

Loading validates the file, and every error names the file, the key and what is expected,
because a typo in a profile must never reach a running container.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from .errors import ProfileError
from .safe_yaml import load_yaml_file, short_repr
from .vllm.flags import MANAGED_FLAGS

ProfileName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]*$", max_length=63)]


class Tier(BaseModel):
    """Tuned values for GPUs of at least this size (the key of `tiers`, in GiB)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    vram_gib: float = Field(gt=0)
    max_model_len: int = Field(gt=0)
    max_num_seqs: int = Field(gt=0)


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: ProfileName
    model: str = Field(min_length=1)
    image: str = Field(min_length=1)
    vram_gib: float = Field(gt=0)
    max_model_len: int = Field(gt=0)
    max_num_seqs: int = Field(gt=0)
    vllm_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    port: int = Field(default=8000, ge=1, le=65535)
    served_model_name: str | None = None
    aliases: list[str] = Field(default_factory=list)
    startup_timeout: float | None = Field(default=None, gt=0)
    # Seconds without proxy requests before this model is stopped (0: never); overrides MODELCTL_IDLE_TTL.
    idle_ttl: float | None = Field(default=None, ge=0)
    # GPU size in GiB -> tuned values; the plan takes the largest tier the GPU can hold.
    tiers: dict[int, Tier] = Field(default_factory=dict)
    # vLLM sleep mode: switching away puts the model to sleep (1: weights to pinned host memory,
    # 2: weights dropped, reloaded on wake) instead of stopping it. None: stopped, as before.
    sleep_level: Literal[1, 2] | None = None
    # What a sleeper is assumed to keep on the GPU where NVML cannot measure it by process.
    sleep_vram_gib: float = Field(default=1.0, ge=0)

    @field_validator("image")
    @classmethod
    def _pinned_image(cls, image: str) -> str:
        last = image.rsplit("/", 1)[-1]
        if ":" not in last and "@" not in last:
            raise ValueError(f"pin a tag, e.g. '{image}:v0.11.1' (an unpinned image changes under you)")
        return image

    @field_validator("sleep_level", mode="before")
    @classmethod
    def _level_not_bool(cls, level: object) -> object:
        if isinstance(level, bool):  # YAML `true` is not level 1
            raise ValueError("expected 1 or 2")
        return level

    @field_validator("vllm_args")
    @classmethod
    def _no_managed_flags(cls, args: list[str]) -> list[str]:
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag in MANAGED_FLAGS:
                raise ValueError(f"{flag} is set by modelctl from {MANAGED_FLAGS[flag]}; remove it from vllm_args")
        return args

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.name

    @property
    def names(self) -> list[str]:
        """Every name a client may use for this profile, the canonical one first."""
        names = [self.name, self.served_name, *self.aliases]
        return list(dict.fromkeys(names))


_EXPECTED = {
    "string_type": "a string (quote it in YAML)",
    "int_type": "a whole number",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "a mapping",
    "bool_type": "true or false",
    "missing": "this key (it is required)",
    "extra_forbidden": "no such key",
}


def _describe(err: dict) -> str:
    if "[key]" in err["loc"]:  # a mapping key of the wrong type, e.g. tiers: {16GB: ...}
        key = ".".join(str(part) for part in err["loc"] if part != "[key]")
        return f"key '{key}': expected a whole number of GiB as the tier's key, got {short_repr(err.get('input'))}"
    key = ".".join(str(part) for part in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(Profile.model_fields)
        return f"unknown key '{key}' (allowed keys: {allowed})"
    if kind == "missing":
        return f"missing required key '{key}'"
    expected = _EXPECTED.get(kind)
    got = err.get("input")
    if expected:
        return f"key '{key}': expected {expected}, got {short_repr(got)}"
    message = err["msg"].removeprefix("Value error, ")
    return f"key '{key}': {message} (got {short_repr(got)})"


def load_profile(path: Path) -> Profile:
    """One profile file: at most 1 MiB of YAML without anchors or aliases, validated."""
    data = load_yaml_file(path, error=ProfileError)
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping of profile keys at the top level, got {type(data).__name__}")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ProfileError(f"{path}: {problems}", hint="see README 'Profiles' for the keys") from None


def declared_name(path: Path) -> str | None:
    """The `name` a profile file declares, even when the file is otherwise invalid (or None)."""
    try:
        data = load_yaml_file(path, error=ProfileError)
    except ProfileError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None
