"""Migration from a hand-written compose file: `modelctl import-compose FILE`.

Compose YAML in; one Profile per vLLM service out, plus the list of everything that could not be
carried over and why. Nothing here runs a command or talks to Docker: `command` and `entrypoint`
are split with shlex and read, never executed. The only I/O is `write_profiles` at the bottom,
which the CLI calls once the user has seen nothing would be overwritten.

Decisions (README "Import a compose file"):
- A service is a vLLM server when its image is `vllm/vllm-openai*` (any registry, any tag) or its
  command line runs `vllm serve` / `vllm.entrypoints.openai` - the same test `modelctl switch`
  uses to find foreign vLLM containers. Every other service (redis, the OCR pipeline, ...) is
  ignored and listed as such.
- The profile name is the service name, lower-cased, with every character outside
  `[a-z0-9.-]` turned into `-`, and a `vllm-` prefix or `-vllm` suffix removed (every profile is a
  vLLM server, so it says nothing): `vllm-dots-ocr` -> `dots-ocr`, `qwen3_vl_vllm` -> `qwen3-vl`.
- Clients keep their model name: `served_model_name` is what vLLM served the model as in the
  compose file (`--served-model-name`, else the model itself, vLLM's default); further served
  names become aliases.
- `vram_gib` is an ESTIMATE: the compose file's `--gpu-memory-utilization` (vLLM's default 0.9
  when absent) times an assumed GPU total (`--gpu-total-gib`, default MODELCTL_GPU_TOTAL_GIB).
  Utilization is a fraction of the card the file was tuned on, so the figure is only right for a
  card of that size.
- Secrets never reach a profile: HF_TOKEN and any variable whose name or value looks like a
  credential is left out (modelctl passes HF_TOKEN from its own environment, never printed).
- The port is the host side of the `ports` entry that publishes vLLM's `--port` (8000 by default);
  modelctl publishes it on MODELCTL_HOST at the same number inside and out.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import UsageError
from .profiles import Profile, load_profile
from .vllm import COMMAND_MARKERS, runs_vllm_server

SHELLS = {"sh", "bash", "dash", "ash", "zsh"}
VLLM_DEFAULT_PORT = 8000
VLLM_DEFAULT_UTILIZATION = 0.9
# Used when the compose file leaves them to vLLM, whose defaults (the model's full context, 256
# sequences) would claim far more KV cache than a 12 GB card has; reported as assumptions.
ASSUMED_MAX_MODEL_LEN = 8192
ASSUMED_MAX_NUM_SEQS = 2

# vLLM's boolean flags that users put in compose files: they never take the next token as value.
BOOLEAN_FLAGS = {
    "--trust-remote-code", "--enforce-eager", "--enable-prefix-caching", "--no-enable-prefix-caching",
    "--enable-chunked-prefill", "--no-enable-chunked-prefill", "--disable-log-requests",
    "--disable-log-stats", "--enable-log-requests", "--enable-auto-tool-choice",
    "--enable-sleep-mode", "--disable-custom-all-reduce", "--disable-frontend-multiprocessing",
    "--skip-tokenizer-init", "--disable-sliding-window", "--disable-cascade-attn",
    "--enable-prompt-tokens-details", "--enable-server-load-tracking", "--disable-fastapi-docs",
    "--async-scheduling", "--no-async-scheduling", "--enable-expert-parallel", "--headless",
    "--use-v2-block-manager", "--disable-mm-preprocessor-cache", "--enable-lora",
    "--return-tokens-as-token-ids", "--enable-request-id-headers", "--disable-uvicorn-access-log",
}  # fmt: skip

# Compose keys read into the profile; every other key of a vLLM service is reported as dropped.
CARRIED_KEYS = {"image", "command", "entrypoint", "environment", "ports"}
DROP_REASONS = {
    "volumes": "modelctl mounts only the HF cache (MODELCTL_HF_CACHE at /root/.cache/huggingface)",
    "deploy": "GPUs come from MODELCTL_GPUS; modelctl runs one model at a time",
    "runtime": "GPUs come from MODELCTL_GPUS",
    "gpus": "GPUs come from MODELCTL_GPUS",
    "healthcheck": "modelctl waits for /v1/models itself",
    "networks": "the model is published on MODELCTL_HOST (127.0.0.1 by default)",
    "network_mode": "the model is published on MODELCTL_HOST (127.0.0.1 by default)",
    "restart": "modelctl sets restart unless-stopped once the model is ready",
    "ipc": "modelctl runs models with --ipc host",
    "shm_size": "modelctl runs models with --ipc host",
    "container_name": "modelctl names the container modelctl-NAME",
    "env_file": "not read: copy the non-secret variables into the profile's env",
    "depends_on": "a model container depends on nothing in modelctl",
    "build": "modelctl runs a pinned image; build it and tag it yourself",
    "profiles": "modelctl starts a profile with `modelctl switch NAME`",
}

# A credential's name: HF_TOKEN, WANDB_API_KEY, --api-key, --hf-token; not MAX_TOKENS or --tokenizer.
SECRET_NAME = re.compile(
    r"(^|[_-])(TOKEN|SECRET|PASSWORD|PASSWD|API[_-]?KEY|ACCESS[_-]?KEY|CREDENTIALS?|PRIVATE[_-]?KEY|AUTH)([_-]|$)",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,})$")
# Environment that selects GPUs for the container runtime: modelctl's MODELCTL_GPUS does that.
RUNTIME_ENV = {"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Dropped:
    """One thing from the compose file that is not in the profile, and why."""

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


# --- reading the compose file ----------------------------------------------------------------


def import_compose(
    text: str, *, gpu_total_gib: float, source: str = "docker-compose.yml", variables: dict[str, str] | None = None
) -> ImportResult:
    """Profiles for every vLLM service in a compose file's text. Raises UsageError if unreadable.

    `variables` resolves `${VAR}` the way compose would (its `.env`); `${VAR:-default}` falls back
    to its default; anything left unresolved is reported, never guessed.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML: {exc}", hint="fix the YAML syntax") from None
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not services:
        raise UsageError(f"{source}: no 'services' mapping: not a compose file")
    result = ImportResult(source=source, gpu_total_gib=gpu_total_gib)
    taken: set[str] = set()
    for service, spec in services.items():
        service = str(service)
        if not isinstance(spec, dict):
            result.skipped.append(Dropped(service, "service", "not a mapping"))
            continue
        reader = _ServiceReader(service, spec, gpu_total_gib, variables or {}, result)
        if not reader.is_vllm():
            result.ignored.append(service)
            result.dropped = [d for d in result.dropped if d.service != service]
            continue
        imported = reader.read(taken)
        if imported is not None:
            taken.add(imported.profile.name)
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


