#!/usr/bin/env bash
# Downloads a checkpoint from the Hugging Face hub at a pinned revision and
# checks every file's SHA-256 before it is put in place. Resumable: an
# interrupted download continues from its .part file. A file is renamed to
# its final name only when its checksum matches, so a directory this script
# printed holds exactly the pinned bytes.
#
# usage: deploy/fetch-model.sh [--name NAME] [MODELS_DIR]
#        deploy/fetch-model.sh --list
#   --list       prints the catalogue: the models this script knows by name,
#                with family, download size, what they are good for, and
#                whether their checksums are pinned here (stdout, exit 0)
#   --name NAME  downloads that catalogue entry (default: clip-vit-b-32,
#                openai/clip-vit-base-patch32)
#   Downloads into MODELS_DIR/<name>-<revision> and prints that directory on
#   stdout (progress and errors go to stderr). MODELS_DIR defaults to
#   $CLIPD_MODELS, else /var/cache/clipd/models as root, else
#   ~/.cache/clipd/models. Exit status: 0 done, 1 a download or check
#   failed, 2 a usage error (unknown option or model name, a catalogue entry
#   without confirmed checksums and no CLIPD_MODEL_CHECKSUMS).
#
# Environment:
#   CLIPD_HF_ENDPOINT      hub address (default https://huggingface.co); a
#                          mirror serving the same /<repo>/resolve/<rev>/<file>
#                          paths works too, and so does a local server (the
#                          deploy tests point it at one on 127.0.0.1)
#   CLIPD_MODEL_REPO       repository (default openai/clip-vit-base-patch32);
#                          a catalogued repository gets its entry's pins
#   CLIPD_MODEL_REVISION   full 40-hex commit to download
#   CLIPD_MODEL_CHECKSUMS  file of "<sha256>  <file name>" lines (sha256sum's
#                          format, # comments allowed): the files to fetch and
#                          their checksums
# A catalogue entry is "pinned" when its revision and the SHA-256 of every
# file it needs were confirmed against public sources (cited beside it):
# nothing else is needed. Any other entry, repository or revision needs
# CLIPD_MODEL_CHECKSUMS (and CLIPD_MODEL_REVISION, unless the entry pins a
# revision): nothing is downloaded without a checksum to check. Where the
# catalogue knows some of an entry's checksums at that revision, the given
# file must agree with them.
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

