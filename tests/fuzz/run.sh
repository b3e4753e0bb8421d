#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan+UBSan) into build-fuzz/ and
# runs each of them for a fixed time, one after the other. Before fuzzing,
# each harness replays tests/fuzz/crashes/NAME/* (inputs that crashed it
# once: regressions). Per harness it prints executions per second, the
# coverage reached (cov: edges, ft: features, as libFuzzer counts them),
# the corpus size and the crashes found; saved crash inputs are in
# build-fuzz/fuzz-run/NAME/artifacts/.
#
#   tests/fuzz/run.sh --minutes N     every harness N minutes
#   tests/fuzz/run.sh --seconds S     every harness S seconds (default 10)
#   tests/fuzz/run.sh --tap ...       TAP output: one ok/not ok per harness
#   tests/fuzz/run.sh --only a,b ...  just those harnesses (fuzz_http, ...)
#   tests/fuzz/run.sh --fresh ...     start from the seeds alone
#
# The corpus a run grows is kept in build-fuzz/fuzz-run/NAME/corpus and
# reused by the next run unless --fresh (deploy/test.sh's short runs use
# it, so that their time stays fixed); the committed seeds (corpus/NAME)
# are only read. A dictionary tests/fuzz/NAME.dict (field names, magic
# strings) is passed when there is one.
# Exit status: 0 when no harness failed.
#
# Environment:
#   CLIPD_FUZZ_BUILD_DIR  the build directory (default build-fuzz/)
#   CLIPD_FAISS_DIR       FAISS prefix (default: the one build/ uses, else
#                         deploy/setup.sh's cache)
#   CLIPD_REFERENCE       the reference kit (default ../shared/reference)
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$top/tests/fuzz
builddir=${CLIPD_FUZZ_BUILD_DIR:-$top/build-fuzz}
seconds=10 tap=0 only= fresh=0

while [ $# -gt 0 ]; do
	case $1 in
	--seconds) seconds=$2; shift 2 ;;
	--minutes) seconds=$(($2 * 60)); shift 2 ;;
	--tap) tap=1; shift ;;
	--only) only=$2; shift 2 ;;
	--fresh) fresh=1; shift ;;
	-h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
case $seconds in ''|*[!0-9]*) echo "run.sh: --seconds/--minutes need a whole number" >&2; exit 2 ;; esac

say() { if [ "$tap" = 1 ]; then printf '# %s\n' "$*"; else printf '%s\n' "$*"; fi; }

# The harnesses: the names of tests/fuzz/meson.build's fuzz_harnesses.
mapfile -t all < <(sed -n "s/^  '\(fuzz_[a-z0-9_]*\)': .*/\1/p" "$here/meson.build")
if [ -n "$only" ]; then
	IFS=, read -r -a harnesses <<<"$only"
else
	harnesses=("${all[@]}")
fi

fail_setup() {
	say "error: $*"
	if [ "$tap" = 1 ]; then
		echo "not ok 1 - fuzz harnesses build ($*)"
		echo "1..1"
	fi
	exit 1
}

command -v clang >/dev/null || fail_setup "clang is missing (deploy/setup.sh installs clang and libclang-rt-dev)"

faiss_dir=${CLIPD_FAISS_DIR:-}
if [ -z "$faiss_dir" ] && [ -f "$top/build/build.ninja" ]; then
	faiss_dir=$(meson introspect "$top/build" --buildoptions 2>/dev/null |
		python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="faiss_dir"))' 2>/dev/null)
fi
if [ -z "$faiss_dir" ]; then
	for d in /var/cache/clipd/faiss-* "${XDG_CACHE_HOME:-$HOME/.cache}"/clipd/faiss-*; do
		[ -f "$d/.complete" ] && faiss_dir=$d
	done
fi
[ -n "$faiss_dir" ] || fail_setup "no FAISS build found: run deploy/setup.sh first"

if [ ! -f "$builddir/build.ninja" ]; then
	CC=clang CXX=clang++ meson setup "$builddir" "$top" --buildtype=debugoptimized \
		-Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
		-Dfaiss_dir="$faiss_dir" >"$builddir.setup.log" 2>&1 ||
		{ cat "$builddir.setup.log" >&2; fail_setup "meson setup of $builddir failed"; }
	rm -f "$builddir.setup.log"
