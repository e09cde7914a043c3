"""Migration from a hand-written compose file: `modelctl import-compose FILE`.

Compose YAML in; one Profile per vLLM service out, plus the list of everything that could not be
carried over and why. Nothing here runs a command or talks to Docker: `command` and `entrypoint`
are split and read (`vllm_argv`), never executed. The only I/O is reading the compose file and its
`.env` (`import_compose_file`) and `write_profiles`, which the CLI calls once the user has seen
nothing would be overwritten.

Decisions (README "Import a compose file"):
- A service is a vLLM server when its image is `vllm/vllm-openai*` (any registry, any tag) or its
  command line runs `vllm serve` / `vllm.entrypoints.openai` - the same test `modelctl switch`
  uses to find foreign vLLM containers. Every other service (redis, the OCR pipeline, ...) is
  ignored and listed as such.
- The compose file is read with `safe_yaml` (at most 1 MiB; anchors and `<<: *merge` allowed, as
  compose files use them, but a document expanding to more than 100 000 values is refused).
- The profile name is the service name, lower-cased, with every character outside
  `[a-z0-9.-]` turned into `-`, and a `vllm-` prefix or `-vllm` suffix removed (every profile is a
  vLLM server, so it says nothing): `vllm-dots-ocr` -> `dots-ocr`, `qwen3_vl_vllm` -> `qwen3-vl`.
  Two services that give one name get `NAME`, `NAME-2`, ... in file order. A service name is
  never written as YAML: it appears only as that sanitised profile name and, escaped onto one
  line (`safe_yaml.one_line`), in comments and reports - a newline in it cannot add a key.
- Clients keep their model name: `served_model_name` is what vLLM served the model as in the
  compose file (`--served-model-name`, else the model itself, vLLM's default); further served
  names become aliases. A served name or alias an earlier service of the file already claims is
  not given again (the later profile is served as its own name), and that is reported.
- `vram_gib` is an ESTIMATE: the compose file's `--gpu-memory-utilization` times an assumed GPU
  total (`--gpu-total-gib`, default MODELCTL_GPU_TOTAL_GIB). When the file leaves it out, vLLM's
  default for the image's version (`vllm.flags.default_utilization`, read from the tag of a
  `vllm/vllm-openai` image): 0.92 from 0.33.0 on, 0.9 before and for an unknown tag.
- The flags carried into `vllm_args` are checked against the flags the image's vLLM accepts
  (`vllm.flags.flags_to_check`: that version's list, or the newest for a newer version): a flag it
  does not have (e.g. `--swap-space`, gone by 0.33) is kept as written and reported, since vLLM
  would exit 2 on it (`unrecognized arguments`); flags of an image whose version modelctl cannot
  tell or has no list for are reported as not checked.
- The port is the host side of the `ports` entry that publishes vLLM's `--port` (8000 by default).

Variables (`${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR:?err}`,
`$$`): values come ONLY from the `variables` given - the `.env` beside the compose file - and
NEVER from the shell's environment, which holds the user's tokens and passwords
(`${MODELCTL_API_TOKEN}`, a cloud key). A default written in the file is used as compose would.
A variable that is not set there, or whose name or value looks like a credential
(`modelctl.secrets`), is never substituted: its `${...}` text stays as written in the profile and
the report names the variable (never its value), so the user fills it in knowingly.

Secrets never reach a profile or a report: an environment variable or flag whose name or value
looks like a credential is left out and reported by name (modelctl passes HF_TOKEN from its own
environment); every report line and every comment is masked (`secrets.redact`), and a rendered
file that still holds something credential-shaped is refused.

Writing is all or nothing: every file is rendered, parsed back and validated as a Profile in
memory, then written to temporary files beside the targets, then renamed into place; a failure
before the renames leaves no file behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import UsageError
from .profiles import Profile
from .safe_yaml import load_yaml, load_yaml_file, one_line, read_text, short_repr
from .secrets import is_secret_name, is_secret_value, looks_secret, redact
from .vllm import runs_vllm_server
from .vllm.flags import (
    Version,
    default_utilization,
    flags_to_check,
    image_version,
    listed_versions,
    unknown_flags,
    version_text,
)
from .vllm_argv import VllmArgs, human_int, server_command, split_words

VLLM_DEFAULT_PORT = 8000
# vLLM's default utilization for an image whose version is not known (0.11.1's; 0.33.0's is 0.92).
VLLM_DEFAULT_UTILIZATION = default_utilization(None)
# Used when the compose file leaves them to vLLM, whose defaults (the model's full context, 256
# sequences) would claim far more KV cache than a 12 GB card has; reported as assumptions.
ASSUMED_MAX_MODEL_LEN = 8192
ASSUMED_MAX_NUM_SEQS = 2

# Compose keys read into the profile; every other key of a vLLM service is reported as dropped.
CARRIED_KEYS = {"image", "command", "entrypoint", "environment", "ports"}
DROP_REASONS = {
    "volumes": "modelctl mounts only its caches (MODELCTL_HF_CACHE at /root/.cache/huggingface, "
    "MODELCTL_VLLM_CACHE at /root/.cache/vllm)",
    "deploy": "GPUs come from MODELCTL_GPUS; modelctl runs one model at a time",
    "runtime": "GPUs come from MODELCTL_GPUS",
    "gpus": "GPUs come from MODELCTL_GPUS",
    "healthcheck": "modelctl waits for /v1/models itself",
    "networks": "the model is published on MODELCTL_HOST (127.0.0.1 by default)",
    "network_mode": "the model is published on MODELCTL_HOST (127.0.0.1 by default)",
    "restart": "modelctl sets restart unless-stopped once the model is ready",
    "ipc": "modelctl sets the container's shared memory itself",
    "shm_size": "modelctl sets the container's shared memory itself",
    "container_name": "modelctl names the container modelctl-NAME",
    "env_file": "not read: copy the non-secret variables into the profile's env",
    "depends_on": "a model container depends on nothing in modelctl",
    "build": "modelctl runs a pinned image; build it and tag it yourself",
    "profiles": "modelctl starts a profile with `modelctl switch NAME`",
}
# Environment that selects GPUs for the container runtime: modelctl's MODELCTL_GPUS does that.
RUNTIME_ENV = {"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}
DOTENV_MAX_BYTES = 256 * 1024

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_EXPRESSION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.S)


@dataclass(frozen=True)
class Dropped:
    """One thing from the compose file that is not in the profile, and why (credentials masked)."""

    service: str
    what: str
    why: str


@dataclass(frozen=True)
class Imported:
    service: str
    profile: Profile
    # Figures the profile holds that were not in the compose file as such (estimates, defaults).
    assumptions: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    source: str
    gpu_total_gib: float
    imported: list[Imported] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # services that are not vLLM servers
    skipped: list[Dropped] = field(default_factory=list)  # vLLM services no profile could be made for

    def dropped_for(self, service: str) -> list[Dropped]:
        return [d for d in self.dropped if d.service == service]


def _dropped(service: str, what: str, why: str) -> Dropped:
    return Dropped(service, redact(what), redact(why))


# --- reading the compose file ----------------------------------------------------------------


def import_compose_file(path: Path, *, gpu_total_gib: float) -> ImportResult:
    """`import_compose` of a file (at most 1 MiB), with `${VAR}` filled from the `.env` beside it
    only - never from this process's environment. Raises UsageError (exit 2) when unreadable."""
    text = read_text(path)
    return import_compose(text, gpu_total_gib=gpu_total_gib, source=str(path), variables=dotenv_beside(path))


