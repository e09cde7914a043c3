"""The service (`modelctl serve`) on a real Docker engine, driven over HTTP as scripts would.

Each test starts the real `python -m modelctl serve` as a subprocess on a free 127.0.0.1 port, with
the stand-in profiles of the `workspace` fixture and its state directory (so the service and the
host CLI share one switch lock), and terminates it at the end.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import STANDIN_IMAGE, free_port, running_vllm

SLOW = {"STANDIN_LOAD_SECONDS": "3"}  # long enough to look at a switch while it runs


def until(check: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"not within {timeout:g} s: {what} (last seen: {last!r})", pytrace=False)


@dataclass
class Service:
    process: subprocess.Popen
    url: str
    log: Path
    token: str | None = None

    def http(self, token: str | None = "default", timeout: float = 120) -> httpx.Client:
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.http(**kwargs) as client:
            return client.get(path)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.http(**kwargs) as client:
            return client.post(path)

    def status(self) -> dict[str, Any]:
        response = self.get("/api/status")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_idle(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until no operation is under way (the start-up reconcile included)."""
        return until(lambda: (s := self.status())["switch"] is None and s, "the service to be idle", timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


@pytest.fixture
def start_service(engine, workspace) -> Iterator[Callable[..., Service]]:
    """Start `modelctl serve` (waits for /health); every one started is terminated afterwards."""
    started: list[Service] = []

    def start(env: dict[str, str] | None = None) -> Service:
        port = free_port()
        log = workspace.root / f"service-{len(started)}.log"
        env = {**workspace.env, "MODELCTL_LISTEN": f"127.0.0.1:{port}", **(env or {})}
        with open(log, "w") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "modelctl", "serve"], env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        service = Service(process, f"http://127.0.0.1:{port}", log, env.get("MODELCTL_API_TOKEN"))
        started.append(service)

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"modelctl serve exited with {process.returncode}:\n{service.output()}", pytrace=False)
            try:
                return service.get("/health", token=None, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        until(healthy, f"/health of modelctl serve on port {port}", timeout=20)
        return service

    yield start
    for service in started:
        service.stop()


def error_of(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


@pytest.mark.engine
def test_status_profiles_switch_and_stop_through_the_api(engine, workspace, start_service):
    a = workspace.profile("demo-a")
    workspace.profile("demo-b")
    service = start_service()
    assert service.get("/health").json()["status"] == "ok"
    assert service.wait_idle()["active"] is None

    profiles = service.get("/api/profiles").json()
    assert [p["profile"] for p in profiles] == ["demo-a", "demo-b"]
    assert profiles[0]["gpu_memory_utilization"] == 0.34 and profiles[0]["fits"] is True  # 4 GiB of 12

    result = service.post("/api/switch/demo-a").json()
    assert result["outcome"] == "switched" and result["profile"] == "demo-a"
    assert set(result["phases"]) >= {"plan", "lock", "stop", "start", "load"}
    assert running_vllm(engine) == ["modelctl-demo-a"]

    status = service.status()
    assert status["switch"] is None
    assert status["active"] == {
        "profile": "demo-a",
        "container": "modelctl-demo-a",
        "ready": True,
        "url": f"http://127.0.0.1:{a['port']}/v1",
        "served_model": "demo-a",
    }
    cli_status = workspace.cli_json("status")
    assert {k: status[k] for k in ("active", "containers")} == {k: cli_status[k] for k in ("active", "containers")}

    assert service.post("/api/switch/demo-b").json()["stopped"] == ["modelctl-demo-a"]
    assert service.post("/api/switch/demo-b").json()["outcome"] == "unchanged"
    assert running_vllm(engine) == ["modelctl-demo-b"]

    assert service.post("/api/stop").json() == {"stopped": ["modelctl-demo-b"]}
    assert running_vllm(engine) == []
    assert service.status()["active"] is None
    log = service.output()
    assert "switch demo-a: switched in" in log and "(plan " in log and "load " in log
    assert "stop: stopped modelctl-demo-b in" in log


@pytest.mark.engine
def test_status_answers_while_a_switch_runs(engine, workspace, start_service):
    workspace.profile("slow", env=SLOW)
    service = start_service()
    service.wait_idle()
    answer: dict[str, httpx.Response] = {}
    switching = threading.Thread(target=lambda: answer.setdefault("switch", service.post("/api/switch/slow")))
    switching.start()
    try:
        seen = []

        def in_load_phase() -> bool:
            began = time.monotonic()
            status = service.status()
            seen.append(time.monotonic() - began)
            op = status["switch"]
            return bool(op) and op["phase"] == "load" and op["target"] == "slow" and op["operation"] == "switch"

        until(in_load_phase, "/api/status to show the switch to slow in its load phase", timeout=10)
        op = service.status()["switch"]
        assert op["since"].endswith("+00:00")
        assert service.get("/health").status_code == 200
        assert max(seen) < 2.0, f"status took {max(seen):.2f} s during a switch"
    finally:
        switching.join(timeout=60)
    assert answer["switch"].status_code == 200, answer["switch"].text
    assert answer["switch"].json()["phases"]["load"] >= 2.5
    assert service.status()["switch"] is None


@pytest.mark.engine
def test_api_and_cli_switches_serialize(engine, workspace, start_service):
    workspace.profile("demo-a", env={"STANDIN_LOAD_SECONDS": "1"})
    workspace.profile("demo-b", env={"STANDIN_LOAD_SECONDS": "1"})
    service = start_service()
    service.wait_idle()
    samples: list[list[str]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(running_vllm(engine))

    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=sample),
        threading.Thread(target=lambda: results.__setitem__("api", service.post("/api/switch/demo-a"))),
        threading.Thread(target=lambda: results.__setitem__("cli", workspace.cli("switch", "demo-b", "--json"))),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads[1:]:
            thread.join(timeout=90)
    finally:
        done.set()
        threads[0].join(timeout=30)
    assert results["api"].status_code == 200, results["api"].text
    assert results["cli"].returncode == 0, results["cli"].stderr
    assert len(samples) >= 10, "the sampler must have looked while the switches ran"
    assert max(len(s) for s in samples) <= 1, [s for s in samples if len(s) > 1][:3]
    assert len(running_vllm(engine)) == 1
    # Both really switched: whichever ran second stopped the first one's model.
    api, cli = results["api"].json(), json.loads(results["cli"].stdout)
    assert {api["outcome"], cli["outcome"]} == {"switched"}
    assert (api["stopped"], cli["stopped"]) in [([], ["modelctl-demo-a"]), (["modelctl-demo-b"], [])]


@pytest.mark.engine
def test_refusals_have_the_cli_codes(engine, workspace, start_service):
    workspace.profile("demo-a")
    workspace.profile("huge", vram_gib=20.0)
    service = start_service()
    service.wait_idle()
    error = error_of(service.post("/api/switch/nope"), 404, 2)
    assert error["message"] == "unknown profile 'nope' (known: demo-a, huge)"
    assert "huge needs 20 GiB" in error_of(service.post("/api/switch/huge"), 409, 3)["message"]
    assert "timeout" in error_of(service.post("/api/switch/demo-a?timeout=soon"), 400, 2)["message"]
    error_of(service.get("/api/nothing-here"), 404, 2)
    error_of(service.get("/api/switch/demo-a"), 405, 2)
    workspace.state_dir.mkdir(exist_ok=True)
    with open(workspace.state_dir / "switch.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        response = service.post("/api/switch/demo-a?lock_timeout=0.3")
    assert "another switch holds" in error_of(response, 503, 6)["message"]
    assert response.headers["Retry-After"].isdigit()
    assert running_vllm(engine) == []


@pytest.mark.engine
def test_default_at_boot_crash_is_502_and_the_service_repairs(engine, workspace, start_service):
    a = workspace.profile("demo-a")
    workspace.profile("broken", env={"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_FAIL": "cuda-oom"})
    service = start_service({"MODELCTL_DEFAULT_PROFILE": "demo-a"})
    # Nothing ran: the default profile is started at boot, in the background.
    status = service.wait_idle()
    assert status["active"]["profile"] == "demo-a" and status["active"]["ready"] is True
    assert running_vllm(engine) == ["modelctl-demo-a"]
    assert "reconcile (start-up): done" in service.output() and "; started demo-a (plan " in service.output()

    assert status["last_error"] is None
    error = error_of(service.post("/api/switch/broken?timeout=600"), 502, 4)
    assert "broken exited (code 1) before it was ready: CUDA ran out of memory" in error["message"]
    last = service.status()["last_error"]  # kept for /api/status, as every failed operation's
    assert last["operation"] == "switch" and last["target"] == "broken" and last["code"] == 4
    assert "rolled back to demo-a" in error["message"] and "lower max_num_seqs" in error["hint"]
    assert "torch.OutOfMemoryError: CUDA out of memory" in error["log_tail"]
    service.wait_idle()  # the reconcile after the failure
    assert running_vllm(engine) == ["modelctl-demo-a"]
    assert f"http://127.0.0.1:{a['port']}/v1" == service.status()["active"]["url"]

    # --no-rollback asked for nothing running: the reconcile after it does not force the default back.
    error_of(service.post("/api/switch/broken?no_rollback=true"), 502, 4)
    service.wait_idle()
    assert running_vllm(engine) == []
    log = service.output()
    assert "switch broken: failed with code 4" in log and "in phase load" in log
    assert "reconcile (after the failed switch to broken): done" in log


@pytest.mark.engine
def test_token_is_required_and_never_shown(engine, workspace, start_service):
    workspace.profile("demo-a")
    token = "tok-" + os.urandom(8).hex()
    service = start_service({"MODELCTL_API_TOKEN": token})
    assert service.get("/health", token=None).status_code == 200
    for path in ("/api/status", "/api/profiles"):
        response = service.get(path, token=None)
        assert "bearer token" in error_of(response, 401, 2)["message"]
        assert response.headers["WWW-Authenticate"] == "Bearer"
    error_of(service.get("/api/status", token=token + "x"), 401, 2)
    error_of(service.post("/api/switch/demo-a", token=None), 401, 2)
    error_of(service.post("/api/stop", token="wrong"), 401, 2)
    assert running_vllm(engine) == []
    service.wait_idle()
    assert service.post("/api/switch/demo-a").json()["outcome"] == "switched"
    assert service.get("/api/status").json()["active"]["profile"] == "demo-a"

    url_env = {"MODELCTL_URL": service.url, "MODELCTL_API_TOKEN": token}
    done = workspace.cli("status", "--json", env=url_env)
    assert done.returncode == 0 and json.loads(done.stdout)["active"]["profile"] == "demo-a", done.stderr
    refused = workspace.cli("status", "--json", env={**url_env, "MODELCTL_API_TOKEN": "wrong"})
    assert refused.returncode == 2 and json.loads(refused.stdout)["error"]["code"] == 2
    service.stop()
    assert "refused GET /api/status from 127.0.0.1: missing or wrong bearer token" in service.output()
    assert token not in service.output() + done.stdout + done.stderr + refused.stdout + refused.stderr


@pytest.mark.engine
def test_startup_keeps_the_healthy_modelctl_model_and_stops_a_foreign_one(engine, workspace, start_service):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    workspace.cli_json("switch", "demo-a")
    ours = engine.containers.get("modelctl-demo-a").id
    foreign = engine.containers.run(
        STANDIN_IMAGE,
        ["--model", "x"],
        name="by-hand",
        detach=True,
        environment={"STANDIN_LOAD_SECONDS": "0"},
        ports={"8000/tcp": ("127.0.0.1", free_port())},
    )
    assert running_vllm(engine) == ["by-hand", "modelctl-demo-a"]
    service = start_service({"MODELCTL_DEFAULT_PROFILE": "demo-b"})
    status = service.wait_idle()
    assert running_vllm(engine) == ["modelctl-demo-a"], "adopted, not replaced by the default"
    assert engine.containers.get("modelctl-demo-a").id == ours
    assert status["active"]["profile"] == "demo-a"
    foreign.reload()
    assert foreign.status == "exited"
    assert "reconcile (start-up): done" in service.output() and "stopped by-hand" in service.output()


@pytest.mark.engine
def test_a_foreign_vllm_started_beside_the_services_model_is_stopped_within_2_s(engine, workspace, start_service):
    workspace.profile("demo-a")
    service = start_service({"MODELCTL_DEFAULT_PROFILE": "demo-a"})
    service.wait_idle()
    assert running_vllm(engine) == ["modelctl-demo-a"]
    foreign = engine.containers.run(
        STANDIN_IMAGE,
        ["--model", "x"],
        name="by-hand-later",
        detach=True,
        environment={"STANDIN_LOAD_SECONDS": "0"},
        ports={"8000/tcp": ("127.0.0.1", free_port())},
    )
    # The contract is about 2 s (SIGTERM, SIGKILL after 1 s); the bound leaves room for a busy CI machine.
    until(lambda: running_vllm(engine) == ["modelctl-demo-a"], "the foreign container stopped", timeout=5)
    foreign.reload()
    assert foreign.status == "exited"
    assert 'modelctl_foreign_containers_total{action="stopped"} 1.0' in service.get("/metrics").text


@pytest.mark.engine
def test_sigkill_mid_switch_then_restart_repairs(engine, workspace, start_service):
    workspace.profile("demo-a")
    workspace.profile("slow", env=SLOW)
    first = start_service()
    first.wait_idle()
    assert first.post("/api/switch/demo-a").status_code == 200
    switching = threading.Thread(target=lambda: _ignore_transport_errors(lambda: first.post("/api/switch/slow")))
    switching.start()
    until(lambda: (first.status()["switch"] or {}).get("phase") == "load", "the switch to slow to be loading", 15)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    switching.join(timeout=30)
    # Mid-switch: slow is loading, without its restart policy; add a foreign one to the mess.
    assert running_vllm(engine) == ["modelctl-slow"]
    engine.containers.run(STANDIN_IMAGE, ["--model", "x"], name="by-hand", detach=True)
    assert engine.containers.get("modelctl-slow").attrs["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")

    second = start_service({"MODELCTL_DEFAULT_PROFILE": "demo-a"})
    status = second.wait_idle(timeout=30)
    assert running_vllm(engine) == ["modelctl-slow"], "the loading model is adopted once ready"
    assert status["active"]["profile"] == "slow" and status["active"]["ready"] is True
    assert engine.containers.get("modelctl-slow").attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    # The killed holder left no lock behind: the host CLI switches at once.
    workspace.cli_json("switch", "demo-a", "--lock-timeout", "5")
    assert running_vllm(engine) == ["modelctl-demo-a"]


def _ignore_transport_errors(call: Callable[[], Any]) -> None:
    try:
        call()
    except httpx.TransportError:
        pass  # the service was killed under the request: that is the point


@pytest.mark.engine
def test_cli_talks_to_the_service_with_modelctl_url(engine, workspace, start_service, tmp_path):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    workspace.profile("broken", env={"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_FAIL": "cuda-oom"})
    service = start_service()
    service.wait_idle()
    # No engine for the CLI: whatever works here went through the service.
    env = {"MODELCTL_URL": service.url, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}

    result = workspace.cli_json("switch", "demo-a", env=env)
    assert result["outcome"] == "switched" and result["profile"] == "demo-a"
    status = workspace.cli_json("status", env=env)
    assert status["active"]["profile"] == "demo-a" and status["switch"] is None
    assert workspace.cli_json("switch", "nope", expect=2, env=env)["error"]["message"].startswith(
        "unknown profile 'nope'"
    )
    crashed = workspace.cli("switch", "broken", env=env)
    assert crashed.returncode == 4
    assert "CUDA ran out of memory" in crashed.stderr and "rolled back to demo-a" in crashed.stderr
    assert "last lines of the container log" in crashed.stderr
    text = workspace.cli("switch", "demo-b", env=env)
    assert text.returncode == 0 and text.stdout.startswith("switched to demo-b in "), text.stderr
    assert running_vllm(engine) == ["modelctl-demo-b"]
    assert workspace.cli_json("stop", env=env) == {"stopped": ["modelctl-demo-b"]}
    assert running_vllm(engine) == []

    gone = workspace.cli_json("status", expect=5, env={**env, "MODELCTL_URL": f"http://127.0.0.1:{free_port()}"})
    assert "modelctl service unreachable" in gone["error"]["message"]


def test_an_unexpected_error_is_a_500_without_internals(tmp_path, monkeypatch):
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from modelctl.service import Service
    from modelctl.settings import Settings

    monkeypatch.setenv("MODELCTL_STATE_DIR", str(tmp_path))
    service = Service(Settings())

    async def broken(request):
        raise RuntimeError("internal detail /etc/secret")

    service.app.router.routes.append(Route("/api/broken", broken))
    response = TestClient(service.app, raise_server_exceptions=False).get("/api/broken")  # no lifespan: no engine
    assert response.status_code == 500
    assert response.json() == {
        "error": {"message": "unexpected error (RuntimeError)", "code": 1, "hint": "see the service log"}
    }


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("0.0.0.0:9000", ("0.0.0.0", 9000)), ("[::1]:8080", ("::1", 8080))],
)
def test_listen_address(listen, expected):
    from modelctl.service import parse_listen

    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "localhost", "127.0.0.1:", "127.0.0.1:99999", ":8080"])
