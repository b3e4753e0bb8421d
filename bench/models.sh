#!/usr/bin/env bash
# bench/models.sh: the model families side by side, in one run on one
# machine: bench/model on clip-mkmodel's random-weight presets (speed does
# not depend on the values) of CLIP ViT-B/32 and ViT-B/16, SigLIP B/16
# (google/siglip-base-patch16-224's shapes) and SigLIP2 B/16-256
# (google/siglip2-base-patch16-256's, with Gemma's 256,000-token table), in
# f32 and bf16: images/s at batch 1 and 32, GFLOP/s, text latency, peak RSS.
# Then ONNX Runtime on ViT-B/32 (../shared/peers/run.sh) when it is there.
#
#   bench/models.sh [BUILD_DIR] [SECONDS] [PRESET...]
#       (defaults: build, 8, vit-b-32 vit-b-16 siglip-b-16 siglip2-b-16-256;
#        clip-mkmodel also has vit-l-14, siglip2-b-32-256, cn-clip-b-16, whose
#        text figure is a 10-character query, and siglip-b-16-256-multilingual
#        (google/siglip-base-patch16-256-multilingual's shapes: a 250,000-row
#        token table, 256 pixels); CLIPD_NO_PEERS=1
#        leaves ONNX Runtime out)
#
# The presets (0.6-1.7 GB each) are written to a temp dir, removed at exit.
# A SigLIP checkpoint needs a SentencePiece file, and the real ones cannot
# be fetched here: SigLIP gets the reference kit's spiece.model (Unigram),
# SigLIP2 a small BPE model with Gemma's options and special pieces,
# trained here by Debian's python3-sentencepiece; the multilingual SigLIP a
# 250,000-piece Unigram model grown from the kit's (tests/mkspm_i18n.py).
# Speed does not depend on
# the text's pieces: SigLIP runs its 64 positions whatever the text.
set -euo pipefail
build=${1:-build}
seconds=${2:-8}
shift $(($# < 2 ? $# : 2))
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(vit-b-32 vit-b-16 siglip-b-16 siglip2-b-16-256)
src=$(cd "$(dirname "$0")/.." && pwd)
ref=${CLIPD_REFERENCE:-$src/../shared/reference}
spm=$ref/tiny-siglip-a/spiece.model
tmp=$(mktemp -d "${TMPDIR:-/tmp}/clipd-models.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=passive

gemma=$tmp/gemma.model
gemma_model() {
	[ -f "$gemma" ] && return
	# Generated words: enough for a 1,000-piece BPE vocabulary.
	/usr/bin/python3 - "$tmp" <<'EOF'
import random, sys
import sentencepiece as spm
d = sys.argv[1]
r = random.Random(7)
with open(d + "/corpus.txt", "w") as f:
    for _ in range(3000):
        f.write(" ".join("".join(r.choice("etaoinshrdlucmfwypvbgkjqxz")
                                 for _ in range(r.randrange(1, 9)))
                         for _ in range(r.randrange(3, 12))) + "\n")
spm.SentencePieceTrainer.train(
    input=d + "/corpus.txt", model_prefix=d + "/gemma", model_type="bpe", vocab_size=1000,
    byte_fallback=True, split_digits=True, normalization_rule_name="identity",
    add_dummy_prefix=False, remove_extra_whitespaces=False, pad_id=0, eos_id=1, bos_id=2,
    unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
    num_threads=1, minloglevel=2)
EOF
}

for preset in "${presets[@]}"; do
	args=(--preset "$preset" --out "$tmp/$preset")
	case $preset in
	siglip2*) gemma_model && args+=(--spm "$gemma") ;;
	*multilingual)
		python3 "$src/tests/mkspm_i18n.py" "$spm" "$tmp/i18n.model"
		args+=(--spm "$tmp/i18n.model") ;;
	siglip*) args+=(--spm "$spm") ;;
	cn-clip*) args+=(--spm "$ref/tiny-cn-clip-a/vocab.txt") ;;
	esac
	"$build/clip-mkmodel" "${args[@]}"
	size=$(du -m "$tmp/$preset/model.safetensors" | cut -f1)
	for p in f32 bf16; do
		echo "== $preset $p (weights ${size} MB)"
		"$build/bench/model" --model "$tmp/$preset" --threads 2 --precision "$p" \
			--seconds "$seconds" --batches 1,32
	done
	rm -rf "${tmp:?}/$preset"
done

peers=$src/../shared/peers/run.sh
if [ "${CLIPD_NO_PEERS:-}" = 1 ]; then
	:
elif [ -x "$peers" ]; then
	echo "== ONNX Runtime, ViT-B/32, f32 ($peers)"
	"$peers"
else
	echo "== ONNX Runtime: $peers not found, not run"
fi
