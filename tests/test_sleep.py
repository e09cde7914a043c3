"""Sleep mode on a real Docker engine with the stand-in (which implements vLLM's sleep endpoints for
the version it imitates: modelctl/standin/sleep.sh), driven through the real CLI and service.

Each test starts from an empty test engine; models are published on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time

import httpx
import pytest
from conftest import running_vllm
from test_service import start_service, until  # noqa: F401  (start_service is a fixture)

pytestmark = pytest.mark.engine

WAKE_S = 0.3  # the stand-in's wake time in these tests


def sleepy(workspace, name: str, level: int = 1, **keys):
    env = {"STANDIN_LOAD_SECONDS": "0.3", "STANDIN_WAKE_SECONDS": str(WAKE_S), **keys.pop("env", {})}
    return workspace.profile(name, sleep_level=level, env=env, **keys)


def is_sleeping(port: int) -> bool | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/is_sleeping", timeout=2, trust_env=False)
    except httpx.TransportError:
        return None
    return response.json()["is_sleeping"] if response.status_code == 200 else None


def chat(port: int, model: str) -> str:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
        trust_env=False,
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def container_id(engine, name: str) -> str:
    return engine.containers.get(name).id


class AwakeSampler:
    """Counts, every few milliseconds, the model servers that answer and say they are awake."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            awake = sum(1 for port in self.ports if is_sleeping(port) is False)
            self.most = max(self.most, awake)
            self.samples += 1
            time.sleep(0.005)

    def __enter__(self) -> AwakeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.mark.parametrize("version", ["0.33.0", "0.11.1"])
def test_hot_swap_a_b_a(engine, workspace, version):
    a = sleepy(workspace, "demo-a", env={"STANDIN_VERSION": version})
    b = sleepy(workspace, "demo-b", env={"STANDIN_VERSION": version})
    workspace.cli_json("switch", "demo-a")
    first_a = container_id(engine, "modelctl-demo-a")
    with AwakeSampler([a["port"], b["port"]]) as sampler:
        to_b = workspace.cli_json("switch", "demo-b")
        assert to_b["slept"] == ["modelctl-demo-a"] and to_b["stopped"] == [] and not to_b["woke"]
        assert is_sleeping(a["port"]) is True and is_sleeping(b["port"]) is False
        back = workspace.cli_json("switch", "demo-a")
    assert back["woke"] and back["slept"] == ["modelctl-demo-b"] and back["stopped"] == []
    assert "wake" in back["phases"] and "start" not in back["phases"]
    assert container_id(engine, "modelctl-demo-a") == first_a, "the same container, woken"
    assert is_sleeping(a["port"]) is False and is_sleeping(b["port"]) is True
    assert sampler.samples > 20 and sampler.most == 1, f"{sampler.most} awake at once"
    assert running_vllm(engine) == ["modelctl-demo-a", "modelctl-demo-b"]
    assert chat(a["port"], "demo-a").startswith("Hello from demo-a")
    # The sleeper's restart policy is off: after a reboot they would all come back awake.
    policy = engine.containers.get("modelctl-demo-b").attrs["HostConfig"]["RestartPolicy"]["Name"]
    assert policy in ("no", "")
    log = engine.containers.get("modelctl-demo-a").logs().decode()
    assert "Sleep mode freed" in log and "wake up the engine with tags: None" in log

    status = workspace.cli_json("status")
    assert status["active"]["profile"] == "demo-a"
    sleeping = {c["name"]: c["sleeping"] for c in status["containers"]}
    assert sleeping == {"modelctl-demo-a": False, "modelctl-demo-b": True}
    assert {c["name"]: c["residual_gib"] for c in status["containers"]}["modelctl-demo-b"] == 1.0  # assumed
    text = workspace.cli("status")
    assert "asleep: modelctl-demo-b 1.00 GiB (assumed" in text.stdout, text.stdout
    assert "(asleep, 1.00" in text.stdout, text.stdout  # the table's state column (wrapped)