def dotenv_beside(path: Path) -> dict[str, str]:
    """The variables of the `.env` file in the compose file's directory, as compose reads them
    (none when there is no such regular file)."""
    dotenv = path.parent / ".env"
    if not dotenv.is_file():
        return {}
    return parse_dotenv(read_text(dotenv, max_bytes=DOTENV_MAX_BYTES))


def import_compose(
    text: str, *, gpu_total_gib: float, source: str = "docker-compose.yml", variables: dict[str, str] | None = None
) -> ImportResult:
    """Profiles for every vLLM service in a compose file's text. Raises UsageError if unreadable.

    `variables` (the compose file's `.env`, nothing else) resolve `${VAR}`; see the module
    docstring for what is never substituted.
    """
    data = load_yaml(text, source=source, aliases=True)
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not services:
        raise UsageError(f"{one_line(redact(source))}: no 'services' mapping: not a compose file")
    result = ImportResult(source=source, gpu_total_gib=gpu_total_gib)
    claimed: dict[str, str] = {}  # every name a profile of this import answers to -> its service
    for service, spec in services.items():
        service = str(service)
        if not isinstance(spec, dict):
            result.skipped.append(_dropped(service, "service", "not a mapping"))
            continue
        reader = _ServiceReader(service, spec, gpu_total_gib, variables or {})
        if not reader.is_vllm():
            result.ignored.append(service)
            continue
        imported = reader.read(claimed)
        result.dropped += reader.dropped
        if imported is None:
            result.skipped += reader.skipped
            continue
        for name in imported.profile.names:
            claimed.setdefault(name, service)
        result.imported.append(imported)
    return result


