"""Name the cause of a failed vLLM start from its log, and say what to do. Pure logic.

Every pattern is a text that vLLM 0.11.1 or 0.33.0 (or the transformers, huggingface_hub, torch
and argparse they run on) prints; tests/vllm_corpus/ holds each one with the source line it was
read from, and the tests hold every rule to that corpus - each failure named, and nothing named
on a normal start. vLLM wraps every start-up failure in `RuntimeError: Engine core
initialization failed`, so the root causes are searched first and the wrapper is the fallback.

Two entry points: `diagnose(log)` for a container that exited, `diagnose_timeout(log)` for one
that never answered (a named failure, else what the log shows it was doing when the wait ended,
else its last lines - never a guess). `describe_progress(log)` is that middle step alone.
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
    key: str = ""  # which rule named it (the `cause` of tests/vllm_corpus/*.yaml), "" if none


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# vLLM's own prefixes: '(EngineCore_DP0 pid=245) ' (0.11 decorates stdout/stderr, 0.33 its log format)
# and '<LEVEL> <MM-DD HH:MM:SS> [<file>:<line>] ' (vllm/logger.py).
_PREFIX = re.compile(r"^(?:\(\w+ pid=\d+\)\s*)?(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d [\d:]+ \[[^\]]*\] )?")


def _clean(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def _message(line: str) -> str:
    """A log line without vLLM's process and logger prefixes."""
    return _PREFIX.sub("", line.strip(), count=1).strip()


# --- rules ---------------------------------------------------------------------------------


def _free_memory(m: re.Match[str], text: str) -> Diagnosis:
    return Diagnosis(
        cause=f"vLLM found only {m['free']} of {m['total']} GiB free at start-up, less than the {m['util']} "
        f"of the GPU it was asked to take ({m['need']} GiB)",
        advice="another process holds GPU memory (see `modelctl gpu` or nvidia-smi) - stop it, "
        "or lower vram_gib in the profile",
    )


def _max_seq_len(m: re.Match[str], text: str) -> Diagnosis:
    estimate = m["estimate"]
    return Diagnosis(
        cause=f"the KV cache cannot hold one request of max_model_len {m['len']}"
        + (f"; vLLM estimates the maximum model length at {estimate}" if estimate else ""),
        advice=(f"set max_model_len to {estimate} or less" if estimate else "lower max_model_len")
        + ", or raise vram_gib in the profile",
    )


_CUDA_ERROR_ADVICE = {
    "an illegal memory access was encountered": "a GPU kernel of this image faulted on this model and GPU: "
    "add --enforce-eager to vllm_args (no CUDA graphs, no torch.compile), or pin another vllm/vllm-openai tag; "
    "if it repeats, report it to vLLM with the log",
    "no kernel image is available for execution on the device": "this image's CUDA kernels were not built for "
    "this GPU's architecture: pin a vllm/vllm-openai tag built for it (a newer one for a new GPU)",
}


def _cuda_error(m: re.Match[str], text: str) -> Diagnosis:
    what = m["what"].strip().rstrip(".")
    return Diagnosis(
        cause=f"CUDA failed in the engine: {what}",
        advice=_CUDA_ERROR_ADVICE.get(
            what,
            "a CUDA error, not a memory shortage: check the driver with nvidia-smi, try --enforce-eager in "
            "vllm_args or another vllm/vllm-openai tag; `modelctl logs` shows the traceback",
        ),
    )


_HUB_REPO = re.compile(
    r"huggingface\.co/(?!models\b|docs\b)(?:api/models/)?(?P<repo>[\w.-]+/[\w.-]+?)(?:/|\.?\s|\.?$)", re.M
)


def _repo(text: str) -> str:
    found = _HUB_REPO.search(text)
    return f" {found['repo']}" if found else ""


def _gated(m: re.Match[str], text: str) -> Diagnosis:
    return Diagnosis(
        cause=f"the model{_repo(text)} is gated on Hugging Face and the token given (if any) has no access",
        advice="accept the model's licence on its huggingface.co page, then export HF_TOKEN (a token of that "
        "account) before the switch",
    )


def _not_found(m: re.Match[str], text: str) -> Diagnosis:
    return Diagnosis(
        cause=f"Hugging Face has no repository{_repo(text)} this start could see: a misspelt model id, "
        "or a private repository and no token",
        advice="check `model` in the profile (the Hub id, e.g. org/name); if the repository is private, "
        "export HF_TOKEN with access to it before the switch",
    )


def _arch_removed(m: re.Match[str], text: str) -> Diagnosis:
    until = m["until"]
    return Diagnosis(
        cause=f"vLLM dropped the architecture {m['arch']}: it was supported until v{until}",
        advice=f"pin an older vllm/vllm-openai tag, v{until} at most, in the profile's image, or choose "
        "another model - no newer tag brings it back",
    )


