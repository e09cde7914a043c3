# shellcheck shell=bash
# Sourced by .ci/run and scripts/demo.sh: install what the tests and the demo need, and start a
# private Docker engine (own socket, own data root, published ports on 127.0.0.1 only).
# The engine is labelled modelctl-test-engine=1 so that the tests know it is theirs to clean.

ENGINE_DIR=${MODELCTL_ENGINE_DIR:-/tmp/modelctl-engine}
ENGINE_SOCK="$ENGINE_DIR/docker.sock"

# ensure_packages [--with-debootstrap]: the compose tests also make a Debian root for the image.
ensure_packages() {
  local need=()
  [ "${1:-}" = --with-debootstrap ] && ! command -v debootstrap >/dev/null 2>&1 && need+=(debootstrap)
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  if ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then
    need+=(busybox-static)
  fi
  command -v file >/dev/null 2>&1 || need+=(file)
  if ((${#need[@]})); then
    echo "installing Debian packages: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

engine_answers() {
  DOCKER_HOST="unix://$ENGINE_SOCK" docker version >/dev/null 2>&1
}

start_engine() {
  mkdir -p "$ENGINE_DIR"
  export DOCKER_HOST="unix://$ENGINE_SOCK"
  if engine_answers; then
    echo "private Docker engine already running at $DOCKER_HOST" >&2
    return 0
  fi
  # --ip 127.0.0.1: a published port without an address lands on loopback, never the network.
  # No TCP listener: the engine is reachable through its unix socket only.
  nohup dockerd \
    --host "$DOCKER_HOST" \
    --data-root "$ENGINE_DIR/data" \
    --exec-root "$ENGINE_DIR/exec" \
    --pidfile "$ENGINE_DIR/dockerd.pid" \
    --ip 127.0.0.1 \
    --label modelctl-test-engine=1 \
    >"$ENGINE_DIR/dockerd.log" 2>&1 &
  local i
  for i in $(seq 1 300); do
    engine_answers && { echo "started a private Docker engine at $DOCKER_HOST" >&2; return 0; }
    sleep 0.1
  done
  echo "the private Docker engine did not start within 30 s; its log:" >&2
  tail -n 30 "$ENGINE_DIR/dockerd.log" >&2
  return 1
}

stop_engine() {
  local pid i
  pid=$(cat "$ENGINE_DIR/dockerd.pid" 2>/dev/null) || return 0
  if kill "$pid" 2>/dev/null; then
    for i in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # dockerd leaves the host network namespace mounted once a container used network_mode: host
  # (the compose tests): unmount it, or removing the engine directory fails.
  umount "$ENGINE_DIR/exec/netns/default" 2>/dev/null || true
}
