#!/usr/bin/env bash
# Build the stand-in for the vllm/vllm-openai image, offline.
#
#   scripts/build-standin.sh [TAG...]
#
# Tags vllm/vllm-openai:standin (the version STANDIN_VERSION names, default 0.33.0: the one
# the shipped profiles pin; a forgiving entrypoint that takes the arguments with or without a
# leading `vllm serve`), plus any TAG given, and one image per known version,
# vllm/vllm-openai:standin-<version>, with that version's entrypoint (`vllm serve` for 0.33,
# `python3 -m vllm.entrypoints.openai.api_server` for 0.11). Every image holds every
# version: STANDIN_VERSION at run time picks another. The image is FROM scratch with
# Debian's static busybox (package busybox-static) and modelctl/standin/ (standin.sh, http.sh,
# texts-<version>.sh, flags-<version>.txt); see standin.sh for the behaviour and the STANDIN_*
# variables. Uses the legacy builder (no BuildKit, no registry).
# BUSYBOX=/path/to/static/busybox overrides /bin/busybox.
set -euo pipefail

die() {
	echo "build-standin: $*" >&2
	exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$root/modelctl/standin
busybox=${BUSYBOX:-/bin/busybox}
default_version=${STANDIN_VERSION:-0.33.0}

[[ -f $src/Dockerfile && -f $src/standin.sh && -f $src/http.sh ]] || die "missing $src/Dockerfile, $src/standin.sh or $src/http.sh"
versions=()
for texts in "$src"/texts-*.sh; do
	v=${texts##*/texts-}
	v=${v%.sh}
	[[ -f $src/flags-$v.txt ]] || die "$src/texts-$v.sh has no flags-$v.txt (generate it with scripts/vllm-flags.py)"
	versions+=("$v")
done
[[ -f $src/texts-$default_version.sh ]] || die "STANDIN_VERSION=$default_version: no $src/texts-$default_version.sh (known: ${versions[*]})"
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

ctx=$(mktemp -d "${TMPDIR:-/tmp}/standin-build.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp "$busybox" "$ctx/busybox"
cp "$src/Dockerfile" "$ctx/"
mkdir "$ctx/standin"
cp "$src"/standin.sh "$src"/http.sh "$src"/hub.sh "$src"/sleep.sh "$src"/texts-*.sh "$src"/flags-*.txt "$ctx/standin/"
chmod 0755 "$ctx/busybox" "$ctx/standin/standin.sh" "$ctx/standin/http.sh"

build() { # build-arg version, tags...
	local version=$1 out
	shift
	local tag_args=()
	for t in "$@"; do tag_args+=(-t "$t"); done
	if ! out=$(DOCKER_BUILDKIT=0 docker build -q --build-arg "STANDIN_DEFAULT_VERSION=$version" "${tag_args[@]}" "$ctx" 2>&1); then
		printf '%s\n' "$out" >&2
		die "docker build failed"
	fi
}

tags=("vllm/vllm-openai:standin" "$@")
build "$default_version" "${tags[@]}"
printf '%s\n' "${tags[@]}"
for v in "${versions[@]}"; do
	build "$v" "vllm/vllm-openai:standin-$v"
	if [[ $v == 0.11.* ]]; then
		entrypoint='["python3", "-m", "vllm.entrypoints.openai.api_server"]' # docker/Dockerfile then
	else
		entrypoint='["vllm", "serve"]'
	fi
	if ! out=$(printf 'FROM vllm/vllm-openai:standin-%s\nENTRYPOINT %s\n' "$v" "$entrypoint" |
		DOCKER_BUILDKIT=0 docker build -q -t "vllm/vllm-openai:standin-$v" - 2>&1); then
		printf '%s\n' "$out" >&2
		die "docker build failed"
	fi
	echo "vllm/vllm-openai:standin-$v"
done