def _arch_plugin(m: re.Match[str], text: str) -> Diagnosis:
    return Diagnosis(
        cause=f"vLLM moved the architecture {m['arch']} out of its tree: it needs the plugin {m['url']}",
        advice=f"use an image with that plugin installed (build one FROM this tag that pip-installs {m['url']}) "
        "as the profile's image",
    )


_FLAG = re.compile(r"^--?[A-Za-z][\w.-]*")


def _unknown_flag(m: re.Match[str], text: str) -> Diagnosis:
    words = m["args"].split()
    flags = [f.group(0) for w in words if (f := _FLAG.match(w))] or words
    named = " ".join(flags)
    return Diagnosis(
        cause=f"this image's vLLM does not know {named} (argparse: unrecognized arguments)",
        advice=f"remove {named} from vllm_args in the profile, or pin a vllm/vllm-openai tag whose vLLM has "
        + ("it" if len(flags) == 1 else "them"),
    )


def _invalid_choice(m: re.Match[str], text: str) -> Diagnosis:
    arg = m["arg"].strip()
    return Diagnosis(
        cause=f"vLLM does not accept {m['value']} for {arg}",
        advice=f"set {arg} in vllm_args to one of: {m['choices']}",
    )


_BIND_PORT = re.compile(r"Bind for \S*:(?P<port>\d+) failed|port (?P<vllm>\d+) is used by process")
_ARGS_PORT = re.compile(r"non-default args: \{.*?'port': (?P<port>\d+)")


def _port_in_use(m: re.Match[str], text: str) -> Diagnosis:
    port = ""
    if bound := _BIND_PORT.search(text):
        port = bound["port"] or bound["vllm"]
    elif args := _ARGS_PORT.search(text):
        port = args["port"]
    elif "non-default args: {" in text:
        port = "8000"  # vLLM's default (cli_args.py `port: int = 8000`), not among the non-default args
    where = f"port {port}" if port else "the port"
    return Diagnosis(
        cause="the port is already in use" + (f" ({port})" if port else ""),
        advice=f"stop what listens on {where} (ss -ltnp), or give the profile another port",
    )


def _fixed(cause: str, advice: str) -> Callable[[re.Match[str], str], Diagnosis]:
    return lambda m, text: Diagnosis(cause=cause.format(**m.groupdict()), advice=advice.format(**m.groupdict()))


Rule = tuple[str, re.Pattern[str], Callable[[re.Match[str], str], Diagnosis]]