class _ServiceReader:
    def __init__(self, service: str, spec: dict, gpu_total_gib: float, variables: dict[str, str], result: ImportResult):
        self.service = service
        self.spec = spec
        self.gpu_total_gib = gpu_total_gib
        self.variables = variables
        self.result = result
        self.assumptions: list[str] = []
        self.inline_env: list[str] = []
        self.image = self._text(spec.get("image") or "", "image")
        self.argv = self._argv()

    # -- helpers --------------------------------------------------------------------------

    def drop(self, what: str, why: str) -> None:
        self.result.dropped.append(Dropped(self.service, what, why))

    def _text(self, value: Any, where: str) -> str:
        """A compose string with ${VAR} resolved as compose would; unresolved ones reported."""
        text = str(value)
        unresolved: list[str] = []

        def replace(match: re.Match) -> str:
            if match.group(0) == "$$":
                return "$"
            expr = match.group("braced") if match.group("braced") is not None else match.group("bare")
            name, op, default = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-?+]?)(.*)", expr, re.S).groups()
            value = self.variables.get(name)
            unset = value is None or (op.startswith(":") and value == "")
            if op in (":-", "-") and unset:
                return default
            if op in (":+", "+"):
                return "" if unset else default
            if value is None:
                unresolved.append(name)
                return match.group(0)
            return value

        text = _VARIABLE.sub(replace, text)
        for name in unresolved:
            self.drop(f"${{{name}}} in {where}", "variable not set (give its .env next to the compose file)")
        return text

    def _tokens(self, value: Any, where: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, list):
            return [self._text(item, where) for item in value]
        try:
            return shlex.split(self._text(value, where))
        except ValueError as exc:
            self.drop(f"{where} {value!r}", f"cannot be split like a shell would ({exc})")
            return []

    def _argv(self) -> list[str]:
        return [*self._tokens(self.spec.get("entrypoint"), "entrypoint"),
                *self._tokens(self.spec.get("command"), "command")]  # fmt: skip

    def is_vllm(self) -> bool:
        return is_vllm_service(self.image, self.argv)

    # -- the service ----------------------------------------------------------------------

    def read(self, taken: set[str]) -> Imported | None:
        args = self._vllm_args()
        if args is None:
            return None
        flags = _Flags(args, self)
        model_flag = flags.take("--model")
        model = flags.positional_model or model_flag
        if model_flag and flags.positional_model and model_flag != flags.positional_model:
            self.drop(f"--model {model_flag}", f"the positional model {flags.positional_model} is what vLLM serves")
        if not model:
            self.result.skipped.append(Dropped(self.service, "service", "no model (--model or `vllm serve MODEL`)"))
            return None
        image = self.image
        if not image:
            self.result.skipped.append(Dropped(self.service, "service", "no image: modelctl runs a pinned image"))
            return None
        if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
            image = f"{image}:latest"
            self.assumptions.append(f"image had no tag: wrote {image}; pin the version you run (e.g. v0.11.1)")

        served = flags.take_all("--served-model-name")
        max_model_len = self._whole(flags.take("--max-model-len"), "--max-model-len", ASSUMED_MAX_MODEL_LEN,
                                    "vLLM would use the model's full context")  # fmt: skip
        max_num_seqs = self._whole(flags.take("--max-num-seqs"), "--max-num-seqs", ASSUMED_MAX_NUM_SEQS,
                                   "vLLM's default (256) claims far more KV cache")  # fmt: skip
        vram_gib = self._vram(flags.take("--gpu-memory-utilization"))
        container_port = self._whole(flags.take("--port"), "--port", VLLM_DEFAULT_PORT, None)
        if flags.take("--host") is not None:
            self.drop("--host", "modelctl sets it (the server listens on 0.0.0.0 inside; published on MODELCTL_HOST)")
        for token in _redact(flags.positionals):
            self.drop(f"argument {token!r}", "not a flag vLLM's server takes here")
        for flag in flags.take_secrets():
            self.drop(flag, "looks like a secret: never copied into a profile")

        name = profile_name(self.service)
        base, n = name, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        data: dict[str, Any] = {
            "name": name,
            "model": model,
            "image": image,
            "vram_gib": vram_gib,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "vllm_args": flags.rest,
            "env": self._environment(),
            "port": self._port(container_port),
        }
        served_names = [s for part in served for s in part.split(",") if s] or [model]
        data["served_model_name"] = served_names[0]
        aliases = [alias for alias in dict.fromkeys(served_names[1:]) if alias not in (name, served_names[0])]
        if aliases:
            data["aliases"] = aliases
        self._report_other_keys(model, flags.rest)
        try:
            profile = Profile.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'profile'}: {e['msg']}" for e in exc.errors())
            self.result.skipped.append(Dropped(self.service, "service", f"no valid profile: {problems}"))
            return None
        return Imported(self.service, profile, self.assumptions)

    def _vllm_args(self) -> list[str] | None:
        """vLLM's own arguments: what follows `vllm serve` or the api_server module."""
        argv = list(self.argv)
        # `sh -c "pip install x && vllm serve ..."`: read the script; keep the vLLM step only.
        for i, token in enumerate(argv):
            if Path(token).name not in SHELLS:
                continue
            j = i + 1
            while j < len(argv) and argv[j].startswith("-") and not argv[j].startswith("--"):
                j += 1
            if any("c" in option for option in argv[i + 1 : j]) and j < len(argv):
                # One script word is the usual form; a command string after `entrypoint: sh -c` is
                # split by compose into words, which the user meant as one script.
                script = argv[j] if " " in argv[j] or j == len(argv) - 1 else shlex.join(argv[j:])
                argv = self._script_step(script)
            break
        for i, token in enumerate(argv):
            if Path(token).name == "vllm" and argv[i + 1 : i + 2] == ["serve"]:
                self._inline_env(argv[:i])
                return argv[i + 2 :]
            if token.startswith("vllm.entrypoints.openai"):
                self._inline_env(argv[:i])
                return argv[i + 1 :]
        if self.image and is_vllm_service(self.image, []):
            # The image's entrypoint is the server: `command` holds its arguments.
            return argv
        self.result.skipped.append(Dropped(self.service, "command", "no `vllm serve` or api_server in it"))
        return None

    def _inline_env(self, words: list[str]) -> None:
        """`VAR=value vllm serve ...`: the assignments are the server's environment too."""
        self.inline_env = [w for w in words if re.match(r"[A-Za-z_][A-Za-z0-9_]*=", w)]

    def _script_step(self, script: str) -> list[str]:
        lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError as exc:
            self.drop("shell script", f"cannot be split like a shell would ({exc})")
            return []
        steps: list[list[str]] = [[]]
        for token in tokens:
            if token and set(token) <= set(";&|"):
                steps.append([])
            else:
                steps[-1].append(token)
        steps = [step for step in steps if step]
        chosen = next((s for s in steps if any(m in " ".join(s) for m in COMMAND_MARKERS)), [])
        for step in steps:
            if step is not chosen:
                words = _redact([w for w in step if w != "exec"])
                self.drop(f"shell step {' '.join(words)!r}", "modelctl runs vLLM only; bake other steps into the image")
        return [w for w in chosen if w != "exec"]

    def _whole(self, value: str | None, flag: str, default: int, why_default: str | None) -> int:
        if value is None:
            if why_default:
                self.assumptions.append(f"{flag} not set: assumed {default} ({why_default}); tune it")
            return default
        parsed = _human_int(value)
        if parsed is None or parsed <= 0:
            self.drop(f"{flag} {value}", f"not a whole number; assumed {default}")
            return default
        return parsed

    def _vram(self, value: str | None) -> float:
        total = self.gpu_total_gib
        utilization = VLLM_DEFAULT_UTILIZATION
        if value is not None:
            try:
                utilization = float(value)
                if not 0 < utilization <= 1:
                    raise ValueError
            except ValueError:
                self.drop(f"--gpu-memory-utilization {value}",
                          f"not a fraction in (0, 1]; assumed vLLM's {VLLM_DEFAULT_UTILIZATION}")  # fmt: skip
                utilization = VLLM_DEFAULT_UTILIZATION
        # Round DOWN to 0.1 GiB: modelctl rounds the utilization back UP, so the plan never asks
        # for more than the compose file did.
        vram = math.floor(round(utilization * total * 10, 6)) / 10
        source = f"vLLM's default utilization {utilization:g}"
        if value is not None:
            source = f"--gpu-memory-utilization {utilization:g}"
        self.assumptions.append(
            f"vram_gib {vram:g} is an ESTIMATE: {source} x {total:g} GiB assumed GPU total (--gpu-total-gib); "
            "measure it and set what the model needs"
        )
        return vram

    def _environment(self) -> dict[str, str]:
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
        pairs += [(key, value) for key, _, value in (w.partition("=") for w in self.inline_env)]
        env: dict[str, str] = {}
        for key, value in pairs:
            if SECRET_NAME.search(key):
                self.drop(f"environment {key}", "looks like a secret: never copied into a profile "
                          "(modelctl passes HF_TOKEN / MODELCTL_HF_TOKEN from its own environment)")  # fmt: skip
                continue
            if key in RUNTIME_ENV:
                self.drop(f"environment {key}", "GPUs come from MODELCTL_GPUS")
                continue
            if value is None:
                self.drop(f"environment {key}", "no value (compose passes the host's): set it in the profile's env")
                continue
            value = self._text(value, f"environment {key}")
            if SECRET_VALUE.match(value):
                self.drop(f"environment {key}", "its value looks like a secret: never copied into a profile")
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
                self.drop(f"ports {entry!r}", "cannot read it (ranges and random host ports have no profile form)")
                continue
            host_ip, host_port, target = parsed
            if target != container_port:
                self.drop(f"ports {entry!r}", f"vLLM listens on {container_port}; only that port is published")
                continue
            if host_ip and host_ip not in ("127.0.0.1", "localhost"):
                self.drop(f"ports host address {host_ip}", "modelctl publishes on MODELCTL_HOST (127.0.0.1 by default)")
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
                for volume in value or []:
                    target = _volume_target(volume) or ""
                    if target.rstrip("/") == "/root/.cache/huggingface":
                        source = _short_repr(volume).split(":", 1)[0]
                        self.drop(f"volumes {_short_repr(volume)}", "modelctl mounts MODELCTL_HF_CACHE there: "
                                  f"set MODELCTL_HF_CACHE={source} to keep the weights already downloaded")  # fmt: skip
                        continue
                    self.drop(f"volumes {_short_repr(volume)}", DROP_REASONS["volumes"])
                    if target:
                        lost_paths.append(target.rstrip("/"))
                continue
            self.drop(str(key), DROP_REASONS.get(str(key), "no profile key for it"))
        for path in lost_paths:
            for where, value in (("model", model), *(("vllm_args", a) for a in vllm_args)):
                if value == path or value.startswith(path + "/"):
                    self.drop(f"{where} {value}", f"lies in volume {path}, which is not carried over: "
                              "put it in the HF cache or bake it into the image")  # fmt: skip


