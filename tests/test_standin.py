"""The stand-in for vllm/vllm-openai (modelctl/standin/) speaks each vLLM release as that release does.

Checked per version against tests/vllm_corpus/vllm-<version>.yaml (texts read from vLLM's source) and
the allow-lists modelctl/standin/flags-<version>.txt (generated from it by scripts/vllm-flags.py):
an unknown flag exits 2 with argparse's text before anything loads; a normal start logs the
version's lines; a taken port fails at bind time, before the load; the torch.compile step is
skipped when the compile cache (/root/.cache/vllm) is kept across containers.
Containers publish no ports: the port-conflict test shares one container's network namespace.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import REPO, STANDIN_IMAGE

VERSIONS = ["0.11.1", "0.33.0"]
STANDIN_DIR = REPO / "modelctl" / "standin"
CORPUS_DIR = Path(__file__).resolve().parent / "vllm_corpus"
# A flag the other version has and this one does not: removed after 0.11.1 / added since.
FOREIGN_FLAG = {"0.11.1": ["--shutdown-timeout", "30"], "0.33.0": ["--swap-space", "4"]}
HEADER = re.compile(
    r"^\((?P<proc>\w+) pid=\d+\) (?P<level>[A-Z]+) \d\d-\d\d \d\d:\d\d:\d\d \[(?P<loc>[^\]]+)\] (?P<msg>.*)$"
)
STARTED = "Application startup complete."


def corpus(version: str) -> dict:
    return yaml.safe_load((CORPUS_DIR / f"vllm-{version}.yaml").read_text())


def corpus_line(version: str, section: str, ident: str) -> str:
    return next(entry["line"] for entry in corpus(version)[section] if entry["id"] == ident)


def allowed_flags(version: str) -> set[str]:
    lines = (STANDIN_DIR / f"flags-{version}.txt").read_text().splitlines()
    return {line.split()[0] for line in lines if line.startswith("--")}


def normalize(text: str) -> str:
    """Numbers, pids, times and the compile cache's hash vary from run to run."""
    text = re.sub(r"\b[0-9a-f]{10}\b", "H", text)
    return re.sub(r"\d+(?:\.\d+)?", "N", text)


def run(engine, version: str, args: list[str], **kwargs):
    env = {"STANDIN_VERSION": version, "STANDIN_LOAD_SECONDS": "0", **kwargs.pop("environment", {})}
    return engine.containers.run(STANDIN_IMAGE, args, detach=True, environment=env, **kwargs)


def logs(container) -> str:
    return container.logs(stdout=True, stderr=True).decode()


def exit_code(container, timeout: float = 30) -> int:
    return container.wait(timeout=timeout)["StatusCode"]


def wait_for_log(container, text: str, timeout: float = 30) -> str:
    """The log once it holds `text`; fails when the container exits or the time is up first."""
    deadline = time.monotonic() + timeout
    while True:
        out = logs(container)
        if text in out:
            return out
        container.reload()
        if container.status == "exited" or time.monotonic() > deadline:
            pytest.fail(f"no {text!r} in the stand-in's log ({container.status}):\n{out}")
        time.sleep(0.1)


def find(out: str, corpus_entry: str, corpus_model: str = "rednote-hilab/dots.ocr") -> str:
    """The stand-in's line logged by the same process, level and source line as the corpus line,
    with the same text up to the model's name (numbers aside)."""
    want = HEADER.match(corpus_entry)
    assert want, corpus_entry
    prefix = normalize(want["msg"].split(corpus_model)[0])
    for line in out.splitlines():
        got = HEADER.match(line)
        same_source = got and (got["proc"], got["level"], got["loc"]) == (want["proc"], want["level"], want["loc"])
        if same_source and normalize(got["msg"]).startswith(prefix):
            return line
    pytest.fail(f"no line like\n  {corpus_entry}\nin\n{out}")


@pytest.mark.parametrize("version", VERSIONS)
def test_allow_lists_differ_where_the_releases_do(version):
    flags = allowed_flags(version)
    assert {"--model", "--port", "--served-model-name", "--gpu-memory-utilization", "--trust-remote-code"} <= flags
    assert FOREIGN_FLAG[version][0] not in flags
    other = next(v for v in VERSIONS if v != version)
    assert FOREIGN_FLAG[version][0] in allowed_flags(other)


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_flag_exits_2_with_argparse_text_before_loading(engine, version):
    container = run(engine, version, ["vllm", "serve", "org/m", "--max-model-len", "4096", *FOREIGN_FLAG[version]])
    assert exit_code(container) == 2
    out = logs(container)
    # e.g. `vllm: error: unrecognized arguments: --swap-space 4`, after the top-level usage
    assert corpus_line(version, "failures", "unknown_flag") in out.splitlines(), out
    assert out.startswith("usage: vllm [-h] [-v]") or "\nusage: vllm [-h] [-v]" in out
    assert "non-default args" not in out and "Initializing a V1 LLM engine" not in out