# (key, pattern, diagnosis) in order of precedence: the most specific root causes first.
_RULES: list[Rule] = [
    (
        "free_memory",
        re.compile(
            r"Free memory on device(?: \S+)? \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less than "
            r"(?:desired GPU memory utilization|the engine's budget after excluding external process's weights) "
            r"\((?P<util>[\d.]+), (?P<need>[\d.]+) GiB\)"
        ),
        _free_memory,
    ),
    (
        "weights_dont_fit",
        re.compile(r"Failed to load model - not enough GPU memory"),
        _fixed(
            "the model's weights alone do not fit in the GPU memory vLLM could use",
            "fewer sequences or a shorter context will not help: free the GPU of other processes "
            "(`modelctl gpu`), use a GPU with more memory, or a quantized variant of the model",
        ),
    ),
    (
        "max_seq_len_too_long",
        re.compile(r"max seq len \((?P<len>\d+)\)(?:[^\n]*?estimated maximum model length is (?P<estimate>\d+))?"),
        _max_seq_len,
    ),
    (
        "kv_cache_too_small",
        re.compile(r"No available memory for the cache blocks|Cannot auto-fit max_model_len"),
        _fixed(
            "no GPU memory was left for the KV cache after loading the weights",
            "raise vram_gib (the utilization) or lower max_model_len / max_num_seqs in the profile",
        ),
    ),
    (
        "cuda_oom",
        re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory"),
        _fixed(
            "CUDA ran out of memory while the model loaded or profiled",
            "lower max_num_seqs or max_model_len, add --enforce-eager to vllm_args, "
            "or free the GPU of other processes (`modelctl gpu`)",
        ),
    ),
    ("cuda_error", re.compile(r"CUDA error: (?P<what>[^\n]+)"), _cuda_error),
    (
        "gated_repo",
        re.compile(
            r"Cannot access gated repo|You are trying to access a gated repo|GatedRepoError"
            r"|Access to model \S+ is restricted"
        ),
        _gated,
    ),
    (
        "repo_not_found",
        re.compile(
            r"Repository Not Found for url|RepositoryNotFoundError"
            r"|is not a local folder and is not a valid model identifier"
        ),
        _not_found,
    ),
    (
        "trust_remote_code",
        re.compile(
            # transformers' own text (4.57 and 5.x), and vLLM's wrappers for config, tokenizer, processor.
            # Never bare `trust_remote_code`: every start prints `trust_remote_code=False` in its config line.
            r"contains custom code which must be executed"
            r"|Please pass the argument `trust_remote_code=True`"
            r"|consider setting\s+`trust_remote_code=True` in LLM or using the `--trust-remote-code` flag"
        ),
        _fixed(
            "the model needs its own code from the Hugging Face repository",
            "add --trust-remote-code to vllm_args in the profile",
        ),
    ),
    (
        "arch_removed",
        re.compile(
            r"Model architecture (?P<arch>\S+) was supported in vLLM until v(?P<until>\d[\w.]*?), "
            r"and is not supported anymore"
        ),
        _arch_removed,
    ),
    (
        "arch_plugin",
        re.compile(
            r"Model architecture (?P<arch>\S+) is not supported in-tree anymore\. "
            r"Please install the plugin at (?P<url>\S+?) if you want"
        ),
        _arch_plugin,
    ),
    (
        "unsupported_arch",
        re.compile(r"Model architectures? \[(?P<arch>[^\]]*)\] (?:are|is) not supported"),
        _fixed(
            "this vLLM image does not support the architecture {arch}",
            "pin a newer vllm/vllm-openai tag in the profile's image",
        ),
    ),
    ("unknown_flag", re.compile(r"error: unrecognized arguments: (?P<args>[^\n]*)"), _unknown_flag),
    (
        "invalid_choice",
        re.compile(r"argument (?P<arg>[^:\n]+): invalid choice: (?P<value>.+?) \(choose from (?P<choices>[^\n]*)\)"),
        _invalid_choice,
    ),
    (
        "port_in_use",
        re.compile(r"port is already allocated|Address already in use|port \d+ is used by process", re.I),
        _port_in_use,
    ),
    (
        "image_not_found",
        re.compile(r"No such image|pull access denied|manifest unknown|not found: manifest", re.I),
        _fixed(
            "the image could not be found locally or pulled",
            "check the image name and tag in the profile, and that the registry is reachable "
            "(or `docker pull` it first)",
        ),
    ),
]

_WRAPPER = re.compile(r"Engine core initialization failed|EngineCore failed to start")
# An exception line: `KeyError: 'x'`, `torch.OutOfMemoryError: ...`, a bare `SomeError` at the start.
_ERROR = re.compile(r"(?:^|(?<=\s))(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception)\b(?::\s.*|$)")


def _named(text: str) -> Diagnosis | None:
    for key, pattern, explain in _RULES:
        match = pattern.search(text)
        if match:
            found = explain(match, text)
            return Diagnosis(found.cause, found.advice, evidence=_line_at(text, match.start()), key=key)
    return None


def _error_lines(lines: list[str]) -> list[tuple[str, str]]:
    """(exception text, whole line) for each line that reports an exception, vLLM's wrapper left out."""
    found = []
    for line in lines:
        message = _message(line)
        match = _ERROR.search(message)
        if match and not _WRAPPER.search(message):
            found.append((match.group(0).strip(), line.strip()))
    return found


def _fallback(text: str) -> Diagnosis | None:
    """No rule named it: the last exception line (vLLM's wrapper says nothing), else the wrapper itself."""
    errors = _error_lines(text.splitlines())
    if errors:
        cause, line = errors[-1]
        return Diagnosis(cause=cause, advice="see `modelctl logs` for the whole log", evidence=line, key="error_line")
    wrapper = _WRAPPER.search(text)
    if wrapper:
        return Diagnosis(
            cause="vLLM's engine failed to start and the log kept no root cause (it may be cut off above)",
            advice="see `modelctl logs` for the whole log",
            evidence=_line_at(text, wrapper.start()),
            key="engine_init_failed",
        )
    return None


def diagnose(text: str) -> Diagnosis | None:
    """The known cause in a container log or engine error, or the last error line, or None."""
    text = _clean(text)
    return _named(text) or _fallback(text)


# --- timeouts: what the log shows vLLM was doing -------------------------------------------

