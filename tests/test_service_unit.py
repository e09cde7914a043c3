"""The service's parts without a Docker engine (issue 10): NVML behind a deadline, background jobs
that fail visibly, the model the start-up reconcile adopted, the reads' own threads, and `serve`
refusing an unknown default profile before it binds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import REPO, free_port

from modelctl.errors import UnknownProfileError
from modelctl.gpu import GpuDevice, GpuState
from modelctl.gpu_thread import ThreadedGpu
from modelctl.metrics import Metrics
from modelctl.operations import Operations
from modelctl.results import ActiveModel

# --- NVML in one thread, with a deadline ------------------------------------------------------------


def state(free: float) -> GpuState:
    return GpuState("nvml", "", "550", [GpuDevice(0, "GPU", 12.0, free, 12.0 - free, [])])


class HangingGpu:
    """A GpuMonitor whose driver answers until `hang` is set, then never (until `release`)."""

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.release = threading.Event()
        self.reads = 0
        self.threads: set[str] = set()

    def read(self) -> GpuState:
        self.reads += 1
        self.threads.add(threading.current_thread().name)
        if self.hang.is_set():
            self.release.wait(30)
        return state(4.0)

    def wait_until_free(self, need_gib: float, timeout_s: float) -> tuple[bool, float, GpuState]:
        self.threads.add(threading.current_thread().name)
        if self.hang.is_set():
            self.release.wait(30)
        return True, 0.0, state(need_gib)


def test_a_hung_nvml_call_answers_with_the_last_reading_within_the_timeout():
    inner = HangingGpu()
    gpu = ThreadedGpu(inner, timeout_s=0.3)
    try:
        assert gpu.read() == state(4.0)
        inner.hang.set()
        began = time.monotonic()
        stale = gpu.read()
        assert time.monotonic() - began < 1.0
        assert stale.devices == state(4.0).devices and "did not answer within 0.3 s" in stale.reason
        # Callers meanwhile share the one pending read: the hung thread is not handed a queue of them.
        results = []
        threads = [threading.Thread(target=lambda: results.append(gpu.read())) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=5)
        assert len(results) == 5 and inner.reads == 2
        assert inner.threads == {"modelctl-nvml"}
    finally:
        inner.release.set()


def test_a_hung_nvml_call_in_a_switch_does_not_hold_the_lock_for_ever():
    inner = HangingGpu()
    gpu = ThreadedGpu(inner, timeout_s=0.3)
    try:
        assert gpu.wait_until_free(2.0, 1.0)[0] is True
        inner.hang.set()
        began = time.monotonic()
        freed, _, last = gpu.wait_until_free(2.0, 60.0)
        assert time.monotonic() - began < 2.0  # one slice and the deadline, not the 60 s release timeout
        assert freed is True and "did not answer" in last.reason  # nothing to wait on: as in degraded mode
    finally:
        inner.release.set()


def test_without_any_reading_a_hung_nvml_is_degraded():
    inner = HangingGpu()
    inner.hang.set()
    try:
        answer = ThreadedGpu(inner, timeout_s=0.2).read()
        assert answer.mode == "degraded" and "did not answer" in answer.reason
    finally:
        inner.release.set()


# --- background jobs --------------------------------------------------------------------------------


@dataclass
class FakeController:
    """What Operations asks of the controller, for the reconcile."""

    fail: BaseException | None = None
    active: ActiveModel | None = None
    calls: list[str] = field(default_factory=list)
    catalog: Any = None

    def reconcile(self, default_profile: str | None, *, clock: Any = None, **_: Any) -> list[str]:
        self.calls.append(f"reconcile {default_profile}")
        if self.fail is not None:
            raise self.fail
        return []

    def status(self) -> Any:
        return type("Status", (), {"active": self.active})()


def _reconcile(controller: FakeController, adopted: list) -> Operations:
    async def run() -> Operations:
        ops = Operations(controller, Metrics(), "demo-a")  # type: ignore[arg-type]
        ops.on_reconciled = lambda *args: adopted.append(args)
        ops.reconcile_in_background("demo-a", "start-up")
        deadline = time.monotonic() + 5
        while ops.current is not None or not controller.calls:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the call_soon_threadsafe of on_reconciled
        ops.shutdown()
        return ops

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("fail", "code", "words"),
    [
        (UnknownProfileError("unknown profile 'demo-a' (known: b)"), 2, "unknown profile 'demo-a'"),
        (RuntimeError("a bug"), 1, "unexpected RuntimeError"),
    ],
)
def test_a_failed_background_reconcile_is_logged_and_kept_for_status(fail, code, words, caplog):
    adopted: list = []
    with caplog.at_level("ERROR", logger="modelctl.service"):
        ops = _reconcile(FakeController(fail=fail), adopted)
    error = ops.last_error
    assert error is not None and error["operation"] == "reconcile" and error["target"] == "demo-a"
    assert error["code"] == code and words in error["message"] and error["at"].endswith("+00:00")
    assert "reconcile (start-up): " in caplog.text
    assert adopted == []


def test_the_model_the_reconcile_left_running_is_adopted_by_the_proxy():
    adopted: list = []
    active = ActiveModel("demo-a", "modelctl-demo-a", "demo-a", True, "http://127.0.0.1:8000/v1")
    ops = _reconcile(FakeController(active=active), adopted)
    assert ops.last_error is None
    assert adopted == [("demo-a", "http://127.0.0.1:8000/v1", 1)]  # the reconcile's generation


def test_status_shows_the_last_error_and_reads_run_in_their_own_threads(workspace, monkeypatch):
    from starlette.testclient import TestClient

    from modelctl.service import Service
    from modelctl.settings import Settings

    for key, value in workspace.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    service = Service(Settings())
    threads: list[str] = []

    def status() -> Any:
        threads.append(threading.current_thread().name)
        raise UnknownProfileError("stand-in for a read")

    service.reader.status = status  # type: ignore[method-assign]
    service.operations.last_error = {"operation": "reconcile", "target": "x", "message": "m", "code": 2, "at": "t"}
    client = TestClient(service.app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    assert client.get("/api/status").status_code == 404
    assert threads and threads[0].startswith("modelctl-read")

    monkeypatch.setattr("modelctl.service.status_json", lambda s: {"active": None})
    service.reader.status = lambda: None  # type: ignore[method-assign, assignment]
    body = client.get("/api/status").json()
    assert body["last_error"] == {"operation": "reconcile", "target": "x", "message": "m", "code": 2, "at": "t"}


def test_a_read_that_never_returns_is_a_503_after_its_deadline(workspace, monkeypatch):
    from starlette.testclient import TestClient

    from modelctl import service as service_module
    from modelctl.service import Service
    from modelctl.settings import Settings

    for key, value in workspace.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setattr(service_module, "READ_DEADLINE_S", 0.3)
    service = Service(Settings())
    hang = threading.Event()
    service.reader.status = lambda: hang.wait(10)  # type: ignore[method-assign, assignment, return-value]
    try:
        response = TestClient(service.app, base_url="http://127.0.0.1", raise_server_exceptions=False).get(
            "/api/status"
        )
        assert response.status_code == 503 and "did not answer within 0.3 s" in response.json()["error"]["message"]
    finally:
        hang.set()


# --- serve refuses an unknown default profile --------------------------------------------------------


def test_serve_refuses_an_unknown_default_profile_before_it_binds(workspace):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    port = free_port()
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "modelctl", "serve"],
        env={
            **workspace.env,
            "MODELCTL_LISTEN": f"127.0.0.1:{port}",
            "MODELCTL_DEFAULT_PROFILE": "demo-c",
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    assert "MODELCTL_DEFAULT_PROFILE='demo-c'" in done.stderr and "known: demo-a, demo-b" in done.stderr
    assert "serving on" not in done.stderr  # refused before it bound and started
    assert time.monotonic() - began < 30


def test_serve_refuses_a_default_profile_whose_file_is_invalid(workspace):
    workspace.profile("demo-a")
    (workspace.profiles_dir / "demo-b.yaml").write_text("name: demo-b\nvram_gib: lots\n")
    done = subprocess.run(
        [sys.executable, "-m", "modelctl", "serve"],
        env={
            **workspace.env,
            "MODELCTL_LISTEN": f"127.0.0.1:{free_port()}",
            "MODELCTL_DEFAULT_PROFILE": "demo-b",
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert "MODELCTL_DEFAULT_PROFILE='demo-b'" in done.stderr and "demo-b.yaml" in done.stderr
