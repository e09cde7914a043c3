"""What the OpenAI proxy of `modelctl serve` adds: latency (p50, p99) and throughput through the
proxy against direct calls to the same upstream, in the same run, at 1 and 64 concurrent clients.

    DOCKER_HOST=unix:///path/to/docker.sock python bench/proxy_bench.py [--requests 2000] [--stream]

Needs the stand-in image (`bash scripts/build-standin.sh`) on that engine. It starts its own
`python -m modelctl serve` on a free 127.0.0.1 port with a throw-away profile and state directory;
like any modelctl switch, that STOPS every vLLM container on the engine. It stops its model at
the end. Same upstream both ways: the stand-in container the proxy switched to, on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
IMAGE = "vllm/vllm-openai:standin"
MODEL = "bench-model"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def run(base: str, clients: int, requests: int, stream: bool) -> dict[str, float]:
    """`requests` chat completions from `clients` concurrent clients; latencies and throughput."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "stream": stream}
    latencies: list[float] = []
    failures = 0
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=60, limits=limits) as http:

        async def client() -> None:
            nonlocal failures
            for _ in todo:
                began = time.perf_counter()
                async with http.stream("POST", "/chat/completions", json=body) as response:
                    async for _chunk in response.aiter_raw():
                        pass
                latencies.append(time.perf_counter() - began)
                failures += response.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - began
    if failures:
        raise SystemExit(f"{failures} of {requests} requests to {base} failed")
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "rps": requests / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement (default 2000)")
    parser.add_argument("--stream", action="store_true", help="streaming completions (SSE) instead of plain JSON")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if not os.environ.get("DOCKER_HOST"):
        raise SystemExit("set DOCKER_HOST to the engine with the stand-in image (bash scripts/build-standin.sh)")

    with tempfile.TemporaryDirectory(prefix="modelctl-bench-") as tmp:
        root = Path(tmp)
        (root / "profiles").mkdir()
        (root / "hf").mkdir()
        port = free_port()
        (root / "profiles" / f"{MODEL}.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": MODEL,
                    "model": f"standin/{MODEL}",
                    "image": IMAGE,
                    "vram_gib": 4.0,
                    "max_model_len": 4096,
                    "max_num_seqs": 64,
                    "port": port,
                    "env": {"STANDIN_LOAD_SECONDS": "0.3"},
                }
            )
        )
        listen = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "MODELCTL_PROFILES_DIR": str(root / "profiles"),
            "MODELCTL_STATE_DIR": str(root / "state"),
            "MODELCTL_HF_CACHE": str(root / "hf"),
            "MODELCTL_GPUS": "none",
            "MODELCTL_GPU_TOTAL_GIB": "12",
            "MODELCTL_STOP_GRACE": "2",
            "MODELCTL_LISTEN": f"127.0.0.1:{listen}",
        }
        env.pop("MODELCTL_API_TOKEN", None)
        env.pop("MODELCTL_DEFAULT_PROFILE", None)
        log = open(root / "service.log", "w")  # noqa: SIM115 - closed in the finally below, after the service
        service = subprocess.Popen(
            [sys.executable, "-m", "modelctl", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        proxy, direct = f"http://127.0.0.1:{listen}/v1", f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + 60
            while True:  # the service answers, then the first request through the proxy starts the model
                try:
                    if (
                        httpx.post(
                            f"{proxy}/chat/completions",
                            json={"model": MODEL, "messages": []},
                            trust_env=False,
                            timeout=60,
                        ).status_code
                        == 200
                    ):
                        break
                except httpx.TransportError:
                    pass
                if service.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"modelctl serve did not come up:\n{(root / 'service.log').read_text()}")
                time.sleep(0.1)

            figures = {}
            for clients in (1, 64):
                warm = max(clients * 2, 20)
                asyncio.run(run(direct, clients, warm, args.stream))
                asyncio.run(run(proxy, clients, warm, args.stream))
                d = asyncio.run(run(direct, clients, args.requests, args.stream))
                p = asyncio.run(run(proxy, clients, args.requests, args.stream))
                figures[clients] = {"direct": d, "proxy": p}
        finally:
            try:
                httpx.post(f"http://127.0.0.1:{listen}/api/stop", trust_env=False, timeout=60)
            except httpx.HTTPError:
                pass
            service.terminate()
            service.wait(timeout=30)
            log.close()

    kind = "streaming (SSE)" if args.stream else "non-streaming"
    print(f"modelctl proxy vs direct, {kind} chat completions to the stand-in, {args.requests} requests each")
    print(f"{'clients':>7} {'path':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for clients, both in figures.items():
        for path in ("direct", "proxy"):
            f = both[path]
            print(f"{clients:>7} {path:>6} {f['p50_ms']:>8.2f} {f['p99_ms']:>8.2f} {f['rps']:>8.1f}")
    print("ratios (proxy / direct):")
    for clients, both in figures.items():
        d, p = both["direct"], both["proxy"]
        print(
            f"  {clients:>2} clients: p50 x{p['p50_ms'] / d['p50_ms']:.2f} (+{p['p50_ms'] - d['p50_ms']:.2f} ms), "
            f"p99 x{p['p99_ms'] / d['p99_ms']:.2f} (+{p['p99_ms'] - d['p99_ms']:.2f} ms), "
            f"throughput x{p['rps'] / d['rps']:.2f}"
        )
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
