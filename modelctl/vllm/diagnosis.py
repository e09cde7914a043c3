"""Name the cause of a failed vLLM start from its log, and say what to do. Pure logic.

The patterns are vLLM's own messages (0.11 to 0.33, quoted in shared/CONTEXT.md); vLLM wraps
each of them in `RuntimeError: Engine core initialization failed`, so the root cause is
searched first and the wrapper is only the fallback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    advice: str
    evidence: str = ""  # the log line the cause was read from


def _free_memory(m: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        cause=f"vLLM found only {m['free']} of {m['total']} GiB free at start-up, "
        f"less than the {m['util']} of the GPU it was asked to take",
        advice="another process holds GPU memory (see `modelctl gpu` or nvidia-smi) - stop it, "
        "or lower vram_gib in the profile",
    )


def _max_seq_len(m: re.Match[str]) -> Diagnosis:
    estimate = m["estimate"]
    return Diagnosis(
        cause=f"the KV cache cannot hold one request of max_model_len {m['len']}"
        + (f"; vLLM estimates the maximum model length at {estimate}" if estimate else ""),
        advice=(f"set max_model_len to {estimate} or less" if estimate else "lower max_model_len")
        + ", or raise vram_gib in the profile",
    )


def _fixed(cause: str, advice: str) -> Callable[[re.Match[str]], Diagnosis]:
    return lambda m: Diagnosis(cause=cause.format(**m.groupdict()), advice=advice.format(**m.groupdict()))


# (pattern, diagnosis) in order of precedence: the most specific root causes first.
_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Diagnosis]]] = [
    (
        re.compile(
            r"Free memory on device(?: \S+)? \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\)"
            r".*?less than desired GPU memory utilization \((?P<util>[\d.]+)"
        ),
        _free_memory,
    ),
    (
        re.compile(r"max seq len \((?P<len>\d+)\)(?:.*?estimated maximum model length is (?P<estimate>\d+))?", re.S),
        _max_seq_len,
    ),
    (
        re.compile(r"No available memory for the cache blocks"),
        _fixed(
            "no GPU memory was left for the KV cache after loading the weights",
            "raise vram_gib (the utilization) or lower max_model_len / max_num_seqs in the profile",
        ),
    ),
    (
        re.compile(r"CUDA out of memory|OutOfMemoryError"),
        _fixed(
            "CUDA ran out of memory while the model loaded or profiled",
            "lower max_num_seqs or max_model_len, add --enforce-eager to vllm_args, "
            "or free the GPU of other processes (`modelctl gpu`)",
        ),
    ),
    (
        re.compile(r"Cannot access gated repo|GatedRepoError|401 Client Error"),
        _fixed(
            "the model is gated on Hugging Face and no valid token was given",
            "accept the model's licence on huggingface.co and export HF_TOKEN before the switch",
        ),
    ),
    (
        re.compile(r"trust[_-]remote[_-]code"),
        _fixed(
            "the model needs its own code from the Hugging Face repository",
            "add --trust-remote-code to vllm_args in the profile",
        ),
    ),
    (
        re.compile(r"Model architectures? \[(?P<arch>[^\]]*)\] (?:are|is) not supported"),
        _fixed(
            "this vLLM image does not support the architecture {arch}",
            "pin a newer vllm/vllm-openai tag in the profile's image",
        ),
    ),
    (
        re.compile(r"port is already allocated|address already in use", re.I),
        _fixed(
            "the port is already in use on the host",
            "stop what listens there (ss -ltnp) or give the profile another port",
        ),
    ),
    (
        re.compile(r"No such image|pull access denied|manifest unknown|not found: manifest", re.I),
        _fixed(
            "the image could not be found locally or pulled",
            "check the image name and tag in the profile, and that the registry is reachable "
            "(or `docker pull` it first)",
        ),
    ),
]

_ERROR_LINE = re.compile(r"^\S*(Error|Exception)\b.*|.*\b\w+Error: .*", re.M)


def diagnose(text: str) -> Diagnosis | None:
    """The known cause in a container log or engine error, or the last error line, or None."""
    for pattern, explain in _RULES:
        match = pattern.search(text)
        if match:
            found = explain(match)
            return Diagnosis(found.cause, found.advice, evidence=_line_at(text, match.start()))
    errors = [m.group(0).strip() for m in _ERROR_LINE.finditer(text)]
    # vLLM's wrapper comes last and says nothing; the line before it is the root cause.
    root = [line for line in errors if "Engine core initialization failed" not in line] or errors
    if root:
        return Diagnosis(cause=root[-1], advice="see `modelctl logs` for the whole log", evidence=root[-1])
    return None


def _line_at(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start : end if end >= 0 else len(text)].strip()
