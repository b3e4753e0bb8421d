#!/usr/bin/env bash
# The README's set-up command. On a fresh Debian 12 machine (as root) it
# installs every build and test dependency from Debian's packages, builds
# FAISS for this CPU into a cache outside the repository, and builds the
# project into build/. A second run only rebuilds what changed.
#
# Environment:
#   CLIPD_CACHE_DIR   where the FAISS build is cached
#                     (default /var/cache/clipd as root, else ~/.cache/clipd)
#   CLIPD_BUILD_DIR   meson build directory (default build/)
#   CLIPD_MESON_ARGS  extra arguments for a first `meson setup`
#   CLIPD_NO_TEST_TOOLS=1  build clipd only: skip the tools of the browser
#                     and fuzz tests (chromium, node, npm, clang, the npm
#                     registry) and configure without the web test. The
#                     container build uses it; ./deploy/test.sh needs them.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
builddir=${CLIPD_BUILD_DIR:-$top/build}
if [ "$(id -u)" = 0 ]; then
	cache=${CLIPD_CACHE_DIR:-/var/cache/clipd}
else
	cache=${CLIPD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clipd}
fi

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Build and test dependencies, all from Debian 12's archive. clang and
# libclang-rt-dev (libFuzzer and the sanitizer runtimes, which clang only
# recommends) build tests/fuzz. libsentencepiece-dev is SigLIP's and
# SigLIP2's tokenizer (model/spm_shim.cc); python3-sentencepiece, the same
# library's Python binding, is the reference of tests/tok_spm_diff.py.
# libexif-dev reads the EXIF of images (server/exif.c); exiftool
# (libimage-exiftool-perl) writes the EXIF of the test images. munge,
# slurmctld, slurmd and slurm-client run the one-node Slurm cluster of
# tests/e2e/test_slurm.py (deploy/slurm/embed.sbatch as a job array); the
# test starts its own daemons with a throwaway config, never the system's.
packages=(
	build-essential g++ pkg-config meson ninja-build cmake dpkg-dev
	libmicrohttpd-dev libjansson-dev libvips-dev libsqlite3-dev
	libopenblas-dev libdnnl-dev libsentencepiece-dev libexif-dev
	python3
)
test_tools=1
[ "${CLIPD_NO_TEST_TOOLS:-}" = 1 ] && test_tools=0
if [ "$test_tools" = 1 ]; then
	packages+=(chromium clang libclang-rt-dev python3-sentencepiece libimage-exiftool-perl
		munge slurmctld slurmd slurm-client)
	# The web page's browser test runs node + npm (playwright-core) and
	# Debian's chromium. Node and npm come from Debian unless a node with
	# npm is already installed from elsewhere (NodeSource's nodejs ships npm
	# and conflicts with Debian's npm package).
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		packages+=(nodejs npm)
	fi
fi

missing=()
for p in "${packages[@]}"; do
	s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[ "$s" = "install ok installed" ] || missing+=("$p")
done

apt_updated=0
apt_update() {
	[ "$apt_updated" = 1 ] && return
	apt-get update -q >/dev/null || die "apt-get update failed"
	apt_updated=1
}

if [ "${#missing[@]}" -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "missing packages (run as root to install): ${missing[*]}"
	say "installing ${missing[*]}"
	apt_update
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${missing[@]}" >/dev/null || die "apt-get install failed"
fi

# FAISS: Debian's libfaiss.a is compiled for baseline x86-64 and has no
# compiled C API, so build Debian's own faiss source with the C API and the
# AVX2 distance kernels where this CPU has them (3-4x faster search here).
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
	level=avx2
else
	level=generic
fi

faiss_prefix=
for d in "$cache"/faiss-*-"$level"; do
	[ -f "$d/.complete" ] && faiss_prefix=$d
done

ensure_deb_src() {
	# apt-get source needs a deb-src entry. Mirror the machine's own deb
	# entries rather than naming any mirror here.
	if grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		return
	fi
	[ "$(id -u)" = 0 ] || die "no deb-src entry in apt sources; run as root to add one"
	say "adding deb-src entries mirroring the configured deb sources"
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		case "$f" in */clipd-deb-src*) continue ;; esac
		sed -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb-src/' "$f" \
			> "/etc/apt/sources.list.d/clipd-deb-src-$(basename "$f")"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		grep -E '^deb[[:space:]]' "$f" | sed -E 's/^deb([[:space:]])/deb-src\1/' \
			>> /etc/apt/sources.list.d/clipd-deb-src.list || true
	done
	apt_updated=0
}