def test_hot_swap_overhead(engine, workspace):
    """A hot swap's time beyond the stand-in's own sleep and wake (both in the switch)."""
    sleep_s = 0.1
    for name in ("demo-a", "demo-b"):
        sleepy(workspace, name, env={"STANDIN_SLEEP_SECONDS": str(sleep_s)})
    workspace.cli_json("switch", "demo-a")
    workspace.cli_json("switch", "demo-b")
    totals = []
    for target in ["demo-a", "demo-b"] * 3:
        result = workspace.cli_json("switch", target)
        assert result["woke"] and result["slept"]
        totals.append(result["total_s"])
    beyond = sorted(round((t - sleep_s - WAKE_S) * 1000) for t in totals)
    print(
        f"\nhot swap: {sorted(totals)} s; beyond the stand-in's {sleep_s} s sleep and {WAKE_S} s wake: "
        f"median {beyond[len(beyond) // 2]} ms (all {beyond}; includes the stand-in's HTTP answers)"
    )
    assert beyond[len(beyond) // 2] < 300


def test_level_2_reloads_the_weights(engine, workspace):
    a = sleepy(workspace, "demo-a", level=2)
    sleepy(workspace, "demo-b", level=2)
    workspace.cli_json("switch", "demo-a")
    workspace.cli_json("switch", "demo-b")
    back = workspace.cli_json("switch", "demo-a")
    assert back["woke"]
    # Woken without reload_weights, the stand-in answers garbage (as vLLM would).
    assert chat(a["port"], "demo-a").startswith("Hello from demo-a")
    log = engine.containers.get("modelctl-demo-a").logs().decode()
    assert "wake up the engine with tags: ['weights']" in log and "Resetting prefix cache..." in log


@pytest.mark.parametrize("how", ["error", "exit"])
def test_a_failed_wake_stops_the_sleeper_and_starts_it_cold(engine, workspace, how):
    a = sleepy(workspace, "demo-a", env={"STANDIN_WAKE_FAIL": how})
    sleepy(workspace, "demo-b")
    workspace.cli_json("switch", "demo-a")
    first_a = container_id(engine, "modelctl-demo-a")
    workspace.cli_json("switch", "demo-b")
    back = workspace.cli_json("switch", "demo-a", timeout=120)
    assert not back["woke"] and "start" in back["phases"]
    assert any("the wake of demo-a failed" in w for w in back["warnings"]), back["warnings"]
    assert container_id(engine, "modelctl-demo-a") != first_a
    assert chat(a["port"], "demo-a").startswith("Hello from demo-a")
    assert is_sleeping(a["port"]) is False


def test_no_room_stops_the_least_recently_used_sleeper(engine, workspace):
    """12 GiB assumed (no GPU here): sleepers keep sleep_vram_gib 3; big needs 0.67 x 12 + 0.6 GiB."""
    for name in ("one", "two", "three"):
        sleepy(workspace, name, vram_gib=3.0, sleep_vram_gib=3.0)
    workspace.profile("big", vram_gib=8.0)
    for name in ("one", "two", "three"):
        workspace.cli_json("switch", name)
    result = workspace.cli_json("switch", "big")
    assert result["stopped"] == ["modelctl-two", "modelctl-one"] and result["slept"] == ["modelctl-three"]
    assert running_vllm(engine) == ["modelctl-big", "modelctl-three"]


def test_two_sleepers_on_one_port_are_refused(engine, workspace):
    a = sleepy(workspace, "demo-a")
    sleepy(workspace, "demo-b", port=a["port"])
    done = workspace.cli("switch", "demo-b")
    assert done.returncode == 2, done.stderr
    assert "demo-a.yaml" in done.stderr and "demo-b.yaml" in done.stderr and "cannot share port" in done.stderr
    assert running_vllm(engine) == []


def test_stop_leaves_nothing(engine, workspace):
    sleepy(workspace, "demo-a")
    sleepy(workspace, "demo-b")
    workspace.cli_json("switch", "demo-a")
    workspace.cli_json("switch", "demo-b")
    assert sorted(workspace.cli_json("stop")["stopped"]) == ["modelctl-demo-a", "modelctl-demo-b"]
    assert running_vllm(engine) == []


def raw(url: str, method: str, path: str, body: bytes) -> int:
    """A request sent as written (http.client does not normalise the path)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_development_endpoints_never_reach_a_model_through_the_proxy(engine, workspace, start_service):
    a = sleepy(workspace, "demo-a")
    service = start_service()
    service.wait_idle()
    assert service.post("/api/switch/demo-a").status_code == 200
    body = json.dumps({"model": "demo-a", "method": "reload_weights"}).encode()
    for path in ("/v1/../sleep", "/v1/%2e%2e/sleep", "/v1/..%2fsleep?level=2", "/v1/../collective_rpc"):
        assert raw(service.url, "POST", path, body) in (400, 404), path
    assert is_sleeping(a["port"]) is False
    log = engine.containers.get("modelctl-demo-a").logs().decode()
    assert "Sleep mode freed" not in log


def test_a_service_killed_with_sleepers_adopts_them_when_it_comes_back(engine, workspace, start_service):
    a = sleepy(workspace, "demo-a")
    b = sleepy(workspace, "demo-b")
    service = start_service()
    service.wait_idle()
    assert service.post("/api/switch/demo-a").status_code == 200
    assert service.post("/api/switch/demo-b").json()["slept"] == ["modelctl-demo-a"]
    ids = {name: container_id(engine, name) for name in ("modelctl-demo-a", "modelctl-demo-b")}
    os.kill(service.process.pid, signal.SIGKILL)
    service.process.wait(timeout=10)

    again = start_service()
    status = again.wait_idle()
    assert status["active"]["profile"] == "demo-b"
    assert {c["name"]: c["sleeping"] for c in status["containers"]} == {
        "modelctl-demo-a": True,
        "modelctl-demo-b": False,
    }
    assert {name: container_id(engine, name) for name in ids} == ids, "adopted, not restarted"
    # The proxy wakes the sleeper for its request; nothing is started cold.
    answer = httpx.post(
        f"{again.url}/v1/chat/completions",
        json={"model": "demo-a", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
        trust_env=False,
    )
    assert answer.status_code == 200, answer.text
    assert is_sleeping(a["port"]) is False and is_sleeping(b["port"]) is True
    assert {name: container_id(engine, name) for name in ids} == ids
