"""The event stream (`GET /api/events`, events.py): the bus on its own, the events an operation
tells through its PhaseClock listener (fake controller), authentication, and on the real engine the
order and content of the events of a switch and of a failed switch, and a subscriber that never
reads next to a switch. Also the per-profile idle TTL the scheduler reads (profiles' `idle_ttl`)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_scheduler import World
from test_service import SLOW, start_service, until  # noqa: F401 (start_service: a fixture)

from modelctl.client import sse_events
from modelctl.errors import NotReadyError
from modelctl.events import Event, EventBus
from modelctl.metrics import Metrics
from modelctl.operations import Operations
from modelctl.results import SwitchResult
from modelctl.scheduler import SchedulerLimits

# --- the bus ---------------------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_events_from_another_thread_arrive_in_order_with_rising_ids():
    async def main() -> list[Any]:
        bus = EventBus(min_interval={})
        bus.attach(asyncio.get_running_loop())
        sub = bus.subscribe()
        thread = threading.Thread(target=lambda: [bus.publish("switch", {"n": n}) for n in range(50)])
        thread.start()
        thread.join()
        return [await asyncio.wait_for(sub.queue.get(), 2) for _ in range(50)]

    events = run(main())
    assert [e.data["n"] for e in events] == list(range(50))
    assert [e.id for e in events] == sorted(e.id for e in events)
    frame = events[0].sse().decode()
    assert frame.startswith(f"id: {events[0].id}\nevent: switch\ndata: ") and frame.endswith("\n\n")
    assert json.loads(frame.split("data: ", 1)[1]) == {"n": 0}


def test_a_reader_that_falls_behind_is_dropped_and_never_slows_the_publisher():
    async def main() -> tuple[float, Any, Any, list[bytes], int]:
        bus = EventBus(buffer=8, min_interval={})
        bus.attach(asyncio.get_running_loop())
        slow, fast = bus.subscribe(), bus.subscribe()
        seen: list[int] = []

        async def reader() -> None:
            while (event := await fast.queue.get()) is not None:
                seen.append(event.data["n"])
                if event.data["n"] == 999:
                    return

        reading = asyncio.create_task(reader())
        began = time.monotonic()
        for n in range(1000):
            bus.publish("log", {"n": n})
            if n % 4 == 0:
                await asyncio.sleep(0)  # the fast reader keeps up
        took = time.monotonic() - began
        await asyncio.wait_for(reading, 2)
        # The slow one's stream: what it had when it was dropped is gone, its stream ends with a comment.
        frames = [f async for f in bus.stream(slow, Event(0, "state", {}), keepalive_s=1)]
        return took, slow, seen, frames, len(bus.subscribers)

    took, slow, seen, frames, subscribers = run(main())
    assert slow.dropped and subscribers == 1
    assert seen == list(range(1000))
    assert took < 0.5
    assert frames[-1].startswith(b": dropped")


def test_log_events_are_held_to_two_per_second_and_the_newest_line_is_sent():
    async def main() -> list[tuple[float, Any]]:
        bus = EventBus()
        bus.attach(asyncio.get_running_loop())
        sub = bus.subscribe()
        began = time.monotonic()
        for n in range(30):  # 30 lines in 1.5 s
            bus.publish("log", {"line": n})
            bus.publish("switch", {"phase": n})  # never held back
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)
        got = []
        while not sub.queue.empty():
            event = sub.queue.get_nowait()
            got.append((event.kind, event.data))
        return [(round(time.monotonic() - began, 1), g) for g in got]

    got = [g for _, g in run(main())]
    logs = [data["line"] for kind, data in got if kind == "log"]
    assert len([k for k, _ in got if k == "switch"]) == 30
    assert 3 <= len(logs) <= 5, logs  # 1.5 s + the last: at most 2 per second
    assert logs[0] == 0 and logs[-1] == 29  # the first at once, the newest at the end


# --- what an operation tells --------------------------------------------------------------------------


class PhasedController:
    """A controller whose switch goes through phases (and log lines), or fails in `load`."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.catalog = None

    def switch(self, name: str, *, clock: Any, **_: Any) -> SwitchResult:
        for phase in ("plan", "lock", "stop", "release", "start"):
            with clock.phase(phase, f"{phase} detail"):
                pass
        with clock.phase("load", "standin/demo"):
            clock.note("INFO Loading weights took 1.00 seconds")
            clock.note("INFO Loading weights took 1.00 seconds")  # the same line again: told once
            clock.note("INFO Starting vLLM API server on http://0.0.0.0:8000")
            if self.fail:
                raise NotReadyError("demo crashed", hint="see `modelctl logs demo`", log_tail="CUDA out of memory")
        return SwitchResult(name, f"modelctl-{name}", "http://127.0.0.1:8000/v1", name, "switched", phases=clock.phases)

    def reconcile(self, default_profile: str | None, *, clock: Any, **_: Any) -> list[str]:
        return []

    def status(self) -> Any:
        return type("Status", (), {"active": None})()


