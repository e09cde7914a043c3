"""Downtime of a swap - the old model stops serving -> the new one answers - on the stand-in, in one run:

1. cold swap: two models without sleep mode (stop, start, a --load-seconds load);
2. first switch to a model whose weights are not downloaded yet (--download-seconds), with
   modelctl's fetch-before-stop, and without it (the switch as before issue 12: the new
   container downloads while nothing serves; here the controller's fetch step is switched off);
3. hot swap: two sleep-enabled models (sleep_level 1), the other asleep: a wake of --wake-seconds;
   and modelctl's own overhead on it (switch time minus the stand-in's wake time);
4. the proxy: two clients each alternating two sleep-enabled models through `modelctl serve`;
   per-request latency p50/p90, and whether any swap was a cold start (it must be none).

Downtime is measured from outside: one poller per model sends a chat completion every --poll
seconds; downtime = the new model's first answer after the switch began minus the old model's
last answer before that. The switches run in-process (the controller, as `modelctl switch`
does), so Python's start-up is not counted.

Needs DOCKER_HOST pointing at an engine with vllm/vllm-openai:standin (scripts/build-standin.sh).
It removes every container it made, and stops every vLLM container on that engine.

    python bench/sleep_bench.py [--load-seconds 10 --wake-seconds 0.3 --download-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IMAGE = "vllm/vllm-openai:standin"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(client: httpx.Client, url: str, model: str, timeout: float = 2.0) -> bool:
    try:
        response = client.post(
            url + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=timeout,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


class Poller:
    """Asks one model for a completion every `every` seconds; keeps the times it answered."""

    def __init__(self, port: int, model: str, every: float) -> None:
        self.url, self.model, self.every = f"http://127.0.0.1:{port}/v1", model, every
        self.answered: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False) as client:
            while not self._stop.is_set():
                if answers(client, self.url, self.model):
                    self.answered.append(time.monotonic())
                self._stop.wait(self.every)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@contextmanager
def watching(old: tuple[int, str], new: tuple[int, str], every: float) -> Iterator[dict[str, float]]:
    """Poll both models around a switch; yields a dict that holds the downtime afterwards."""
    found: dict[str, float] = {}
    with Poller(*old, every) as before, Poller(*new, every) as after:
        time.sleep(5 * every)
        began = time.monotonic()
        yield found
        deadline = time.monotonic() + 30
        while not [t for t in after.answered if t >= began] and time.monotonic() < deadline:
            time.sleep(every)
    first_new = min((t for t in after.answered if t >= began), default=float("nan"))
    last_old = max((t for t in before.answered if t <= first_new), default=began)
    found["downtime_s"] = round(first_new - last_old, 3)


def cleanup(env: dict[str, str]) -> None:
    for selector in ("label=modelctl.managed", "label=modelctl.role=fetch"):
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", selector], env=env, capture_output=True, text=True
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-seconds", type=float, default=10.0, help="the stand-in's cold load")
    parser.add_argument("--wake-seconds", type=float, default=0.3, help="the stand-in's wake")
    parser.add_argument("--download-seconds", type=float, default=10.0, help="the stand-in's weights download")
    parser.add_argument("--rounds", type=int, default=3, help="swaps per measure (cold: 2 at most)")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between a poller's requests")
    parser.add_argument("--proxy-requests", type=int, default=20, help="requests per proxy client")
    parser.add_argument("--skip-hot", action="store_true", help="only the measures that need no sleep mode")
    parser.add_argument("--skip-cold", action="store_true", help="only the measures of sleep mode (3 and 4)")
    args = parser.parse_args()
    if "DOCKER_HOST" not in os.environ:
        sys.exit("set DOCKER_HOST to the engine to measure on (bash .ci/run starts a private one)")

    work = Path(tempfile.mkdtemp(prefix="modelctl-sleep-bench-"))
    profiles = work / "profiles"
    profiles.mkdir()
    env_vars = {
        "MODELCTL_PROFILES_DIR": str(profiles),
        "MODELCTL_STATE_DIR": str(work / "state"),
        "MODELCTL_HF_CACHE": str(work / "hf"),
        "MODELCTL_VLLM_CACHE": str(work / "vllm"),
        "MODELCTL_GPUS": "none",
        "MODELCTL_STOP_GRACE": "2",
    }
    os.environ.update(env_vars)
    env = dict(os.environ)
    ports: dict[str, int] = {}

    def profile(name: str, *, sleep: bool = False, download: float = 0.0) -> None:
        ports[name] = free_port()
        extra = {"STANDIN_LOAD_SECONDS": str(args.load_seconds), "STANDIN_COMPILE_SECONDS": "0"}
        if sleep:
            extra["STANDIN_WAKE_SECONDS"] = str(args.wake_seconds)
        if download:
            extra["STANDIN_DOWNLOAD_SECONDS"] = str(download)
        data = {
            "name": name,
            "model": f"standin/{name}",
            "image": IMAGE,
            "vram_gib": 4.0,
            "max_model_len": 4096,
            "max_num_seqs": 2,
            "port": ports[name],
            "env": extra,
            **({"sleep_level": 1} if sleep else {}),
        }
        (profiles / f"{name}.yaml").write_text(json.dumps(data))

    for name in ("cold-a", "cold-b"):
        profile(name)
    profile("new-fetched", download=args.download_seconds)
    profile("new-unfetched", download=args.download_seconds)
    if not args.skip_hot:
        profile("hot-a", sleep=True)
        profile("hot-b", sleep=True)

    from modelctl.backend import LocalBackend
    from modelctl.controller import Controller
    from modelctl.settings import load_settings

    backend = LocalBackend(load_settings())
    controller = backend.controller
    figures: dict[str, object] = {}

    def switch(name: str) -> dict[str, object]:
        result = controller.switch(name)
        return {"total_s": result.total_s, "phases": result.phases}

    def swap(old: str, new: str) -> dict[str, object]:
        with watching((ports[old], old), (ports[new], new), args.poll) as found:
            done = switch(new)
        return {**done, **found}

    cleanup(env)
    try:
        # 1. cold swap (weights in the cache: the first switch to each fetched them)
        if not args.skip_cold:
            switch("cold-a")
            switch("cold-b")
            cold = [swap("cold-b", "cold-a"), swap("cold-a", "cold-b")][: max(1, min(2, args.rounds))]
            figures["cold swap"] = cold
            # 2. first switch to a model not downloaded yet: with the fetch before the stop ...
            figures["first switch, fetch before stop"] = swap("cold-b", "new-fetched")
            # ... and without it (the new container downloads while nothing serves)
            original = Controller._fetch_weights
            Controller._fetch_weights = lambda self, plan, clock: None  # type: ignore[method-assign]
            try:
                figures["first switch, no fetch (before issue 12)"] = swap("new-fetched", "new-unfetched")
            finally:
                Controller._fetch_weights = original  # type: ignore[method-assign]
        # 3. hot swap: both sleep-enabled models started once, then woken in turn
        if not args.skip_hot:
            switch("hot-a")
            switch("hot-b")  # hot-a asleep now
            hot = []
            pair = ("hot-b", "hot-a")
            for _ in range(args.rounds):
                hot.append(swap(*pair))
                pair = (pair[1], pair[0])
            figures["hot swap"] = hot
            woke = all("wake" in h["phases"] for h in hot)  # type: ignore[operator]
            figures["hot swap was a wake"] = woke
            figures["modelctl overhead on a hot swap (total - wake), ms"] = [
                round((float(h["total_s"]) - args.wake_seconds) * 1000) for h in hot
            ]
            if woke:
                figures["proxy"] = proxy_figures(args, env, ports)
    finally:
        cleanup(env)

    print(json.dumps(figures, indent=2))
    print(summary(figures, args))


def proxy_figures(args: argparse.Namespace, env: dict[str, str], ports: dict[str, int]) -> dict[str, object]:
    """Two clients, each alternating hot-a and hot-b, through `modelctl serve`'s /v1."""
    listen = free_port()

    def ids() -> dict[str, str]:
        found = subprocess.run(
            ["docker", "inspect", "-f", "{{.Name}} {{.Id}}", "modelctl-hot-a", "modelctl-hot-b"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
        return dict(line.strip("/").split(" ", 1) for line in found if line.strip())

    containers_before = ids()
    log_path = Path(env["MODELCTL_STATE_DIR"]).parent / "service.log"
    service = subprocess.Popen(
        [sys.executable, "-m", "modelctl", "serve"],
        env={
            **env,
            "MODELCTL_LISTEN": f"127.0.0.1:{listen}",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        },
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("w"),
    )
    url = f"http://127.0.0.1:{listen}/v1"
    latencies: list[float] = []
    try:
        with httpx.Client(trust_env=False) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if client.get(f"http://127.0.0.1:{listen}/api/status", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)

        def client_loop(first: str, second: str) -> None:
            with httpx.Client(trust_env=False) as client:
                for i in range(args.proxy_requests):
                    model = first if i % 2 == 0 else second
                    began = time.monotonic()
                    if not answers(client, url, model, timeout=120):
                        raise SystemExit(f"the proxy did not answer a request for {model}")
                    latencies.append(time.monotonic() - began)

        clients = [threading.Thread(target=client_loop, args=pair) for pair in (("hot-a", "hot-b"), ("hot-b", "hot-a"))]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
    finally:
        service.terminate()
        service.wait(timeout=30)
    containers_after = ids()
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "p50_s": round(statistics.median(ordered), 3),
        "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "max_s": round(ordered[-1], 3),
        # a cold start replaces a profile's container: its id changes
        "cold_starts": sum(containers_after.get(n) != i for n, i in containers_before.items()),
        "service_log": str(log_path),
    }


def summary(figures: dict[str, object], args: argparse.Namespace) -> str:
    def downtime(key: str) -> str:
        value = figures.get(key)
        rows = value if isinstance(value, list) else [value] if value else []
        times = [float(r["downtime_s"]) for r in rows]  # type: ignore[index]
        return f"{statistics.median(times):.2f} s" if times else "pending"

    lines = [
        f"stand-in: load {args.load_seconds:g} s, wake {args.wake_seconds:g} s, download {args.download_seconds:g} s",
        f"  cold swap downtime                          {downtime('cold swap')}",
        f"  first switch, fetch before stop             {downtime('first switch, fetch before stop')}",
        f"  first switch, no fetch (before issue 12)    {downtime('first switch, no fetch (before issue 12)')}",
        f"  hot swap downtime                           {downtime('hot swap')}",
    ]
    overhead = figures.get("modelctl overhead on a hot swap (total - wake), ms")
    if overhead and figures.get("hot swap was a wake"):
        lines.append(f"  modelctl overhead on a hot swap (median)    {statistics.median(overhead)} ms")  # type: ignore[arg-type]
    proxy = figures.get("proxy")
    if isinstance(proxy, dict):
        lines.append(
            f"  proxy, 2 clients alternating 2 sleepers     p50 {proxy['p50_s']} s, p90 {proxy['p90_s']} s, "
            f"cold starts {proxy['cold_starts']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
