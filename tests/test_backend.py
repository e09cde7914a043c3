"""The CLI's two backends give the same typed results, and the CLI renders them the same way:
the service's JSON read back (report.py's `*_from_json`) renders exactly as the local result."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelctl import cli
from modelctl.backend import BackendStatus, LocalBackend, ServiceBackend
from modelctl.client import ServiceClient
from modelctl.errors import DoesNotFitError, NotReadyError
from modelctl.footprints import Footprint
from modelctl.gpu import GpuBudget, GpuDevice, GpuProcess, GpuState
from modelctl.report import (
    OperationInfo,
    gpu_from_json,
    gpu_json,
    operation_from_json,
    operation_json,
    status_from_json,
    status_json,
    switch_from_json,
    switch_json,
)
from modelctl.results import ActiveModel, GpuHolder, GpuReport, Status, SwitchResult
from modelctl.runtime import ContainerInfo
from modelctl.settings import Settings

UNDER_WAY = OperationInfo("switch", "demo-b", "load", "Loading weights", "2025-01-01T00:00:00.000+00:00")


def nvml_status() -> Status:
    # Figures on a rounding edge: text and JSON must round them the same way on both paths.
    device = GpuDevice(0, "RTX [bold]4070[/bold]", 11.99449999, 3.0049996, 8.98949, [GpuProcess(7, "vllm", 8.0)])
    return Status(
        active=ActiveModel("demo-a", "modelctl-demo-a", "demo-a", True, "http://127.0.0.1:8000/v1"),
        containers=[
            ContainerInfo(
                "a" * 64, "modelctl-demo-a", "vllm/vllm-openai:v0.11.1", "running", "demo-a", "h", "demo-a", 8000
            ),
            ContainerInfo("b" * 64, "my-vllm", "vllm/vllm-openai:latest", "exited", None, None, None, None),
        ],
        gpu=GpuReport(
            GpuState("nvml", "", "550.54", [device]),
            GpuBudget(11.99449999, "NVML: GPU 0 RTX 4070"),
            [GpuHolder(0, 42, "python3", 7.123456, "modelctl-demo-a"), GpuHolder(0, 43, "Xorg", None, None)],
        ),
        footprints={"demo-a": Footprint(5.5, 4.0, "h", 1.0), "demo-b": Footprint(3.0, 4.0, "h", 1.0)},
    )


def degraded_status() -> Status:
    return Status(
        active=ActiveModel("demo-a", "modelctl-demo-a", None, False, "http://127.0.0.1:8000/v1"),
        containers=[],
        gpu=GpuReport(
            GpuState("degraded", "NVML not found", None, []),
            GpuBudget(12.00049, "assumed (MODELCTL_GPU_TOTAL_GIB)"),
            None,
            estimated_used_gib=4.0,
        ),
    )


def no_process_list_status() -> Status:
    device = GpuDevice(0, "GPU", 16.0, 10.0, 6.0, None)  # WSL2: memory, but no holders
    return Status(None, [], GpuReport(GpuState("nvml", "", "550", [device]), GpuBudget(16.0, "NVML"), None))


STATUSES = [nvml_status, degraded_status, no_process_list_status]


@pytest.mark.parametrize("make", STATUSES)
def test_status_document_round_trips(make):
    document = json.loads(json.dumps(status_json(make())))  # as it crosses the wire
    assert status_json(status_from_json(document)) == document


@pytest.mark.parametrize("make", STATUSES)
def test_gpu_document_round_trips(make):
    document = json.loads(json.dumps(gpu_json(make().gpu)))
    assert gpu_json(gpu_from_json(document)) == document


def test_switch_and_operation_documents_round_trip():
    result = SwitchResult(
        "demo-a", "modelctl-demo-a", "http://127.0.0.1:8000/v1", "demo-a", "switched", ["my-vllm"],
        {"plan": 0.01, "stop": 1.2}, 3.4, ["skipped invalid profile /p/bad.yaml: ..."],
    )  # fmt: skip
    assert switch_from_json(json.loads(json.dumps(switch_json(result)))) == result
    assert switch_from_json({**switch_json(result), "added_by_a_newer_service": 1}) == result
    assert operation_from_json(operation_json(UNDER_WAY)) == UNDER_WAY
    assert operation_json(None) is None and operation_from_json(None) is None


class FakeClient:
    """ServiceClient's surface, answering with the documents the service renders."""

    def __init__(self, status: Status, operation: OperationInfo | None = None) -> None:
        self.document = {**status_json(status), "switch": operation_json(operation)}
        self.calls: list[tuple] = []

    def status(self):
        return json.loads(json.dumps(self.document))

    def stop(self, *, lock_timeout):
        self.calls.append(("stop", lock_timeout))
        return ["modelctl-demo-a"]

    def switch(self, name, **kwargs):
        self.calls.append(("switch", name, kwargs))
        return switch_json(SwitchResult(name, f"modelctl-{name}", "u", name, "switched", warnings=["w"]))