# The catalogue: one line an entry,
#   name|repository|family|download size|checksums|good for
# checksums: "pinned" (revision and every needed file confirmed: downloads
# as is), "partial" (revision and some files confirmed: the rest must come
# in CLIPD_MODEL_CHECKSUMS, and must agree with the confirmed ones), or
# "unconfirmed" (CLIPD_MODEL_REVISION and CLIPD_MODEL_CHECKSUMS needed).
# Sizes are the float32 weights: open_clip's parameter counts x 4 bytes
# (https://github.com/mlfoundations/open_clip/blob/29b90b8dde9125c479c0ddbab477310f665a0435/docs/openclip_results.csv),
# which agree with the hub's model.safetensors sizes quoted per entry below.
# Relative image cost: open_clip's image GFLOPs
# (https://github.com/mlfoundations/open_clip/blob/29b90b8dde9125c479c0ddbab477310f665a0435/docs/model_profile.csv):
# ViT-B/32 8.8, ViT-B/16 35.1, ViT-L/14 162.0, ViT-B-16-SigLIP 35.4.
# cn-clip-b-16: 188 M parameters, cn-clip-l-14: 406 M (OFA-Sys/Chinese-CLIP's
# README_En.md model card, CN-CLIP ViT-B/16 and ViT-L/14) x 4 bytes; ViT-L/14
# 162.0 image GFLOPs against ViT-B/16's 35.1 (open_clip's profile above).
catalogue() {
	cat <<'EOF2'
clip-vit-b-32|openai/clip-vit-base-patch32|CLIP|605 MB|pinned|the default: fastest and smallest, English, baseline quality
clip-vit-b-16|openai/clip-vit-base-patch16|CLIP|599 MB|unconfirmed|finer detail than B/32 at about 4x its image cost, English
clip-vit-l-14|openai/clip-vit-large-patch14|CLIP|1.71 GB|partial|the best OpenAI CLIP, about 18x B/32's image cost, English
laion-vit-b-32|laion/CLIP-ViT-B-32-laion2B-s34B-b79K|CLIP|605 MB|unconfirmed|LAION's B/32 (open data): B/32 speed, clearly better retrieval than OpenAI's
siglip-b-16-224|google/siglip-base-patch16-224|SigLIP|813 MB|pinned|much better retrieval than CLIP B/16 at the same image cost, English; sigmoid scores
siglip-b-16-ml|google/siglip-base-patch16-256-multilingual|SigLIP|1.48 GB|unconfirmed|queries in many languages (Chinese, Arabic, Bengali, ...); a 250k-piece vocabulary
siglip2-b-16-256|google/siglip2-base-patch16-256|SigLIP2|1.5 GB|unconfirmed|the best quality here, multilingual; a 256k-token vocabulary (0.8 GB of it)
siglip2-b-32-256|google/siglip2-base-patch32-256|SigLIP2|1.5 GB|unconfirmed|SigLIP2 quality at close to B/32 image cost, multilingual
cn-clip-b-16|OFA-Sys/chinese-clip-vit-base-patch16|Chinese-CLIP|753 MB|unconfirmed|queries in Chinese (ViT-B/16 image tower, a BERT text tower)
cn-clip-l-14|OFA-Sys/chinese-clip-vit-large-patch14|Chinese-CLIP|1.62 GB|unconfirmed|better Chinese retrieval, about 4.6x B/16's image cost (ViT-L/14, the same BERT text tower)
EOF2
}

# The files a checkpoint directory of each family must have (required) and
# the ones worth fetching with them (optional); a CLIPD_MODEL_CHECKSUMS file
# for a catalogue entry must list the required ones. Sources: CLIP, clipd's
# loader (model/clip.c) and the default entry's files above; SigLIP, the tree
# of a duplicate of google/siglip-base-patch16-224
# (https://huggingface.co/pcuenq/siglip-base-patch16-224/tree/38367b1e64126edc8ca54af86594a2a81765598b);
# SigLIP2, the files pinned for google/siglip2-base-patch16-224 in
# https://github.com/HappyQuQu/foliopath/blob/fdede8c99b3dcef52cc2d9851551521fc0340652/spikes/int001-ai/testdata/model-catalog.siglip-candidates.json
# (config.json, model.safetensors, preprocessor_config.json, tokenizer.model,
# tokenizer_config.json, special_tokens_map.json, tokenizer.json).
family_required() {
	case $1 in
	CLIP*) echo "config.json model.safetensors vocab.json merges.txt" ;;
	SigLIP) echo "config.json preprocessor_config.json model.safetensors spiece.model" ;;
	SigLIP2) echo "config.json preprocessor_config.json model.safetensors tokenizer.model" ;;
	Chinese-CLIP) echo "config.json preprocessor_config.json model.safetensors vocab.txt" ;;
	esac
}
family_optional() {
	case $1 in
	CLIP*) echo "preprocessor_config.json" ;;
	SigLIP) echo "tokenizer_config.json special_tokens_map.json" ;;
	SigLIP2) echo "tokenizer_config.json special_tokens_map.json" ;;
	Chinese-CLIP) echo "" ;;
	esac
}