@pytest.mark.parametrize("version", VERSIONS)
def test_argparse_errors_of_the_serve_subparser(engine, version):
    container = run(engine, version, ["vllm", "serve", "org/m", "--dtype", "bf16"])
    assert exit_code(container) == 2
    out = logs(container)
    assert corpus_line(version, "failures", "invalid_choice") in out.splitlines(), out
    assert "usage: vllm serve [model_tag] [options]" in out
    # argparse's unambiguous prefixes are accepted, as in vLLM (allow_abbrev)
    container = run(engine, version, ["vllm", "serve", "org/m", "--gpu-memory-util", "0.5"])
    assert "'gpu_memory_utilization': 0.5" in wait_for_log(container, STARTED)


@pytest.mark.parametrize("version", VERSIONS)
def test_normal_start_logs_the_versions_lines(engine, version):
    container = run(
        engine,
        version,
        ["vllm", "serve", "--model", "org/m", "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "4096"],
    )
    out = wait_for_log(container, STARTED)
    engine_line = find(out, corpus_line(version, "startup", "engine_config"))
    assert f"Initializing a V1 LLM engine (v{version}) with config: model='org/m'" in engine_line
    assert "trust_remote_code=False" in engine_line
    for ident in ("version", "non_default_args", "start_load", "model_deprecation"):
        entry = corpus_line(version, "startup", ident)
        if HEADER.match(entry):
            find(out, entry)
        else:  # logged before vLLM decorates the process's output: no process name
            assert normalize(entry) in {normalize(line) for line in out.splitlines()}, (entry, out)
    # Lines without a model name: the same text but for numbers.
    normalized = {normalize(line) for line in out.splitlines()}
    for section, ident in [
        ("startup", "weights_took"),
        ("startup", "model_loading_took"),
        ("startup", "cache_dir"),
        ("startup", "dynamo"),
        ("startup", "compile_total"),
        ("startup", "kv_mem"),
        ("startup", "kv_size"),
        ("startup", "graphs_done"),
        ("startup", "init_engine"),
        ("startup", "supported_tasks"),
        ("startup", "starting_server"),
        ("startup", "routes"),
        ("startup", "uvicorn_started"),
        ("startup", "uvicorn_complete"),
        ("progress", "compile_graph"),
    ]:
        entry = corpus_line(version, section, ident)
        assert normalize(entry) in normalized, f"{ident}: {entry}\n{out}"
    container.stop(timeout=5)
    assert exit_code(container) == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_port_in_use_fails_at_bind_before_the_load(engine, version):
    holder = run(engine, version, ["vllm", "serve", "org/a"])
    wait_for_log(holder, STARTED)
    # Same network namespace, same port (8000): vLLM's bind() fails right after `non-default args`.
    second = run(engine, version, ["vllm", "serve", "org/b"], network_mode=f"container:{holder.id}")
    assert exit_code(second) == 1
    out = logs(second)
    assert corpus_line(version, "failures", "port_in_use") in out.splitlines(), out
    assert "non-default args" in out
    assert "Initializing a V1 LLM engine" not in out and "Starting to load model" not in out


@pytest.mark.parametrize("version", VERSIONS)
def test_compile_cache_is_reused_by_a_new_container(engine, version):
    volume = engine.volumes.create(f"standin-vllm-cache-{uuid.uuid4().hex[:8]}")
    cache = {volume.name: {"bind": "/root/.cache/vllm", "mode": "rw"}}
    compiled = normalize(corpus_line(version, "progress", "compile_graph"))
    loaded = normalize(corpus_line(version, "progress", "compile_cached"))
    args = ["vllm", "serve", "org/m", "--max-model-len", "4096"]
    env = {"STANDIN_COMPILE_SECONDS": "0.3"}
    try:
        first = run(engine, version, args, environment=env, volumes=cache)
        out = wait_for_log(first, STARTED)
        lines = {normalize(line) for line in out.splitlines()}
        assert compiled in lines and loaded not in lines, out
        cache_dir = re.search(r"Using cache directory: (\S+)", out)[1]
        first.remove(force=True)

        second = run(engine, version, args, environment=env, volumes=cache)
        out = wait_for_log(second, STARTED)
        lines = {normalize(line) for line in out.splitlines()}
        assert loaded in lines and compiled not in lines, out
        assert f"Using cache directory: {cache_dir} " in out
        second.remove(force=True)

        # Other flags build other graphs: a new cache entry, compiled again.
        third = run(engine, version, [*args, "--max-num-seqs", "4"], environment=env, volumes=cache)
        assert compiled in {normalize(line) for line in wait_for_log(third, STARTED).splitlines()}
        third.remove(force=True)
    finally:
        for container in engine.containers.list(all=True, filters={"volume": volume.name}):
            container.remove(force=True)
        volume.remove(force=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_enforce_eager_neither_compiles_nor_captures_graphs(engine, version):
    container = run(engine, version, ["vllm", "serve", "org/m", "--enforce-eager"])
    out = wait_for_log(container, STARTED)
    assert "enforce_eager=True" in out
    assert "Using cache directory" not in out and "torch.compile t" not in out and "Graph capturing" not in out


def test_unknown_version_is_refused(engine):
    container = run(engine, "0.1.0", ["vllm", "serve", "org/m"])
    assert exit_code(container) == 1
    assert "unknown STANDIN_VERSION='0.1.0' (known: 0.11.1 0.33.0" in logs(container)
