"""Switch time: `modelctl switch` against the same stop + run + poll done with the docker CLI.

Both sides swap between the same two stand-in models (modelctl/standin/, load time
--load-seconds) on the same engine, in the same run, alternating A and B. The baseline is the
script users write by hand (shared/CONTEXT.md): stop and remove every vLLM container, `docker
run` the other model, then `curl /v1/models` until it answers, sleeping --poll between tries.

Needs DOCKER_HOST pointing at an engine with vllm/vllm-openai:standin (scripts/build-standin.sh).
It removes the containers it made, and stops every vLLM container on that engine.

    python bench/switch_bench.py --rounds 6
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
import time
from pathlib import Path

IMAGE = "vllm/vllm-openai:standin"

BASELINE = r"""
set -eu
ids=$(docker ps -q --filter label=bench.model)
[ -z "$ids" ] || docker stop -t 10 $ids >/dev/null
[ -z "$ids" ] || docker rm $ids >/dev/null
docker run -d --label bench.model=$NAME --name bench-$NAME -p 127.0.0.1:$PORT:$PORT \
  -e STANDIN_LOAD_SECONDS=$LOAD $IMAGE --model standin/$NAME --served-model-name $NAME --port $PORT >/dev/null
until curl -sf http://127.0.0.1:$PORT/v1/models | grep -q "\"$NAME\""; do sleep $POLL; done
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{argv[:4]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def cleanup(env: dict[str, str]) -> None:
    for selector in ("label=bench.model", "label=modelctl.managed"):
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", selector], env=env, capture_output=True, text=True
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="swaps per side (alternating A, B)")
    parser.add_argument("--load-seconds", type=float, default=1.0, help="the stand-in's load time")
    parser.add_argument("--poll", type=float, nargs="+", default=[1.0, 0.1], help="baseline poll intervals")
    args = parser.parse_args()
    if "DOCKER_HOST" not in os.environ:
        sys.exit("set DOCKER_HOST to the engine to measure on (bash .ci/run starts a private one)")

    port = free_port()  # both sides serve every model on one port, as the shipped profiles do
    work = Path(tempfile.mkdtemp(prefix="modelctl-bench-"))
    (work / "profiles").mkdir()
    for name in ("bench-a", "bench-b"):
        (work / "profiles" / f"{name}.yaml").write_text(
            f"name: {name}\nmodel: standin/{name}\nimage: {IMAGE}\nvram_gib: 4.0\nmax_model_len: 4096\n"
            f"max_num_seqs: 2\nport: {port}\nenv:\n  STANDIN_LOAD_SECONDS: '{args.load_seconds}'\n"
        )
    env = {
        **os.environ,
        "MODELCTL_PROFILES_DIR": str(work / "profiles"),
        "MODELCTL_STATE_DIR": str(work / "state"),
        "MODELCTL_HF_CACHE": str(work / "hf"),
        "MODELCTL_GPUS": "none",
    }
    names = ["bench-a", "bench-b"] * ((args.rounds + 1) // 2)
    results: dict[str, list[float]] = {}
    phases: dict[str, list[float]] = {}

    cleanup(env)
    try:
        # modelctl, through its CLI as users call it (Python start-up included).
        timed([sys.executable, "-m", "modelctl", "switch", "bench-b", "--json"], env)  # warm-up: a model runs
        for name in names[: args.rounds]:
            seconds, out = timed([sys.executable, "-m", "modelctl", "switch", name, "--json"], env)
            results.setdefault("modelctl", []).append(seconds)
            for phase, value in json.loads(out)["phases"].items():
                phases.setdefault(phase, []).append(value)
        cleanup(env)
        for poll in args.poll:
            key = f"docker CLI, poll {poll:g}s"
            base_env = {**env, "IMAGE": IMAGE, "PORT": str(port), "LOAD": str(args.load_seconds), "POLL": str(poll)}
            timed(["bash", "-c", BASELINE], {**base_env, "NAME": "bench-b"})  # warm-up
            for name in names[: args.rounds]:
                seconds, _ = timed(["bash", "-c", BASELINE], {**base_env, "NAME": name})
                results.setdefault(key, []).append(seconds)
            cleanup(env)
    finally:
        cleanup(env)

    mine = statistics.median(results["modelctl"])
    print(f"switch between two stand-in models (load {args.load_seconds:g} s), {args.rounds} swaps each, medians:")
    for key, values in results.items():
        ratio = statistics.median(values) / mine
        print(
            f"  {key:<24} {statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})"
            f"  {'' if key == 'modelctl' else f'= {ratio:.2f} x modelctl'}"
        )
    print("modelctl phases, medians: " + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in phases.items()))


if __name__ == "__main__":
    main()
