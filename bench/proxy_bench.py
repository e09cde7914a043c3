"""What the OpenAI proxy of `modelctl serve` costs, against direct calls to the same upstream, in one run.

    python bench/proxy_bench.py [--requests 2000] [--repeat 3] [--json]

No Docker engine: the upstream is a Python `http.server` on 127.0.0.1 (threads, HTTP/1.1
keep-alive) that answers a small chat completion, as JSON or as an SSE stream of 8 events. The
proxy is the real service app (`modelctl.service.Service`) on the real server set-up of `modelctl
serve` (`service.server_config` / `service.run_server`: uvicorn, its protocol, its event loop) in
a process of its own; only the scheduler's swap effects are replaced, by one that says the model
runs at the upstream's URL (as tests/test_proxy_limits.py does). The load comes from this process,
a minimal asyncio HTTP/1.1 client (one keep-alive connection per client), so that the client side
costs as little as possible on a 2-core machine.

It prints, for non-streaming and streaming completions, at 1 and 64 concurrent clients:
- CPU per request of the proxy and of the upstream (utime + stime from /proc/PID/stat, all
  threads, over the proxied run) and their ratio;
- latency p50 and p99, direct and through the proxy, and what the proxy adds;
- throughput (requests/s) direct and through the proxy, and their ratio;
each the median over --repeat runs with the range [min-max] (direct and proxied runs alternate);
then a profile of the proxy's hot path (cProfile in a second proxy process; own time per request).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "bench-model"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")

# --- the upstream: a small chat completion, as http.server answers it -----------------------------

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
).encode()
EVENTS = [
    b"data: "
    + json.dumps(
        {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}}]}
    ).encode()
    + b"\n\n"
    for w in ("Hello", " there", ",", " how", " are", " you", "?")
] + [b"data: [DONE]\n\n"]


class UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as uvicorn (vLLM) does: no 40 ms delayed-ACK stall between writes

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if b'"stream": true' in body:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event in EVENTS:  # one write each: the proxy sees them arrive one by one
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER)

    def log_message(self, *args: object) -> None:
        pass


def run_upstream(port: int) -> None:
    ThreadingHTTPServer.request_queue_size = 512
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), UpstreamHandler).serve_forever()


# --- the proxy: the service app on serve()'s own server set-up -------------------------------------


def run_proxy(upstream: str, port: int, profile_out: str | None) -> None:
    from modelctl import service as service_module
    from modelctl.scheduler import Scheduler, Swapped
    from modelctl.settings import Settings

    class Upstream:  # the scheduler's SwapEffects: the model runs at the upstream's URL
        generation = 0

        async def swap(self, profile: str, origin: str) -> Swapped:
            return Swapped(url=upstream, switched=False, generation=self.generation)

        async def stop_model(self) -> None:
            pass

        def fallback(self) -> str | None:
            return None

    settings = Settings()
    service = service_module.Service(settings)
    proxy = service.proxy
    proxy.scheduler = Scheduler(Upstream(), proxy.scheduler.limits, service.metrics)

    async def loaded() -> str | None:
        return proxy.scheduler.current

    proxy.loaded_model = loaded
    listener = service_module.bind("127.0.0.1", port)
    profiler = None
    if profile_out:  # SIGUSR1 starts it, once the bench has warmed the proxy up: start-up is left out
        import cProfile

        profiler = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    try:
        serve_app(service_module, service.app, settings, listener)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_out)


def serve_app(service_module, app, settings, listener) -> None:  # type: ignore[no-untyped-def]
    if hasattr(service_module, "run_server"):  # serve()'s own set-up, start-up reconcile left out
        config = service_module.server_config(app, settings, lifespan="off")
        service_module.run_server(config, listener)
    else:  # the commit before issue 14: serve() inlined its set-up
        import uvicorn

        config = uvicorn.Config(
            app,
            lifespan="off",
            http=service_module.IdleClosingH11Protocol,
            limit_concurrency=settings.max_connections,
            timeout_keep_alive=service_module.KEEP_ALIVE_S,
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_level="warning",
        )
        with asyncio.Runner(loop_factory=service_module.ServiceLoop) as runner:
            runner.run(uvicorn.Server(config).serve(sockets=[listener]))


# --- the load: a minimal HTTP/1.1 client ----------------------------------------------------------


class LoadClient(asyncio.Protocol):
    """One keep-alive connection; request() sends prepared bytes and waits for the whole answer."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[int] | None = None
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("the server closed the connection"))

    async def request(self, data: bytes) -> int:
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[attr-defined]
        return await self.done


