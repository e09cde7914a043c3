"""The proxy's limits (issue 10), without a Docker engine: the real service app on a real uvicorn on
127.0.0.1, the real scheduler with recording swap effects, and a stub model server started here that
answers, streams, or accepts and never answers. What a limit refuses must reach neither the model
server nor a swap.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import resource
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from conftest import REPO, free_port

from modelctl.scheduler import Scheduler, SchedulerLimits, Swapped
from modelctl.service import IdleClosingH11Protocol, Service
from modelctl.settings import Settings

CHAT = [{"role": "user", "content": "hello"}]


# --- a stub model server ------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    body: bytes


class StubModelServer(socketserver.ThreadingTCPServer):
    """A tiny HTTP/1.1 model server on 127.0.0.1. `mode`: "ok" (a JSON answer), "hang" (accepts,
    reads the request, never answers: a paused model server), "stream-hang" (an SSE stream that
    sends one event, then nothing)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.mode = "ok"
        self.seen: list[Seen] = []
        self.release = threading.Event()  # ends every hang at teardown
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _StubHandler(socketserver.StreamRequestHandler):
    server: StubModelServer

    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers = {}
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length", "0")))
            self.server.seen.append(Seen(method, target, body))
            mode = self.server.mode
            if mode == "hang":
                self.server.release.wait(60)
                return
            if mode == "stream-hang":
                event = b'data: {"choices": [{"index": 0, "delta": {"content": "Hello"}}]}\n\n'
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    + b"%x\r\n%s\r\n" % (len(event), event)
                )
                self.wfile.flush()
                self.server.release.wait(60)
                return
            model = json.loads(body).get("model") if body else None
            answer = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model or "none",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                    ],
                }
            ).encode()
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(answer), answer)
            )
            self.wfile.flush()


# --- the service, its scheduler on recording effects ---------------------------------------------


@dataclass
class Effects:
    """The scheduler's SwapEffects: records swaps; every model answers at the stub's URL."""

    url: str
    swaps: list[str] = field(default_factory=list)
    generation: int = 0

    async def swap(self, profile: str, origin: str) -> Swapped:
        self.swaps.append(profile)
        self.generation += 1
        return Swapped(url=self.url, switched=True, generation=self.generation)

    async def stop_model(self) -> None:
        pass

    def fallback(self) -> str | None:
        return None


@dataclass
class Running:
    url: str
    service: Service
    effects: Effects
    stub: StubModelServer

    def ai(self, timeout: float = 30) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key="unused",
            max_retries=0,
            http_client=httpx.Client(trust_env=False, timeout=timeout),
        )

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, Any]:
        """A request sent as written: http.client does not normalise the path (httpx would)."""
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data


