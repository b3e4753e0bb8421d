#!/usr/bin/env bash
# The README's main command: builds clipd when the build is missing or stale
# (deploy/setup.sh), downloads the default model unless one is given
# (deploy/fetch-model.sh: openai/clip-vit-base-patch32 at a pinned revision,
# every file sha256-checked; --model-name NAME picks another entry of its
# catalogue), and runs clipd in the foreground with a data directory. Extra arguments go to clipd unchanged (see build/clipd --help).
set -euo pipefail

usage() {
	cat <<'EOF'
usage: deploy/run.sh [--model DIR | --model-name NAME] [--data DIR] [--listen HOST:PORT] [clipd options...]

Builds clipd if needed, downloads the default CLIP model (openai/clip-vit-base-patch32,
pinned revision, sha256-checked, resumable) unless --model DIR is given, and runs
clipd in the foreground. Every other option is passed to clipd (build/clipd --help).

  --model DIR    a Hugging Face CLIP checkpoint directory: no download
  --model-name NAME
                 download that model of deploy/fetch-model.sh's catalogue instead
                 of the default (deploy/fetch-model.sh --list shows the names, and
                 which need CLIPD_MODEL_CHECKSUMS)
  --data DIR     data directory (default $CLIPD_DATA, else /var/lib/clipd as root,
                 else ~/.local/share/clipd)
  --listen H:P   address to listen on (default 127.0.0.1:8080)

Environment:
  CLIPD_DATA, CLIPD_MODEL, CLIPD_LISTEN, CLIPD_CONFIG   as the options above (and clipd's own)
  CLIPD_MODELS          where models are downloaded (default /var/cache/clipd/models
                        as root, else ~/.cache/clipd/models)
  CLIPD_HF_ENDPOINT     Hugging Face hub address (default https://huggingface.co)
  CLIPD_MODEL_REPO, CLIPD_MODEL_REVISION, CLIPD_MODEL_CHECKSUMS
                        another checkpoint to download, or the checksums a --model-name
                        entry without pinned ones needs (see deploy/fetch-model.sh)
  CLIPD_BIN             run this clipd binary instead of building build/clipd
  CLIPD_BUILD_DIR       meson build directory (default build/)

Offline: copy a checkpoint directory to this machine and pass --model DIR.
Stop with Ctrl-C or SIGTERM: clipd saves its index and exits 0.
EOF
}

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)

model=${CLIPD_MODEL:-}
model_name=
data=${CLIPD_DATA:-}
listen=${CLIPD_LISTEN:-}
conf=${CLIPD_CONFIG:-}
pass=()
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--model) [ $# -ge 2 ] || die "--model needs a directory"; model=$2; shift 2 ;;
	--model=*) model=${1#--model=}; shift ;;
	--model-name) [ $# -ge 2 ] || die "--model-name needs a name (deploy/fetch-model.sh --list)"; model_name=$2; shift 2 ;;
	--model-name=*) model_name=${1#--model-name=}; shift ;;
	--data) [ $# -ge 2 ] || die "--data needs a directory"; data=$2; shift 2 ;;
	--data=*) data=${1#--data=}; shift ;;
	--listen) [ $# -ge 2 ] || die "--listen needs HOST:PORT"; listen=$2; shift 2 ;;
	--listen=*) listen=${1#--listen=}; shift ;;
	--config) [ $# -ge 2 ] || die "--config needs a file"; conf=$2; pass+=("$1" "$2"); shift 2 ;;
	--config=*) conf=${1#--config=}; pass+=("$1"); shift ;;
	*) pass+=("$1"); shift ;;
	esac
done

if [ -n "$model_name" ] && [ -n "$model" ]; then
	die "--model-name $model_name and --model $model (or CLIPD_MODEL) both name a model: give one"
fi
# A name that is not in the catalogue fails before anything is built:
# fetch-model.sh explains it (exit 2) and lists the names.
if [ -n "$model_name" ] && ! "$here/fetch-model.sh" --list | awk -v n="$model_name" 'NR > 1 && $1 == n { found = 1 } END { exit !found }'; then
	"$here/fetch-model.sh" --name "$model_name" >/dev/null || exit $?
	die "fetch-model.sh does not list '$model_name' but accepted it"
fi

# A key set in the config file is left to the file unless given here.
conf_has() { [ -n "$conf" ] && [ -r "$conf" ] && grep -Eq "^[[:space:]]*$1[[:space:]]*=" "$conf"; }
conf_get() { sed -nE "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"?([^\"]*)\"?[[:space:]]*$/\1/p" "$conf" | tail -n 1; }

# 1. The binary.
if [ -n "${CLIPD_BIN:-}" ]; then
	bin=$CLIPD_BIN
	[ -x "$bin" ] || die "CLIPD_BIN=$bin is not an executable"
else
	builddir=${CLIPD_BUILD_DIR:-$top/build}
	bin=$builddir/clipd
	stale=1
	if [ -x "$bin" ] && [ -f "$builddir/build.ninja" ] && command -v ninja >/dev/null &&
		ninja -C "$builddir" -n clipd 2>/dev/null | grep -q 'no work to do'; then
		stale=0
	fi
	if [ "$stale" = 1 ]; then
		say "building clipd (deploy/setup.sh)"
		"$top/deploy/setup.sh" || die "set-up failed; see the messages above"
		[ -x "$bin" ] || die "set-up finished but $bin is missing"
	fi
fi

# 2. The data directory.
if [ -z "$data" ] && ! conf_has data; then
	if [ "$(id -u)" = 0 ]; then
		data=/var/lib/clipd
	else
		data=${XDG_DATA_HOME:-$HOME/.local/share}/clipd
	fi
fi

# 3. The model.
model_note=
if [ -n "$model_name" ] || { [ -z "$model" ] && ! conf_has model; }; then
	fetch_args=()
	[ -n "$model_name" ] && fetch_args=(--name "$model_name")
	rc=0
	model=$("$here/fetch-model.sh" ${fetch_args[@]+"${fetch_args[@]}"}) || rc=$?
	# 2: a usage error (checksums needed, ...), which fetch-model.sh explained.
	[ "$rc" = 2 ] && exit 2
	[ "$rc" = 0 ] || die "no model: ${model_name:-the default model} could not be downloaded (see above)"
	if [ -n "$model_name" ]; then
		model_note=" ($model_name, downloaded and checked)"
	else
		model_note=" (${CLIPD_MODEL_REPO:-openai/clip-vit-base-patch32}, downloaded and checked)"
	fi
fi

args=()
[ -n "$model" ] && args+=(--model "$model")
[ -n "$data" ] && args+=(--data "$data")
[ -n "$listen" ] && args+=(--listen "$listen")
args+=(${pass[@]+"${pass[@]}"})

# 4. Where everything is.
if [ -n "$data" ]; then
	say "data:  $(realpath -m -- "$data")"
else
	say "data:  $(conf_get data) (from $conf)"
fi
if [ -n "$model" ]; then
	say "model: $(realpath -m -- "$model")$model_note"
else
	say "model: $(conf_get model) (from $conf)"
fi
[ -n "$listen" ] || { conf_has listen && listen=$(conf_get listen); } || listen=127.0.0.1:8080
host=${listen%:*} port=${listen##*:}
case $host in 0.0.0.0 | "[::]" | "") host=localhost ;; esac
if [ "$port" = 0 ]; then
	say "open http://$host:PORT/ with the port of clipd's \"listening on\" line below"
else
	say "open http://$host:$port/ once clipd logs \"ready\"; stop with Ctrl-C"
fi

# clipd replaces this shell, so signals reach it directly.
exec "$bin" "${args[@]}"