# An entry's pinned revision, if one was confirmed.
entry_revision() {
	case $1 in
	clip-vit-b-32) echo "$default_revision" ;;
	# openai/clip-vit-large-patch14's main branch at the commit that added
	# model.safetensors ("Adding `safetensors` variant of this model (#19)",
	# 32bd642 on https://huggingface.co/openai/clip-vit-large-patch14/blob/main/model.safetensors);
	# the full id is pinned with the digests below in
	# https://github.com/cloudbyday90/classifarr-image-embedding-service/blob/15a39337b272ef4db11eccdf58f1116f7bbea2cb/src/image_embedder/model_catalog.py
	# (MODEL_CATALOG["ViT-L-14"]).
	clip-vit-l-14) echo 32bd64288804d66eefd0ccbe215aa642df71cc41 ;;
	# google/siglip-base-patch16-224, pinned with every file's digest and
	# size in https://github.com/HappyQuQu/foliopath/blob/fdede8c99b3dcef52cc2d9851551521fc0340652/spikes/int001-ai/testdata/model-catalog.siglip-candidates.json
	# ("google-siglip-base-patch16-224", version 7fd15f06...).
	siglip-b-16-224) echo 7fd15f0689c79d79e38b1c2e2e2370a7bf2761ed ;;
	# google/siglip-base-patch16-256-multilingual: the hub's tree at this
	# commit ("Update README.md", a66c598) lists config.json,
	# model.safetensors (1.48 GB), preprocessor_config.json,
	# special_tokens_map.json, spiece.model and tokenizer_config.json
	# (https://huggingface.co/google/siglip-base-patch16-256-multilingual/tree/a66c5982c8c396206b96060e2bf837d6731a326f);
	# the one later commit (8952a4e) only adds tokenizer.json.
	siglip-b-16-ml) echo a66c5982c8c396206b96060e2bf837d6731a326f ;;
	esac
}

# The checksums confirmed for an entry at its pinned revision ("sha256 bytes
# name", bytes "-" when unknown): every file for a "pinned" entry, some for
# a "partial" one.
entry_known() {
	case $1 in
	clip-vit-b-32) default_manifest ;;
	# clip-vit-l-14 at 32bd642...: config.json, preprocessor_config.json and
	# model.safetensors from the classifarr model_catalog.py above.
	# model.safetensors is also the LFS SHA256 the hub's page above shows,
	# and its size is that of an LFS pointer with the same oid
	# (https://huggingface.co/SG161222/Verus_Vision_1.0b/commit/ff4883bccc850cf0002b024698bf57f642134769).
	# preprocessor_config.json has the digest of clip-vit-b-32's 316-byte
	# file, so the same bytes. vocab.json and merges.txt: no citable public
	# source confirmed them here, so they must come in CLIPD_MODEL_CHECKSUMS.
	clip-vit-l-14)
		cat <<'EOF2'
8a09b467700c58138c29d53c605b34ebc69beaadd13274a8a2af8ad2c2f4032a - config.json
910e70b3956ac9879ebc90b22fb3bc8a75b6a0677814500101a4c072bd7857bd 316 preprocessor_config.json
a2bf730a0c7debf160f7a6b50b3aaf3703e7e88ac73de7a314903141db026dcb 1710540580 model.safetensors
EOF2
		;;
	# siglip-b-16-224 at 7fd15f06...: the foliopath catalogue above (its
	# tokenizer.json is left out: the SigLIP tokenizer reads spiece.model). Agreeing
	# sources: the same model.safetensors digest is the LFS SHA256 on
	# https://huggingface.co/google/siglip-base-patch16-224/blob/refs%2Fpr%2F4/model.safetensors,
	# the spiece.model digest is the LFS SHA256 of Xenova's copy
	# (https://huggingface.co/Xenova/siglip-base-patch16-224/blob/c235f088c013d46a72b7fd4a39ffb9af7f02abf8/spiece.model),
	# and the sizes match the tree of the duplicate
	# https://huggingface.co/pcuenq/siglip-base-patch16-224/tree/38367b1e64126edc8ca54af86594a2a81765598b.
	siglip-b-16-224)
		cat <<'EOF2'
cd85b3d28829722820bcb89a2cfbb4160e55fd359249a3044da724166a8d9688 432 config.json
d11ccb80f15d358a11bdb070e92e2d889005874b7db15823d5f10d9b2533b14a 368 preprocessor_config.json
2b6a1ff67a27e0df9ac0c7d93250fc0d87431c7b366b3d5669217104f9088a26 409 special_tokens_map.json
d6423dae508cc3a129d22ea443841c111832a1a73125b8f25ea8736951698bcb 711 tokenizer_config.json
1e5036bed065526c3c212dfbe288752391797c4bb1a284aa18c9a0b23fcaf8ec 798330 spiece.model
2c63cb7d1f2e95ba501893cbb8faeb4ea9a3af295498d35097126228659c2af8 812672320 model.safetensors
EOF2
		;;
	esac
}

