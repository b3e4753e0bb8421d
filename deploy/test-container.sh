#!/usr/bin/env bash
# Builds deploy/Containerfile with Podman or Docker (whichever works here)
# and checks the image end to end, for anyone changing deploy/. Not run by
# CI (it builds FAISS inside the image: 10-20 minutes on two cores).
#
#   deploy/test-container.sh [--model DIR] [--engine podman|docker] [--no-build]
#                            [--debootstrap] [--keep]
#
#   --model DIR     a CLIP checkpoint directory to mount at /model (default:
#                   ../shared/reference/tiny-clip-a when present, else one
#                   written by build/clip-mkmodel --preset tiny)
#   --engine E      podman or docker (default: docker when its daemon
#                   answers, else podman)
#   --no-build      test the image already tagged clipd-test
#   --debootstrap   when debian:12 / debian:12-slim are not in the local
#                   image store, make them with debootstrap from this
#                   machine's Debian mirror instead of pulling them
#   --keep          leave the image and volume behind
#
# CLIPD_CONTAINER_BUILD_ARGS adds arguments to the build (e.g. "--isolation
# chroot" where the OCI runtime cannot start containers, as inside some
# sandboxes; the checks after the build then cannot run either).
#
# Checks: the image builds; the group and user are 10001; clipd becomes
# ready; an upload is indexed and found by a search; the page is served;
# the health check passes, also on a port other than 8080; `stop` exits 0;
# a new container on the same volume still has the image and finds it; with
# no model and no network the message says to mount one at /model.
# Prints TAP and ends with "N passed, N failed"; exit 0 when all pass.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model='' engine='' build=1 debootstrap=0 keep=0
while [ $# -gt 0 ]; do
	case $1 in
	--model) model=$2; shift 2 ;;
	--engine) engine=$2; shift 2 ;;
	--no-build) build=0; shift ;;
	--debootstrap) debootstrap=1; shift ;;
	--keep) keep=1; shift ;;
	-h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "test-container.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done

if [ -z "$engine" ]; then
	if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
		engine=docker
	elif command -v podman >/dev/null; then
		engine=podman
	else
		echo "test-container.sh: neither a running docker nor podman (apt-get install podman)" >&2
		exit 2
	fi
fi
E() { "$engine" "$@"; }

