"""The switch on a real Docker engine, driven through the real CLI as a user would.

Each test starts from an empty test engine. The stand-in image behaves like vLLM where modelctl
cares (see modelctl/standin/): it listens only after its load time, answers /v1/models, and on
request fails with vLLM's log text, hangs, or ignores SIGTERM.
"""

from __future__ import annotations

import fcntl
import os
import threading

import httpx
import openai
import pytest
from conftest import STANDIN_IMAGE, free_port, running_vllm

pytestmark = pytest.mark.engine


def served_models(port: int) -> list[str]:
    response = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5, trust_env=False)
    response.raise_for_status()
    return [entry["id"] for entry in response.json()["data"]]


def test_switch_from_nothing(engine, workspace):
    a = workspace.profile("demo-a")
    result = workspace.cli_json("switch", "demo-a")
    assert result["outcome"] == "switched" and result["profile"] == "demo-a"
    assert set(result["phases"]) >= {"plan", "lock", "stop", "start", "load"}
    assert running_vllm(engine) == ["modelctl-demo-a"]
    # The real OpenAI client sees the model at the URL modelctl reports.
    client = openai.OpenAI(base_url=result["url"], api_key="EMPTY", http_client=httpx.Client(trust_env=False))
    assert [m.id for m in client.models.list()] == ["demo-a"]
    status = workspace.cli_json("status")
    assert status["active"] == {
        "profile": "demo-a",
        "container": "modelctl-demo-a",
        "ready": True,
        "url": f"http://127.0.0.1:{a['port']}/v1",
        "served_model": "demo-a",
    }
    container = engine.containers.get("modelctl-demo-a")
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped", "set once ready"
    assert container.attrs["HostConfig"]["PortBindings"][f"{a['port']}/tcp"][0]["HostIp"] == "127.0.0.1"


def test_switch_between_two_models(engine, workspace):
    workspace.profile("demo-a")
    b = workspace.profile("demo-b")
    workspace.cli_json("switch", "demo-a")
    result = workspace.cli_json("switch", "demo-b")
    assert result["stopped"] == ["modelctl-demo-a"]
    assert running_vllm(engine) == ["modelctl-demo-b"]
    assert served_models(b["port"]) == ["demo-b"]


def test_shared_port_swaps_cleanly(engine, workspace):
    port = free_port()
    workspace.profile("demo-a", port=port)
    workspace.profile("demo-b", port=port)
    workspace.cli_json("switch", "demo-a")
    workspace.cli_json("switch", "demo-b")
    assert served_models(port) == ["demo-b"], "one URL for every model: clients keep their config"


def test_foreign_vllm_containers_are_stopped(engine, workspace):
    workspace.profile("demo-a")
    # Started by hand: one by the official image name, one by its `vllm serve` command line.
    by_image = engine.containers.run(
        STANDIN_IMAGE, ["--model", "x"], name="my-vllm", detach=True, ports={"8000/tcp": ("127.0.0.1", free_port())}
    )
    engine.images.get(STANDIN_IMAGE).tag("local/ocr-server", "1")
    by_command = engine.containers.run(
        "local/ocr-server:1", ["vllm", "serve", "--model", "y"], name="compose-vllm-1", detach=True
    )
    assert running_vllm(engine) == ["compose-vllm-1", "my-vllm"]
    result = workspace.cli_json("switch", "demo-a")
    assert sorted(result["stopped"]) == ["compose-vllm-1", "my-vllm"]
    assert running_vllm(engine) == ["modelctl-demo-a"]
    by_image.reload()
    by_command.reload()
    assert by_image.status == "exited" and by_command.status == "exited"
    status = workspace.cli_json("status")
    foreign = [c for c in status["containers"] if c["profile"] is None]
    assert {c["name"] for c in foreign} == {"my-vllm", "compose-vllm-1"}


