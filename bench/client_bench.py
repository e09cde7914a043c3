"""Which async HTTP client the proxy's upstream leg should use: CPU per request of each one.

    python bench/client_bench.py [--requests 3000] [--repeat 3]

Against the same upstream as bench/proxy_bench.py (a Python http.server on 127.0.0.1, a small
chat completion, JSON and SSE), on the event loop the service runs (uvloop where installed), each
client does what the proxy does per request: send a POST with a prepared body and a dozen
headers, stream the answer back piece by piece. Measured: this process's CPU per request
(time.process_time, the client alone: the upstream is another process) and requests/s, at 1 and
64 concurrent requests. The clients: httpx (AsyncClient, stream=True, aiter_raw), aiohttp
(ClientSession, content.iter_any), and modelctl.upstream_http (asyncio protocols and llhttp).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy_bench import MODEL, free_port, run, wait_for

HEADERS = [
    (b"content-type", b"application/json"),
    (b"accept", b"application/json"),
    (b"user-agent", b"OpenAI/Python 1.40.0"),
    (b"x-stainless-lang", b"python"),
    (b"x-stainless-package-version", b"1.40.0"),
    (b"x-stainless-os", b"Linux"),
    (b"x-stainless-arch", b"x64"),
    (b"x-stainless-runtime", b"CPython"),
    (b"x-stainless-runtime-version", b"3.11.7"),
    (b"accept-encoding", b"gzip, deflate"),
]


def body(stream: bool) -> bytes:
    text = '{"model": "%s", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "stream": %s}'
    return (text % (MODEL, "true" if stream else "false")).encode()


async def with_httpx(base: str, clients: int, requests: int, stream: bool) -> float:
    import httpx

    client = httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(connect=10, read=600, write=600, pool=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
    )
    data = body(stream)

    async def one() -> None:
        request = client.build_request("POST", f"{base}/chat/completions", headers=HEADERS, content=data)
        response = await client.send(request, stream=True)
        async for _ in response.aiter_raw():
            pass
        await response.aclose()

    try:
        return await drive(one, clients, requests)
    finally:
        await client.aclose()


async def with_aiohttp(base: str, clients: int, requests: int, stream: bool) -> float:
    import aiohttp

    session = aiohttp.ClientSession(
        trust_env=False,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=600),
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
    )
    data = body(stream)
    headers = [(k.decode(), v.decode()) for k, v in HEADERS]

    async def one() -> None:
        async with session.post(
            f"{base}/chat/completions", data=data, headers=headers, allow_redirects=False
        ) as response:
            async for _ in response.content.iter_any():
                pass

    try:
        return await drive(one, clients, requests)
    finally:
        await session.close()


async def with_modelctl(base: str, clients: int, requests: int, stream: bool) -> float:
    from modelctl.upstream_http import Client

    client = Client(connect_timeout=10, read_timeout=600)
    data = body(stream)

    async def one() -> None:
        answer = await client.request("POST", base, "/chat/completions", HEADERS, data)
        try:
            while await answer.read_some():
                pass
        finally:
            answer.close()

    try:
        return await drive(one, clients, requests)
    finally:
        await client.aclose()


async def drive(one, clients: int, requests: int) -> float:  # type: ignore[no-untyped-def]
    """CPU seconds of this process per request over `requests` calls of `one` from `clients` at once."""
    for _ in range(min(50, requests)):
        await one()
    todo = iter(range(requests))

    async def client() -> None:
        for _ in todo:
            await one()

    began = time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    return (time.process_time() - began) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    log = Path("/dev/null")
    upstream = subprocess.Popen([sys.executable, str(Path(__file__).parent / "proxy_bench.py"), "_upstream", str(port)])
    try:
        wait_for(port, upstream, log)
        base = f"http://127.0.0.1:{port}/v1"
        kinds = {"httpx": with_httpx, "aiohttp": with_aiohttp, "modelctl.upstream_http": with_modelctl}
        try:
            import aiohttp  # noqa: F401 - not a dependency of modelctl: `pip install aiohttp` to compare it
        except ImportError:
            del kinds["aiohttp"]
        print(f"client CPU per request (us), {args.requests} requests per run, median [min-max] of {args.repeat}")
        for stream in (False, True):
            for clients in (1, 64):
                figures: dict[str, list[float]] = {name: [] for name in kinds}
                for _ in range(args.repeat):
                    for name, kind in kinds.items():
                        figures[name].append(run(kind(base, clients, args.requests, stream)) * 1e6)
                label = f"{'streaming' if stream else 'non-streaming'}, {clients} client{'s' * (clients > 1)}"
                cells = [
                    f"{name} {statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]" for name, v in figures.items()
                ]
                print(f"  {label:<26} " + "   ".join(cells))
    finally:
        upstream.kill()
        upstream.wait()


if __name__ == "__main__":
    main()
