"""Shared fixtures. Integration tests drive the real CLI against a real Docker engine.

The engine is the private one `.ci/run` starts (DOCKER_HOST, labelled modelctl-test-engine=1):
tests remove every container on it, so they refuse any engine without that label.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

STANDIN_IMAGE = "vllm/vllm-openai:standin"
TEST_ENGINE_LABEL = "modelctl-test-engine=1"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unavailable(why: str) -> None:
    """Skip a test that needs what is missing - or fail it under .ci/run (MODELCTL_REQUIRE_ENGINE)."""
    if os.environ.get("MODELCTL_REQUIRE_ENGINE") == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def docker_client():
    """The test engine, or a skip (a failure under .ci/run, which sets MODELCTL_REQUIRE_ENGINE)."""
    import docker

    if not os.environ.get("DOCKER_HOST"):
        unavailable("DOCKER_HOST is not set: run the tests with `bash .ci/run`, which starts a private engine")
    try:
        client = docker.from_env(timeout=60)
        info = client.info()
    except docker.errors.DockerException as exc:
        unavailable(f"no Docker engine at {os.environ['DOCKER_HOST']}: {exc}")
    if TEST_ENGINE_LABEL not in (info.get("Labels") or []):
        unavailable(
            f"the engine at {os.environ['DOCKER_HOST']} is not a test engine ({TEST_ENGINE_LABEL}); "
            "the tests remove containers, so they only run on the one .ci/run starts"
        )
    try:
        client.images.get(STANDIN_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"{STANDIN_IMAGE} is missing: run `bash scripts/build-standin.sh`")
    yield client
    client.close()


def remove_all_containers(client) -> None:
    for container in client.containers.list(all=True):
        container.remove(force=True)


@dataclass
class Workspace:
    """A profiles directory, a state directory and the environment the CLI runs in."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def profile(self, name: str, **keys: Any) -> dict[str, Any]:
        """Write a stand-in profile; keys override the defaults. Returns what was written."""
        data: dict[str, Any] = {
            "name": name,
            "model": f"standin/{name}",
            "image": STANDIN_IMAGE,
            "vram_gib": 4.0,
            "max_model_len": 4096,
            "max_num_seqs": 2,
            "port": free_port(),
            "env": {"STANDIN_LOAD_SECONDS": "0.3"},
        }
        data.update(keys)
        (self.profiles_dir / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return data

    def cli(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "modelctl", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli_json(self, *args: str, expect: int = 0, **kwargs: Any) -> Any:
        done = self.cli(*args, "--json", **kwargs)
        assert done.returncode == expect, f"exit {done.returncode}, wanted {expect}\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path)
    ws.profiles_dir.mkdir()
    (tmp_path / "hf").mkdir()
    ws.env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "MODELCTL_PROFILES_DIR": str(ws.profiles_dir),
        "MODELCTL_STATE_DIR": str(ws.state_dir),
        "MODELCTL_HF_CACHE": str(tmp_path / "hf"),
        "MODELCTL_GPUS": "none",
        "MODELCTL_GPU_TOTAL_GIB": "12",
        "MODELCTL_STOP_GRACE": "2",
    }
    if "DOCKER_HOST" in os.environ:
        ws.env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    return ws


@pytest.fixture
def engine(docker_client, workspace):
    """A clean test engine before and after the test."""
    remove_all_containers(docker_client)
    yield docker_client
    remove_all_containers(docker_client)


def running_vllm(client) -> list[str]:
    """Names of the running vLLM server containers, the way a person would count them."""
    names = []
    for c in client.containers.list():
        if c.labels.get("modelctl.role") == "fetch":
            continue  # modelctl's weights fetch (`python3 -c ...` in the model's image), not a server
        command = (
            " ".join(c.attrs["Config"].get("Entrypoint") or []) + " " + " ".join(c.attrs["Config"].get("Cmd") or [])
        )
        image = c.attrs["Config"]["Image"]
        if image.startswith("vllm/vllm-openai") or "vllm serve" in command or c.labels.get("modelctl.managed"):
            names.append(c.name)
    return sorted(names)
