#!/usr/bin/env bash
# Downloads a CLIP checkpoint from the Hugging Face hub at a pinned revision
# and checks every file's SHA-256 before it is put in place. Resumable: an
# interrupted download continues from its .part file. A file is renamed to
# its final name only when its checksum matches, so a directory this script
# printed holds exactly the pinned bytes.
#
# usage: deploy/fetch-model.sh [MODELS_DIR]
#   Downloads into MODELS_DIR/<name>-<revision> and prints that directory on
#   stdout (progress and errors go to stderr). MODELS_DIR defaults to
#   $CLIPD_MODELS, else /var/cache/clipd/models as root, else
#   ~/.cache/clipd/models.
#
# Environment:
#   CLIPD_HF_ENDPOINT      hub address (default https://huggingface.co); a
#                          mirror serving the same /<repo>/resolve/<rev>/<file>
#                          paths works too
#   CLIPD_MODEL_REPO       repository (default openai/clip-vit-base-patch32)
#   CLIPD_MODEL_REVISION   full 40-hex commit to download
#   CLIPD_MODEL_CHECKSUMS  file of "<sha256>  <file name>" lines (sha256sum's
#                          format, # comments allowed): the files to fetch and
#                          their checksums
# The default repository comes with its pinned revision and checksums below.
# Another repository or revision needs both CLIPD_MODEL_REVISION and
# CLIPD_MODEL_CHECKSUMS: nothing is downloaded without a checksum to check.
set -euo pipefail