# Why an entry is not pinned, for the refusal message. What was found, as
# leads for whoever pins it next (not used for any check):
# - clip-vit-b-16: main has only pytorch_model.bin (no safetensors); the
#   safetensors conversion is on refs/pr/4, commit d815394 (short id only),
#   model.safetensors LFS SHA256 5147d2a4e6211123df2534cabb78d22ba27166022a0110517277ca7415ecbd95,
#   599 MB (https://huggingface.co/openai/clip-vit-base-patch16/blob/refs%2Fpr%2F4/model.safetensors).
# - laion-vit-b-32, siglip2-b-16-256, siglip2-b-32-256: no revision or
#   file digest found in a public source here. SigLIP2 sizes: the B/16-512
#   sibling's model.safetensors is 1,503,344,520 bytes
#   (https://huggingface.co/JackIsNotInTheBox/Generate_Audio_for_Video_Checkpoints/commit/04c8066c2fc5604388a85109c80f372f3d07f655,
#   a mirror of google/siglip2-base-patch16-512@a89f5c50); 256 px differs
#   only in the position table.
entry_note() {
	case $1 in
	clip-vit-b-16) echo "its main branch has no model.safetensors and the full commit of the safetensors conversion (refs/pr/4) could not be confirmed here" ;;
	clip-vit-l-14) echo "the revision and the digests of config.json, preprocessor_config.json and model.safetensors are confirmed, those of vocab.json and merges.txt are not" ;;
	siglip-b-16-ml) echo "its revision is confirmed, but no public source here gives its files' digests" ;;
	cn-clip-l-14) echo "no public source here confirms a revision with model.safetensors or its digests" ;;
	cn-clip-b-16) echo "its main branch has only pytorch_model.bin; a model.safetensors exists only on a pull-request revision, and no public source here confirms that revision or its digests" ;;
	*) echo "no revision or file digest could be confirmed from a public source here" ;;
	esac
}

list_catalogue() {
	printf '%-17s %-13s %-8s %-12s %-44s %s\n' NAME FAMILY SIZE CHECKSUMS REPOSITORY "GOOD FOR"
	local name repo family size status good
	while IFS='|' read -r name repo family size status good; do
		printf '%-17s %-13s %-8s %-12s %-44s %s\n' "$name" "$family" "$size" "$status" "$repo" "$good"
	done < <(catalogue)
	cat <<'EOF2'

pinned: the revision and every file's SHA-256 are in this script; --name NAME downloads it.
partial: the revision and some checksums are here; set CLIPD_MODEL_CHECKSUMS to a file of
  "<sha256>  <file>" lines for all of its files (they must agree with the known ones).
unconfirmed: set CLIPD_MODEL_REVISION (a full commit) and CLIPD_MODEL_CHECKSUMS.
EOF2
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

usage_die() { say "error: $*"; exit 2; }

model_name='' models_arg=''
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
	--list) list_catalogue; exit 0 ;;
	--name) [ $# -ge 2 ] || usage_die "--name needs a model name (deploy/fetch-model.sh --list shows them)"; model_name=$2; shift 2 ;;
	--name=*) model_name=${1#--name=}; shift ;;
	-*) usage_die "unknown option $1 (see deploy/fetch-model.sh --help)" ;;
	*) [ -z "$models_arg" ] || usage_die "one MODELS_DIR only, got '$models_arg' and '$1'"; models_arg=$1; shift ;;
	esac
done

