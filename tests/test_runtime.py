"""The Docker runtime with the real docker SDK: engine failures are exit 5, names modelctl did not
give are never taken, the containers' shared memory and IPC.

The failure tests need no engine: a tiny HTTP server on a unix socket answers the SDK's version
handshake and then closes every connection (or answers with an error, or goes away), which is
what a daemon that dies mid-operation looks like to the SDK. The rest run on the test engine.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from pathlib import Path

import pytest
from conftest import STANDIN_IMAGE, free_port

from modelctl.errors import EngineUnreachableError, UsageError
from modelctl.runtime import SHM_SIZE, ContainerInfo, ContainerSpec, container_name, model_labels
from modelctl.runtime.docker_engine import DockerRuntime, engine_address

# --- a daemon that goes away ---------------------------------------------------------------


class _FakeDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers /version and /_ping like dockerd; then `mode` decides: close or answer 500."""

    daemon_threads = True
    mode = "close"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            request_line = self.rfile.readline().decode("latin-1")
            if not request_line.strip():
                return
            length = 0
            while (line := self.rfile.readline().decode("latin-1")) not in ("\r\n", "\n", ""):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                self.rfile.read(length)
            path = request_line.split()[1]
            if path.endswith("/version"):
                self._answer(200, b'{"ApiVersion": "1.43", "Version": "fake"}')
            elif path.endswith("/_ping"):
                self._answer(200, b"OK", "text/plain")
            elif self.server.mode == "error":  # type: ignore[attr-defined]
                self._answer(500, b'{"message": "the engine is on fire"}')
            else:
                return  # close without an answer: the daemon died mid-request

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
        self.wfile.write(head.encode() + body)
        self.wfile.flush()


