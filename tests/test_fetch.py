"""Nothing downloaded while the GPU stands idle, on a real engine with the stand-in: the switch
fetches a model's missing weights in a throwaway container of its image while the running model
keeps answering, then starts it from the cache; `modelctl pull` does the same ahead of time, into
a host directory or a Docker volume; a fetch that fails stops nothing."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import httpx
import pytest
from conftest import running_vllm

pytestmark = pytest.mark.engine

DOWNLOAD_S = 3.0


def answers(port: int, model: str) -> bool:
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=5,
            trust_env=False,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def fetch_containers(client) -> list[str]:
    return [c.name for c in client.containers.list(all=True, filters={"label": "modelctl.role=fetch"})]


def test_switch_fetches_missing_weights_while_the_old_model_serves(engine, workspace):
    a = workspace.profile("demo-a")
    workspace.profile("demo-b", env={"STANDIN_LOAD_SECONDS": "0.3", "STANDIN_DOWNLOAD_SECONDS": str(DOWNLOAD_S)})
    workspace.cli_json("switch", "demo-a")
    served: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            if answers(a["port"], "demo-a"):
                served.append(time.monotonic())
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    began = time.monotonic()
    poller.start()
    try:
        result = workspace.cli_json("switch", "demo-b")
    finally:
        stop.set()
        poller.join()
    assert result["outcome"] == "switched" and result["stopped"] == ["modelctl-demo-a"]
    phases = list(result["phases"])
    assert phases.index("fetch") < phases.index("stop"), phases
    assert result["phases"]["fetch"] >= DOWNLOAD_S
    # demo-a answered all through the download, until the stop.
    assert served and served[-1] - began >= DOWNLOAD_S, (began, served[-3:])
    gaps = [later - earlier for earlier, later in itertools.pairwise(served)]
    assert max(gaps, default=0) < 1.0, "no pause in demo-a's answers while demo-b downloaded"
    # demo-b started from the cache: no download of its own, and the fetch container is gone.
    log = engine.containers.get("modelctl-demo-b").logs().decode()
    assert "Time spent downloading weights" not in log
    assert fetch_containers(engine) == []
    assert running_vllm(engine) == ["modelctl-demo-b"]
    # The second time the weights are in the cache: no fetch phase at all.
    workspace.cli_json("switch", "demo-a")
    again = workspace.cli_json("switch", "demo-b")
    assert "fetch" not in again["phases"]


def test_a_failed_fetch_stops_nothing(engine, workspace):
    a = workspace.profile("demo-a")
    workspace.profile("gated", env={"STANDIN_FAIL": "gated-repo"})
    workspace.cli_json("switch", "demo-a")
    error = workspace.cli_json("switch", "gated", expect=4)["error"]
    assert error["message"].startswith("fetching the weights of gated (standin/gated) failed: the model")
    assert "HF_TOKEN" in error["hint"]
    assert "Cannot access gated repo" in error["log_tail"]
    assert running_vllm(engine) == ["modelctl-demo-a"] and answers(a["port"], "demo-a")
    assert fetch_containers(engine) == []


def test_pull_into_a_host_directory_touches_nothing_that_runs(engine, workspace):
    a = workspace.profile("demo-a")
    workspace.profile("demo-b", env={"STANDIN_DOWNLOAD_SECONDS": "0.5"})
    workspace.profile("offline", env={"HF_HUB_OFFLINE": "1"})
    workspace.cli_json("switch", "demo-a")
    first = workspace.cli_json("pull", "demo-b")
    assert first == [
        {
            "profile": "demo-b",
            "image": "vllm/vllm-openai:standin",
            "image_pulled": False,
            "weights": "fetched",
            "detail": "standin/demo-b is not in the cache",
            "seconds": first[0]["seconds"],
        }
    ]
    assert (workspace.root / "hf" / "hub" / "models--standin--demo-b" / "refs" / "main").is_file()
    every = {p["profile"]: (p["weights"], p["detail"]) for p in workspace.cli_json("pull", "--all")}
    assert every == {
        "demo-a": ("present", ""),
        "demo-b": ("present", ""),
        "offline": ("skipped", "HF_HUB_OFFLINE=1 in the profile's env"),
    }
    assert running_vllm(engine) == ["modelctl-demo-a"] and answers(a["port"], "demo-a")
    done = workspace.cli("pull")
    assert done.returncode == 2 and "name one profile, or give --all" in done.stderr


def test_pull_into_a_volume_checks_in_a_container(engine, workspace):
    volume = f"modelctl-test-hf-{uuid.uuid4().hex[:8]}"
    workspace.profile("demo-b", env={"STANDIN_DOWNLOAD_SECONDS": "0.5"})
    env = {"MODELCTL_HF_CACHE": volume}
    try:
        assert workspace.cli_json("pull", "demo-b", env=env)[0]["weights"] == "fetched"
        assert workspace.cli_json("pull", "demo-b", env=env)[0]["weights"] == "present"
        result = workspace.cli_json("switch", "demo-b", env=env)
        assert "fetch" in result["phases"], "the container's look at the volume is timed"
        log = engine.containers.get("modelctl-demo-b").logs().decode()
        assert "Time spent downloading weights" not in log
        assert fetch_containers(engine) == []
    finally:
        for c in engine.containers.list(all=True):
            c.remove(force=True)
        engine.volumes.get(volume).remove(force=True)