def test_crashing_model_fails_fast_and_rolls_back(engine, workspace):
    a = workspace.profile("demo-a")
    workspace.profile("broken", env={"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_FAIL": "cuda-oom"})
    workspace.cli_json("switch", "demo-a")
    # A 10-minute ready timeout: the CLI must come back long before it (the subprocess limit is 60 s).
    done = workspace.cli("switch", "broken", "--timeout", "600", timeout=60)
    assert done.returncode == 4, done.stderr
    assert "broken exited (code 1) before it was ready: CUDA ran out of memory" in done.stderr
    assert "lower max_num_seqs" in done.stderr
    assert "rolled back to demo-a" in done.stderr
    assert running_vllm(engine) == ["modelctl-demo-a"]
    assert served_models(a["port"]) == ["demo-a"]
    # The failed container is kept, stopped, for the post-mortem.
    logs = workspace.cli("logs", "broken")
    assert "torch.OutOfMemoryError: CUDA out of memory" in logs.stdout


def test_crash_cause_in_json(engine, workspace):
    workspace.profile("broken", env={"STANDIN_FAIL": "max-seq-len"})
    error = workspace.cli_json("switch", "broken", expect=4)["error"]
    assert error["code"] == 4
    assert "estimates the maximum model length at 11216" in error["message"]
    assert "nothing ran before" in error["message"]
    assert "max seq len" in error["log_tail"]
    assert running_vllm(engine) == []


def test_never_ready_model_times_out_and_rolls_back(engine, workspace):
    a = workspace.profile("demo-a")
    workspace.profile("hangs", env={"STANDIN_HANG": "1"})
    workspace.cli_json("switch", "demo-a")
    error = workspace.cli_json("switch", "hangs", "--timeout", "2", expect=4)["error"]
    assert "hangs was not ready after 2 s" in error["message"] and "rolled back to demo-a" in error["message"]
    assert running_vllm(engine) == ["modelctl-demo-a"]
    assert served_models(a["port"]) == ["demo-a"]


def test_no_rollback_leaves_nothing_running(engine, workspace):
    workspace.profile("demo-a")
    workspace.profile("broken", env={"STANDIN_FAIL": "trust-remote-code"})
    workspace.cli_json("switch", "demo-a")
    error = workspace.cli_json("switch", "broken", "--no-rollback", expect=4)["error"]
    assert "add --trust-remote-code" in error["hint"]
    assert running_vllm(engine) == []


def test_same_switch_twice_keeps_the_container(engine, workspace):
    workspace.profile("demo-a")
    workspace.cli_json("switch", "demo-a")
    first = engine.containers.get("modelctl-demo-a").id
    again = workspace.cli_json("switch", "demo-a")
    assert again["outcome"] == "unchanged" and again["stopped"] == []
    assert engine.containers.get("modelctl-demo-a").id == first


def test_changed_profile_restarts_the_model(engine, workspace):
    workspace.profile("demo-a")
    workspace.cli_json("switch", "demo-a")
    first = engine.containers.get("modelctl-demo-a").id
    workspace.env["MODELCTL_GPU_TOTAL_GIB"] = "16"  # another GPU size: another utilization
    assert workspace.cli_json("switch", "demo-a")["outcome"] == "switched"
    assert engine.containers.get("modelctl-demo-a").id != first