class _Flags:
    """vLLM's arguments, with the ones modelctl manages taken out and the rest kept verbatim."""

    def __init__(self, args: list[str], reader: _ServiceReader) -> None:
        self.reader = reader
        self.items: list[tuple[str, str | None, list[str]]] = []  # (flag, value, original tokens)
        self.positionals: list[str] = []
        self.positional_model: str | None = None
        i = 0
        while i < len(args):
            token = args[i]
            if token.startswith("--"):
                flag, sep, value = token.partition("=")
                if sep:
                    self.items.append((flag, value, [token]))
                elif flag not in BOOLEAN_FLAGS and i + 1 < len(args) and not _is_flag(args[i + 1]):
                    self.items.append((flag, args[i + 1], [token, args[i + 1]]))
                    i += 1
                    # `--served-model-name a b`: nargs='+'
                    while flag == "--served-model-name" and i + 1 < len(args) and not _is_flag(args[i + 1]):
                        self.items.append((flag, args[i + 1], [args[i + 1]]))
                        i += 1
                else:
                    self.items.append((flag, None, [token]))
            elif token.startswith("-") and len(token) > 1:
                # Short flags (-tp 2): kept verbatim with their value.
                if i + 1 < len(args) and not _is_flag(args[i + 1]):
                    self.items.append((token, args[i + 1], [token, args[i + 1]]))
                    i += 1
                else:
                    self.items.append((token, None, [token]))
            elif self.positional_model is None and not self.items:
                self.positional_model = token  # `vllm serve MODEL ...`
            else:
                self.positionals.append(token)
            i += 1

    def take_all(self, flag: str) -> list[str]:
        found = [value for f, value, _ in self.items if f == flag and value is not None]
        self.items = [item for item in self.items if item[0] != flag]
        return found

    def take(self, flag: str) -> str | None:
        found = self.take_all(flag)
        if len(found) > 1:
            self.reader.drop(f"{flag} {found[0]}", f"given again later as {found[-1]}; the last one counts")
        return found[-1] if found else None

    def take_secrets(self) -> list[str]:
        """Remove flags that carry a credential (--api-key, --hf-token, a token-shaped value)."""
        secret = [(f, v, t) for f, v, t in self.items
                  if SECRET_NAME.search(f.lstrip("-")) or (v is not None and SECRET_VALUE.match(v))]  # fmt: skip
        self.items = [item for item in self.items if item not in secret]
        return [flag for flag, _, _ in secret]

    @property
    def rest(self) -> list[str]:
        return [token for _, _, tokens in self.items for token in tokens]