def test_bad_listen_address_is_a_usage_error(listen):
    from modelctl.errors import UsageError
    from modelctl.service import parse_listen

    with pytest.raises(UsageError, match="MODELCTL_LISTEN: expected HOST:PORT"):
        parse_listen(listen)


@pytest.mark.engine
def test_a_failed_switch_that_restarted_a_foreign_container_leaves_it_running(engine, workspace, start_service):
    workspace.profile("broken", env={"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_FAIL": "cuda-oom"})
    service = start_service()  # no default profile
    service.wait_idle()  # the start-up reconcile would stop a foreign container: start it afterwards
    foreign = engine.containers.run(
        STANDIN_IMAGE,
        ["--model", "x"],
        name="by-hand",
        detach=True,
        environment={"STANDIN_LOAD_SECONDS": "0"},
        ports={"8000/tcp": ("127.0.0.1", free_port())},
    )
    assert running_vllm(engine) == ["by-hand"]

    error = error_of(service.post("/api/switch/broken"), 502, 4)
    assert "restarted by-hand, which ran before" in error["message"]
    service.wait_idle()  # a reconcile queued after the failure would show here
    assert running_vllm(engine) == ["by-hand"]
    foreign.reload()
    assert foreign.status == "running"
    assert "reconcile (after the failed switch to broken)" not in service.output()