def _events_of(controller: PhasedController) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def main() -> None:
        ops = Operations(controller, Metrics(), None, events=lambda kind, data: seen.append((kind, data)))  # type: ignore[arg-type]
        try:
            await ops.switch("demo", origin="api", op_id="mine-1")
        except NotReadyError:
            pass
        ops.shutdown()

    run(main())
    return [(kind, data) for kind, data in seen if data["op"] == "mine-1"]  # not the reconcile after a failure


def test_a_switch_tells_each_phase_once_then_log_lines_then_its_result():
    seen = _events_of(PhasedController())
    assert [k for k, _ in seen] == ["switch"] * 7 + ["log", "log", "swap"]
    phases = [d["phase"] for k, d in seen if k == "switch"]
    assert phases == ["queued", "plan", "lock", "stop", "release", "start", "load"]
    first = seen[1][1]
    assert first == {
        "op": "mine-1",
        "operation": "switch",
        "target": "demo",
        "origin": "api",
        "phase": "plan",
        "detail": "plan detail",
        "elapsed": first["elapsed"],
    }
    assert seen[6][1]["detail"] == "standin/demo" and seen[6][1]["elapsed"] >= first["elapsed"]
    assert [d["line"] for k, d in seen if k == "log"] == [
        "INFO Loading weights took 1.00 seconds",
        "INFO Starting vLLM API server on http://0.0.0.0:8000",
    ]
    swap = seen[-1][1]
    assert swap["ok"] is True and swap["op"] == "mine-1" and swap["result"]["outcome"] == "switched"
    assert set(swap["phases"]) == {"plan", "lock", "stop", "release", "start", "load"}
    assert swap["elapsed"] >= 0 and swap["at"].endswith("+00:00")


def test_a_failed_switch_ends_with_its_error_cause_and_hint():
    seen = _events_of(PhasedController(fail=True))
    swap = seen[-1][1]
    assert seen[-1][0] == "swap" and swap["ok"] is False and "result" not in swap
    assert swap["phase"] == "load"
    assert swap["error"] == {
        "message": "demo crashed",
        "code": 4,
        "hint": "see `modelctl logs demo`",
        "log_tail": "CUDA out of memory",
    }


# --- authentication -------------------------------------------------------------------------------------


@pytest.fixture
def service_app(workspace, monkeypatch):
    def make(token: str | None = None) -> Any:
        from modelctl.service import Service
        from modelctl.settings import Settings

        for key, value in workspace.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        if token:
            monkeypatch.setenv("MODELCTL_API_TOKEN", token)
        else:
            monkeypatch.delenv("MODELCTL_API_TOKEN", raising=False)
        return Service(Settings())

    return make


