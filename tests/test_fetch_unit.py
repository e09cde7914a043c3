"""The weights fetch without an engine: the cache test (fetch_script.missing_reason), what is fetched
for a profile (targets), the switch's `fetch` phase on the fakes (before any stop; a failure stops
nothing), and fetch_script's `fetch` mode run as the container runs it, on a stand-in
huggingface_hub module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakes import World, make_settings

from modelctl import fetch_script
from modelctl.catalog import Catalog
from modelctl.errors import NotReadyError
from modelctl.fetch import targets
from modelctl.gpu import GpuBudget
from modelctl.plan import make_plan
from modelctl.runtime import LABEL_ROLE, ROLE_FETCH, TaskResult, TaskSpec, is_vllm_server

COMMIT = "a" * 40


def cached(hub: Path, repo: str, files: dict[str, str], *, ref: str = "main", commit: str = COMMIT) -> Path:
    """Write `repo` into `hub` as huggingface_hub does: blobs, a snapshot of links, a ref."""
    folder = hub / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        blob = folder / "blobs" / f"blob-{abs(hash(name))}"
        blob.write_text(text)
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(blob, target.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    return folder


# --- the cache test ------------------------------------------------------------------------------


def test_a_complete_snapshot_is_present(tmp_path):
    cached(tmp_path, "org/m", {"config.json": "{}", "model.safetensors": "w"})
    assert fetch_script.missing_reason(tmp_path, "org/m") is None
    assert fetch_script.missing_reason(tmp_path, "org/m", COMMIT) is None, "a commit names its snapshot"


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda hub: None, "org/m is not in the cache"),
        (lambda hub: cached(hub, "org/m", {"config.json": "{}"}), "org/m has no weights in the cache"),
        (
            lambda hub: cached(hub, "org/m", {"model.safetensors": "w"}, ref="v2"),
            "org/m has no snapshot of main in the cache",
        ),
        (
            lambda hub: (cached(hub, "org/m", {"model.safetensors": "w"}) / "blobs" / "x.incomplete").write_text(""),
            "a download of org/m did not finish",
        ),
        (
            lambda hub: cached(
                hub,
                "org/m",
                {
                    "model-00001-of-00002.safetensors": "w",
                    "model.safetensors.index.json": json.dumps(
                        {
                            "weight_map": {
                                "a": "model-00001-of-00002.safetensors",
                                "b": "model-00002-of-00002.safetensors",
                            }
                        }
                    ),
                },
            ),
            "org/m's shard model-00002-of-00002.safetensors is not in the cache",
        ),
    ],
)
def test_what_is_missing_is_said(tmp_path, setup, reason):
    setup(tmp_path)
    assert fetch_script.missing_reason(tmp_path, "org/m") == reason


def test_a_dangling_link_is_no_weights(tmp_path):
    folder = cached(tmp_path, "org/m", {"model.safetensors": "w"})
    for blob in (folder / "blobs").iterdir():
        blob.unlink()  # a cache cleaned by hand
    assert fetch_script.missing_reason(tmp_path, "org/m") == "org/m has no weights in the cache"


def test_hub_cache_follows_huggingface_hub():
    assert fetch_script.hub_cache({"HF_HUB_CACHE": "/x"}) == Path("/x")
    assert fetch_script.hub_cache({"HF_HOME": "/h"}) == Path("/h/hub")
    assert fetch_script.hub_cache({"XDG_CACHE_HOME": "/c"}) == Path("/c/huggingface/hub")


# --- what is fetched for a profile ---------------------------------------------------------------


def plan_of(tmp_path: Path, **keys):
    (tmp_path / "profiles").mkdir(exist_ok=True)
    data = {"name": "m", "model": "org/m", "image": "vllm/vllm-openai:v0.11.1", "vram_gib": 4.0}
    data.update({"max_model_len": 4096, "max_num_seqs": 2, **keys})
    (tmp_path / "profiles" / "m.yaml").write_text(json.dumps(data))
    settings = make_settings(tmp_path)
    return make_plan(Catalog(tmp_path / "profiles").find("m"), GpuBudget(12.0, "assumed"), settings)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, (["org/m"], "")),
        ({"vllm_args": ["--revision", "v2"]}, (["org/m@v2"], "")),
        ({"vllm_args": ["--tokenizer=org/tok", "--tokenizer-revision", "r1"]}, (["org/m", "org/tok@r1"], "")),
        ({"env": {"HF_HUB_OFFLINE": "1"}}, ([], "HF_HUB_OFFLINE=1 in the profile's env")),
        ({"model": "/models/m"}, ([], "/models/m is a path, not a Hugging Face repo id")),
        ({"vllm_args": ["--download-dir", "/data"]}, ([], "--download-dir puts the weights outside the mounted cache")),
    ],
)
def test_targets(tmp_path, keys, expected):
    assert targets(plan_of(tmp_path, **keys)) == expected


def test_a_fetch_container_is_no_vllm_server():
    labels = {LABEL_ROLE: ROLE_FETCH}
    assert not is_vllm_server("vllm/vllm-openai:v0.11.1", "python3 -c ...", labels)
    assert is_vllm_server("vllm/vllm-openai:v0.11.1", "vllm serve x", {})


# --- the switch's fetch phase on the fakes --------------------------------------------------------


@pytest.fixture
def world(tmp_path) -> World:
    w = World(tmp_path)
    w.profile("demo-a", port=8001)
    w.profile("demo-b", port=8002, weights_cached=False)
    assert w.controller.switch("demo-a").outcome == "switched"
    w.runtime.calls.clear()
    return w


def fills_cache(world: World, log: str = "fetch org/demo-b: done in 0.1 s\n"):
    def answer(spec: TaskSpec) -> TaskResult:
        if spec.command[2] == "fetch":
            for repo in spec.command[3:]:
                cached(world.root / "hf" / "hub", repo, {"model.safetensors": "w"})
        return TaskResult(0, log)

    return answer


def test_missing_weights_are_fetched_before_the_stop(world):
    world.runtime.task_result = fills_cache(world)
    heard = []
    from modelctl.progress import PhaseClock

    result = world.controller.switch("demo-b", clock=PhaseClock(lambda p, d: heard.append((p, d))))
    calls = [c[0] for c in world.runtime.calls]
    assert ("task", "fetch", ("org/demo-b",)) in world.runtime.calls
    assert calls.index("task") < calls.index("stop"), "downloaded while demo-a still served"
    assert list(result.phases)[:4] == ["plan", "lock", "fetch", "stop"]
    assert heard[2] == ("fetch", "org/demo-b is not in the cache")
    assert ("fetch", "fetch org/demo-b: done in 0.1 s") in heard, "the download's lines are the progress"
    # Now in the cache: the next switch reads the host directory and runs no container.
    world.controller.switch("demo-a")
    world.runtime.calls.clear()
    result = world.controller.switch("demo-b")
    assert not [c for c in world.runtime.calls if c[0] == "task"]
    assert "fetch" not in result.phases, "a look at a host directory is no phase"


def test_a_failed_fetch_stops_nothing(world):
    gated = (
        "huggingface_hub.errors.GatedRepoError: 401 Client Error.\n\n"
        "Cannot access gated repo for url https://huggingface.co/api/models/org/demo-b/revision/main.\n"
    )
    world.runtime.task_result = lambda spec: TaskResult(1, gated)
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-b")
    assert caught.value.exit_code == 4
    assert caught.value.message.startswith("fetching the weights of demo-b (org/demo-b) failed: the model")
    assert "gated" in caught.value.message and "HF_TOKEN" in (caught.value.hint or "")
    assert world.runtime.actions() == []
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_a_fetch_past_its_deadline_stops_nothing(world, monkeypatch):
    monkeypatch.setattr("modelctl.fetch.FETCH_TIMEOUT_S", 7.0)  # read at the call
    world.runtime.task_result = lambda spec: TaskResult(None, "fetch org/demo-b: 1.00 of 4.00 GiB", timed_out=True)
    with pytest.raises(NotReadyError) as caught:
        world.controller.switch("demo-b")
    assert "did not finish within 7 s" in caught.value.message
    assert world.runtime.running_names() == ["modelctl-demo-a"]


def test_offline_profile_fetches_nothing(world):
    world.profile("demo-b", port=8002, weights_cached=False, env={"HF_HUB_OFFLINE": "1"})
    result = world.controller.switch("demo-b")
    assert "fetch" not in result.phases
    assert not [c for c in world.runtime.calls if c[0] == "task"]


def test_a_volume_cache_is_checked_in_a_container(tmp_path):
    w = World(tmp_path, settings_overrides={"hf_cache": Path("modelctl-hf-cache")})
    w.profile("demo-a", port=8001)
    answers = {"check": TaskResult(0, "fetch org/demo-a: in the cache\n")}
    w.runtime.task_result = lambda spec: answers.get(spec.command[2], TaskResult(0, ""))
    w.controller.switch("demo-a")
    tasks = [c for c in w.runtime.calls if c[0] == "task"]
    assert tasks == [("task", "check", ("org/demo-a",))], "present: no fetch"
    w.controller.stop()
    w.runtime.calls.clear()
    answers["check"] = TaskResult(fetch_script.MISSING_EXIT, "org/demo-a is not in the cache\n")
    result = w.controller.switch("demo-a")
    tasks = [c for c in w.runtime.calls if c[0] == "task"]
    assert tasks == [("task", "check", ("org/demo-a",)), ("task", "fetch", ("org/demo-a",))]
    assert "fetch" in result.phases, "a container's look is timed"


def test_the_task_runs_the_profiles_image_with_its_env_and_the_token(tmp_path):
    w = World(tmp_path, settings_overrides={"MODELCTL_HF_TOKEN": "hf_secret"})
    w.profile("demo-a", port=8001, weights_cached=False, env={"HF_ENDPOINT": "http://mirror"})
    seen: list[tuple[TaskSpec, dict]] = []
    original = w.runtime.run_to_completion

    def spy(spec, secret_env, timeout_s, on_line=None):
        seen.append((spec, dict(secret_env)))
        return original(spec, secret_env, timeout_s, on_line)

    w.runtime.run_to_completion = spy
    w.controller.switch("demo-a")
    spec, secret = seen[0]
    assert spec.image == "vllm/vllm-openai:v0.11.1" and spec.entrypoint == ["python3"]
    assert spec.env["HF_ENDPOINT"] == "http://mirror" and secret == {"HF_TOKEN": "hf_secret"}
    assert "hf_secret" not in json.dumps(spec.env), "the token travels as a secret, never in the spec"
    assert spec.labels == {LABEL_ROLE: ROLE_FETCH, "modelctl.profile": "demo-a"}
    assert spec.hf_cache == str(tmp_path / "hf")


# --- fetch_script as the container runs it ----------------------------------------------------------

STUB = textwrap.dedent(
    """
    import os, types
    from pathlib import Path
    calls = []

    class HfApi:
        def model_info(self, repo, revision=None, files_metadata=False):
            sib = lambda n, s: types.SimpleNamespace(rfilename=n, size=s)
            return types.SimpleNamespace(siblings=[sib("config.json", 10), sib("model.safetensors", 2**30),
                                                   sib("pytorch_model.bin", 2**30), sib("original/x.pth", 5)])

    def snapshot_download(repo, revision=None, ignore_patterns=None, cache_dir=None):
        print("STUB", repo, revision, sorted(ignore_patterns), flush=True)
        folder = Path(cache_dir) / ("models--" + repo.replace("/", "--"))
        (folder / "blobs").mkdir(parents=True)
        (folder / "blobs" / "w").write_text("w")
        snap = folder / "snapshots" / ("b" * 40)
        snap.mkdir(parents=True)
        (snap / "model.safetensors").symlink_to("../../blobs/w")
        (folder / "refs").mkdir()
        (folder / "refs" / (revision or "main")).write_text("b" * 40)
    """
)


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    stub = tmp_path / "stub" / "huggingface_hub"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").write_text(STUB)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(tmp_path / "stub"),
        "HF_HOME": str(tmp_path / "hf"),
        "MODELCTL_FETCH_SCRIPT": Path(fetch_script.__file__).read_text(),
    }
    command = [sys.executable, "-c", "import os; exec(os.environ['MODELCTL_FETCH_SCRIPT'])", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_the_script_checks_then_fetches_with_safetensors_only(tmp_path):
    done = run_script(tmp_path, "check", "org/m@v1")
    assert done.returncode == fetch_script.MISSING_EXIT and done.stdout == "org/m is not in the cache\n"
    done = run_script(tmp_path, "fetch", "org/m@v1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "fetch org/m: 4 files, 1.00 GiB to check or download", "the .bin and original/ are skipped"
    assert lines[1].startswith("STUB org/m v1 ['*.bin', ") and "'original/*'" in lines[1]
    assert lines[-1].startswith("fetch org/m: done in ")
    assert run_script(tmp_path, "check", "org/m@v1").returncode == 0
    assert run_script(tmp_path, "fetch", "org/m@v1").stdout == "fetch org/m: in the cache\n"


def test_the_script_refuses_a_bad_mode(tmp_path):
    assert run_script(tmp_path, "download", "org/m").returncode == 2