endpoint=${CLIPD_HF_ENDPOINT:-https://huggingface.co}
endpoint=${endpoint%/}
repo=${CLIPD_MODEL_REPO:-$default_repo}
revision=${CLIPD_MODEL_REVISION:-}
checksums=${CLIPD_MODEL_CHECKSUMS:-}

# The catalogue entry: the one named, else the one of the repository.
entry=
if [ -n "$model_name" ]; then
	line=$(catalogue | awk -F'|' -v n="$model_name" '$1 == n')
	[ -n "$line" ] || usage_die "unknown model name '$model_name'; the names are: $(catalogue | cut -d'|' -f1 | tr '\n' ' ')(deploy/fetch-model.sh --list)"
	entry_repo=$(cut -d'|' -f2 <<<"$line")
	[ -z "${CLIPD_MODEL_REPO:-}" ] || [ "$CLIPD_MODEL_REPO" = "$entry_repo" ] ||
		usage_die "--name $model_name is $entry_repo, but CLIPD_MODEL_REPO is $CLIPD_MODEL_REPO: give one of them"
	repo=$entry_repo
else
	line=$(catalogue | awk -F'|' -v r="$repo" '$2 == r')
fi
if [ -n "$line" ]; then
	IFS='|' read -r entry _ family _ status _ <<<"$line"
	entry_rev=$(entry_revision "$entry")
	entry_sums=$(entry_known "$entry")
	required=$(family_required "$family")
	optional=$(family_optional "$family")
fi

if [ "$(id -u)" = 0 ]; then
	cache=${CLIPD_CACHE_DIR:-/var/cache/clipd}
else
	cache=${CLIPD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clipd}
fi
models=${models_arg:-${CLIPD_MODELS:-$cache/models}}

# The manifest: "sha256 size name" lines, size "-" when unknown.
if [ -n "$checksums" ]; then
	[ -n "$revision" ] || revision=${entry_rev:-}
	[ -n "$revision" ] || die "CLIPD_MODEL_CHECKSUMS is set but CLIPD_MODEL_REVISION is not: give the full commit the checksums belong to"
	[ -r "$checksums" ] || die "cannot read CLIPD_MODEL_CHECKSUMS file $checksums"
	manifest=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$checksums" |
		awk '{ name = $2; sub(/^\*/, "", name); print $1, "-", name }')
	if [ -n "$entry" ]; then
		for f in $required; do
			awk -v f="$f" '$3 == f { found = 1 } END { exit !found }' <<<"$manifest" ||
				usage_die "the checksums in $checksums do not list $f: $entry ($repo) needs $required${optional:+ (and optionally $optional)}"
		done
	fi
	if [ -n "$entry" ] && [ "$revision" = "$entry_rev" ] && [ -n "$entry_sums" ]; then
		# The catalogue's confirmed digests at this revision win any
		# disagreement, and lend their sizes.
		while read -r sum size f; do
			got=$(awk -v f="$f" '$3 == f { print $1 }' <<<"$manifest")
			[ -z "$got" ] || [ "$got" = "$sum" ] ||
				usage_die "the checksum of $f in $checksums ($got) disagrees with the one confirmed for $entry at $revision ($sum): nothing was downloaded"
		done <<<"$entry_sums"
		manifest=$(awk 'NR == FNR { size[$3] = $2; next } { if ($2 == "-" && ($3 in size)) $2 = size[$3]; print }' \
			<(printf '%s\n' "$entry_sums") <(printf '%s\n' "$manifest"))
	fi
elif [ -n "$entry" ] && [ "$status" = pinned ] && { [ -z "$revision" ] || [ "$revision" = "$entry_rev" ]; }; then
	revision=$entry_rev
	manifest=$entry_sums
elif [ -n "$entry" ] && [ "$status" != pinned ]; then
	need="CLIPD_MODEL_CHECKSUMS to a file of \"<sha256>  <file>\" lines (sha256sum's format) for $required${optional:+ (optionally $optional)}"
	if [ -n "$entry_rev" ]; then
		need="$need at revision $entry_rev (or CLIPD_MODEL_REVISION and checksums for another commit)"
	else
		need="CLIPD_MODEL_REVISION to a full commit and $need"
	fi
	usage_die "$entry ($repo) is not pinned in this catalogue ($status: $(entry_note "$entry")): set $need. Nothing is downloaded unchecked."
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