fi
targets=()
for h in "${harnesses[@]}"; do targets+=("tests/fuzz/$h"); done
if ! ninja -C "$builddir" -j 2 "${targets[@]}" tests/fuzz/mksnap >"$builddir/fuzz-build.log" 2>&1; then
	tail -n 40 "$builddir/fuzz-build.log" >&2
	fail_setup "building the harnesses failed (see $builddir/fuzz-build.log)"
fi

export CLIPD_REFERENCE=${CLIPD_REFERENCE:-$top/../shared/reference}
export CLIPD_SOURCE_ROOT=$top
export OMP_WAIT_POLICY=passive
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/lsan.supp:print_suppressions=0}
run=$builddir/fuzz-run
mkdir -p "$run/tmp"
export TMPDIR=$run/tmp

n=0 failed=0
report() { # ok(0/1), name, text
	n=$((n + 1))
	if [ "$tap" = 1 ]; then
		if [ "$1" = 1 ]; then echo "ok $n - $2: $3"; else echo "not ok $n - $2: $3"; fi
	else
		printf '%-17s %s%s\n' "$2" "$3" "$([ "$1" = 1 ] || echo '  FAILED')"
	fi
	[ "$1" = 1 ] || failed=$((failed + 1))
}

say "fuzzing ${#harnesses[@]} harnesses for $seconds s each (build: $builddir)"
for h in "${harnesses[@]}"; do
	bin=$builddir/tests/fuzz/$h
	seeds=$here/corpus/$h
	work=$run/$h
	[ "$fresh" = 1 ] && rm -rf "$work/corpus"
	mkdir -p "$work/corpus" "$work/artifacts"
	rm -rf "${TMPDIR:?}"/clipd-fuzz-*
	if [ ! -x "$bin" ]; then
		report 0 "$h" "no such harness"
		continue
	fi
	# Regressions first: every committed crash input must now pass.
	crashes=("$here/crashes/$h"/*)
	if [ -e "${crashes[0]}" ]; then
		if ! "$bin" -timeout=60 "${crashes[@]}" >"$work/replay.log" 2>&1; then
			tail -n 30 "$work/replay.log" | sed 's/^/#   /'
			report 0 "$h" "a committed crash input (tests/fuzz/crashes/$h) fails again, see $work/replay.log"
			continue
		fi
	fi
	before=$(find "$work/artifacts" -type f | wc -l)
	dirs=("$work/corpus")
	[ -d "$seeds" ] && dirs+=("$seeds")
	opts=()
	[ -f "$here/$h.dict" ] && opts+=("-dict=$here/$h.dict")
	"$bin" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -max_len=65536 \
		-print_final_stats=1 -artifact_prefix="$work/artifacts/" "${opts[@]}" "${dirs[@]}" \
		>"$work/fuzz.log" 2>&1
	rc=$?
	after=$(find "$work/artifacts" -type f | wc -l)
	stats=$(python3 - "$work/fuzz.log" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
def stat(name):
    m = re.search(r"^stat::%s:\s*(\d+)" % name, text, re.M)
    return m.group(1) if m else "?"
cov = re.findall(r"^#\d+\s+\S+\s+cov: (\d+) ft: (\d+) corp: (\d+)", text, re.M)
c, f, k = cov[-1] if cov else ("?", "?", "?")
print("%s execs, %s exec/s, cov %s ft %s, corpus %s" % (
    stat("number_of_executed_units"), stat("average_exec_per_sec"), c, f, k))
PY
)
	new=$((after - before))
	if [ "$rc" = 0 ] && [ "$new" = 0 ]; then
		report 1 "$h" "$stats, 0 crashes"
	else
		grep -m 5 -E 'ERROR: |FUZZ_CHECK|fuzz_daemon: |runtime error' "$work/fuzz.log" | sed 's/^/#   /'
		report 0 "$h" "$stats, $new crash input(s) in $work/artifacts (exit $rc, log $work/fuzz.log)"
	fi
done
rm -rf "${TMPDIR:?}"/clipd-fuzz-*
[ "$tap" = 1 ] && echo "1..$n"
say "$((n - failed)) harnesses passed, $failed failed"
[ "$failed" = 0 ]