def request_bytes(port: int, stream: bool) -> bytes:
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "stream": stream}
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer unused\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def load(port: int, clients: int, requests: int, stream: bool) -> tuple[list[float], float]:
    """`requests` completions from `clients` concurrent connections: the latencies and the wall time."""
    loop = asyncio.get_running_loop()
    data = request_bytes(port, stream)
    conns = [(await loop.create_connection(LoadClient, "127.0.0.1", port))[1] for _ in range(clients)]
    latencies: list[float] = []
    todo = iter(range(requests))
    failed = 0

    async def client(conn: LoadClient) -> None:
        nonlocal failed
        for _ in todo:
            began = time.perf_counter()
            status = await conn.request(data)
            latencies.append(time.perf_counter() - began)
            failed += status != 200

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    wall = time.perf_counter() - began
    for conn in conns:
        conn.transport.close()  # type: ignore[attr-defined]
    if failed:
        raise SystemExit(f"{failed} of {requests} requests to port {port} failed")
    return latencies, wall


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def measure(port: int, clients: int, requests: int, stream: bool, pids: dict[str, int]) -> dict[str, float]:
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    latencies, wall = run(load(port, clients, requests, stream))
    after = {name: cpu_s(pid) for name, pid in pids.items()}
    figures = {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "rps": requests / wall,
    }
    for name in pids:
        figures[f"{name}_cpu_us"] = (after[name] - before[name]) / requests * 1e6
    return figures