@pytest.fixture
def fake_daemon():
    path = Path(f"/tmp/modelctl-fake-{os.getpid()}-{threading.get_ident()}.sock")
    path.unlink(missing_ok=True)
    server = _FakeDaemon(str(path), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server, path
    server.shutdown()
    server.server_close()
    path.unlink(missing_ok=True)


INFO = ContainerInfo(
    id="0123456789ab" * 4,
    name="modelctl-demo",
    image="img",
    state="running",
    profile="demo",
    plan_hash="h",
    served_model="demo",
    port=8000,
)
SPEC = ContainerSpec(
    name="modelctl-demo",
    image="img",
    command=["--model", "x"],
    env={},
    labels={},
    host_ip="127.0.0.1",
    port=8000,
    gpu_device_ids=[],
    hf_cache="/tmp",
)
CALLS = {
    "vllm_containers": lambda r: r.vllm_containers(include_stopped=True),
    "container": lambda r: r.container("modelctl-demo"),
    "name_taken_by_foreign": lambda r: r.name_taken_by_foreign("modelctl-demo"),
    "vllm_container": lambda r: r.vllm_container(INFO.id),
    "is_running": lambda r: r.is_running(INFO.id),
    "exit_code": lambda r: r.exit_code(INFO.id),
    "container_pids": lambda r: r.container_pids(),
    "logs": lambda r: r.logs(INFO.id),
    "follow_logs": lambda r: list(r.follow_logs(INFO.id)),
    "last_log_line": lambda r: r.last_log_line(INFO.id),
    "volume_exists": lambda r: r.volume_exists("v"),
    "engine_info": lambda r: r.engine_info(),
    "has_image": lambda r: r.has_image("img"),
    "pull": lambda r: r.pull("img:1"),
    "stop": lambda r: r.stop([INFO], 1),
    "start_existing": lambda r: r.start_existing(INFO.id),
    "rename": lambda r: r.rename(INFO.id, "modelctl-other"),
    "remove": lambda r: r.remove(INFO.id),
    "run": lambda r: r.run(SPEC, {}),
    "set_restart_policy": lambda r: r.set_restart_policy(INFO.id),
    "container_starts": lambda r: next(iter(r.container_starts())),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_daemon_that_drops_the_connection_is_engine_unreachable(fake_daemon, call):
    _, path = fake_daemon
    runtime = DockerRuntime(base_url=f"unix://{path}")
    with pytest.raises(EngineUnreachableError) as raised:
        CALLS[call](runtime)
    assert raised.value.exit_code == 5
    assert f"Docker engine unreachable at unix://{path}" in raised.value.message
    assert "Connection aborted" in raised.value.message or "ended its event stream" in raised.value.message


@pytest.mark.parametrize("call", ["vllm_containers", "stop", "rename", "set_restart_policy", "container_pids"])
def test_an_engine_error_keeps_the_engines_words(fake_daemon, call):
    server, path = fake_daemon
    server.mode = "error"
    with pytest.raises(EngineUnreachableError) as raised:
        CALLS[call](DockerRuntime(base_url=f"unix://{path}"))
    assert raised.value.exit_code == 5
    assert f"Docker engine at unix://{path} failed: the engine is on fire" in raised.value.message


def test_a_daemon_that_went_away_after_the_first_call(fake_daemon):
    server, path = fake_daemon
    runtime = DockerRuntime(base_url=f"unix://{path}")
    assert runtime.address == f"unix://{path}"
    assert runtime._client.ping()  # connected: the version handshake and the ping answered
    server.shutdown()
    server.server_close()
    path.unlink()
    with pytest.raises(EngineUnreachableError) as raised:
        runtime.vllm_containers()
    assert raised.value.exit_code == 5 and f"unreachable at unix://{path}" in raised.value.message


def test_no_daemon_at_all(tmp_path):
    with pytest.raises(EngineUnreachableError) as raised:
        DockerRuntime(base_url=f"unix://{tmp_path}/none.sock").vllm_containers()
    assert raised.value.exit_code == 5 and f"unix://{tmp_path}/none.sock" in raised.value.message


def test_the_engine_address_never_carries_credentials(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://user:s3cret@10.0.0.5:2376")
    assert engine_address() == "tcp://10.0.0.5:2376"
    assert engine_address("ssh://me@host") == "ssh://host"
    monkeypatch.delenv("DOCKER_HOST")
    assert engine_address() == "unix:///var/run/docker.sock"


# --- on the test engine --------------------------------------------------------------------


class _SocketProxy:
    """A unix socket forwarding to the engine's, which can be cut: the engine "goes away"."""

    def __init__(self, path: Path, target: str) -> None:
        self.path, self.target = path, target
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.listener.close()
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.path.unlink(missing_ok=True)


def _engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if not host.startswith("unix://"):
        pytest.skip("the proxy test needs the engine on a unix socket")
    return host.removeprefix("unix://")


@pytest.mark.engine
def test_engine_gone_mid_operation_is_exit_5(engine, tmp_path):
    path = Path(f"/tmp/modelctl-proxy-{os.getpid()}.sock")
    path.unlink(missing_ok=True)
    proxy = _SocketProxy(path, _engine_socket())
    try:
        runtime = DockerRuntime(base_url=f"unix://{path}")
        assert runtime.vllm_containers() == []  # the engine answers through the proxy
        follow = runtime.container_starts()
        proxy.cut()  # the engine goes away between two calls, and under a stream
        with pytest.raises(EngineUnreachableError) as raised:
            runtime.vllm_containers()
        assert raised.value.exit_code == 5
        assert f"Docker engine unreachable at unix://{path}" in raised.value.message
        with pytest.raises(EngineUnreachableError):
            next(iter(follow))
    finally:
        proxy.cut()


def _spec(name: str, port: int, hf: Path, *, ipc_host: bool = False) -> ContainerSpec:
    return ContainerSpec(
        name=container_name(name),
        image=STANDIN_IMAGE,
        command=["--model", f"standin/{name}", "--port", str(port)],
        env={"STANDIN_LOAD_SECONDS": "0.2"},
        labels=model_labels(profile=name, plan_hash="h", served_model=name, port=port, version="test"),
        host_ip="127.0.0.1",
        port=port,
        gpu_device_ids=[],
        hf_cache=str(hf),
        ipc_host=ipc_host,
        shm_size=None if ipc_host else SHM_SIZE,
    )


@pytest.mark.engine
def test_shared_memory_by_default_host_ipc_on_request(engine, tmp_path):
    runtime = DockerRuntime()
    private = runtime.run(_spec("demo-a", free_port(), tmp_path), {})
    host = runtime.run(_spec("demo-b", free_port(), tmp_path, ipc_host=True), {})
    private_config = engine.containers.get(private.id).attrs["HostConfig"]
    assert private_config["IpcMode"] == "private"
    assert private_config["ShmSize"] == 8 * 1024**3
    assert engine.containers.get(host.id).attrs["HostConfig"]["IpcMode"] == "host"


@pytest.mark.engine
def test_a_name_held_by_a_container_modelctl_did_not_start_is_never_taken(engine, tmp_path):
    engine.images.get(STANDIN_IMAGE).tag("local/busybox", "1")
    squatter = engine.containers.run(
        "local/busybox:1", name="modelctl-demo-a", entrypoint=["/bin/sh", "-c", "sleep 300"], detach=True
    )
    runtime = DockerRuntime()
    holder = runtime.name_taken_by_foreign("modelctl-demo-a")
    assert holder is not None and holder.id == squatter.id and holder.state == "running" and holder.foreign
    assert runtime.vllm_container(squatter.id) is None, "not a vLLM server"
    with pytest.raises(UsageError) as raised:
        runtime.run(_spec("demo-a", free_port(), tmp_path), {})
    assert raised.value.exit_code == 2
    assert "modelctl-demo-a" in raised.value.message and "modelctl did not start it" in raised.value.message
    assert "docker rename modelctl-demo-a" in (raised.value.hint or "")
    mine = runtime.run(_spec("demo-b", free_port(), tmp_path), {})
    with pytest.raises(UsageError):
        runtime.rename(mine.id, "modelctl-demo-a")
    squatter.reload()
    assert squatter.status == "running" and squatter.name == "modelctl-demo-a", "never removed nor renamed"
    assert runtime.name_taken_by_foreign("modelctl-demo-b") is None, "modelctl's own"
    assert runtime.name_taken_by_foreign("modelctl-nobody") is None


@pytest.mark.engine
def test_a_stopped_container_of_modelctls_is_still_replaced(engine, tmp_path):
    runtime = DockerRuntime()
    first = runtime.run(_spec("demo-a", free_port(), tmp_path), {})
    runtime.stop([first], 1)
    second = runtime.run(_spec("demo-a", free_port(), tmp_path), {})
    assert second.id != first.id
    assert [c.name for c in engine.containers.list(all=True)] == ["modelctl-demo-a"]
