#!/usr/bin/env bash
# Build the modelctl image (`modelctl serve`) without the build reaching a package index.
#
#   scripts/build-image.sh [--local-base] [--rebuild-base] [--base IMAGE] [--tag TAG] [--refresh-wheels]
#
#   1. Wheels on the host: modelctl (from a clean copy of the tree) and every dependency, for the
#      base's Python and C library (asked from the base itself), plus pip's own wheel, into
#      build/wheels/. The dependencies' wheels of an earlier build are reused when they satisfy
#      the requirements (--refresh-wheels: download them all again); what is missing comes from
#      the package index. The image build itself never needs the index.
#   2. --local-base: the base is made here when the engine lacks it (--rebuild-base: always):
#      `debootstrap --variant=minbase --include=python3 bookworm`, trimmed (apt lists and
#      caches, docs, man pages, locales) and imported as modelctl-base:bookworm. Needs root,
#      Debian's debootstrap and the Debian mirror (DEBIAN_MIRROR), nothing else.
#      Without it the base is --base IMAGE, else $MODELCTL_BASE_IMAGE, else python:3.11-slim
#      (which the engine must have or be able to pull).
#   3. DOCKER_BUILDKIT=0 docker build --build-arg BASE=... -t TAG (default modelctl:local).
#
# Prints the timings of each step on stderr and the image's tag on stdout. DOCKER_HOST picks
# the engine, as for every Docker client.
set -euo pipefail

die() {
	echo "build-image: $*" >&2
	exit 1
}
say() { echo "build-image: $*" >&2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tag=${MODELCTL_IMAGE:-modelctl:local}
base=${MODELCTL_BASE_IMAGE:-python:3.11-slim}
local_base_tag=modelctl-base:bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
local_base=0
rebuild_base=0
refresh_wheels=0

while (($#)); do
	case $1 in
	--local-base) local_base=1 ;;
	--rebuild-base) local_base=1 rebuild_base=1 ;;
	--refresh-wheels) refresh_wheels=1 ;;
	--base) base=${2:?--base needs an image}; shift ;;
	--tag) tag=${2:?--tag needs a tag}; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
	shift
done

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
docker version >/dev/null 2>&1 || die "no Docker engine answers at ${DOCKER_HOST:-the default socket}"
python=${PYTHON:-python3}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/modelctl-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- 2. the base ---------------------------------------------------------------------------
if ((local_base)); then
	base=$local_base_tag
	if ((rebuild_base)) || ! docker image inspect "$base" >/dev/null 2>&1; then
		command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found: apt-get install debootstrap"
		((EUID == 0)) || die "debootstrap needs root"
		t=$(now)
		rootfs=$tmp/rootfs
		say "debootstrap bookworm (minbase + python3) from $mirror"
		if ! debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
			tail -n 20 "$tmp/debootstrap.log" >&2
			die "debootstrap failed"
		fi
		# Nothing in the image uses apt's lists and caches, docs, man pages or locales.
		rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
			"$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
			"$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
			"$rootfs"/usr/share/locale/*
		tar -C "$rootfs" --numeric-owner -c . |
			docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
		rm -rf "$rootfs"
		say "base $base made in $(since "$t") s"
	else
		say "base $base: already on the engine (--rebuild-base to make it again)"
	fi
fi

# --- 1. the wheels -------------------------------------------------------------------------
t=$(now)
# The target: the base's own Python and C library, so wheels fit whatever the host runs.
if ! target=$(docker run --rm --entrypoint python3 "$base" -c '
import os, platform, sys
glibc = os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")
print(f"{sys.version_info[0]}.{sys.version_info[1]} {glibc[0]}_{glibc[1]}_{platform.machine()}")
' 2>"$tmp/probe.err"); then
	cat "$tmp/probe.err" >&2
	die "cannot run python3 in the base $base (an image with Python 3.11 at python3 and glibc)"
fi
read -r pyver platform <<<"$target"
say "base $base: Python $pyver, manylinux_$platform"

# Built in a private context and copied to build/wheels/ at the end (for `docker compose build`):
# two builds at once (two CI jobs on one checkout) never see each other's half-made wheels.
kept=$root/build/wheels
((refresh_wheels)) && rm -rf "$kept"
ctx=$tmp/context
wheels=$ctx/build/wheels
mkdir -p "$wheels"
cp "$root/Dockerfile" "$root/.dockerignore" "$ctx/"
# A clean copy of the package: a stale build/lib of an in-tree build never leaks into the wheel.
src=$tmp/src
mkdir -p "$src"
cp "$root/pyproject.toml" "$root/README.md" "$src/"
tar -C "$root" --exclude=__pycache__ --exclude='*.pyc' -c modelctl | tar -C "$src" -x
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w "$wheels" "$src" 2>"$tmp/pip.err" ||
	"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$wheels" "$src" ||
	{ cat "$tmp/pip.err" >&2; die "building the modelctl wheel failed"; }
# pip does not widen a manylinux_2_N platform to older glibc versions by itself: list them all.
glibc_minor=${platform#2_}
glibc_minor=${glibc_minor%%_*}
arch=${platform#2_*_}
platforms=()
for ((m = glibc_minor; m >= 5; m--)); do platforms+=(--platform "manylinux_2_${m}_$arch"); done
((glibc_minor >= 17)) && platforms+=(--platform "manylinux2014_$arch")
((glibc_minor >= 12)) && platforms+=(--platform "manylinux2010_$arch")
platforms+=(--platform "manylinux1_$arch")
download=("$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all:
	--python-version "$pyver" --implementation cp "${platforms[@]}" -d "$wheels" "$wheels"/modelctl-*.whl pip)
# The wheels of an earlier build first (no network, fast); the index only for what is missing.
"${download[@]}" --no-index --find-links "$kept" >/dev/null 2>&1 ||
	"${download[@]}" 2>"$tmp/pip.err" ||
	{ grep -v "^WARNING: Location" "$tmp/pip.err" >&2; die "downloading the dependencies' wheels failed (the host needs the package index or pip's cache)"; }
say "$(find "$wheels" -name '*.whl' | wc -l) wheels ($(du -sh "$wheels" | cut -f1)) in $(since "$t") s"

# --- 3. the image --------------------------------------------------------------------------
t=$(now)
if ! out=$(DOCKER_BUILDKIT=0 docker build -q --force-rm --build-arg "BASE=$base" -t "$tag" "$ctx" 2>&1); then
	printf '%s\n' "$out" >&2
	die "docker build failed"
fi
mkdir -p "$root/build"
rm -rf "$kept.$$"
cp -r "$wheels" "$kept.$$"
rm -rf "$kept"
mv "$kept.$$" "$kept"
size=$(docker image inspect -f '{{.Size}}' "$tag")
say "image $tag FROM $base built in $(since "$t") s, $((size / 1000000)) MB"
echo "$tag"