def is_vllm_service(image: str, argv: list[str]) -> bool:
    return runs_vllm_server(image, " ".join(argv))


def profile_name(service: str) -> str:
    """A profile name from a compose service name (see the module's docstring)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", service.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-.")
    stripped = re.sub(r"(^vllm-|-vllm$)", "", name)
    name = stripped.strip("-.") or name
    return (name or "model")[:63].rstrip("-.")


def unique_name(base: str, claimed: dict[str, str] | set[str]) -> str:
    """`base`, else `base-2`, `base-3`, ... - the first no other profile of the import answers to,
    within the 63 characters of a profile name."""
    name, n = base, 2
    while name in claimed:
        suffix = f"-{n}"
        name, n = f"{base[: 63 - len(suffix)].rstrip('-.')}{suffix}", n + 1
    return name


class _ServiceReader:
    def __init__(self, service: str, spec: dict, gpu_total_gib: float, variables: dict[str, str]):
        self.service = service
        self.spec = spec
        self.gpu_total_gib = gpu_total_gib
        self.variables = variables
        self.dropped: list[Dropped] = []
        self.skipped: list[Dropped] = []
        self.assumptions: list[str] = []
        self.image = self._text(spec.get("image") or "", "image")
        self.argv = [*self._words(spec.get("entrypoint"), "entrypoint"), *self._words(spec.get("command"), "command")]

    # -- helpers --------------------------------------------------------------------------

    def drop(self, what: str, why: str) -> None:
        item = _dropped(self.service, what, why)
        if item not in self.dropped:
            self.dropped.append(item)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(_dropped(self.service, what, why))

    def _text(self, value: Any, where: str) -> str:
        """A compose string with ${VAR} resolved from the .env variables only (module docstring)."""
        text = _compose_scalar(value)

        def replace(match: re.Match) -> str:
            if match.group(0) == "$$":
                return "$"
            expr = match.group("braced") if match.group("braced") is not None else match.group("bare")
            parsed = _EXPRESSION.fullmatch(expr)
            if parsed is None:
                self.drop(f"{match.group(0)} in {where}", "not a variable compose understands: left as written")
                return match.group(0)
            name, op, argument = parsed.group(1), parsed.group(2) or "", parsed.group(3) or ""
            value = self.variables.get(name)
            if value is not None and looks_secret(name, value):
                self.drop(
                    f"${{{name}}} in {where}",
                    f"variable {name} looks like a secret: left as written, "
                    "never filled in (modelctl passes HF_TOKEN from its own environment)",
                )
                return match.group(0)
            unset = value is None or (op.startswith(":") and value == "")
            if op in (":-", "-"):
                return argument if unset else value
            if op in (":+", "+"):
                return "" if unset else argument
            if unset:
                self.drop(
                    f"${{{name}}} in {where}",
                    f"variable {name} is not set in the .env beside the compose "
                    "file (the shell's environment is never read): left as written; fill it in",
                )
                return match.group(0)
            return value

        return _VARIABLE.sub(replace, text)

    def _words(self, value: Any, where: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, list):
            return [self._text(item, where) for item in value]
        try:
            return split_words(self._text(value, where))
        except ValueError as exc:
            self.drop(f"{where} {short_repr(value)}", f"cannot be split like a shell would ({exc})")
            return []

    def is_vllm(self) -> bool:
        return is_vllm_service(self.image, self.argv)

    # -- the service ----------------------------------------------------------------------

    def read(self, claimed: dict[str, str]) -> Imported | None:
        command = server_command(self.argv, image_is_server=bool(self.image) and is_vllm_service(self.image, []))
        for what, why in command.notes:
            self.drop(what, why)
        if command.args is None:
            self.skip("command", "no `vllm serve` or api_server in it")
            return None
        flags = VllmArgs(command.args)
        model_flag = flags.take("--model")
        model = flags.positional_model or model_flag
        if model_flag and flags.positional_model and model_flag != flags.positional_model:
            self.drop(
                f"--model {one_line(model_flag)}",
                f"the positional model {one_line(flags.positional_model)} is what vLLM serves",
            )
        if not model:
            self.skip("service", "no model (--model or `vllm serve MODEL`)")
            return None
        image = self.image
        if not image:
            self.skip("service", "no image: modelctl runs a pinned image")
            return None
        if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
            image = f"{image}:latest"
            self.assumptions.append(f"image had no tag: wrote {image}; pin the version you run (e.g. v0.33.0)")
        version = image_version(image)

        served = flags.take_all("--served-model-name")
        max_model_len = self._whole(
            flags.take("--max-model-len"),
            "--max-model-len",
            ASSUMED_MAX_MODEL_LEN,
            "vLLM would use the model's full context",
        )
        max_num_seqs = self._whole(
            flags.take("--max-num-seqs"),
            "--max-num-seqs",
            ASSUMED_MAX_NUM_SEQS,
            "vLLM's default (256) claims far more KV cache",
        )
        vram_gib = self._vram(flags.take("--gpu-memory-utilization"), version)
        container_port = self._whole(flags.take("--port"), "--port", VLLM_DEFAULT_PORT, None)
        if flags.take("--host") is not None:
            self.drop("--host", "modelctl sets it (the server listens on 0.0.0.0 inside; published on MODELCTL_HOST)")
        for flag in flags.take_secrets():
            self.drop(flag, "looks like a secret: never copied into a profile")
        for what, why in flags.notes:
            self.drop(what, why)
        for token in flags.positionals:
            self.drop(f"argument {short_repr(token)}", "not a flag vLLM's server takes here")

        name = unique_name(profile_name(self.service), claimed)
        served_names = [s for part in served for s in part.split(",") if s] or [model]
        served_name = served_names[0]
        if served_name in claimed:
            owner = _quoted(claimed[served_name])
            self.drop(
                f"served model name {one_line(served_name)}",
                f"service {owner} of this file already serves it: clients reach this profile as {name}",
            )
            served_name = name
        aliases = []
        for alias in dict.fromkeys(served_names[1:]):
            if alias in claimed:
                owner = _quoted(claimed[alias])
                self.drop(f"alias {one_line(alias)}", f"service {owner} of this file already answers to it")
            elif alias not in (name, served_name):
                aliases.append(alias)
        data: dict[str, Any] = {
            "name": name,
            "model": model,
            "image": image,
            "vram_gib": vram_gib,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "vllm_args": flags.rest,
            "env": self._environment(command.env),
            "port": self._port(container_port),
            "served_model_name": served_name,
        }
        if aliases:
            data["aliases"] = aliases
        self._report_other_keys(model, flags.rest)
        self._check_flags(flags.rest, image, version)
        secret = [key for key in ("model", "image", "served_model_name") if is_secret_value(data[key])]
        secret += ["aliases"] if any(is_secret_value(alias) for alias in aliases) else []
        if secret:
            self.skip("service", f"{', '.join(secret)} looks like a credential: nothing of it is written")
            return None
        try:
            profile = Profile.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'profile'}: {one_line(e['msg'])}" for e in exc.errors()
            )
            self.skip("service", f"no valid profile: {problems}")
            return None
        return Imported(self.service, profile, [redact(line) for line in self.assumptions])

    def _whole(self, value: str | None, flag: str, default: int, why_default: str | None) -> int:
        if value is None:
            if why_default:
                self.assumptions.append(f"{flag} not set: assumed {default} ({why_default}); tune it")
            return default
        parsed = human_int(value)
        if parsed is None or parsed <= 0:
            shown = short_repr(value) if len(value) > 40 else value
            self.drop(f"{flag} {shown}", f"not a whole number; assumed {default}")
            return default
        return parsed

    def _vram(self, value: str | None, version: Version | None) -> float:
        total = self.gpu_total_gib
        default = default_utilization(version)
        utilization = default
        if value is not None:
            try:
                utilization = float(value)
                if not 0 < utilization <= 1:
                    raise ValueError
            except ValueError:
                self.drop(
                    f"--gpu-memory-utilization {short_repr(value, 40)}",
                    f"not a fraction in (0, 1]; assumed vLLM's {default}",
                )
                utilization = default
        # Round DOWN to 0.1 GiB: modelctl rounds the utilization back UP, so the plan never asks
        # for more than the compose file did.
        vram = math.floor(round(utilization * total * 10, 6)) / 10
        which = f"vLLM {version_text(version)}'s" if version else "vLLM's"
        source = f"{which} default utilization {utilization:g}"
        if value is not None:
            source = f"--gpu-memory-utilization {utilization:g}"
        self.assumptions.append(
            f"vram_gib {vram:g} is an ESTIMATE: {source} x {total:g} GiB assumed GPU total (--gpu-total-gib); "
            "measure it and set what the model needs"
        )
        return vram

    def _check_flags(self, vllm_args: list[str], image: str, version: Version | None) -> None:
        """Report the flags of vllm_args this image's vLLM does not have (kept as written)."""
        if not any(word.startswith("--") for word in vllm_args):
            return
        against = flags_to_check(version)
        if against is None:
            known = ", ".join(version_text(v) for v in listed_versions())
            tag = f"vLLM {version_text(version)}" if version else f"the image {image}"
            self.assumptions.append(
                f"flags not checked: modelctl has no flag list for {tag} (it knows {known}); "
                "vLLM exits 2 on a flag it does not have"
            )
            return
        listed, known_flags = against
        newer = ""
        if version is not None and listed != version:
            newer = f" (the newest release modelctl knows; the image is {version_text(version)})"
        for flag in unknown_flags(vllm_args, known_flags):
            self.assumptions.append(
                f"{flag} is not a flag of vLLM {version_text(listed)}{newer}: kept as written, but vLLM exits 2 "
                "on it (unrecognized arguments); remove it, or use the flag that replaced it"
            )

    def _environment(self, inline: list[str]) -> dict[str, str]:
        raw = self.spec.get("environment")
        pairs: list[tuple[str, str | None]] = []
        if isinstance(raw, dict):
            pairs = [(str(k), None if v is None else _compose_scalar(v)) for k, v in raw.items()]
        elif isinstance(raw, list):
            for item in raw:
                key, sep, value = str(item).partition("=")
                pairs.append((key, value if sep else None))
        elif raw is not None:
            self.drop("environment", "neither a list nor a mapping")
        pairs += [(key, value) for key, _, value in (w.partition("=") for w in inline)]
        env: dict[str, str] = {}
        for key, value in pairs:
            shown = one_line(key, 80)
            if is_secret_name(key):
                self.drop(
                    f"environment {shown}",
                    "looks like a secret: never copied into a profile "
                    "(modelctl passes HF_TOKEN / MODELCTL_HF_TOKEN from its own environment)",
                )
                continue
            if key in RUNTIME_ENV:
                self.drop(f"environment {shown}", "GPUs come from MODELCTL_GPUS")
                continue
            if value is None:
                self.drop(f"environment {shown}", "no value (compose passes the host's): set it in the profile's env")
                continue
            value = self._text(value, f"environment {shown}")
            if is_secret_value(value):
                self.drop(f"environment {shown}", "its value looks like a secret: never copied into a profile")
                continue
            env[key] = value
        return env

    def _port(self, container_port: int) -> int:
        ports = self.spec.get("ports") or []
        if not isinstance(ports, list):
            self.drop("ports", "not a list")
            ports = []
        for entry in ports:
            parsed = _published(entry, self._text)
            if parsed is None:
                self.drop(
                    f"ports {short_repr(entry)}", "cannot read it (ranges and random host ports have no profile form)"
                )
                continue
            host_ip, host_port, target = parsed
            if target != container_port:
                self.drop(
                    f"ports {short_repr(entry)}", f"vLLM listens on {container_port}; only that port is published"
                )
                continue
            if host_ip and host_ip not in ("127.0.0.1", "localhost"):
                self.drop(
                    f"ports host address {short_repr(host_ip)}",
                    "modelctl publishes on MODELCTL_HOST (127.0.0.1 by default)",
                )
            if host_port is None:
                self.assumptions.append(f"port {container_port}: the compose file published it on a random host port")
                return container_port
            return host_port
        self.assumptions.append(f"no published port: using {container_port}, vLLM's port in the container")
        return container_port

    def _report_other_keys(self, model: str, vllm_args: list[str]) -> None:
        lost_paths: list[str] = []
        for key, value in self.spec.items():
            if key in CARRIED_KEYS:
                continue
            if key == "volumes":
                for volume in value if isinstance(value, list) else [value]:
                    shown = one_line(_volume_label(volume))
                    target = _volume_target(volume) or ""
                    if target.rstrip("/") == "/root/.cache/huggingface":
                        source = shown.split(":", 1)[0]
                        self.drop(
                            f"volumes {shown}",
                            "modelctl mounts MODELCTL_HF_CACHE there: "
                            f"set MODELCTL_HF_CACHE={source} to keep the weights already downloaded",
                        )
                        continue
                    if target.rstrip("/") == "/root/.cache/vllm":
                        source = shown.split(":", 1)[0]
                        self.drop(
                            f"volumes {shown}",
                            "modelctl mounts MODELCTL_VLLM_CACHE there (default: the volume modelctl-vllm-cache): "
                            f"set MODELCTL_VLLM_CACHE={source} to keep the torch.compile cache already built",
                        )
                        continue
                    self.drop(f"volumes {shown}", DROP_REASONS["volumes"])
                    if target:
                        lost_paths.append(target.rstrip("/"))
                continue
            self.drop(one_line(str(key), 80), DROP_REASONS.get(str(key), "no profile key for it"))
        for path in lost_paths:
            for where, value in (("model", model), *(("vllm_args", a) for a in vllm_args)):
                if value == path or value.startswith(path + "/"):
                    self.drop(
                        f"{where} {one_line(value)}",
                        f"lies in volume {one_line(path)}, which is not carried "
                        "over: put it in the HF cache or bake it into the image",
                    )


