#!/usr/bin/env bash
# The README's first command: install modelctl and show a real switch between two stand-in
# models on a Docker engine - the one DOCKER_HOST (or the default socket) names if it answers,
# else a private one started here. Works on a fresh Debian machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/engine.sh

ensure_packages
python3 -m pip install -q --disable-pip-version-check -e .

if docker version >/dev/null 2>&1; then
  echo "using the Docker engine at ${DOCKER_HOST:-unix:///var/run/docker.sock}" >&2
  echo "note: a switch stops every vLLM container on it (that is modelctl's job)" >&2
else
  start_engine
fi
bash scripts/build-standin.sh >/dev/null

export MODELCTL_PROFILES_DIR=$PWD/examples/standin-profiles
export MODELCTL_GPUS=none MODELCTL_GPU_TOTAL_GIB=${MODELCTL_GPU_TOTAL_GIB:-12}
run() { echo; echo "\$ $*"; "$@"; }

run modelctl list
run modelctl switch demo-ocr-a
run modelctl switch demo-ocr-b
run modelctl status
echo
echo "\$ curl -s http://127.0.0.1:8000/v1/models"
python3 -c 'import httpx; print(httpx.get("http://127.0.0.1:8000/v1/models", trust_env=False).text)'
cat <<MSG

demo-ocr-b is running. To keep going with the same engine and profiles:
  export DOCKER_HOST=$DOCKER_HOST MODELCTL_PROFILES_DIR=$MODELCTL_PROFILES_DIR MODELCTL_GPUS=none
  modelctl switch demo-ocr-a      # or: modelctl stop
MSG
