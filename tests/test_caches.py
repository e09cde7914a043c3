"""The kept vLLM cache on a real engine: MODELCTL_VLLM_CACHE (a Docker volume or a host directory)
is mounted at /root/.cache/vllm in every model container, so the torch.compile step the first start
of a model pays is loaded from the cache when the model comes back after a switch away - in a new
container. The stand-in compiles (STANDIN_COMPILE_SECONDS) unless its marker is in the cache, and
logs vLLM's own lines for each case (tests/vllm_corpus, ids compile_graph / compile_cached).

Also on the engine: the command line follows the image tag's vLLM version, with each version's
entrypoint (the stand-in's per-version images)."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.engine

CORPUS = yaml.safe_load((REPO / "tests" / "vllm_corpus" / "vllm-0.33.0.yaml").read_text())


def corpus_text(ident: str) -> str:
    """vLLM's message for a corpus line, up to its first number (times and ranges vary)."""
    line = next(entry["line"] for entry in CORPUS["progress"] if entry["id"] == ident)
    message = line.split("] ", 1)[1]
    return re.split(r"\d", message, maxsplit=1)[0]


COMPILED = corpus_text("compile_graph")  # "Compiling a graph for compile range ("
LOADED = corpus_text("compile_cached")  # "Directly load the compiled graph(s) for compile range ("


def container_log(engine, name: str) -> str:
    return engine.containers.get(name).logs(stdout=True, stderr=True).decode()


@pytest.fixture(params=["volume", "directory"])
def vllm_cache(request, engine, workspace, tmp_path):
    """MODELCTL_VLLM_CACHE for this test alone: a fresh volume, or a fresh host directory."""
    if request.param == "volume":
        name = f"modelctl-test-vllm-cache-{uuid.uuid4().hex[:8]}"
        workspace.env["MODELCTL_VLLM_CACHE"] = name
        yield name
        for container in engine.containers.list(all=True, filters={"volume": name}):
            container.remove(force=True)
        engine.volumes.get(name).remove(force=True)
    else:
        path = tmp_path / "vllm-cache"
        path.mkdir()
        workspace.env["MODELCTL_VLLM_CACHE"] = str(path)
        yield str(path)


def test_the_compile_cache_survives_a_switch_away_and_back(engine, workspace, vllm_cache):
    env = {"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_COMPILE_SECONDS": "0.3"}
    workspace.profile("demo-a", env=env)
    workspace.profile("demo-b", env=env)

    workspace.cli_json("switch", "demo-a")
    first = engine.containers.get("modelctl-demo-a")
    mounts = {m["Destination"]: m for m in first.attrs["Mounts"]}
    assert "/root/.cache/vllm" in mounts, first.attrs["Mounts"]
    where = mounts["/root/.cache/vllm"]
    assert (where["Name"] if where["Type"] == "volume" else where["Source"]) == vllm_cache
    log = container_log(engine, "modelctl-demo-a")
    assert COMPILED in log and LOADED not in log, log

    workspace.cli_json("switch", "demo-b")
    assert COMPILED in container_log(engine, "modelctl-demo-b"), "another model compiles its own graphs"

    result = workspace.cli_json("switch", "demo-a")
    assert result["outcome"] == "switched"
    second = engine.containers.get("modelctl-demo-a")
    assert second.id != first.id, "a new container: only the mount can carry the cache"
    log = container_log(engine, "modelctl-demo-a")
    assert LOADED in log and COMPILED not in log, log


def test_doctor_reports_the_cache_and_its_size(engine, workspace, vllm_cache):
    workspace.profile("demo-a", env={"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_COMPILE_SECONDS": "0.1"})
    workspace.cli_json("switch", "demo-a")
    done = workspace.cli("doctor", "--json")
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    check = checks["vllm cache"]
    assert check["status"] == "ok", check
    assert vllm_cache in check["detail"] and "size unknown" not in check["detail"], check
    assert re.search(r", \d+(\.\d)? (bytes|KiB|MiB|GiB)", check["detail"]), check


def test_the_command_line_follows_the_image_version(engine, workspace):
    """standin-0.33.0 (`vllm serve` entrypoint) gets a drain within MODELCTL_STOP_GRACE and logs it
    on the stop; standin-0.11.1 (`python3 -m ...api_server`, which ignores a positional model)
    gets only flags 0.11.1 has, and serves the right model through --model."""
    workspace.env["MODELCTL_STOP_GRACE"] = "5"
    env = {"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_COMPILE_SECONDS": "0"}
    workspace.profile("new", image="vllm/vllm-openai:standin-0.33.0", env=env)
    old = workspace.profile("old", image="vllm/vllm-openai:standin-0.11.1", env=env)

    workspace.cli_json("switch", "new")
    log = container_log(engine, "modelctl-new")
    assert "vLLM server version 0.33.0" in log and "'shutdown_timeout': 3" in log, log

    workspace.cli_json("switch", "old")
    stopped = container_log(engine, "modelctl-new")
    assert "[shutdown] API server: stopping engine client mode=drain timeout=3s" in stopped, stopped
    log = container_log(engine, "modelctl-old")
    assert "vLLM API server version 0.11.1" in log and "'model': 'standin/old'" in log, log
    assert "shutdown_timeout" not in log and "unrecognized arguments" not in log
    response = httpx.get(f"http://127.0.0.1:{old['port']}/v1/models", timeout=5, trust_env=False)
    assert [m["id"] for m in response.json()["data"]] == ["old"]
