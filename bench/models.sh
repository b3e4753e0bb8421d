#!/usr/bin/env bash
# bench/models.sh: the model families side by side, in one run on one
# machine: bench/model on clip-mkmodel's random-weight presets (speed does
# not depend on the values) of CLIP ViT-B/32 and ViT-B/16, SigLIP B/16
# (google/siglip-base-patch16-224's shapes) and SigLIP2 B/16-256
# (google/siglip2-base-patch16-256's, with Gemma's 256,000-token table), in
# f32 and bf16: images/s at batch 1 and 32, GFLOP/s, text latency, peak RSS.
# Then ONNX Runtime on ViT-B/32 (../shared/peers/run.sh) when it is there.
#
#   bench/models.sh [BUILD_DIR] [SECONDS]     (defaults: build, 8)
#
# The presets (0.6-1.5 GB each) are written to a temp dir, removed at exit.
# A SigLIP checkpoint needs a SentencePiece file, which cannot be made
# here: the reference kit's spiece.model stands in (speed does not depend
# on the text's pieces; SigLIP runs its 64 positions whatever the text).
set -euo pipefail
build=${1:-build}
seconds=${2:-8}
src=$(cd "$(dirname "$0")/.." && pwd)
ref=${CLIPD_REFERENCE:-$src/../shared/reference}
spm=$ref/tiny-siglip-a/spiece.model
tmp=$(mktemp -d "${TMPDIR:-/tmp}/clipd-models.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=passive

for preset in vit-b-32 vit-b-16 siglip-b-16 siglip2-b-16-256; do
	args=(--preset "$preset" --out "$tmp/$preset")
	case $preset in siglip*) args+=(--spm "$spm") ;; esac
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
if [ -x "$peers" ]; then
	echo "== ONNX Runtime, ViT-B/32, f32 ($peers)"
	"$peers"
else
	echo "== ONNX Runtime: $peers not found, not run"
fi