def run(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# --- the run ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            run(load(port, 1, 1, False))
            return
        except (OSError, SystemExit):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"port {port} did not answer:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def start_proxy(root: Path, upstream_port: int, profile_out: Path | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MODELCTL_PROFILES_DIR": str(root / "profiles"),
        "MODELCTL_STATE_DIR": str(root / "state"),
        "MODELCTL_HF_CACHE": str(root / "hf"),
        "MODELCTL_GPUS": "none",
        "MODELCTL_GPU_TOTAL_GIB": "12",
        "MODELCTL_LISTEN": f"127.0.0.1:{port}",
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # nothing here needs an engine
    }
    for key in ("MODELCTL_API_TOKEN", "MODELCTL_DEFAULT_PROFILE"):
        env.pop(key, None)
    argv = [sys.executable, __file__, "_proxy", f"http://127.0.0.1:{upstream_port}/v1", str(port)]
    if profile_out:
        argv.append(str(profile_out))
    log = root / f"proxy-{port}.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    wait_for(port, process, log)
    return process, port


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def spread(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def profile_summary(path: Path, requests: int, top: int) -> list[str]:
    stats = pstats.Stats(str(path))
    rows = []
    for (file, line, name), (_, calls, own, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        rows.append((own, cum, calls, f"{name} ({where})"))
    total = sum(r[0] for r in rows)
    lines = [f"proxy CPU under the profiler: {total / requests * 1e6:.0f} us/request (cProfile slows it)"]
    lines.append(f"{'own us/req':>10} {'cum us/req':>10} {'calls/req':>9}  function")
    for own, cum, calls, name in sorted(rows, reverse=True)[:top]:
        lines.append(f"{own / requests * 1e6:>10.1f} {cum / requests * 1e6:>10.1f} {calls / requests:>9.1f}  {name}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (default 3)")
    parser.add_argument("--clients", default="1,64", help="concurrent clients, comma-separated (default 1,64)")
    parser.add_argument("--profile-requests", type=int, default=2000, help="requests under the profiler (0: none)")
    parser.add_argument("--top", type=int, default=15, help="profile entries shown (default 15)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory(prefix="modelctl-bench-") as tmp:
        root = Path(tmp)
        for sub in ("profiles", "hf", "state"):
            (root / sub).mkdir()
        upstream_port = free_port()
        (root / "profiles" / f"{MODEL}.yaml").write_text(
            f"name: {MODEL}\nmodel: bench/{MODEL}\nimage: vllm/vllm-openai:standin\nvram_gib: 4.0\n"
            f"max_model_len: 4096\nmax_num_seqs: 64\nport: {upstream_port}\n"
        )
        up_log = root / "upstream.log"
        with open(up_log, "w") as sink:
            upstream = subprocess.Popen(
                [sys.executable, __file__, "_upstream", str(upstream_port)], stdout=sink, stderr=subprocess.STDOUT
            )
        processes = [upstream]
        try:
            wait_for(upstream_port, upstream, up_log)
            proxy, proxy_port = start_proxy(root, upstream_port)
            processes.append(proxy)
            pids = {"upstream": upstream.pid, "proxy": proxy.pid}
            results: dict[str, dict[int, dict[str, dict[str, list[float]]]]] = {}
            for stream in (False, True):
                kind = "streaming" if stream else "non-streaming"
                results[kind] = {}
                for clients in client_counts:
                    warm = max(clients * 4, 200)
                    run(load(upstream_port, clients, warm, stream))
                    run(load(proxy_port, clients, warm, stream))
                    runs: dict[str, dict[str, list[float]]] = {"direct": {}, "proxy": {}}
                    for i in range(args.repeat):
                        order = ("direct", "proxy") if i % 2 == 0 else ("proxy", "direct")
                        for path in order:
                            port = upstream_port if path == "direct" else proxy_port
                            figures = measure(port, clients, args.requests, stream, pids)
                            for key, value in figures.items():
                                runs[path].setdefault(key, []).append(value)
                    results[kind][clients] = runs
            stop(proxy)
            processes.remove(proxy)

            profile_lines: list[str] = []
            if args.profile_requests:
                out = root / "proxy.prof"
                proxy, proxy_port = start_proxy(root, upstream_port, profile_out=out)
                processes.append(proxy)
                run(load(proxy_port, 1, 200, False))
                proxy.send_signal(signal.SIGUSR1)
                time.sleep(0.2)
                run(load(proxy_port, 1, args.profile_requests, False))
                stop(proxy)
                processes.remove(proxy)
                profile_lines = profile_summary(out, args.profile_requests, args.top)
        finally:
            for process in processes:
                stop(process)

    print(
        f"modelctl proxy vs direct: chat completions to a Python http.server upstream on 127.0.0.1, "
        f"{args.requests} requests per run, {args.repeat} runs: median [min-max]"
    )
    for kind, by_clients in results.items():
        for clients, runs in by_clients.items():
            d, p = runs["direct"], runs["proxy"]
            ratio = [pc / uc for pc, uc in zip(p["proxy_cpu_us"], p["upstream_cpu_us"])]
            added50 = [pp - dp for pp, dp in zip(p["p50_ms"], d["p50_ms"])]
            added99 = [pp - dp for pp, dp in zip(p["p99_ms"], d["p99_ms"])]
            through = [pr / dr for pr, dr in zip(p["rps"], d["rps"])]
            print(f"\n{kind}, {clients} client{'s' if clients > 1 else ''}:")
            print(
                f"  CPU per request: proxy {spread(p['proxy_cpu_us'], '.0f')} us, "
                f"upstream {spread(p['upstream_cpu_us'], '.0f')} us, ratio proxy/upstream {spread(ratio, '.2f')}"
            )
            print(
                f"  latency p50: direct {spread(d['p50_ms'], '.3f')} ms, proxy {spread(p['p50_ms'], '.3f')} ms, "
                f"added {spread(added50, '.3f')} ms"
            )
            print(
                f"  latency p99: direct {spread(d['p99_ms'], '.3f')} ms, proxy {spread(p['p99_ms'], '.3f')} ms, "
                f"added {spread(added99, '.3f')} ms"
            )
            print(
                f"  throughput: direct {spread(d['rps'], '.0f')} req/s, proxy {spread(p['rps'], '.0f')} req/s, "
                f"ratio {spread(through, '.2f')}"
            )
    if profile_lines:
        print(f"\nthe proxy's hot path, {args.profile_requests} non-streaming requests from 1 client, by own time:")
        for line in profile_lines:
            print("  " + line)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_upstream":
        run_upstream(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_proxy":
        with contextlib.suppress(KeyboardInterrupt):
            run_proxy(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        main()