@pytest.mark.engine
def test_without_a_token_only_loopback_hosts_and_origins_are_served(engine, workspace, start_service):
    workspace.profile("demo-a")
    service = start_service()
    service.wait_idle()
    port = service.url.rpartition(":")[2]

    def call(method: str, path: str, **headers: str) -> httpx.Response:
        with service.http() as client:
            return client.request(method, path, headers=headers, content=b"{}")

    # A web page in the user's browser (no-cors POST) and a name rebound to 127.0.0.1: refused, touching nothing.
    for path in ("/api/stop", "/api/switch/demo-a"):
        refused = call("POST", path, origin="https://evil.example", content_type="text/plain")
        assert "Origin 'https://evil.example' is not a loopback origin" in error_of(refused, 403, 2)["message"]
    error_of(call("GET", "/api/status", origin="null"), 403, 2)
    rebound = call("GET", "/api/status", host=f"rebind.evil.example:{port}")
    assert "Host 'rebind.evil.example' is not" in error_of(rebound, 403, 2)["message"]
    chat = call("POST", "/v1/chat/completions", origin="http://evil.example:8080")
    assert chat.status_code == 403 and chat.json()["error"]["type"] == "invalid_request_error"  # OpenAI's shape
    assert "not a loopback origin" in chat.json()["error"]["message"]
    assert running_vllm(engine) == []
    assert "refused POST /api/stop from 127.0.0.1: Origin 'https://evil.example'" in service.output()

    # This machine's names and addresses, with or without a port, and loopback origins (a local web UI).
    for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert call("GET", "/api/status", host=host).status_code == 200, host
    for origin in (f"http://127.0.0.1:{port}", "http://localhost:3000", "http://[::1]:5173"):
        assert call("GET", "/api/status", origin=origin).status_code == 200, origin
    assert call("POST", "/api/switch/demo-a", origin="http://localhost:3000").json()["outcome"] == "switched"


@pytest.mark.engine
def test_with_a_token_the_host_is_not_restricted(engine, workspace, start_service):
    token = "tok-" + os.urandom(8).hex()
    service = start_service({"MODELCTL_API_TOKEN": token})
    with service.http() as client:
        assert client.get("/api/status", headers={"host": "modelctl.internal:8080"}).status_code == 200
        error_of(client.get("/api/status", headers={"host": "modelctl.internal", "authorization": "Bearer x"}), 401, 2)


def test_a_non_loopback_listener_without_a_token_refuses_to_start(workspace):
    done = workspace.cli("serve", env={"MODELCTL_LISTEN": f"0.0.0.0:{free_port()}"}, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "MODELCTL_LISTEN=0.0.0.0:" in done.stderr and "MODELCTL_API_TOKEN is not set" in done.stderr
    assert "set MODELCTL_API_TOKEN" in done.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.2", False),
        ("localhost.evil.example", False),
        ("", False),
    ],
)
def test_loopback_hosts(host, loopback):
    from modelctl.service import is_loopback

    assert is_loopback(host) is loopback