# (pattern, what it was doing, still making progress) - tests/vllm_corpus/*.yaml `progress` lines.
_PROGRESS: list[tuple[re.Pattern[str], str, bool]] = [
    (
        re.compile(r"Starting to load model (?P<model>\S+?)\.\.\."),
        "downloading or reading the weights of {model} (vLLM prints nothing while it downloads)",
        True,
    ),
    (re.compile(r"Time spent downloading weights for"), "loading the weights (the download had finished)", True),
    (
        re.compile(r"Loading \w+ checkpoint shards[^:]*:\s*(?P<pct>\d+)% Completed"),
        "loading the weights ({pct}% of the checkpoint shards)",
        True,
    ),
    (
        re.compile(r"Loading weights took|Model loading took"),
        "profiling memory with a first forward pass (weights loaded; torch.compile runs here unless --enforce-eager)",
        True,
    ),
    (
        re.compile(r"Encoder cache will be initialized with a budget"),
        "profiling memory (the multimodal encoder)",
        True,
    ),
    (
        re.compile(
            r"Starting torch\.compile|for vLLM's torch\.compile|Dynamo bytecode transform time"
            r"|Compiling a graph for"
        ),
        "compiling the model (torch.compile)",
        True,
    ),
    (
        re.compile(r"Directly load the compiled graph"),
        "compiling the model (loading compiled graphs from the cache)",
        True,
    ),
    (
        re.compile(r"torch\.compile (?:takes|took) [\d.]+ s in total"),
        "profiling memory (torch.compile had finished)",
        True,
    ),
    (
        re.compile(r"Available KV cache memory|KV cache size: [\d,]+ tokens|Maximum concurrency for"),
        "allocating the KV cache and warming up (CUDA-graph capture next, unless --enforce-eager)",
        True,
    ),
    (
        re.compile(r"Capturing CUDA graphs[^:]*:\s*(?P<pct>\d+)%"),
        "capturing CUDA graphs ({pct}%)",
        True,
    ),
    (
        re.compile(r"Graph capturing finished|init engine \(profile, create kv cache, warmup model\) took"),
        "starting the API server (the engine had finished initialising)",
        True,
    ),
    (
        re.compile(r"Starting vLLM (?:API )?server|Available routes are|Application startup complete"),
        "serving: vLLM had started its server",
        False,
    ),
]


@dataclass(frozen=True)
class _Progress:
    doing: str
    progressing: bool
    evidence: str
    index: int  # line number in the cleaned log


def _last_progress(lines: list[str]) -> _Progress | None:
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        # a tqdm bar rewrites itself on one line: the last match on it is the latest state
        for pattern, doing, progressing in _PROGRESS:
            matches = list(pattern.finditer(line))
            if matches:
                return _Progress(doing.format(**matches[-1].groupdict()), progressing, _message(line), index)
    return None


def describe_progress(text: str) -> str | None:
    """What the log shows vLLM was doing last (e.g. "capturing CUDA graphs (45%)"), or None."""
    found = _last_progress(_clean(text).splitlines())
    return found.doing if found else None


def _last_lines(lines: list[str], count: int = 3, width: int = 160) -> str:
    kept = [_message(line) for line in lines if line.strip()][-count:]
    return " | ".join(line if len(line) <= width else line[: width - 3] + "..." for line in kept)


def diagnose_timeout(text: str) -> Diagnosis:
    """Why a start that never answered did not: a named failure, else what it was doing, else its last lines."""
    text = _clean(text)
    named = _named(text)
    if named:
        return named
    lines = text.splitlines()
    progress = _last_progress(lines)
    # something failed after the last step the log shows: that, not the step
    failed = _fallback("\n".join(lines[progress.index + 1 :] if progress else lines))
    if failed:
        return failed
    if progress and progress.progressing:
        return Diagnosis(
            cause=f"the log shows vLLM still {progress.doing} when the wait ended",
            advice="vLLM was still starting: raise startup_timeout in the profile and switch again "
            "(if it stops at the same step again, read `modelctl logs`)",
            evidence=progress.evidence,
            key="still_starting",
        )
    if progress:
        return Diagnosis(
            cause=f"the log shows vLLM {progress.doing} ({progress.evidence}), yet /v1/models did not answer",
            advice="a longer startup_timeout will not help: check that the profile's port is the one vLLM "
            "listens on and that nothing else answers there",
            evidence=progress.evidence,
            key="served_but_not_ready",
        )
    if not text.strip():
        return Diagnosis(
            cause="the container printed nothing",
            advice="see `modelctl logs`; a longer startup_timeout helps only once the log shows vLLM loading",
            key="no_progress",
        )
    last = _last_lines(lines)
    return Diagnosis(
        cause=f"the log shows no start-up step modelctl recognises; its last lines: {last}",
        advice="read the whole log (`modelctl logs`); a longer startup_timeout helps only once the log shows "
        "vLLM loading, compiling or capturing CUDA graphs",
        evidence=_message([line for line in lines if line.strip()][-1]),
        key="no_progress",
    )


def _line_at(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start : end if end >= 0 else len(text)].strip()
