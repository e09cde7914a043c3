"""Reading a vLLM server's command line as a user wrote it (compose `entrypoint` + `command`).

Pure: words in, vLLM's arguments out; nothing is ever run. (How modelctl WRITES a server's command
line is `modelctl/vllm/flags.py`.)

- `server_command(argv)` finds vLLM's own arguments: what follows `vllm serve` or the
  `vllm.entrypoints.openai.*` module, inside a `sh -c` / `bash -c` script too (the vLLM step is
  kept, every other step is reported), or the whole argv when the image's entrypoint is the server.
  `VAR=value vllm serve ...` assignments are returned as the server's environment.
- `VllmArgs(args)` splits those arguments like vLLM's argparse: `--flag value`, `--flag=value`,
  boolean flags (BOOLEAN_FLAGS never take the next word), `--served-model-name a b` (nargs='+'),
  short flags with their value (`-tp 2`, kept verbatim), the positional model of `vllm serve MODEL`.
  `take(flag)` removes a flag modelctl manages and returns its LAST value (argparse's rule); each
  earlier value is noted in `notes`.
- Credentials (by name or value, `modelctl.secrets`) are never returned in a note: they are masked.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .secrets import is_secret_name, is_secret_value, redact_words
from .vllm import COMMAND_MARKERS

SHELLS = {"sh", "bash", "dash", "ash", "zsh"}

# vLLM's boolean flags that users put in compose files: they never take the next token as value.
BOOLEAN_FLAGS = frozenset(
    {
        "--trust-remote-code",
        "--enforce-eager",
        "--enable-prefix-caching",
        "--no-enable-prefix-caching",
        "--enable-chunked-prefill",
        "--no-enable-chunked-prefill",
        "--disable-log-requests",
        "--disable-log-stats",
        "--enable-log-requests",
        "--enable-auto-tool-choice",
        "--enable-sleep-mode",
        "--disable-custom-all-reduce",
        "--disable-frontend-multiprocessing",
        "--skip-tokenizer-init",
        "--disable-sliding-window",
        "--disable-cascade-attn",
        "--enable-prompt-tokens-details",
        "--enable-server-load-tracking",
        "--disable-fastapi-docs",
        "--async-scheduling",
        "--no-async-scheduling",
        "--enable-expert-parallel",
        "--headless",
        "--use-v2-block-manager",
        "--disable-mm-preprocessor-cache",
        "--enable-lora",
        "--return-tokens-as-token-ids",
        "--enable-request-id-headers",
        "--disable-uvicorn-access-log",
    }
)

Note = tuple[str, str]  # (what was left out, why)


def is_flag(token: str) -> bool:
    """`-x` / `--x`, but not a negative number (`--seed -1` takes `-1` as its value)."""
    return token.startswith("-") and len(token) > 1 and not re.fullmatch(r"-\d+(\.\d+)?", token)


def human_int(value: str) -> int | None:
    """vLLM's forms: 8192, 8k (x1000), 8K (x1024), 1m / 1M; None when not a whole number."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)([kKmMgG]?)\s*", value)
    if not match:
        return None
    number, suffix = float(match.group(1)), match.group(2)
    scale = {"": 1, "k": 1000, "K": 1024, "m": 10**6, "M": 2**20, "g": 10**9, "G": 2**30}[suffix]
    result = number * scale
    return int(result) if result == int(result) else None


def split_words(text: str) -> list[str]:
    """A compose string command split the way compose (and a shell) would. Raises ValueError."""
    return shlex.split(text)


@dataclass
class ServerCommand:
    args: list[str] | None  # vLLM's own arguments; None when the argv starts no vLLM server
    env: list[str] = field(default_factory=list)  # `VAR=value` words before `vllm serve`
    notes: list[Note] = field(default_factory=list)