def parse_dotenv(text: str) -> dict[str, str]:
    """Compose's `.env`: KEY=VALUE lines, `#` comments, optional quotes around the value."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0]
        values[key.strip()] = value
    return values


def _compose_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _quoted(text: str) -> str:
    """A name from the compose file for a comment or a report line: one line, quoted, masked."""
    return f"'{one_line(redact(text), 120)}'"


def _published(entry: Any, resolve) -> tuple[str | None, int | None, int] | None:
    """(host address, host port or None, container port) of one `ports` entry, or None."""
    if isinstance(entry, dict):
        try:
            target = int(entry["target"])
            published = entry.get("published")
            host_port = int(published) if published not in (None, "") else None
        except (KeyError, TypeError, ValueError):
            return None
        host_ip = entry.get("host_ip")
        return (str(host_ip) if host_ip is not None else None), host_port, target
    if not isinstance(entry, str | int):
        return None
    text = resolve(entry, "ports").split("/", 1)[0]
    # [host_ip:][host_port:]container_port; an IPv6 host address comes in brackets.
    match = re.fullmatch(r"(?:(\[[^\]]+\]|[^:]+):)??(?:(\d*):)?(\d+)", text)
    if not match:
        return None
    host_ip, host_port, target = match.groups()
    if host_ip and re.fullmatch(r"[\d-]+", host_ip):
        return None  # a host port range ("9000-9001:8000"), not an address: no profile form
    return (host_ip.strip("[]") if host_ip else None), (int(host_port) if host_port else None), int(target)


def _volume_target(volume: Any) -> str | None:
    if isinstance(volume, dict):
        target = volume.get("target")
        return str(target) if target is not None else None
    parts = str(volume).split(":")
    return parts[1] if len(parts) >= 2 else parts[0]


def _volume_label(volume: Any) -> str:
    if isinstance(volume, dict):
        return f"{volume.get('source', '')}:{volume.get('target', '')}"
    return str(volume)


# --- writing the profiles ----------------------------------------------------------------------

PROFILE_KEY_ORDER = [
    "name",
    "model",
    "image",
    "served_model_name",
    "aliases",
    "vram_gib",
    "max_model_len",
    "max_num_seqs",
    "vllm_args",
    "env",
    "port",
]


def _comment(text: str) -> str:
    return one_line(redact(text), 400)


def render_profile(item: Imported, result: ImportResult) -> str:
    """The profile file: a header saying where it came from and what to check, then the YAML.
    Every comment line is one line, masked; only the YAML body carries values."""
    header = [
        f"# Imported by `modelctl import-compose` from {_comment(result.source)}, service {_quoted(item.service)}.",
        "# Check before the first switch (README 'Profiles'):",
        *(f"#   - {_comment(line)}" for line in item.assumptions),
    ]
    dropped = result.dropped_for(item.service)
    if dropped:
        header.append("# Not carried over from the compose file:")
        header += [f"#   - {_comment(d.what)}: {_comment(d.why)}" for d in dropped]
    data = item.profile.model_dump(exclude_none=True)
    ordered = {key: data[key] for key in PROFILE_KEY_ORDER if key in data and (key != "aliases" or data[key])}
    body = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
    return "\n".join(header) + "\n" + body


def planned_files(result: ImportResult, out_dir: Path) -> list[Path]:
    """Where each imported profile goes: NAME.yaml, or an existing NAME.yml it replaces."""
    paths = []
    for item in result.imported:
        path = out_dir / f"{item.profile.name}.yaml"
        yml = path.with_suffix(".yml")
        paths.append(yml if not _exists(path) and _exists(yml) else path)
    return paths


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def check_rendered(item: Imported, text: str) -> None:
    """The file `text` must read back, as modelctl reads profiles, as exactly `item.profile`, and
    hold nothing credential-shaped. Raises UsageError naming the service."""
    where = f"the profile for service {_quoted(item.service)}"
    if is_secret_value(text):
        raise UsageError(
            f"{where} would contain something shaped like a credential: nothing written",
            hint="remove the credential from the compose file and import again",
        )
    data = load_yaml(text, source=where)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{where} does not read back as a valid profile: {one_line(str(exc), 400)}") from None
    if profile != item.profile:
        raise UsageError(f"{where} does not read back as the profile imported: nothing written")


def write_profiles(result: ImportResult, out_dir: Path, *, force: bool) -> list[Path]:
    """Write every imported profile into `out_dir`, all or nothing.

    Refuses (UsageError, exit 2) before writing anything when a file exists and `force` is not
    set, when a target is not a regular file, or when a name, served name or alias is already
    claimed by another profile there. Every file is rendered and checked (`check_rendered`) before
    the first is written; then all are written to hidden temporary files and renamed into place.
    """
    paths = planned_files(result, out_dir)
    existing = [path for path in paths if _exists(path)]
    odd = [path for path in existing if not path.is_symlink() and not path.is_file()]
    if odd:
        raise UsageError(f"{one_line(str(odd[0]))} exists and is not a regular file", hint="--out another directory")
    if existing and not force:
        names = ", ".join(one_line(str(p)) for p in existing)
        raise UsageError(f"would overwrite {names}", hint="pass --force to replace, or --out another directory")
    _check_names(result, out_dir, set(paths))
    rendered = [render_profile(item, result) for item in result.imported]
    for item, text in zip(result.imported, rendered, strict=True):
        check_rendered(item, text)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {one_line(str(out_dir))}: {exc.strerror or exc}") from None
    temporary: list[Path] = []
    try:
        for path, text in zip(paths, rendered, strict=True):
            temporary.append(_write_temporary(path, text))
        for done, (temp, path) in enumerate(zip(temporary, paths, strict=True)):
            try:
                os.replace(temp, path)
            except OSError as exc:
                written = ", ".join(one_line(str(p)) for p in paths[:done]) or "none"
                raise UsageError(
                    f"cannot write {one_line(str(path))}: {exc.strerror or exc}", hint=f"written before it: {written}"
                ) from None
    except OSError as exc:
        where = one_line(str(out_dir))
        raise UsageError(f"cannot write into {where}: {exc.strerror or exc}: nothing written") from None
    finally:
        for temp in temporary:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
    return paths


def _write_temporary(path: Path, text: str) -> Path:
    """`text` in a new hidden file beside `path` (never an existing one: mkstemp), mode 0644."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    temp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _neighbours(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")]
    return sorted(p for p in found if p.is_file())