say() { printf 'fetch-model: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

default_repo=openai/clip-vit-base-patch32

# The pinned revision of openai/clip-vit-base-patch32. The repository's main
# branch (3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268) has no model.safetensors
# (its weights are pytorch_model.bin, tf_model.h5 and flax_model.msgpack);
# this commit, on a safetensors pull-request branch of the same official
# repository, has main as its parent, adds model.safetensors (converted from
# that pytorch_model.bin, same tensors) and keeps main's configuration and
# tokenizer files unchanged. Every pinned value below was confirmed against
# independent public sources except this revision id itself, which only the
# one source below ties to model.safetensors.
# Source: https://github.com/yangzhg/culvia/blob/57c6c15b8e089405cbcbd8fcc6dc5398faaedc4b/docs/en/developer/model-supply-chain.md
#   (audited against https://huggingface.co/api/models/openai/clip-vit-base-patch32/revision/eaee4c876b93e66f7fac584b529025a96d71ad66?blobs=true
#    and https://huggingface.co/openai/clip-vit-base-patch32/commit/eaee4c876b93e66f7fac584b529025a96d71ad66)
default_revision=eaee4c876b93e66f7fac584b529025a96d71ad66

# SHA-256 of each file at that revision ("sha256 bytes name").
# model.safetensors: the Git LFS oid and size from the culvia document
#   above; other public code pins the same digest and size for the other
#   safetensors conversions of this repository (refs/pr/15, b33cedfd...).
# The other four are main's (3d74acf...) files, which that commit keeps:
#   https://github.com/tylermcm/ImageTriage/blob/1f6ebcc17d0df8cfbc8d17ab39797458a2132c08/image_triage/ai_manifest.py
#   (MODEL_FILE_DIGESTS["clip"], revision 3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268:
#   digests of the files as downloaded at that revision); config.json and
#   preprocessor_config.json agree with CLIP_MODEL_FILE_HASHES in
#   RoamerFly/video-similarity-detector, desktop/src-tauri/src/main.rs.
default_manifest() {
	cat <<'EOF'
b575ef3c36f2a057fa19e221650105052d61cc9c1a972ec15019c6261ec98770 4186 config.json
910e70b3956ac9879ebc90b22fb3bc8a75b6a0677814500101a4c072bd7857bd 316 preprocessor_config.json
5047b556ce86ccaf6aa22b3ffccfc52d391ea4accdab9c2f2407da5b742d4363 862328 vocab.json
f526393189112391ce6f9795d4695f704121ce452c3aad1f5335cc41337eba85 524657 merges.txt
99d28a652e6ec46629ab7047a0ac82c69b1fe11e0ce672c43af65d3a9a3fc05d 605157884 model.safetensors
EOF
}

if [ "${CLIPD_CONTAINER:-}" = 1 ]; then
	# deploy/Containerfile sets CLIPD_CONTAINER: there the way in is a mount.
	offline_hint="To run without downloading, mount a Hugging Face CLIP checkpoint directory
(config.json, model.safetensors, vocab.json, merges.txt, optionally
preprocessor_config.json) at /model and point clipd at it:
    docker run ... -v /path/to/model:/model:ro -e CLIPD_MODEL=/model clipd"
else
	offline_hint="To run without downloading, copy a Hugging Face CLIP checkpoint directory
(config.json, model.safetensors, vocab.json, merges.txt, optionally
preprocessor_config.json) to this machine and start with:
    deploy/run.sh --model DIR"
fi

endpoint=${CLIPD_HF_ENDPOINT:-https://huggingface.co}
endpoint=${endpoint%/}
repo=${CLIPD_MODEL_REPO:-$default_repo}
revision=${CLIPD_MODEL_REVISION:-}
checksums=${CLIPD_MODEL_CHECKSUMS:-}

if [ "$(id -u)" = 0 ]; then
	cache=${CLIPD_CACHE_DIR:-/var/cache/clipd}
else
	cache=${CLIPD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clipd}
fi
models=${1:-${CLIPD_MODELS:-$cache/models}}

# The manifest: "sha256 size name" lines, size "-" when unknown.
if [ -n "$checksums" ]; then
	[ -n "$revision" ] || die "CLIPD_MODEL_CHECKSUMS is set but CLIPD_MODEL_REVISION is not: give the full commit the checksums belong to"
	[ -r "$checksums" ] || die "cannot read CLIPD_MODEL_CHECKSUMS file $checksums"
	manifest=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$checksums" |
		awk '{ name = $2; sub(/^\*/, "", name); print $1, "-", name }')
elif [ "$repo" = "$default_repo" ] && { [ -z "$revision" ] || [ "$revision" = "$default_revision" ]; }; then
	revision=$default_revision
	manifest=$(default_manifest)
else
	die "no checksums for $repo at revision '${revision:-(none)}': set CLIPD_MODEL_REVISION to a full commit and CLIPD_MODEL_CHECKSUMS to a file of \"<sha256>  <file>\" lines for it (sha256sum's format). Nothing is downloaded unchecked."
fi
[[ "$revision" =~ ^[0-9a-f]{40}$ ]] ||
	die "CLIPD_MODEL_REVISION must be a full 40-hex commit (a branch or tag could move), got '$revision'"
[ -n "$manifest" ] || die "the checksums file $checksums lists no files"
while read -r sum size name; do
	[[ "$sum" =~ ^[0-9a-f]{64}$ ]] || die "bad checksum '$sum' for '$name' in the checksums"
	[[ "$name" =~ ^[A-Za-z0-9._-]+$ && "$name" != .* ]] || die "bad file name '$name' in the checksums"
	[[ "$size" = - || "$size" =~ ^[0-9]+$ ]] || die "bad size '$size' for $name"
done <<<"$manifest"

command -v curl >/dev/null || die "curl is not installed (apt-get install curl)"
command -v sha256sum >/dev/null || die "sha256sum is not installed (coreutils)"

dest=$models/${repo##*/}-${revision:0:12}
stamp=$dest/.clipd-verified
want_stamp=$(printf '%s %s\n%s\n' "$repo" "$revision" "$manifest")

# Already complete and verified: every file renamed into place after its
# checksum matched, and the stamp written last.
complete() {
	[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] || return 1
	local sum size name
	while read -r sum size name; do
		[ -f "$dest/$name" ] || return 1
		[ "$size" = - ] || [ "$(stat -c %s "$dest/$name")" = "$size" ] || return 1
	done <<<"$manifest"
}

if complete; then
	printf '%s\n' "$dest"
	exit 0
fi
mkdir -p "$dest" || die "cannot create $dest"
rm -f "$stamp"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

fetch() { # sum size name
	local sum=$1 size=$2 name=$3 final=$dest/$3 part=$dest/$3.part got rc
	local url=$endpoint/$repo/resolve/$revision/$name
	if [ -f "$final" ]; then
		if [ "$(sha_of "$final")" = "$sum" ]; then
			return 0
		fi
		say "$final does not match its checksum: downloading it again"
		rm -f "$final"
	fi
	if [ -f "$part" ] && [ "$size" != - ] && [ "$(stat -c %s "$part")" -gt "$size" ]; then
		rm -f "$part"
	fi
	if [ "$size" != - ] && [ -f "$part" ] && [ "$(stat -c %s "$part")" = "$size" ]; then
		: # complete from an earlier run: only the check is left
	else
		say "downloading $name ($( [ "$size" = - ] && echo "size unknown" || echo "$size bytes"))"
		local progress=(-sS)
		[ -t 2 ] && progress=(--progress-bar)
		rc=0
		curl -fL -C - --retry 3 --retry-delay 2 --connect-timeout 20 "${progress[@]}" \
			-o "$part" "$url" </dev/null || rc=$?
		if [ "$rc" = 33 ]; then
			# The server cannot resume: start this file again.
			say "$endpoint does not resume downloads: fetching $name from the start"
			rm -f "$part"
			rc=0
			curl -fL --retry 3 --retry-delay 2 --connect-timeout 20 "${progress[@]}" \
				-o "$part" "$url" </dev/null || rc=$?
		fi
		if [ "$rc" != 0 ]; then
			if [ "$rc" = 22 ]; then
				say "error: the hub answered an error for $url (curl exit 22)"
			else
				say "error: cannot download $url (curl exit $rc: no network, or $endpoint is unreachable)"
			fi
			if [ -s "$part" ]; then
				say "the partial download is kept in $part and resumes on the next run"
			fi
			printf '%s\n' "$offline_hint" >&2
			exit 1
		fi
	fi
	got=$(sha_of "$part")
	if [ "$got" != "$sum" ]; then
		rm -f "$part"
		die "checksum mismatch for $name from $url: expected $sum, got $got. The download was deleted and nothing was installed; run again to retry. If it persists, the download is being altered on the way, or the pinned checksum is wrong."
	fi
	mv -f "$part" "$final"
}

say "model $repo at $revision into $dest"
while read -r sum size name; do
	fetch "$sum" "$size" "$name"
done <<<"$manifest"
printf '%s\n' "$want_stamp" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
say "verified every file of $repo at $revision"
printf '%s\n' "$dest"