def _redact(words: list[str]) -> list[str]:
    """Words for a report: credentials (a token-shaped word, KEY=VALUE or the value after a
    secret-named flag) shown as ***."""
    shown: list[str] = []
    for word in words:
        name, sep, value = word.partition("=")
        after_secret_flag = bool(shown) and shown[-1].startswith("-") and SECRET_NAME.search(shown[-1].lstrip("-"))
        if SECRET_VALUE.match(word) or after_secret_flag:
            shown.append("***")
        elif sep and (SECRET_NAME.search(name.lstrip("-")) or SECRET_VALUE.match(value)):
            shown.append(f"{name}=***")
        else:
            shown.append(word)
    return shown


def _is_flag(token: str) -> bool:
    return token.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", token)


def _human_int(value: str) -> int | None:
    """vLLM's forms: 8192, 8k (x1000), 8K (x1024), 1m / 1M."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)([kKmMgG]?)\s*", value)
    if not match:
        return None
    number, suffix = float(match.group(1)), match.group(2)
    scale = {"": 1, "k": 1000, "K": 1024, "m": 10**6, "M": 2**20, "g": 10**9, "G": 2**30}[suffix]
    result = number * scale
    return int(result) if result == int(result) else None


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


def _published(entry: Any, resolve) -> tuple[str | None, int | None, int] | None:
    """(host address, host port or None, container port) of one `ports` entry, or None."""
    if isinstance(entry, dict):
        try:
            target = int(entry["target"])
            published = entry.get("published")
            host_port = int(published) if published not in (None, "") else None
        except (KeyError, TypeError, ValueError):
            return None
        return entry.get("host_ip"), host_port, target
    text = resolve(entry, "ports").split("/", 1)[0]
    # [host_ip:][host_port:]container_port; an IPv6 host address comes in brackets.
    match = re.fullmatch(r"(?:(\[[^\]]+\]|[^:]+):)??(?:(\d*):)?(\d+)", text)
    if not match:
        return None
    host_ip, host_port, target = match.groups()
    return (host_ip.strip("[]") if host_ip else None), (int(host_port) if host_port else None), int(target)


def _volume_target(volume: Any) -> str | None:
    if isinstance(volume, dict):
        return volume.get("target")
    parts = str(volume).split(":")
    return parts[1] if len(parts) >= 2 else parts[0]


def _short_repr(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value.get('source', '')}:{value.get('target', '')}"
    return str(value)


# --- writing the profiles ----------------------------------------------------------------------

PROFILE_KEY_ORDER = ["name", "model", "image", "served_model_name", "aliases", "vram_gib", "max_model_len",
                     "max_num_seqs", "vllm_args", "env", "port"]  # fmt: skip


def render_profile(item: Imported, result: ImportResult) -> str:
    """The profile file: a header saying where it came from and what to check, then the YAML."""
    header = [
        f"# Imported by `modelctl import-compose` from {result.source}, service '{item.service}'.",
        "# Check before the first switch (README 'Profiles'):",
        *(f"#   - {line}" for line in item.assumptions),
    ]
    dropped = result.dropped_for(item.service)
    if dropped:
        header.append("# Not carried over from the compose file:")
        header += [f"#   - {d.what}: {d.why}" for d in dropped]
    data = item.profile.model_dump(exclude_none=True)
    ordered = {key: data[key] for key in PROFILE_KEY_ORDER if key in data and (key != "aliases" or data[key])}
    body = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
    return "\n".join(header) + "\n" + body


def planned_files(result: ImportResult, out_dir: Path) -> list[Path]:
    return [out_dir / f"{item.profile.name}.yaml" for item in result.imported]


def write_profiles(result: ImportResult, out_dir: Path, *, force: bool) -> list[Path]:
    """Write every imported profile into `out_dir`, all or nothing, and load each one back.

    Refuses (UsageError, exit 2) before writing anything when a file exists and `force` is not
    set, or when a name, served name or alias is already claimed by another profile there.
    """
    paths = planned_files(result, out_dir)
    existing = [path for path in paths if path.exists() or path.with_suffix(".yml").exists()]
    if existing and not force:
        names = ", ".join(str(p if p.exists() else p.with_suffix(".yml")) for p in existing)
        raise UsageError(f"would overwrite {names}", hint="pass --force to replace, or --out another directory")
    _check_names(result, out_dir, set(paths) | {p.with_suffix(".yml") for p in paths})
    out_dir.mkdir(parents=True, exist_ok=True)
    for item, path in zip(result.imported, paths, strict=True):
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(render_profile(item, result), encoding="utf-8")
        partial.replace(path)
        load_profile(path)  # the written file must be a valid profile, exactly as modelctl reads it
    return paths


def _check_names(result: ImportResult, out_dir: Path, replaced: set[Path]) -> None:
    owners: dict[str, str] = {}
    if out_dir.is_dir():
        for path in sorted([*out_dir.glob("*.yaml"), *out_dir.glob("*.yml")]):
            if path in replaced:
                continue
            try:
                other = load_profile(path)
            except UsageError:
                continue  # an invalid neighbour is `modelctl list`'s to report, not ours
            for name in other.names:
                owners.setdefault(name, str(path))
    for item in result.imported:
        for name in item.profile.names:
            if name in owners:
                raise UsageError(
                    f"service '{item.service}': name '{name}' is already used by {owners[name]}",
                    hint="import into another directory (--out), or rename the service in the compose file",
                )
            owners[name] = f"the imported service '{item.service}'"


# --- the report ---------------------------------------------------------------------------------


def result_json(result: ImportResult, paths: list[Path]) -> dict[str, Any]:
    return {
        "source": result.source,
        "gpu_total_gib": result.gpu_total_gib,
        "written": [
            {"service": item.service, "profile": item.profile.name, "file": str(path),
             "vram_gib": item.profile.vram_gib, "assumptions": item.assumptions}
            for item, path in zip(result.imported, paths, strict=True)
        ],  # fmt: skip
        "dropped": [{"service": d.service, "what": d.what, "why": d.why} for d in result.dropped],
        "skipped": [{"service": d.service, "why": d.why} for d in result.skipped],
        "ignored": result.ignored,
    }


def result_lines(result: ImportResult, paths: list[Path]) -> list[str]:
    """The report for people: what was written, what to check, what was left behind."""
    lines = []
    for item, path in zip(result.imported, paths, strict=True):
        lines.append(f"wrote {path} from service '{item.service}' (vram_gib {item.profile.vram_gib:g}, estimated)")
        lines += [f"  check: {line}" for line in item.assumptions]
        lines += [f"  not carried over: {d.what}: {d.why}" for d in result.dropped_for(item.service)]
    for d in result.skipped:
        lines.append(f"skipped service '{d.service}': {d.why}")
    if result.ignored:
        lines.append(f"ignored (not vLLM servers): {', '.join(result.ignored)}")
    return lines