def _check_names(result: ImportResult, out_dir: Path, replaced: set[Path]) -> None:
    owners: dict[str, str] = {}
    for path in _neighbours(out_dir):
        if path in replaced:
            continue
        try:
            other = Profile.model_validate(load_yaml_file(path))
        except (UsageError, ValidationError):
            continue  # an invalid neighbour is `modelctl list`'s to report, not ours
        for name in other.names:
            owners.setdefault(name, one_line(str(path)))
    for item in result.imported:
        for name in item.profile.names:
            if name in owners:
                raise UsageError(
                    f"service {_quoted(item.service)}: name '{one_line(name)}' is already used by {owners[name]}",
                    hint="import into another directory (--out), or rename the service in the compose file",
                )
            owners[name] = f"the imported service {_quoted(item.service)}"


# --- the report ---------------------------------------------------------------------------------


def _shown(text: str) -> str:
    return redact(text)


def result_json(result: ImportResult, paths: list[Path]) -> dict[str, Any]:
    """The report as data (`--json`); every string masked."""
    return {
        "source": _shown(result.source),
        "gpu_total_gib": result.gpu_total_gib,
        "written": [
            {
                "service": _shown(item.service),
                "profile": item.profile.name,
                "file": _shown(str(path)),
                "vram_gib": item.profile.vram_gib,
                "assumptions": [_shown(a) for a in item.assumptions],
            }
            for item, path in zip(result.imported, paths, strict=True)
        ],
        "dropped": [{"service": _shown(d.service), "what": d.what, "why": d.why} for d in result.dropped],
        "skipped": [{"service": _shown(d.service), "why": d.why} for d in result.skipped],
        "ignored": [_shown(name) for name in result.ignored],
    }


def result_lines(result: ImportResult, paths: list[Path]) -> list[str]:
    """The report for people: what was written, what to check, what was left behind. One line
    each (no control characters: a service name cannot move the cursor or fake a line), masked."""
    lines = []
    for item, path in zip(result.imported, paths, strict=True):
        lines.append(
            f"wrote {_comment(str(path))} from service {_quoted(item.service)} "
            f"(vram_gib {item.profile.vram_gib:g}, estimated)"
        )
        lines += [f"  check: {_comment(line)}" for line in item.assumptions]
        dropped = result.dropped_for(item.service)
        lines += [f"  not carried over: {_comment(d.what)}: {_comment(d.why)}" for d in dropped]
    for d in result.skipped:
        lines.append(f"skipped service {_quoted(d.service)}: {_comment(d.why)}")
    if result.ignored:
        lines.append(f"ignored (not vLLM servers): {', '.join(one_line(redact(s), 120) for s in result.ignored)}")
    return lines