class FakeLocal:
    feeds_clock = True

    def __init__(self, status: Status) -> None:
        self._status = status
        self.controller = self

    def status(self):
        return BackendStatus(self._status)

    def gpu_report(self):
        return self._status.gpu


def invoke(monkeypatch, backend, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(cli, "_backend", lambda: backend)
    monkeypatch.setattr(cli, "_local", lambda: backend)
    done = CliRunner().invoke(cli.app, list(args))
    return done.exit_code, done.output


@pytest.mark.parametrize("make", STATUSES)
def test_status_renders_the_same_from_the_service(monkeypatch, make):
    local = invoke(monkeypatch, FakeLocal(make()), "status")
    remote = invoke(monkeypatch, ServiceBackend(FakeClient(make())), "status")
    assert local[0] == remote[0] == 0
    assert local[1] == remote[1]
    assert local[1].startswith("active: ")


def test_status_json_from_the_service_is_the_service_document(monkeypatch):
    client = FakeClient(nvml_status(), UNDER_WAY)
    code, output = invoke(monkeypatch, ServiceBackend(client), "status", "--json")
    assert code == 0 and json.loads(output) == client.document
    code, output = invoke(monkeypatch, FakeLocal(nvml_status()), "status", "--json")
    assert json.loads(output) == status_json(nvml_status()), "locally no `switch`: only the service knows"


def test_status_shows_the_operation_under_way(monkeypatch):
    code, output = invoke(monkeypatch, ServiceBackend(FakeClient(degraded_status(), UNDER_WAY)), "status")
    assert code == 0
    assert output.splitlines()[0] == f"under way: switch demo-b - load since {UNDER_WAY.since}"


def test_service_backend_types_what_it_reads():
    client = FakeClient(nvml_status(), UNDER_WAY)
    backend = ServiceBackend(client)  # type: ignore[arg-type]
    seen = backend.status()
    assert seen.knows_operations and seen.operation == UNDER_WAY
    assert seen.status.active == nvml_status().active
    assert [c.name for c in seen.status.containers] == ["modelctl-demo-a", "my-vllm"]
    assert seen.status.footprints["demo-a"].exceeds
    result = backend.switch("demo-b", timeout=None, lock_timeout=5.0, rollback=False, dry_run=True)
    assert isinstance(result, SwitchResult) and result.warnings == ["w"]
    assert client.calls[-1] == (
        "switch",
        "demo-b",
        {"timeout": None, "lock_timeout": 5.0, "rollback": False, "dry_run": True},
    )
    assert backend.stop(lock_timeout=1.0) == ["modelctl-demo-a"]


def mock_service(handler) -> ServiceBackend:
    client = ServiceClient("http://service.test", token="t0ken")
    client._http = httpx.Client(
        base_url=client.url, transport=httpx.MockTransport(handler), headers=client._http.headers
    )
    return ServiceBackend(client)


def test_service_backend_over_http():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/status":
            return httpx.Response(200, json={**status_json(degraded_status()), "switch": None})
        if request.url.raw_path.split(b"?")[0] == b"/api/switch/demo%2Fa":  # the name is one segment
            return httpx.Response(200, json=switch_json(SwitchResult("demo-a", "c", "u", "demo-a", "switched")))
        if request.url.path == "/api/stop":
            return httpx.Response(200, json={"stopped": []})
        return httpx.Response(409, json={"error": {"message": "huge needs 20 GiB", "code": 3, "hint": "h"}})

    backend = mock_service(handler)
    status = backend.status()
    assert status.operation is None and status.knows_operations
    assert status_json(status.status) == status_json(degraded_status())
    assert backend.switch("demo/a", timeout=30, lock_timeout=2, rollback=False).outcome == "switched"
    assert dict(seen[-1].url.params) == {"lock_timeout": "2", "timeout": "30", "no_rollback": "true"}
    assert seen[-1].headers["authorization"] == "Bearer t0ken"
    assert backend.stop(lock_timeout=1) == []
    with pytest.raises(DoesNotFitError, match="huge needs 20 GiB"):
        backend.switch("huge", lock_timeout=1)


def test_service_errors_keep_the_log_tail():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "crashed", "code": 4, "log_tail": "line 1\nline 2"}})

    with pytest.raises(NotReadyError) as caught:
        mock_service(handler).switch("broken", lock_timeout=1)
    assert caught.value.log_tail == "line 1\nline 2" and caught.value.exit_code == 4


