"""The service's enforcer: a foreign vLLM container started while it runs is stopped within 2 s
(MODELCTL_ENFORCE=stop) or only reported (warn); modelctl's containers are never touched.

The logic runs against a scripted runtime; the promise itself on the test engine, with real
`docker run`s and the engine's own event stream (including one cut and reconnected).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path

import pytest
from conftest import STANDIN_IMAGE, free_port
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from modelctl.enforcer import Enforcer
from modelctl.errors import EngineUnreachableError
from modelctl.runtime import LABEL_MANAGED, ContainerInfo, StartEvent
from modelctl.runtime.docker_engine import DockerRuntime
from modelctl.settings import Settings


def settings(enforce: str = "stop") -> Settings:
    return Settings(enforce=enforce, stop_grace=10, gpus="none")  # the enforcer does not wait the grace


def until(predicate, timeout_s: float, what: str):
    """Poll (never sleep-as-sync) until predicate() is truthy; its value, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"not within {timeout_s} s: {what}")


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, info: ContainerInfo, action: str) -> None:
        with self.lock:
            self.seen.append((info.name, action))


# --- the logic, on a scripted runtime ------------------------------------------------------


def info(name: str, *, managed: bool = False, state: str = "running") -> ContainerInfo:
    return ContainerInfo(
        id=f"{name}-id",
        name=name,
        image=STANDIN_IMAGE,
        state=state,
        profile="p" if managed else None,
        plan_hash=None,
        served_model=None,
        port=None,
    )


class _Stream:
    def __init__(self, events: queue.Queue) -> None:
        self.events = events

    def __iter__(self):
        while True:
            event = self.events.get()
            if event is None:
                return
            if isinstance(event, Exception):
                raise event
            yield event

    def close(self) -> None:
        self.events.put(None)


class ScriptedRuntime:
    """container_starts() hands out one scripted stream per connection; records what it stopped."""

    def __init__(self, containers: dict[str, ContainerInfo], connections: int = 1) -> None:
        self.containers = containers
        self.streams = [queue.Queue() for _ in range(connections)]
        self.since: list[int | None] = []
        self.stopped: list[str] = []

    def container_starts(self, since_nano=None):
        self.since.append(since_nano)
        if len(self.since) > len(self.streams):
            raise EngineUnreachableError("no more connections in this script")
        return _Stream(self.streams[len(self.since) - 1])

    def vllm_container(self, container_id):
        return self.containers.get(container_id)

    def stop(self, containers, grace_s):
        self.stopped += [c.name for c in containers]


def start_event(name: str, t: int, **labels: str) -> StartEvent:
    return StartEvent(f"{name}-id", t, labels)


def test_stops_foreign_vllm_only():
    runtime = ScriptedRuntime(
        {
            "foreign-id": info("foreign"),
            "mine-id": info("modelctl-a", managed=True),
            "gone-id": info("gone", state="exited"),
        }
    )
    record = Recorder()
    enforcer = Enforcer(runtime, settings(), on_foreign=record)
    enforcer.start()
    try:
        for event in (
            start_event("mine", 1, **{LABEL_MANAGED: "true"}),  # modelctl's by its label: not even inspected
            start_event("busybox", 2),  # not a vLLM server
            start_event("gone", 3),  # exited meanwhile
            start_event("foreign", 4),
        ):
            runtime.streams[0].put(event)
        until(lambda: record.seen, 2, "the foreign container reported")
    finally:
        enforcer.stop()
    assert runtime.stopped == ["foreign"]
    assert record.seen == [("foreign", "stopped")]


def test_warn_only_reports(caplog):
    runtime = ScriptedRuntime({"foreign-id": info("foreign")})
    record = Recorder()
    enforcer = Enforcer(runtime, settings("warn"), on_foreign=record)
    with caplog.at_level(logging.WARNING, logger="modelctl.enforcer"):
        enforcer.start()
        try:
            runtime.streams[0].put(start_event("foreign", 1))
            until(lambda: record.seen, 2, "the foreign container reported")
        finally:
            enforcer.stop()
    assert runtime.stopped == [] and record.seen == [("foreign", "warned")]
    assert any("foreign" in r.getMessage() and "MODELCTL_ENFORCE=warn" in r.getMessage() for r in caplog.records)


def test_reconnects_replays_from_the_last_event_and_ignores_repeats(caplog):
    runtime = ScriptedRuntime({"a-id": info("a"), "b-id": info("b")}, connections=2)
    record = Recorder()
    enforcer = Enforcer(runtime, settings(), on_foreign=record)
    with caplog.at_level(logging.WARNING, logger="modelctl.enforcer"):
        enforcer.start()
        try:
            runtime.streams[0].put(start_event("a", 100))
            until(lambda: record.seen, 2, "a reported")
            runtime.streams[0].put(EngineUnreachableError("Docker engine at x ended its event stream"))
            until(lambda: len(runtime.since) == 2, 3, "a reconnect")
            runtime.streams[1].put(start_event("a", 100))  # the engine replays from `since`, inclusive
            runtime.streams[1].put(start_event("b", 200))
            until(lambda: len(record.seen) == 2, 2, "b reported")
        finally:
            enforcer.stop()
    assert runtime.since == [None, 100]
    assert runtime.stopped == ["a", "b"], "a once, not again on the replay"
    assert any("cannot watch the engine's events" in r.getMessage() for r in caplog.records)