tag=clipd-test
vol=clipd-test-data-$$
name=clipd-test-$$
tmp=$(mktemp -d)
n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { # name detail
	n=$((n + 1)) failed=$((failed + 1))
	echo "not ok $n - $1"
	[ -n "${2:-}" ] && printf '%s\n' "$2" | tail -n 20 | sed 's/^/#   /'
}
check() { # name detail command...
	local what=$1 detail=$2
	shift 2
	if "$@"; then ok "$what"; else not_ok "$what" "$detail"; fi
}
cleanup() {
	E rm -f "$name" "$name-2" "$name-port" "$name-none" >/dev/null 2>&1
	if [ "$keep" = 0 ]; then
		E volume rm -f "$vol" >/dev/null 2>&1
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
since() { # start (date +%s%N): seconds since, one decimal
	local ms=$((($(date +%s%N) - $1) / 1000000))
	printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}
finish() {
	echo "1..$n"
	echo "$((n - failed)) passed, $failed failed"
	[ "$failed" = 0 ]
	exit $?
}

# The model to mount.
if [ -z "$model" ]; then
	if [ -f "$top/../shared/reference/tiny-clip-a/config.json" ]; then
		model=$top/../shared/reference/tiny-clip-a
	elif [ -x "$top/build/clip-mkmodel" ]; then
		model=$tmp/model
		"$top/build/clip-mkmodel" --preset tiny --out "$model" >/dev/null ||
			{ not_ok "a tiny model is written by build/clip-mkmodel"; finish; }
	else
		echo "test-container.sh: give --model DIR (or build the project first)" >&2
		exit 2
	fi
fi
model=$(realpath "$model")
chmod -R a+rX "$model" 2>/dev/null || true

# Base images made locally, when asked and missing.
have_image() { E image inspect "$1" >/dev/null 2>&1; }
if [ "$debootstrap" = 1 ] && { ! have_image debian:12 || ! have_image debian:12-slim; }; then
	command -v debootstrap >/dev/null || { echo "test-container.sh: apt-get install debootstrap" >&2; exit 2; }
	mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
	[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
	rootfs=$tmp/rootfs
	if debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 &&
		tar -C "$rootfs" -c . | E import - debian:12 >/dev/null; then
		E tag debian:12 debian:12-slim
		ok "debian:12 made with debootstrap from $mirror"
	else
		not_ok "debian:12 made with debootstrap from $mirror" "$(cat "$tmp/debootstrap.log")"
		finish
	fi
fi

# 1. The build.
if [ "$build" = 1 ]; then
	fmt=()
	[ "$engine" = podman ] && fmt=(--format docker) # keeps HEALTHCHECK
	# shellcheck disable=SC2086
	if E build "${fmt[@]}" ${CLIPD_CONTAINER_BUILD_ARGS:-} -f "$top/deploy/Containerfile" -t "$tag" \
		"$top" >"$tmp/build.log" 2>&1; then
		ok "the image builds with $engine"
	else
		not_ok "the image builds with $engine" "$(cat "$tmp/build.log")"
		finish
	fi
fi
size=$(E image inspect "$tag" --format '{{.Size}}' 2>/dev/null)
ok "image size: $((size / 1000000)) MB"
hc=$(E image inspect "$tag" --format '{{json .Config.Healthcheck}}' 2>/dev/null)
check "the image keeps its HEALTHCHECK" "$hc" grep -q healthz <<<"$hc"
ids=$(E run --rm --entrypoint id "$tag" 2>&1)
check "the clipd user and group are 10001 ($ids)" "$ids" \
	grep -q 'uid=10001(clipd) gid=10001(clipd)' <<<"$ids"

# 2. Run with the model mounted, the port published on 127.0.0.1.
start() { # container name, extra args...
	local c=$1
	shift
	E run -d --name "$c" -p 127.0.0.1::8080 -v "$vol:/data" -v "$model:/model:ro" \
		-e CLIPD_MODEL=/model "$@" "$tag" >/dev/null 2>"$tmp/run.log"
}
port_of() { E port "$1" 8080 2>/dev/null | head -n 1 | sed 's/.*://'; }
wait_ready() { # port: 0 once /readyz answers 200
	for _ in $(seq 1 120); do
		curl -fsS -o /dev/null "http://127.0.0.1:$1/readyz" 2>/dev/null && return 0
		sleep 0.5
	done
	return 1
}
png() { # a small gradient PNG (python3 is on this machine)
	python3 - "$1" <<'PY'
import struct, sys, zlib
w = h = 32
raw = b"".join(b"\x00" + bytes(v for x in range(w) for v in (x * 8, y * 8, 128)) for y in range(h))
def chunk(k, d):
    return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xffffffff)
with open(sys.argv[1], "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
}

if ! start "$name"; then
	not_ok "the container starts" "$(cat "$tmp/run.log")"
	finish
fi
port=$(port_of "$name")
t0=$(date +%s%N)
if wait_ready "$port"; then
	ok "clipd is ready ($(since "$t0") s after start)"
else
	not_ok "clipd is ready" "$(E logs "$name" 2>&1)"
	finish
fi
png "$tmp/a.png"
up=$(curl -sS -X POST -H 'Content-Type: image/png' --data-binary @"$tmp/a.png" \
	"http://127.0.0.1:$port/v1/images?wait=true")
id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("id", ""))' "$up" 2>/dev/null)
check "an upload is indexed (id ${id:-none})" "$up" [ -n "$id" ]
found() { # port: the search lists $id
	curl -sS "http://127.0.0.1:$1/v1/search?q=a+photo&k=5" |
		python3 -c 'import json,sys; sys.exit(0 if any(str(r.get("id")) == sys.argv[1] for r in json.load(sys.stdin).get("results", [])) else 1)' "$id"
}
check "a search finds it" "" found "$port"
page=$(curl -sS -o /dev/null -w '%{http_code} %{content_type}' "http://127.0.0.1:$port/")
check "the page is served at / ($page)" "$page" grep -q '^200 text/html' <<<"$page"
health() { # container: 0 once the engine says healthy
	for _ in $(seq 1 30); do
		if [ "$engine" = podman ]; then
			podman healthcheck run "$1" >/dev/null 2>&1 && return 0
		else
			[ "$(docker inspect --format '{{.State.Health.Status}}' "$1" 2>/dev/null)" = healthy ] && return 0
		fi
		sleep 2
	done
	return 1
}
check "the health check passes" "$(E inspect "$name" 2>&1 | grep -i -A5 health)" health "$name"
t0=$(date +%s%N)
E stop -t 60 "$name" >/dev/null 2>&1
code=$(E inspect "$name" --format '{{.State.ExitCode}}' 2>/dev/null)
check "stop: clipd exits 0 ($(since "$t0") s)" \
	"$(E logs "$name" 2>&1)" [ "$code" = 0 ]

# 3. A new container on the same volume.
if start "$name-2" && port=$(port_of "$name-2") && wait_ready "$port"; then
	got=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/images/$id")
	check "a new container on the same volume has image $id" "$got" [ "$got" = 200 ]
	check "and finds it" "" found "$port"
else
	not_ok "a new container on the same volume becomes ready" "$(E logs "$name-2" 2>&1)"
fi
E stop -t 60 "$name-2" >/dev/null 2>&1

# 4. The health check follows CLIPD_LISTEN.
if E run -d --name "$name-port" -v "$model:/model:ro" -e CLIPD_MODEL=/model \
	-e CLIPD_LISTEN=0.0.0.0:9090 "$tag" >/dev/null 2>&1; then
	check "the health check passes on port 9090 (CLIPD_LISTEN)" \
		"$(E logs "$name-port" 2>&1)" health "$name-port"
else
	not_ok "a container with CLIPD_LISTEN=0.0.0.0:9090 starts"
fi

# 5. No model, no network: the message says to mount one.
E run --name "$name-none" --network none "$tag" >"$tmp/none.log" 2>&1
check "with no model and no network it says to mount one at /model" "$(cat "$tmp/none.log")" \
	grep -q -- "-v /path/to/model:/model:ro" "$tmp/none.log"

[ "$keep" = 0 ] && [ "$build" = 1 ] && E rmi "$tag" >/dev/null 2>&1
finish
