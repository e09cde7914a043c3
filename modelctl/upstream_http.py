"""The proxy's HTTP/1.1 client for the model's server: asyncio protocols and llhttp (httptools).

The proxy's upstream leg is one kind of request, many times a second: plain http:// to a model
server on this machine or its network. This client does that and nothing else, at a fraction of
the CPU of a general client (README "Benchmark": bench/client_bench.py measured httpx, aiohttp
and this one against the same upstream).

- keep-alive: idle connections are kept per host and port (the most recent one is reused first,
  at most MAX_IDLE each); a connection the server closed while it was idle is never reused;
- no redirects, no proxies from the environment, no cookies, no content decoding: the answer's
  bytes pass through as the server sent them, only the transfer coding (chunked) is undone;
- no retries: a request that fails is the caller's to report;
- each wait has its own deadline: connecting (`connect_timeout`), and each read, for the answer's
  head and each piece of its body (`read_timeout`): without a byte for that long, ReadTimeout;
- back-pressure: above HIGH_WATER unread bytes the connection stops reading until they are taken.
"""

from __future__ import annotations

import asyncio
import functools
from urllib.parse import urlsplit

import httptools

MAX_IDLE = 256  # idle keep-alive connections kept per host and port
HIGH_WATER = 256 * 1024  # unread body bytes above which the connection stops reading
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # sent with a Content-Length even when empty


class TransportError(Exception):
    """The request failed on the way: no connection, a dropped connection, a broken answer."""


class ConnectError(TransportError):
    """The server could not be reached (refused, unreachable)."""


class Timeout(TransportError):
    """A deadline passed: connecting, or no byte of the answer for the read timeout."""


class ConnectTimeout(Timeout):
    pass


class ReadTimeout(Timeout):
    pass


@functools.lru_cache(maxsize=64)
def split_base(base: str) -> tuple[str, int, str, bytes]:
    """ "http://host:port/prefix" -> (host, port, "/prefix", b"host:port" for the Host header)."""
    parts = urlsplit(base)
    if parts.scheme != "http" or not parts.hostname:
        raise ConnectError(f"{base!r} is not an http:// URL (the proxy speaks plain HTTP to the model's server)")
    port = parts.port or 80
    host = parts.hostname
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host, port, parts.path.rstrip("/"), authority.encode("ascii")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout("no byte from the server within the read timeout"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one answer at a time (llhttp callbacks below)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False
        self.failure: str | None = None
        self.paused = False
        self.begin()

    def begin(self) -> None:
        """Ready for the next answer."""
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = False  # status line and headers arrived
        self.keep_alive = False  # the server keeps the connection open after this answer
        self.framed = False  # Content-Length or chunked: the end of the body is known without EOF
        self.complete = False
        self.body: list[bytes] = []
        self.buffered = 0

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.failure = f"the server sent invalid HTTP: {exc}"
            self.transport.close()  # type: ignore[union-attr]
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.head and not self.framed and not self.complete:
            self.complete = True  # a body that ends with the connection
        if exc is not None and self.failure is None:
            self.failure = f"{type(exc).__name__}: {exc}"
        self._wake()

    # --- llhttp ----------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.head = True
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.framed = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self.complete = True

    # --- waiting -----------------------------------------------------------------------------

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until something arrives (or the connection is lost); ReadTimeout after `timeout` s."""
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def take(self) -> bytes:
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    def broken(self, doing: str) -> TransportError:
        why = self.failure or "the server closed the connection"
        return TransportError(f"{why} ({doing})")

    @property
    def reusable(self) -> bool:
        return not self.lost and self.failure is None and self.keep_alive

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True


class Answer:
    """The server's answer: status and headers (as received); the body is read with read_some().
    close() it when done: the connection goes back to the pool if the body was read to its end."""

    def __init__(self, client: Client, key: tuple[str, int], conn: _Connection, head_only: bool) -> None:
        self._client = client
        self._key = key
        self._conn: _Connection | None = conn
        self._head_only = head_only
        self.status = conn.status
        self.headers = conn.headers

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (name in lower case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    async def read_some(self) -> bytes:
        """What arrived of the body since the last call (waiting for at least one byte); b"" at its end."""
        conn = self._conn
        if conn is None or self._head_only:
            self.close()
            return b""
        while not conn.body:
            if conn.complete:
                self.close()
                return b""
            if conn.lost or conn.failure:
                raise conn.broken("in the middle of the answer")
            await conn.wait(self._client.read_timeout)
        return conn.take()

    async def read(self) -> bytes:
        chunks = []
        while chunk := await self.read_some():
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Done with the answer: its connection is kept if it was read to the end, else closed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.complete and not conn.body and not self._head_only and conn.reusable:
            self._client._keep(self._key, conn)
        else:
            conn.close()


class Client:
    """Requests to model servers over kept-alive HTTP/1.1 connections."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, max_idle: int = MAX_IDLE) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(
        self, method: str, base: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        """Send `method` `base` + `target` (path and query) with `headers` (no Host, no framing) and
        `body`; returns once the answer's status and headers have arrived."""
        host, port, prefix, authority = split_base(base)
        key = (host, port)
        conn = await self._connection(key)
        try:
            head = [f"{method} {prefix}{target} HTTP/1.1\r\nhost: ".encode("latin-1"), authority, b"\r\n"]
            for name, value in headers:
                head += (name, b": ", value, b"\r\n")
            if body or method in BODY_METHODS:
                head.append(b"content-length: %d\r\n" % len(body))
            head.append(b"\r\n")
            conn.begin()
            conn.transport.write(b"".join(head))  # type: ignore[union-attr]
            if body:
                conn.transport.write(body)  # type: ignore[union-attr]
            while not conn.head:
                if conn.lost or conn.failure:
                    raise conn.broken("before it sent an answer")
                await conn.wait(self.read_timeout)
        except BaseException:
            conn.close()
            raise
        return Answer(self, key, conn, head_only=method == "HEAD")

    async def _connection(self, key: tuple[str, int]) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.reusable:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Connection, key[0], key[1])
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectError(exc.strerror or str(exc)) from None
        return conn

    def _keep(self, key: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle:
            conn.close()
        else:
            idle.append(conn)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