def test_stop_ends_the_watch_promptly():
    runtime = ScriptedRuntime({})
    enforcer = Enforcer(runtime, settings())
    enforcer.start()
    until(enforcer.connected.is_set, 2, "connected")
    began = time.monotonic()
    enforcer.stop()
    assert time.monotonic() - began < 1 and not enforcer._thread.is_alive()


def test_settings_default_and_refusal(monkeypatch):
    from modelctl.errors import UsageError
    from modelctl.settings import load_settings

    monkeypatch.delenv("MODELCTL_ENFORCE", raising=False)
    assert load_settings().enforce == "stop"
    monkeypatch.setenv("MODELCTL_ENFORCE", "ignore")
    with pytest.raises(UsageError, match="MODELCTL_ENFORCE"):
        load_settings()


# --- on the test engine --------------------------------------------------------------------


def managed_container(engine, name: str):
    return engine.containers.run(
        STANDIN_IMAGE,
        ["--model", f"standin/{name}", "--port", "8000"],
        name=f"modelctl-{name}",
        labels={LABEL_MANAGED: "true", "modelctl.profile": name},
        environment={"STANDIN_LOAD_SECONDS": "0.2"},
        detach=True,
    )


def wait_exited(container, timeout_s: float) -> float:
    began = time.monotonic()
    Retrying(
        retry=retry_if_result(lambda status: status != "exited"),
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.02),
        reraise=True,
    )(lambda: (container.reload(), container.status)[1])
    return time.monotonic() - began


@pytest.mark.engine
def test_foreign_vllm_started_beside_the_model_is_stopped_within_2_s(engine, caplog):
    mine = managed_container(engine, "demo-a")
    engine.images.get(STANDIN_IMAGE).tag("local/busybox", "1")
    record = Recorder()
    enforcer = Enforcer(DockerRuntime(), settings(), on_foreign=record)
    with caplog.at_level(logging.WARNING, logger="modelctl.enforcer"):
        enforcer.start()
        try:
            until(enforcer.connected.is_set, 10, "the enforcer watches the engine")
            bystander = engine.containers.run(
                "local/busybox:1", name="not-vllm", entrypoint=["/bin/sh", "-c", "sleep 300"], detach=True
            )
            foreign = engine.containers.run(
                STANDIN_IMAGE,
                ["--model", "x"],
                name="my-vllm",
                detach=True,
                ports={"8000/tcp": ("127.0.0.1", free_port())},
            )
            took = wait_exited(foreign, 5)
            until(lambda: record.seen, 2, "the callback")
        finally:
            enforcer.stop()
    assert took <= 2.0, f"stopped after {took:.2f} s"
    assert record.seen == [("my-vllm", "stopped")]
    assert any(
        "stopped a foreign vLLM container" in r.getMessage() and "my-vllm" in r.getMessage() for r in caplog.records
    )
    for untouched in (mine, bystander):
        untouched.reload()
        assert untouched.status == "running", f"{untouched.name} is not the enforcer's to stop"


@pytest.mark.engine
def test_warn_leaves_the_foreign_container_running(engine, caplog):
    record = Recorder()
    enforcer = Enforcer(DockerRuntime(), settings("warn"), on_foreign=record)
    with caplog.at_level(logging.WARNING, logger="modelctl.enforcer"):
        enforcer.start()
        try:
            until(enforcer.connected.is_set, 10, "the enforcer watches the engine")
            foreign = engine.containers.run(STANDIN_IMAGE, ["--model", "x"], name="my-vllm", detach=True)
            until(lambda: record.seen, 3, "the warning")
        finally:
            enforcer.stop()
    foreign.reload()
    assert foreign.status == "running" and record.seen == [("my-vllm", "warned")]
    assert any("my-vllm" in r.getMessage() and "left running" in r.getMessage() for r in caplog.records)


@pytest.mark.engine
def test_the_watch_survives_the_engine_connection_going_away(engine):
    from test_runtime import _engine_socket, _SocketProxy

    path = Path(f"/tmp/modelctl-enforcer-proxy-{os.getpid()}.sock")
    path.unlink(missing_ok=True)
    proxy = _SocketProxy(path, _engine_socket())
    record = Recorder()
    enforcer = Enforcer(DockerRuntime(base_url=f"unix://{path}"), settings(), on_foreign=record)
    enforcer.start()
    try:
        until(enforcer.connected.is_set, 10, "the enforcer watches the engine")
        proxy.cut()
        until(lambda: not enforcer.connected.is_set(), 5, "the enforcer notices the cut")
        # Started while the enforcer cannot see the engine: replayed once it reconnects.
        foreign = engine.containers.run(STANDIN_IMAGE, ["--model", "x"], name="my-vllm", detach=True)
        proxy = _SocketProxy(path, _engine_socket())
        wait_exited(foreign, 10)
        until(lambda: record.seen, 2, "the callback")
    finally:
        enforcer.stop()
        proxy.cut()
    assert record.seen == [("my-vllm", "stopped")] and enforcer.last_error is None
