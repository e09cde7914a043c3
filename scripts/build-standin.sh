#!/usr/bin/env bash
# Build the stand-in for the vllm/vllm-openai image, offline.
#
#   scripts/build-standin.sh [TAG...]
#
# Tags vllm/vllm-openai:standin plus any TAG given. The image is FROM scratch
# with Debian's static busybox (package busybox-static) and
# modelctl/standin/standin.sh; see that script for the behaviour and the
# STANDIN_* variables. Uses the legacy builder (no BuildKit, no registry).
# BUSYBOX=/path/to/static/busybox overrides /bin/busybox.
set -euo pipefail

die() {
	echo "build-standin: $*" >&2
	exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$root/modelctl/standin
busybox=${BUSYBOX:-/bin/busybox}

[[ -f $src/Dockerfile && -f $src/standin.sh && -f $src/http.sh ]] || die "missing $src/Dockerfile, $src/standin.sh or $src/http.sh"
[[ -x $busybox ]] || die "$busybox not found: install Debian's package busybox-static (apt-get install busybox-static)"

is_static() {
	if command -v file >/dev/null 2>&1; then
		file -L "$1" | grep -Eq 'statically linked|static-pie linked'
	elif command -v ldd >/dev/null 2>&1; then
		ldd "$1" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'
	else
		# No tool to tell: a dynamic ELF names its loader.
		! grep -aq 'ld-linux' "$1"
	fi
}
is_static "$busybox" || die "$busybox is not statically linked: install Debian's package busybox-static (apt-get install busybox-static), which replaces the dynamic busybox"

command -v docker >/dev/null 2>&1 || die "docker CLI not found"

tags=("vllm/vllm-openai:standin" "$@")
tag_args=()
for t in "${tags[@]}"; do tag_args+=(-t "$t"); done

ctx=$(mktemp -d "${TMPDIR:-/tmp}/standin-build.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp "$busybox" "$ctx/busybox"
cp "$src/Dockerfile" "$src/standin.sh" "$src/http.sh" "$ctx/"
chmod 0755 "$ctx/busybox" "$ctx/standin.sh" "$ctx/http.sh"

if ! out=$(DOCKER_BUILDKIT=0 docker build -q "${tag_args[@]}" "$ctx" 2>&1); then
	printf '%s\n' "$out" >&2
	die "docker build failed"
fi
printf '%s\n' "${tags[@]}"