def test_concurrent_switches_run_one_after_another(engine, workspace):
    for name in ("demo-a", "demo-b", "demo-c"):
        workspace.profile(name)
    samples: list[list[str]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(running_vllm(engine))

    sampler = threading.Thread(target=sample)
    sampler.start()
    results: dict[str, object] = {}
    workers = [
        threading.Thread(target=lambda n=name: results.__setitem__(n, workspace.cli("switch", n, "--json")))
        for name in ("demo-a", "demo-b", "demo-c")
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    finally:
        done.set()
        sampler.join(timeout=30)
    assert all(results[n].returncode == 0 for n in results), {n: r.stderr for n, r in results.items()}
    assert len(results) == 3
    assert len(samples) >= 10, "the sampler must have looked while the switches ran"
    assert max(len(s) for s in samples) <= 1, [s for s in samples if len(s) > 1][:3]
    assert len(running_vllm(engine)) == 1


def test_container_ignoring_sigterm_is_killed_after_the_grace(engine, workspace):
    workspace.profile("stubborn", env={"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_IGNORE_SIGTERM": "1"})
    workspace.profile("demo-a")
    workspace.cli_json("switch", "stubborn")
    workspace.env["MODELCTL_STOP_GRACE"] = "1"
    result = workspace.cli_json("switch", "demo-a")
    assert result["stopped"] == ["modelctl-stubborn"]
    stubborn = engine.containers.get("modelctl-stubborn")
    assert stubborn.attrs["State"]["ExitCode"] == 137, "SIGKILL after the grace"
    assert result["phases"]["stop"] >= 1.0, "the grace was given before the kill"
    assert running_vllm(engine) == ["modelctl-demo-a"]


def test_engine_unreachable(workspace, tmp_path):
    workspace.profile("demo-a")
    done = workspace.cli("switch", "demo-a", env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert done.returncode == 5
    assert f"Docker engine unreachable at unix://{tmp_path}/no.sock" in done.stderr


def test_invalid_profile_names_file_and_key(workspace):
    workspace.profile("demo-a", max_num_seqs="four")
    done = workspace.cli("switch", "demo-a")
    assert done.returncode == 2
    assert str(workspace.profiles_dir / "demo-a.yaml") in done.stderr
    assert "key 'max_num_seqs': expected a whole number, got 'four'" in done.stderr


def test_unknown_profile(workspace):
    workspace.profile("demo-a")
    error = workspace.cli_json("switch", "nope", expect=2)["error"]
    assert error["message"] == "unknown profile 'nope' (known: demo-a)"


def test_too_big_is_refused_and_the_running_model_untouched(engine, workspace):
    workspace.profile("demo-a")
    workspace.profile("huge", vram_gib=20.0)
    workspace.cli_json("switch", "demo-a")
    first = engine.containers.get("modelctl-demo-a").id
    error = workspace.cli_json("switch", "huge", expect=3)["error"]
    assert "huge needs 20 GiB" in error["message"] and "demo-a (4 GiB)" in error["hint"]
    assert running_vllm(engine) == ["modelctl-demo-a"]
    assert engine.containers.get("modelctl-demo-a").id == first


def test_missing_image_fails_before_anything_is_stopped(engine, workspace):
    workspace.profile("demo-a")
    workspace.profile("ghost", image="vllm/vllm-openai:v0.0.0-does-not-exist")
    workspace.cli_json("switch", "demo-a")
    error = workspace.cli_json("switch", "ghost", expect=4, timeout=180)["error"]
    assert (
        "image vllm/vllm-openai:v0.0.0-does-not-exist is not on this engine and could not be pulled" in error["message"]
    )
    assert running_vllm(engine) == ["modelctl-demo-a"]


def test_port_in_use_is_named_before_anything_is_stopped(engine, workspace):
    taken = free_port()
    workspace.profile("demo-a", port=taken)
    workspace.profile("demo-b")
    workspace.cli_json("switch", "demo-b")
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        error = workspace.cli_json("switch", "demo-a", expect=4)["error"]
    assert error["message"] == (
        f"port {taken} on 127.0.0.1 is in use by another process, so demo-a could not listen there; nothing was stopped"
    )
    assert running_vllm(engine) == ["modelctl-demo-b"]


def test_lock_timeout(engine, workspace):
    workspace.profile("demo-a")
    workspace.state_dir.mkdir()
    with open(workspace.state_dir / "switch.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        error = workspace.cli_json("switch", "demo-a", "--lock-timeout", "0.3", expect=6)["error"]
    assert "another switch holds" in error["message"]
    assert running_vllm(engine) == []


def test_stop_leaves_none_running(engine, workspace):
    workspace.profile("demo-a")
    workspace.cli_json("switch", "demo-a")
    engine.containers.run(STANDIN_IMAGE, ["--model", "x"], name="my-vllm", detach=True)
    stopped = workspace.cli_json("stop")["stopped"]
    assert sorted(stopped) == ["modelctl-demo-a", "my-vllm"]
    assert running_vllm(engine) == []
    assert workspace.cli_json("status")["active"] is None


def test_run_passes_url_model_and_exit_code(engine, workspace):
    a = workspace.profile("demo-a")
    workspace.profile("demo-b")
    workspace.cli_json("switch", "demo-b")
    script = (
        "import os, sys, httpx;"
        "url = os.environ['OPENAI_BASE_URL'];"
        "print('URL', url, os.environ['MODELCTL_MODEL']);"
        "print('MODELS', [m['id'] for m in httpx.get(url + '/models', trust_env=False).json()['data']]);"
        "sys.exit(7)"
    )
    done = workspace.cli("run", "demo-a", "--restore", "--", "python3", "-c", script)
    assert done.returncode == 7, done.stderr
    assert f"URL http://127.0.0.1:{a['port']}/v1 demo-a" in done.stdout
    assert "MODELS ['demo-a']" in done.stdout
    assert "switched to" not in done.stdout, "CMD's stdout is the command's alone"
    assert running_vllm(engine) == ["modelctl-demo-b"], "--restore put the previous model back"


def test_run_does_not_run_the_command_when_the_switch_fails(engine, workspace, tmp_path):
    workspace.profile("broken", env={"STANDIN_FAIL": "gated-repo"})
    marker = tmp_path / "ran"
    done = workspace.cli("run", "broken", "--", "touch", str(marker))
    assert done.returncode == 4 and "HF_TOKEN" in done.stderr
    assert not marker.exists()


def test_token_never_printed(engine, workspace):
    workspace.profile("demo-a")
    secret = "hf_do_not_print_" + os.urandom(4).hex()
    env = {"HF_TOKEN": secret}
    outputs = [
        workspace.cli(*args, env=env) for args in (["switch", "demo-a"], ["show", "demo-a"], ["status", "--json"])
    ]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    assert all(secret not in o.stdout + o.stderr for o in outputs)
    container_env = engine.containers.get("modelctl-demo-a").attrs["Config"]["Env"]
    assert f"HF_TOKEN={secret}" in container_env, "passed to the container, just never shown"


def test_failed_replan_of_the_running_profile_puts_the_old_one_back(engine, workspace):
    a = workspace.profile("demo-a")
    workspace.cli_json("switch", "demo-a")
    first = engine.containers.get("modelctl-demo-a").id
    # The profile is edited (a new plan under the same name) into one that crashes.
    workspace.profile("demo-a", port=a["port"], env={"STANDIN_LOAD_SECONDS": "0.2", "STANDIN_FAIL": "cuda-oom"})
    error = workspace.cli_json("switch", "demo-a", expect=4)["error"]
    assert "CUDA ran out of memory" in error["message"] and "rolled back to demo-a" in error["message"]
    assert running_vllm(engine) == ["modelctl-demo-a"]
    assert engine.containers.get("modelctl-demo-a").id == first, "the very container that ran before"
    assert served_models(a["port"]) == ["demo-a"]


def test_replan_that_works_replaces_the_old_container(engine, workspace):
    a = workspace.profile("demo-a")
    workspace.cli_json("switch", "demo-a")
    workspace.profile("demo-a", port=a["port"], max_model_len=2048)
    assert workspace.cli_json("switch", "demo-a")["outcome"] == "switched"
    names = sorted(c.name for c in engine.containers.list(all=True))
    assert names == ["modelctl-demo-a"], "the set-aside container is removed once the new one answers"


def test_rollback_to_a_removed_foreign_container_says_so(engine, workspace):
    workspace.profile("broken", env={"STANDIN_FAIL": "no-cache-blocks"})
    engine.containers.run(STANDIN_IMAGE, ["--model", "x"], name="my-vllm", detach=True, auto_remove=True)
    error = workspace.cli_json("switch", "broken", expect=4)["error"]
    assert "no GPU memory was left for the KV cache" in error["message"]
    assert "rollback failed too" in error["message"] and "could not be started again" in error["message"]
    assert running_vllm(engine) == []


def test_stop_works_with_an_invalid_profile(engine, workspace):
    workspace.profile("demo-a")
    workspace.cli_json("switch", "demo-a")
    (workspace.profiles_dir / "half-edited.yaml").write_text("name: [unclosed\n")
    assert workspace.cli_json("stop")["stopped"] == ["modelctl-demo-a"]
    assert running_vllm(engine) == []


def test_run_reports_a_command_it_cannot_run_and_still_restores(engine, workspace, tmp_path):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    workspace.cli_json("switch", "demo-b")
    script = tmp_path / "eval.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # not executable
    done = workspace.cli("run", "demo-a", "--restore", "--", str(script))
    assert done.returncode == 2 and f"cannot run {script}: Permission denied" in done.stderr
    assert "Traceback" not in done.stderr
    assert running_vllm(engine) == ["modelctl-demo-b"]


def test_cli_killed_mid_switch_leaves_a_state_the_next_switch_repairs(engine, workspace):
    import signal
    import subprocess
    import sys

    from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

    workspace.profile("slow", env={"STANDIN_LOAD_SECONDS": "30"})
    workspace.profile("demo-b")
    killed = subprocess.Popen(
        [sys.executable, "-m", "modelctl", "switch", "slow"],
        env=workspace.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Bounded wait until the switch is in its load phase: its container runs.
        Retrying(
            retry=retry_if_result(lambda names: names != ["modelctl-slow"]),
            stop=stop_after_delay(60),
            wait=wait_fixed(0.05),
            reraise=True,
        )(lambda: running_vllm(engine))
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    result = workspace.cli_json("switch", "demo-b", "--lock-timeout", "5")  # no stale lock
    assert result["stopped"] == ["modelctl-slow"]
    assert running_vllm(engine) == ["modelctl-demo-b"]


def _squat(engine, name: str):
    """A container modelctl did not start, holding the name modelctl would give a profile's."""
    engine.images.get(STANDIN_IMAGE).tag("local/busybox", "1")
    return engine.containers.run("local/busybox:1", name=name, entrypoint=["/bin/sh", "-c", "sleep 300"], detach=True)


def test_a_container_modelctl_did_not_start_is_never_removed_for_its_name(engine, workspace):
    workspace.profile("demo-a")
    b = workspace.profile("demo-b")
    workspace.cli_json("switch", "demo-b")
    squatter = _squat(engine, "modelctl-demo-a")
    error = workspace.cli_json("switch", "demo-a", expect=2)["error"]
    assert "a container named modelctl-demo-a" in error["message"] and "modelctl did not start it" in error["message"]
    assert "docker rename modelctl-demo-a" in error["hint"]
    squatter.reload()
    assert squatter.status == "running" and squatter.name == "modelctl-demo-a"
    assert running_vllm(engine) == ["modelctl-demo-b"]
    assert served_models(b["port"]) == ["demo-b"]


def test_a_name_held_by_a_stranger_is_refused_before_anything_is_stopped(engine, workspace):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    workspace.cli_json("switch", "demo-b")
    first = engine.containers.get("modelctl-demo-b").id
    _squat(engine, "modelctl-demo-a")
    error = workspace.cli_json("switch", "demo-a", expect=2)["error"]
    assert "rolled back" not in error["message"], "refused before the stop: nothing to roll back"
    assert engine.containers.get("modelctl-demo-b").id == first, "the running model untouched"
