"""Readiness against a real HTTP server on loopback that starts listening late."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelctl.vllm.readiness import ContainerExited, ReadyTimeout, is_serving, wait_until_ready


def models_server(served: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": served, "object": "model", "max_model_len": 4096}]})
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)


@pytest.fixture
def late_server():
    """A server whose port is reserved but refuses connections until `listen()` is called."""
    server = models_server("demo")
    server.allow_reuse_address = True
    server.server_bind()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=lambda: (server.server_activate(), server.serve_forever(0.01)), daemon=True)
    yield url, thread.start
    server.shutdown() if thread.is_alive() else None
    server.server_close()


def test_connection_refused_then_ready(late_server):
    url, listen = late_server
    polls = []

    def on_poll(seen: str) -> None:
        polls.append(seen)
        if len(polls) == 5:
            listen()  # the server comes up while we poll

    waited = wait_until_ready(url, "demo", timeout_s=30, is_alive=lambda: True, on_poll=on_poll)
    assert waited >= 0 and len(polls) >= 5
    assert polls[0] == "ConnectError", "while loading, vLLM refuses connections"
    assert is_serving(url, "demo")


def test_wrong_model_times_out_saying_what_it_saw(late_server):
    url, listen = late_server
    listen()
    with pytest.raises(ReadyTimeout) as caught:
        wait_until_ready(url, "other", timeout_s=0.3, is_alive=lambda: True)
    assert "serving ['demo'], not 'other'" in str(caught.value)


def test_dead_container_fails_at_once():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    calls = []
    with pytest.raises(ContainerExited):
        wait_until_ready(
            f"http://127.0.0.1:{port}/v1", "demo", timeout_s=600, is_alive=lambda: calls.append(1) or len(calls) < 3
        )
    assert len(calls) == 3, "the wait ends on the first look that finds the container gone"
