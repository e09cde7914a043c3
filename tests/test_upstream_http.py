"""The proxy's upstream client (modelctl/upstream_http.py) against a scripted server on 127.0.0.1,
and the proxy noticing a client that leaves while its request waits upstream (issue 14: a
callback from the server's protocol, no task per request)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from test_proxy_limits import run_service  # noqa: F401  (a fixture)

from modelctl import upstream_http


async def scripted(answers: list[bytes], seen: list[bytes]) -> tuple[asyncio.AbstractServer, str]:
    """A server that reads one request per answer (head and Content-Length body) and writes the
    next scripted bytes; b"" closes the connection; b"hang" never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                seen.append(head + await reader.readexactly(length))
                answer = answers.pop(0)
                if answer == b"hang":
                    await asyncio.sleep(30)
                if not answer:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


JSON = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"ok": true}'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b"7\r\ndata: 1\r\n7\r\ndata: 2\r\n0\r\n\r\n"
)


def test_keep_alive_chunked_and_framing():
    async def main() -> None:
        seen: list[bytes] = []
        server, base = await scripted([JSON, CHUNKED, JSON], seen)
        client = upstream_http.Client(connect_timeout=5, read_timeout=5)
        answer = await client.request("POST", base, "/chat/completions?x=1", [(b"x-a", b"b")], b'{"m": 1}')
        assert answer.status == 200 and answer.header(b"content-type") == b"application/json"
        assert await answer.read() == b'{"ok": true}'
        answer.close()
        answer = await client.request("POST", base, "/completions", [], b"{}")
        assert await answer.read() == b"data: 1data: 2"  # the transfer coding undone
        answer.close()
        answer = await client.request("GET", base, "/models", [], b"")
        assert await answer.read() == b'{"ok": true}'
        answer.close()
        assert seen[0].startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"x-a: b\r\n" in seen[0] and b"content-length: 8\r\n" in seen[0] and seen[0].endswith(b'{"m": 1}')
        assert seen[2].startswith(b"GET /v1/models ") and b"content-length" not in seen[2]
        assert len(client._idle[("127.0.0.1", int(base.split(":")[2].split("/")[0]))]) == 1  # one connection, reused
        await client.aclose()
        server.close()

    asyncio.run(main())


def test_a_connection_the_server_closed_is_not_reused_and_errors_are_typed():
    async def main() -> None:
        seen: list[bytes] = []
        server, base = await scripted([JSON, b"", JSON, b"hang"], seen)
        client = upstream_http.Client(connect_timeout=5, read_timeout=0.3)
        answer = await client.request("POST", base, "/a", [], b"{}")
        await answer.read()
        answer.close()
        with pytest.raises(upstream_http.TransportError, match="before it sent an answer"):
            await client.request("POST", base, "/b", [], b"{}")  # the server closes without answering
        answer = await client.request("POST", base, "/c", [], b"{}")  # a new connection
        assert await answer.read() == b'{"ok": true}'
        answer.close()
        began = time.monotonic()
        with pytest.raises(upstream_http.ReadTimeout):
            await client.request("POST", base, "/d", [], b"{}")
        assert 0.25 < time.monotonic() - began < 3
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        with pytest.raises(upstream_http.ConnectError):
            await client.request("POST", f"http://127.0.0.1:{closed}/v1", "/e", [], b"{}")
        await client.aclose()
        server.close()

    asyncio.run(main())


def test_a_client_that_leaves_while_its_request_waits_upstream_ends_it(workspace, run_service):
    workspace.profile("demo-a")
    svc = run_service()
    status, _ = svc.raw("POST", "/v1/chat/completions", json.dumps({"model": "demo-a"}).encode())
    assert status == 200
    svc.stub.mode = "hang"
    host, port = svc.url.removeprefix("http://").split(":")
    body = json.dumps({"model": "demo-a"}).encode()
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        deadline = time.monotonic() + 5
        while len(svc.stub.seen) < 2:
            assert time.monotonic() < deadline, "the request never reached the stub"
            time.sleep(0.01)
        assert svc.service.proxy.scheduler.busy("demo-a") == 1
    deadline = time.monotonic() + 5
    while svc.service.proxy.scheduler.busy("demo-a"):  # the lease released once the client left
        assert time.monotonic() < deadline, "the request stayed in flight after its client left"
        time.sleep(0.01)
    metrics = svc.service.metrics.render().decode()
    assert 'modelctl_proxy_requests_total{profile="demo-a",status="499"} 1.0' in metrics
