#!/usr/bin/env bash
# The README's test command: runs deploy/setup.sh (which installs and builds
# only what is missing), then the whole meson test suite, then the unit
# and end-to-end tests again built with ASan and UBSan (the e2e tests then
# start the sanitized clipd), then each libFuzzer harness of tests/fuzz for
# a short time (build-fuzz/). The last line it prints is
# "N passed, N failed", counting every test case (each TAP "ok"/"not ok").
# The first meson run has no --suite: every suite once, 'slow' included
# (tests/meson.build; the README lists the suites).
# Exit status is non-zero when anything failed.
#
# Environment: CLIPD_SANITIZE=0 skips the sanitizer run; CLIPD_FUZZ_SECONDS
# (default 10) is each harness's time, 0 skips fuzzing.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
builddir=${CLIPD_BUILD_DIR:-$top/build}
sanitizedir=$top/build-sanitize

if ! "$top/deploy/setup.sh"; then
	echo "set-up failed"
	echo "0 passed, 1 failed"
	exit 1
fi

# Counts TAP results from one meson test log; a test that failed without
# reporting a failed case (a crash, a timeout) counts as one failure.
count() {
	python3 - "$1" <<'PY'
import json, re, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    out = t.get("stdout") or ""
    # A skip is "ok N # SKIP why" (Python) or "ok N - name # SKIP why"
    # (tests/tap.h): counted as skipped, not as passed.
    skip = len(re.findall(r"^ok \d+.*# SKIP", out, re.M))
    ok = len(re.findall(r"^ok \d+", out, re.M)) - skip
    bad = len(re.findall(r"^not ok \d+", out, re.M))
    if t["result"] not in ("OK", "SKIP", "EXPECTEDFAIL") and bad == 0:
        bad = 1
        print(f"test {t['name']}: {t['result']} (exit {t.get('returncode')})", file=sys.stderr)
    if ok == 0 and bad == 0 and t["result"] == "OK":
        ok = 1  # a plain exit-code test
    passed += ok; failed += bad; skipped += skip
print(passed, failed, skipped)
PY
}

total_pass=0 total_fail=0 total_skip=0
run_suite() { # builddir, label, meson test args...
	local dir=$1 label=$2
	shift 2
	echo "== $label"
	local start=$SECONDS
	meson test -C "$dir" --print-errorlogs "$@"
	echo "# $label: $((SECONDS - start)) s"
	local p f s
	read -r p f s < <(count "$dir/meson-logs/testlog.json")
	total_pass=$((total_pass + p)) total_fail=$((total_fail + f)) total_skip=$((total_skip + s))
}

run_suite "$builddir" "tests"

if [ "${CLIPD_SANITIZE:-1}" != 0 ]; then
	faiss_dir=$(meson introspect "$builddir" --buildoptions |
		python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="faiss_dir"))')
	if [ ! -f "$sanitizedir/build.ninja" ]; then
		meson setup "$sanitizedir" "$top" --buildtype=debug -Db_sanitize=address,undefined \
			-Db_lundef=false -Dfaiss_dir="$faiss_dir" >/dev/null
	fi
	if meson compile -C "$sanitizedir" >/dev/null; then
		# Suite slow (precision: a 600 MB checkpoint ranked three ways)
		# runs once, in the release build: under ASan it took 416 s of a
		# 15-minute CI run, and the e2e runs below cover the same code with
		# the tiny models.
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
			run_suite "$sanitizedir" "unit tests under ASan+UBSan" --suite unit --no-suite slow
		# The daemon under ASan+UBSan: any report, and any leak at exit,
		# aborts it, which the tests see as a crash or a non-zero exit status.
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
			CLIPD_SANITIZED=1 run_suite "$sanitizedir" "end-to-end tests against clipd under ASan+UBSan" --suite e2e \
			--timeout-multiplier 3
	else
		echo "sanitizer build failed"
		total_fail=$((total_fail + 1))
	fi
fi

# Fuzzing: one TAP line per harness (crash inputs replayed first, then
# CLIPD_FUZZ_SECONDS of fuzzing); about two minutes with the build.
fuzz_seconds=${CLIPD_FUZZ_SECONDS:-10}
if [ "$fuzz_seconds" != 0 ]; then
	echo "== fuzz harnesses, ${fuzz_seconds} s each (libFuzzer, ASan+UBSan)"
	fuzz_start=$SECONDS
	fuzz_out=$("$top/tests/fuzz/run.sh" --tap --fresh --seconds "$fuzz_seconds")
	printf '%s\n' "$fuzz_out"
	echo "# fuzz step: $((SECONDS - fuzz_start)) s, the harnesses' build included"
	p=$(grep -cE '^ok [0-9]+' <<<"$fuzz_out")
	f=$(grep -cE '^not ok [0-9]+' <<<"$fuzz_out")
	total_pass=$((total_pass + p)) total_fail=$((total_fail + f))
	[ $((p + f)) -gt 0 ] || total_fail=$((total_fail + 1))
fi

[ "$total_skip" -gt 0 ] && echo "$total_skip skipped (each skip says why above)"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