def server_command(argv: list[str], *, image_is_server: bool) -> ServerCommand:
    """vLLM's own arguments in a container's argv (entrypoint + command); see the module docstring."""
    notes: list[Note] = []
    argv = list(argv)
    # `sh -c "pip install x && vllm serve ..."`: read the script; keep the vLLM step only.
    for i, token in enumerate(argv):
        if PurePosixPath(token).name not in SHELLS:
            continue
        j = i + 1
        while j < len(argv) and argv[j].startswith("-") and not argv[j].startswith("--"):
            j += 1
        if any("c" in option for option in argv[i + 1 : j]) and j < len(argv):
            # One script word is the usual form; a command string after `entrypoint: sh -c` is
            # split by compose into words, which the user meant as one script.
            script = argv[j] if " " in argv[j] or j == len(argv) - 1 else shlex.join(argv[j:])
            argv = _script_step(script, notes)
        break
    for i, token in enumerate(argv):
        if PurePosixPath(token).name == "vllm" and argv[i + 1 : i + 2] == ["serve"]:
            return ServerCommand(argv[i + 2 :], _assignments(argv[:i]), notes)
        if token.startswith("vllm.entrypoints.openai"):
            return ServerCommand(argv[i + 1 :], _assignments(argv[:i]), notes)
    if image_is_server:
        return ServerCommand(argv, [], notes)  # the image's entrypoint is the server
    return ServerCommand(None, [], notes)


def _assignments(words: list[str]) -> list[str]:
    return [w for w in words if re.match(r"[A-Za-z_][A-Za-z0-9_]*=", w)]


def _script_step(script: str, notes: list[Note]) -> list[str]:
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as exc:
        notes.append(("shell script", f"cannot be split like a shell would ({exc})"))
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
            words = redact_words(w for w in step if w != "exec")
            why = "modelctl runs vLLM only; bake other steps into the image"
            notes.append((f"shell step {' '.join(words)!r}", why))
    return [w for w in chosen if w != "exec"]


class VllmArgs:
    """vLLM's arguments, with the ones modelctl manages taken out and the rest kept verbatim."""

    def __init__(self, args: list[str]) -> None:
        self.items: list[tuple[str, str | None, list[str]]] = []  # (flag, value, original tokens)
        self.positionals: list[str] = []
        self.positional_model: str | None = None
        self.notes: list[Note] = []
        i = 0
        while i < len(args):
            token = args[i]
            following = args[i + 1] if i + 1 < len(args) else None
            if token.startswith("--"):
                flag, sep, value = token.partition("=")
                if sep:
                    self.items.append((flag, value, [token]))
                elif flag not in BOOLEAN_FLAGS and following is not None and not is_flag(following):
                    self.items.append((flag, following, [token, following]))
                    i += 1
                    # `--served-model-name a b`: nargs='+'
                    while flag == "--served-model-name" and i + 1 < len(args) and not is_flag(args[i + 1]):
                        self.items.append((flag, args[i + 1], [args[i + 1]]))
                        i += 1
                else:
                    self.items.append((flag, None, [token]))
            elif is_flag(token):
                # Short flags (`-tp 2`, `-q awq`) kept verbatim with their value; `-O3` and
                # `-tp=2` carry theirs.
                attached = "=" in token or re.fullmatch(r"-O\d", token)
                if not attached and following is not None and not is_flag(following):
                    self.items.append((token, following, [token, following]))
                    i += 1
                else:
                    self.items.append((token.partition("=")[0], token.partition("=")[2] or None, [token]))
            elif self.positional_model is None and not self.items:
                self.positional_model = token  # `vllm serve MODEL ...`
            else:
                self.positionals.append(token)
            i += 1

    def take_all(self, flag: str) -> list[str]:
        """Every value of `flag`, in order, and the flag removed from the rest."""
        found = [value for f, value, _ in self.items if f == flag and value is not None]
        self.items = [item for item in self.items if item[0] != flag]
        return found

    def take(self, flag: str) -> str | None:
        """The last value of `flag` (argparse's rule), removed; earlier ones are noted."""
        found = self.take_all(flag)
        for earlier in found[:-1]:
            shown, last = redact_words([flag, earlier]), redact_words([flag, found[-1]])[1]
            self.notes.append((" ".join(shown), f"given again later as {last}; the last one counts"))
        return found[-1] if found else None

    def take_secrets(self) -> list[str]:
        """Remove flags that carry a credential (`--api-key X`, `--hf-token=X`, a token-shaped
        value); returns their names. A known boolean flag (`--return-tokens-as-token-ids`) is none."""
        secret = [
            (f, v, t)
            for f, v, t in self.items
            if (is_secret_name(f) and f not in BOOLEAN_FLAGS) or (v is not None and is_secret_value(v))
        ]
        self.items = [item for item in self.items if item not in secret]
        return [flag for flag, _, _ in secret]

    @property
    def rest(self) -> list[str]:
        return [token for _, _, tokens in self.items for token in tokens]