def test_the_event_stream_and_the_log_route_need_what_the_api_needs(service_app):
    from starlette.testclient import TestClient

    service = service_app("s3cret")
    client = TestClient(service.app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    for path in ("/api/events", "/api/logs/demo-a?tail=5", "/api/profiles/invalid"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
    assert client.get("/health").json()["token_required"] is True
    # The page itself needs no token (a page load cannot send one): it asks for it.
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]

    local = TestClient(service_app().app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    assert local.get("/health").json()["token_required"] is False
    for path in ("/api/events", "/"):
        refused = local.get(path, headers={"Host": "rebound.example:8080"})
        assert refused.status_code == 403, path
        foreign = local.get(path, headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403, path
    assert local.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert local.get("/ui/../service.py").status_code == 404
    assert local.get("/ui/index.html").status_code == 404
    assert local.post("/api/switch/demo-a?op=bad%20id").status_code == 400


# --- per-profile idle TTL -----------------------------------------------------------------------------


def test_a_profile_s_idle_ttl_overrides_the_global_one():
    async def main() -> None:
        world = World(SchedulerLimits(min_residency=10.0, max_wait=30.0, idle_ttl=60.0))
        own = {"a": 5.0, "b": 0.0}  # b: never stopped for idleness
        world.scheduler.idle_ttl = lambda profile: own.get(profile, 60.0)
        try:
            (await world.loaded("a", 0.0)).release()
            await world.at(4.0)
            assert world.effects.calls == [(0.0, "swap", "a", "proxy")]
            await world.at(5.0)
            assert world.effects.calls[-1] == (5.0, "stop")
            await world.complete()
            (await world.loaded("b", 10.0)).release()
            await world.at(1000.0)
            assert world.effects.calls[-1] == (10.0, "swap", "b", "proxy") and world.scheduler.current == "b"
            (await world.loaded("c", 1001.0)).release()
            await world.at(1060.0)
            assert world.effects.calls[-1] == (1001.0, "swap", "c", "proxy")  # the global 60 s
            await world.at(1061.0)
            assert world.effects.calls[-1] == (1061.0, "stop")
        finally:
            await world.scheduler.aclose()

    run(main())


def test_idle_ttl_is_a_profile_key(workspace):
    from modelctl.profiles import load_profile

    workspace.profile("demo-a", idle_ttl=300)
    assert load_profile(workspace.profiles_dir / "demo-a.yaml").idle_ttl == 300.0
    workspace.profile("demo-b", idle_ttl=-1)
    with pytest.raises(Exception, match="idle_ttl"):
        load_profile(workspace.profiles_dir / "demo-b.yaml")


# --- on the real engine -----------------------------------------------------------------------------------


# Phases a switch has only when the image or the weights are missing here.
OPTIONAL = {"pull", "fetch"}


class Listener:
    """Follows /api/events in a thread; every (kind, data) in `events`."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.first = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.first.wait(20), "no first event from /api/events"

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            yield line

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, headers=self.headers, trust_env=False, timeout=60) as http:
                with http.stream("GET", "/api/events") as response:
                    self.content_type = response.headers["content-type"]
                    for kind, data in sse_events(self._lines(response)):
                        self.events.append((kind, data))
                        self.first.set()
        except httpx.TransportError:  # the service stopped at the end of the test
            pass

    def of(self, op: str) -> list[tuple[str, dict[str, Any]]]:
        return [(k, d) for k, d in self.events if d.get("op") == op]

    def close(self) -> None:
        self._stop.set()


@pytest.mark.engine
def test_the_events_of_a_switch_and_of_a_failed_switch(engine, workspace, start_service):
    workspace.profile("slow", env={**SLOW, "STANDIN_LOAD_SECONDS": "2"})
    workspace.profile("broken", env={"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_FAIL": "cuda-oom"})
    service = start_service()
    service.wait_idle()
    listener = Listener(service.url)
    try:
        assert listener.content_type.startswith("text/event-stream")
        kind, state = listener.events[0]
        assert kind == "state" and state["active"] is None and state["switch"] is None
        assert {"containers", "gpu", "proxy", "swaps", "last_error"} <= set(state)

        assert service.post("/api/switch/slow?op=test-1").status_code == 200
        until(lambda: any(k == "swap" for k, _ in listener.of("test-1")), "the swap event of the switch", 10)
        mine = listener.of("test-1")
        phases = [d["phase"] for k, d in mine if k == "switch" and d["phase"] not in OPTIONAL]
        assert phases == ["queued", "plan", "lock", "stop", "release", "start", "load"]
        assert [k for k, _ in mine][-1] == "swap"
        logs = [d["line"] for k, d in mine if k == "log"]
        assert logs and all(line for line in logs)
        elapsed = [d["elapsed"] for k, d in mine if k == "switch"]
        assert elapsed == sorted(elapsed)
        swap = mine[-1][1]
        assert swap["ok"] and swap["result"]["profile"] == "slow" and swap["phases"]["load"] >= 1.5
        # What runs changed: a state event says so, without asking.
        until(
            lambda: any(k == "state" and (d["active"] or {}).get("profile") == "slow" for k, d in listener.events),
            "a state event with slow active",
            10,
        )

        failed = service.post("/api/switch/broken?op=test-2")
        assert failed.status_code == 502, failed.text
        until(lambda: any(k == "swap" for k, _ in listener.of("test-2")), "the swap event of the failed switch", 30)
        mine = listener.of("test-2")
        phases = [d["phase"] for k, d in mine if k == "switch" and d["phase"] not in OPTIONAL]
        assert phases[:7] == ["queued", "plan", "lock", "stop", "release", "start", "load"]
        assert "rollback" in phases[7:]
        swap = mine[-1][1]
        assert swap["ok"] is False and swap["error"]["code"] == 4 and swap["phase"] in ("load", "rollback")
        assert "CUDA ran out of memory" in swap["error"]["message"] and "max_num_seqs" in swap["error"]["hint"]
        assert "rolled back to slow" in swap["error"]["message"]
    finally:
        listener.close()


@pytest.mark.engine
def test_a_subscriber_that_never_reads_does_not_delay_a_switch(engine, workspace, start_service):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    service = start_service()
    service.wait_idle()
    host, port = service.url.removeprefix("http://").split(":")
    stalled = []
    for _ in range(3):  # subscribed, and never read again
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        stalled.append(sock)
    try:
        timings = []
        for name in ("demo-a", "demo-b", "demo-a", "demo-b"):
            began = time.monotonic()
            answer = service.post(f"/api/switch/{name}")
            assert answer.status_code == 200, answer.text
            timings.append(time.monotonic() - began)
        assert max(timings) < 15, timings
        assert service.get("/health").status_code == 200
    finally:
        for sock in stalled:
            sock.close()


# --- loading events for streaming clients (MODELCTL_PROXY_LOADING_EVENTS=1) -------------------------------

CHAT = [{"role": "user", "content": "Say hello"}]


@pytest.mark.engine
def test_a_stream_waiting_for_its_model_gets_loading_comments_then_the_answer(engine, workspace, start_service):
    workspace.profile("slow", env={"STANDIN_LOAD_SECONDS": "5"})
    service = start_service({"MODELCTL_PROXY_LOADING_EVENTS": "1"})
    service.wait_idle()
    began = time.monotonic()
    lines: list[tuple[float, str]] = []
    with service.http() as http:
        body = {"model": "slow", "messages": CHAT, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            headers_after = time.monotonic() - began
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line:
                    lines.append((time.monotonic() - began, line))
    assert headers_after < 2.0, headers_after  # at once, not after the load
    comments = [(at, line) for at, line in lines if line.startswith(": modelctl loading slow: ")]
    assert len(comments) >= 2, lines
    assert re.fullmatch(r": modelctl loading slow: \w+ \d+s", comments[0][1]), comments[0]
    assert any(": load " in line for _, line in comments), comments
    data = [line for _, line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]" and len(data) > 2
    first_data = next(at for at, line in lines if line.startswith("data: "))
    assert all(at < first_data for at, _ in comments)  # comments only until the answer begins
    # Once the model runs, a stream goes straight through: its own headers, no comment.
    with service.http() as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            again = [line for line in response.iter_lines() if line]
    assert not any(line.startswith(":") for line in again) and again[-1] == "data: [DONE]"


@pytest.mark.engine
def test_a_failed_load_ends_the_waiting_stream_with_an_error_the_openai_client_raises(engine, workspace, start_service):
    import openai

    workspace.profile("broken", env={"STANDIN_LOAD_SECONDS": "0.5", "STANDIN_FAIL": "cuda-oom"})
    service = start_service({"MODELCTL_PROXY_LOADING_EVENTS": "1"})
    service.wait_idle()
    ai = openai.OpenAI(base_url=service.url + "/v1", api_key="none", max_retries=0)
    stream = ai.chat.completions.create(model="broken", messages=CHAT, stream=True)
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert "CUDA ran out of memory" in str(caught.value.message)