build_faiss() {
	ensure_deb_src
	apt_update
	local ver work lib
	ver=$(apt-cache showsrc faiss | sed -n 's/^Version: //p' | head -n 1)
	[ -n "$ver" ] || die "apt-cache knows no faiss source package"
	faiss_prefix=$cache/faiss-$ver-$level
	work=$cache/work-faiss-$ver-$level
	rm -rf "$work" && mkdir -p "$work"
	say "building FAISS $ver ($level) in $work; this takes a few minutes"
	(cd "$work" && apt-get source -q faiss >/dev/null 2>&1) ||
		die "apt-get source faiss failed"
	local src
	src=$(find "$work" -maxdepth 1 -type d -name 'faiss-*' | head -n 1)
	[ -n "$src" ] || die "faiss source did not unpack"
	if [ "$level" = avx2 ]; then lib=faiss_avx2; else lib=faiss; fi
	# CMAKE_OPTIMIZE_DEPENDENCIES lets faiss_c build without the generic
	# libfaiss when only the AVX2 one is wanted.
	cmake -S "$src" -B "$work/b" -G Ninja \
		-DCMAKE_BUILD_TYPE=Release \
		-DFAISS_ENABLE_GPU=OFF -DFAISS_ENABLE_PYTHON=OFF \
		-DFAISS_ENABLE_C_API=ON -DBUILD_TESTING=OFF \
		-DBUILD_SHARED_LIBS=OFF -DFAISS_OPT_LEVEL="$level" \
		-DBLA_VENDOR=OpenBLAS -DCMAKE_OPTIMIZE_DEPENDENCIES=ON \
		>"$work/cmake.log" 2>&1 || die "faiss cmake failed, see $work/cmake.log"
	cmake --build "$work/b" --target faiss_c "$lib" -j "$(nproc)" \
		>"$work/build.log" 2>&1 || die "faiss build failed, see $work/build.log"
	local stage=$work/prefix
	mkdir -p "$stage/lib" "$stage/include/faiss"
	cp "$work/b/c_api/libfaiss_c.a" "$stage/lib/"
	cp "$work/b/faiss/lib$lib.a" "$stage/lib/libfaiss.a"
	(cd "$src" && find c_api -name '*.h' -not -path '*/gpu/*' -print0 |
		xargs -0 cp --parents -t "$stage/include/faiss")
	printf '%s %s\n' "$ver" "$level" > "$stage/VERSION"
	touch "$stage/.complete"
	rm -rf "$faiss_prefix"
	mv "$stage" "$faiss_prefix"
	rm -rf "$work"
}

[ -n "$faiss_prefix" ] || build_faiss
say "FAISS: $faiss_prefix"

if [ ! -f "$builddir/build.ninja" ]; then
	web=enabled
	[ "$test_tools" = 1 ] || web=disabled
	setup_log=$(mktemp)
	# shellcheck disable=SC2086
	if ! meson setup "$builddir" "$top" --buildtype=release \
		-Dfaiss_dir="$faiss_prefix" -Ddnnl=enabled -Dweb_test="$web" ${CLIPD_MESON_ARGS:-} \
		>"$setup_log" 2>&1; then
		tail -n 30 "$setup_log" >&2
		rm -f "$setup_log"
		die "meson setup failed (its output is above)"
	fi
	rm -f "$setup_log"
else
	cur=$(meson introspect "$builddir" --buildoptions |
		python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="faiss_dir"))')
	[ "$cur" = "$faiss_prefix" ] || meson configure "$builddir" -Dfaiss_dir="$faiss_prefix"
fi
meson compile -C "$builddir" >/dev/null || { meson compile -C "$builddir"; die "build failed"; }

# playwright-core for tests/web (pinned in tests/web/package-lock.json). It
# drives Debian's /usr/bin/chromium; no browser is ever downloaded.
webdir=$top/tests/web
if [ "$test_tools" = 1 ] && [ ! -d "$webdir/node_modules/playwright-core" ]; then
	say "installing playwright-core into tests/web/node_modules"
	(cd "$webdir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >/dev/null) ||
		die "npm ci in tests/web failed"
fi
say "built into $builddir"