# --- the local backend, against a fake engine and GPU ----------------------------------------


class FakeRuntime:
    """Only what status and a dry run read: the list of vLLM containers."""

    def __init__(self, containers: list[ContainerInfo]) -> None:
        self.containers = containers

    def vllm_containers(self, *, include_stopped: bool = False) -> list[ContainerInfo]:
        return [c for c in self.containers if include_stopped or c.running]


class NoGpu:
    def read(self) -> GpuState:
        return GpuState("degraded", "no GPU here", None, [])


@pytest.fixture
def local(tmp_path: Path, monkeypatch) -> LocalBackend:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "demo-a.yaml").write_text(
        "name: demo-a\nmodel: m/a\nimage: vllm/vllm-openai:v0.11.1\nvram_gib: 4\nmax_model_len: 4096\n"
        "max_num_seqs: 2\nport: 18000\n"
    )
    (profiles / "bad.yaml").write_text("name: bad\n")
    monkeypatch.setenv("MODELCTL_PROFILES_DIR", str(profiles))
    monkeypatch.setenv("MODELCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MODELCTL_GPU_TOTAL_GIB", "12")
    foreign = ContainerInfo("f" * 64, "my-vllm", "vllm/vllm-openai:latest", "exited", None, None, None, None)
    return LocalBackend(Settings(), runtime=FakeRuntime([foreign]), gpu=NoGpu())  # type: ignore[arg-type]


def test_local_backend_status_and_dry_run(local):
    seen = local.status()
    assert not seen.knows_operations and seen.operation is None
    assert seen.status.active is None and [c.name for c in seen.status.containers] == ["my-vllm"]
    assert seen.status.gpu.estimated_used_gib == 0
    result = local.switch("demo-a", lock_timeout=1, dry_run=True)
    assert result.outcome == "planned" and result.url == "http://127.0.0.1:18000/v1"
    assert len(result.warnings) == 1 and "bad.yaml" in result.warnings[0]


def test_local_backend_times_phases_on_the_callers_clock(local):
    from modelctl.progress import PhaseClock

    heard: list[tuple[str, str]] = []
    clock = PhaseClock(lambda phase, detail: heard.append((phase, detail)))
    result = local.switch("demo-a", lock_timeout=1, dry_run=True, clock=clock)
    assert heard == [("plan", "")] and list(result.phases) == ["plan"] == list(clock.phases)


def test_status_prints_profile_warnings_on_stderr(monkeypatch):
    status = degraded_status()
    status.warnings = ["skipped invalid profile /p/typo.yaml: missing required key 'image'"]
    monkeypatch.setattr(cli, "_backend", lambda: FakeLocal(status))
    done = CliRunner().invoke(cli.app, ["status"])
    assert done.exit_code == 0
    assert done.stderr.splitlines() == [f"warning: {status.warnings[0]}"]
    assert "warning" not in done.stdout
    as_json = CliRunner().invoke(cli.app, ["status", "--json"])
    assert json.loads(as_json.stdout) == status_json(status)