@pytest.fixture
def run_service(workspace, monkeypatch) -> Iterator[Any]:
    """Start the service app (no lifespan: no reconcile, no engine) on uvicorn in a thread."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # never the shared engine
    stub = StubModelServer()
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(limits: SchedulerLimits | None = None, **env: str) -> Running:
        for key, value in {**workspace.env, **env}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        service = Service(Settings())
        effects = Effects(stub.url)
        base = service.proxy.scheduler.limits
        service.proxy.scheduler = Scheduler(effects, limits or base, service.metrics)

        async def loaded() -> str | None:  # what runs, without an engine: the scheduler's model
            return service.proxy.scheduler.current

        service.proxy.loaded_model = loaded
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                service.app,
                host="127.0.0.1",
                port=port,
                lifespan="off",
                http=IdleClosingH11Protocol,
                log_level="warning",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return Running(f"http://127.0.0.1:{port}", service, effects, stub)

    yield start
    stub.close()
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def limits(**kw: float) -> SchedulerLimits:
    return SchedulerLimits(**{"max_queue": 100, "max_wait": 30.0, "min_residency": 0.0, **kw})


# --- bodies ---------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_read(workspace, run_service):
    workspace.profile("demo-a")
    svc = run_service(MODELCTL_PROXY_MAX_BODY_MB="1")
    # Only the headers: a 400 MiB body is announced, none of it sent. The answer comes at once.
    host, port = svc.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 419430400\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"
    assert "400.0 MiB" in error["message"] and "MODELCTL_PROXY_MAX_BODY_MB" in error["message"]

    # A body just under the limit passes.
    ai = svc.ai()
    assert ai.chat.completions.create(model="demo-a", messages=CHAT, extra_body={"pad": "x" * 900_000}).model
    assert svc.effects.swaps == ["demo-a"] and len(svc.stub.seen) == 1


def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives(workspace, monkeypatch):
    """At the ASGI boundary: how much of an endless chunked body the proxy reads before its 413."""
    workspace.profile("demo-a")
    for key, value in {**workspace.env, "MODELCTL_PROXY_MAX_BODY_MB": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    service = Service(Settings())
    chunk = b"x" * 65536
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}  # never ends

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
    asyncio.run(asyncio.wait_for(service.app(scope, receive, send), 10))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"
    assert read == 17  # 16 chunks make the limit (1 MiB); the 17th is over it, and the last one read


def test_deeply_nested_json_is_400_not_500(workspace, run_service):
    workspace.profile("demo-a")
    svc = run_service()
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"model": "demo-a", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        status, answer = svc.raw("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        assert status == 400, answer
        assert "nested too deeply" in answer["error"]["message"]
    assert svc.effects.swaps == [] and svc.stub.seen == []


# --- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../metrics",
        "/v1/%2e%2e/version",
        "/v1/..%2f..%2fhealth",
        "/v1/./chat/completions",
        "/v1/chat/%2E/completions",
        "/v1/chat%2fcompletions",
        "/v1/a%5c..%5csleep",
        "/v1/%252e%252e/collective_rpc",
        "/v1%2f..%2fsleep",
    ],
)
def test_a_path_that_is_not_a_normalised_v1_path_is_400_and_never_forwarded(workspace, run_service, path):
    workspace.profile("demo-a")
    svc = run_service()
    body = json.dumps({"model": "demo-a", "messages": CHAT}).encode()
    for method in ("POST", "GET"):
        status, answer = svc.raw(method, path, body, {"content-type": "application/json"})
        assert status in (400, 404), (method, answer)  # 404: Starlette found no /v1 route for it at all
        if status == 400:
            assert answer["error"]["code"] == "invalid_path" and answer["error"]["type"] == "invalid_request_error"
    assert svc.stub.seen == [] and svc.effects.swaps == []
    # The normalised path goes through, as written.
    status, answer = svc.raw("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    assert status == 200, answer
    assert [(s.method, s.path) for s in svc.stub.seen] == [("POST", "/v1/chat/completions")]


def test_the_escapes_of_the_issue_are_refused_by_modelctl_itself(workspace, run_service):
    workspace.profile("demo-a")
    svc = run_service()
    for path in ("/v1/../metrics", "/v1/%2e%2e/version", "/v1/..%2f..%2fhealth"):
        status, answer = svc.raw("GET", path)
        assert status == 400 and answer["error"]["code"] == "invalid_path", (path, answer)
    # A model id with an encoded slash is fine where modelctl answers itself (the openai client sends it so).
    workspace.profile("demo-b", served_model_name="org/model-b")
    assert svc.ai().models.retrieve("org/model-b").id == "org/model-b"
    assert svc.stub.seen == []


# --- what may start or swap a model -----------------------------------------------------------------


def test_a_body_that_is_not_a_json_object_is_400_and_starts_nothing(workspace, run_service):
    workspace.profile("demo-a")
    svc = run_service(MODELCTL_DEFAULT_PROFILE="demo-a")
    for body in (b"garbage", b"[1, 2]", b'"demo-a"', b"null", b"", b"{bad json"):
        status, answer = svc.raw("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        assert status == 400, (body, answer)
        assert answer["error"]["type"] == "invalid_request_error"
    assert svc.effects.swaps == [] and svc.stub.seen == []
    # A well-formed object without a model: the default profile, by its served name.
    status, answer = svc.raw("POST", "/v1/chat/completions", b'{"messages": []}', {"content-type": "application/json"})
    assert status == 200 and answer["model"] == "demo-a", answer
    assert svc.effects.swaps == ["demo-a"]


def test_a_get_never_starts_or_swaps_a_model(workspace, run_service):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    svc = run_service(MODELCTL_DEFAULT_PROFILE="demo-a")
    # A cross-site GET (a browser sends no Origin with it) for the default, or naming a model: 409.
    for path, body in (("/v1/anything", None), ("/v1/chat/completions", b'{"model": "demo-b"}')):
        status, answer = svc.raw("GET", path, body)
        assert status == 409, answer
        assert answer["error"]["code"] == "model_not_active" and "POST" in answer["error"]["hint"]
    status, _ = svc.raw("DELETE", "/v1/files/x")
    assert status == 409
    assert svc.effects.swaps == [] and svc.stub.seen == []
    # GET /v1/models stays a read.
    assert {m.id for m in svc.ai().models.list().data} == {"demo-a", "demo-b"}
    assert svc.effects.swaps == []
    # Once a POST has loaded it, a GET for the active model is forwarded; for another one it is still 409.
    assert svc.ai().chat.completions.create(model="demo-a", messages=CHAT).model == "demo-a"
    status, _ = svc.raw("GET", "/v1/anything")
    assert status == 200
    status, _ = svc.raw("GET", "/v1/chat/completions", b'{"model": "demo-b"}')
    assert status == 409
    assert svc.effects.swaps == ["demo-a"]


def test_with_a_token_an_authenticated_get_may_start_a_model(workspace, run_service):
    workspace.profile("demo-a")
    svc = run_service(MODELCTL_DEFAULT_PROFILE="demo-a", MODELCTL_API_TOKEN="secret")
    status, _ = svc.raw("GET", "/v1/anything")
    assert status == 401
    status, _ = svc.raw("GET", "/v1/anything", headers={"authorization": "Bearer secret"})
    assert status == 200
    assert svc.effects.swaps == ["demo-a"]


# --- a model server that stops answering ------------------------------------------------------------


def test_a_model_server_that_never_answers_is_504_and_frees_the_gpu_for_others(workspace, run_service):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    svc = run_service(limits(), MODELCTL_PROXY_IDLE_TIMEOUT="1")
    ai = svc.ai()
    assert ai.chat.completions.create(model="demo-a", messages=CHAT).model == "demo-a"
    svc.stub.mode = "hang"  # paused: it accepts and reads, and never answers
    answers: dict[str, Any] = {}

    def stuck() -> None:
        began = time.monotonic()
        answers["a"] = svc.raw("POST", "/v1/chat/completions", json.dumps({"model": "demo-a"}).encode())
        answers["a_took"] = time.monotonic() - began

    thread = threading.Thread(target=stuck)
    thread.start()
    deadline = time.monotonic() + 5
    while len(svc.stub.seen) < 2:
        assert time.monotonic() < deadline, "the request never reached the stub"
        time.sleep(0.01)
    began = time.monotonic()
    assert httpx.get(f"{svc.url}/health", trust_env=False, timeout=2).status_code == 200
    assert time.monotonic() - began < 1  # nothing else waits for the stuck request
    svc.stub.mode = "ok"  # demo-b's request may not wait behind demo-a's for ever
    assert ai.chat.completions.create(model="demo-b", messages=CHAT).model == "demo-b"
    thread.join(timeout=10)
    status, answer = answers["a"]
    assert status == 504, answer
    assert answer["error"]["code"] == "upstream_timeout" and answer["error"]["type"] == "server_error"
    assert "MODELCTL_PROXY_IDLE_TIMEOUT" in answer["error"]["message"]
    assert 0.9 < answers["a_took"] < 5
    assert svc.effects.swaps == ["demo-a", "demo-b"]
    assert svc.service.proxy.scheduler.busy("demo-a") == 0


def test_a_stream_that_stalls_ends_with_an_error_event(workspace, run_service):
    workspace.profile("demo-a")
    svc = run_service(limits(), MODELCTL_PROXY_IDLE_TIMEOUT="0.5")
    svc.stub.mode = "stream-hang"
    ai = svc.ai()
    words = []
    began = time.monotonic()
    with pytest.raises(openai.APIError) as ended:
        for chunk in ai.chat.completions.create(model="demo-a", messages=CHAT, stream=True):
            words.append(chunk.choices[0].delta.content)
    assert words == ["Hello"]  # what came before the stall arrived
    assert time.monotonic() - began < 5
    assert ended.value.body["code"] == "upstream_timeout"
    assert "MODELCTL_PROXY_IDLE_TIMEOUT" in ended.value.message
    assert svc.service.proxy.scheduler.busy("demo-a") == 0
    # On the wire: one `data: {"error": ...}` event, and the stream is closed.
    with httpx.stream(
        "POST",
        f"{svc.url}/v1/chat/completions",
        json={"model": "demo-a", "stream": True},
        trust_env=False,
        timeout=10,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert json.loads(lines[-1].removeprefix("data: "))["error"]["code"] == "upstream_timeout"


def test_the_drain_before_a_swap_ends_a_stuck_request_and_the_swap_proceeds(workspace, run_service):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    svc = run_service(limits(drain_timeout=0.5, max_wait=0.2))  # the idle timeout stays 600 s
    ai = svc.ai()
    assert ai.chat.completions.create(model="demo-a", messages=CHAT).model == "demo-a"
    svc.stub.mode = "hang"
    answers: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: answers.setdefault(
            "a", svc.raw("POST", "/v1/chat/completions", json.dumps({"model": "demo-a"}).encode())
        )
    )
    thread.start()
    deadline = time.monotonic() + 5
    while len(svc.stub.seen) < 2:
        assert time.monotonic() < deadline, "the request never reached the stub"
        time.sleep(0.01)
    svc.stub.mode = "ok"
    began = time.monotonic()
    assert ai.chat.completions.create(model="demo-b", messages=CHAT).model == "demo-b"
    assert time.monotonic() - began < 5
    thread.join(timeout=10)
    status, answer = answers["a"]
    assert status == 504, answer
    assert "MODELCTL_PROXY_DRAIN_TIMEOUT" in answer["error"]["message"]
    assert svc.effects.swaps == ["demo-a", "demo-b"]


# --- connections ----------------------------------------------------------------------------------


def test_idle_sockets_over_the_limit_do_not_keep_health_from_answering(workspace, tmp_path):
    """The issue's reproduction, scaled down: more idle sockets than MODELCTL_MAX_CONNECTIONS and
    than the open-files limit allows; /health answers within a bounded wait, the log stays small."""
    port = free_port()
    env = {
        **workspace.env,
        "MODELCTL_LISTEN": f"127.0.0.1:{port}",
        "MODELCTL_MAX_CONNECTIONS": "50",
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # the start-up reconcile fails, logged
    }

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # hard too: modelctl cannot raise it

    log = tmp_path / "serve.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelctl", "serve"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=few_files,
            cwd=REPO,
        )
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        for _ in range(60):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        began = time.monotonic()
        answered = None
        while time.monotonic() - began < 20:
            try:
                answered = httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=2)
                if answered.status_code == 200:
                    break
            except httpx.TransportError:
                pass
        took = time.monotonic() - began
        assert answered is not None and answered.status_code == 200, log.read_text()[-3000:]
        assert took < 15, took
        assert process.poll() is None
    finally:
        for conn in idle:
            conn.close()
        process.terminate()
        process.wait(timeout=15)
    text = log.read_text()
    accept_errors = text.count("cannot accept connections")
    assert accept_errors <= took + 2, text[-3000:]  # once per second at most
    assert "Traceback" not in text, text[-3000:]
    assert "open-files limit (64) is below MODELCTL_MAX_CONNECTIONS (50)" in text
    assert len(text) < 20_000


def test_the_open_files_limit_is_raised_to_the_hard_limit(workspace, tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard open-files limit here is {hard}")
    code = (
        "import resource; from modelctl.service import raise_open_files_limit; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=REPO, env={**os.environ}
    )
    raised, limit = map(int, done.stdout.split())
    assert raised == limit == hard
