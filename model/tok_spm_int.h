/*
 * tok_spm_int.h: the SentencePiece tokenizers of SigLIP and SigLIP2,
 * private to the model module (tok_spm.c, over the library shim
 * spm_shim.h).
 *
 * TOK_SPM_SIGLIP reproduces Hugging Face's SiglipTokenizer (v4.44.2) on the
 * hub's spiece.model (SentencePiece Unigram, T5-style ids): lower-case,
 * special-token strings split out, ASCII punctuation deleted, white space
 * collapsed and stripped, then the model's own encoding (nmt_nfkc, dummy
 * prefix); truncated to ctx-1 pieces, </s> appended, padded with </s>.
 * TOK_SPM_GEMMA is SigLIP2's convention on Gemma's tokenizer.model
 * (SentencePiece BPE with byte fallback): lower-case, the model's encoding,
 * truncated to ctx-1, <eos> appended, padded with <pad>. The rules, and what
 * "lower-case" means exactly, are in the header of tok_spm.c.
 *
 * Ownership: tok_spm_open returns a tok_spm that the caller frees with
 * tok_spm_close. Output arrays belong to the caller.
 *
 * Thread-safety: a tok_spm is read-only once open; tok_spm_encode may run
 * on one tok_spm from any number of threads at once (each call works on its
 * own buffers; the library's Encode is const and keeps no mutable state,
 * see spm_shim.h). tok_spm_close must not overlap any other call.
 */
#ifndef CLIPD_TOK_SPM_INT_H
#define CLIPD_TOK_SPM_INT_H

#include <stddef.h>
#include <stdint.h>

#include "clip.h"

typedef struct tok_spm tok_spm;

typedef enum tok_spm_style { TOK_SPM_SIGLIP, TOK_SPM_GEMMA } tok_spm_style;

/* Loads the SentencePiece model file (spiece.model, tokenizer.model) for
 * the given style. The special pieces come from the file: </s> and <unk>
 * for SIGLIP, <eos> and <pad> (and <bos>, <unk> when present) for GEMMA.
 * Returns CLIP_OK and sets *out; on failure *out is NULL and the code is
 * CLIP_EMODEL (the file is missing, unreadable, not a SentencePiece model,
 * or lacks a special piece; the message says which), CLIP_EINVAL or
 * CLIP_ENOMEM. */
int tok_spm_open(const char *model_file, tok_spm_style style, tok_spm **out, clip_err *err);

/* Frees t. Accepts NULL. */
void tok_spm_close(tok_spm *t);

/* Encodes the UTF-8 text into ids[ctx]: the pieces truncated to ctx-1, the
 * EOS id, then the pad id up to ctx. *len (optional) receives the count
 * before the padding. Returns CLIP_OK, CLIP_ETEXT for text that is not
 * valid UTF-8 (g_utf8_validate, as tok_bpe), CLIP_EINVAL for a NULL
 * argument or ctx < 2, CLIP_ENOMEM. On failure ids is all pad ids (when ids
 * and ctx are usable) and *len is 0.
 * Work and memory per call are bounded whatever the length of the text:
 * only a prefix of at most TOK_SPM_PREFIX_MAX bytes is transformed and
 * encoded (the UTF-8 check reads it all). tok_spm.c says when the ids of
 * that prefix are exactly those of the whole text. */
int tok_spm_encode(const tok_spm *t, const char *text, int32_t *ids, int ctx, int *len,
                   clip_err *err);

/* The number of pieces of the model. */
int tok_spm_vocab_size(const tok_spm *t);

/* The id that pads ids[] (</s> for SIGLIP, <pad> for GEMMA). */
int32_t tok_spm_pad_id(const tok_spm *t);

/* The id appended after the pieces (</s> for SIGLIP, <eos> for GEMMA). */
int32_t tok_spm_eos_id(const tok_spm *t);

/* The bytes of the text's prefix that one call reads at most, and the size
 * of its first attempt (see tok_spm.c). */
#define TOK_SPM_PREFIX_FIRST 4096
#define TOK_SPM_PREFIX_MAX (256 * 1024)

/* What one encode did, for tests of the bound. */
typedef struct tok_spm_stats {
	size_t attempts;     /* prefixes tried (each twice the last) */
	size_t bytes_read;   /* text bytes lower-cased and cleaned, summed over attempts */
	size_t bytes_encoded;/* bytes handed to SentencePiece, summed over attempts */
	size_t prefix_bytes; /* the length of the prefix whose ids were kept */
	int exact;           /* 1 when the ids are those of the whole text by the argument of
	                      * tok_spm.c, 0 when a bound cut them */
} tok_spm_stats;

/* tok_spm_encode, and fills *stats (optional). */
int tok_spm_encode_stats(const tok_spm *t, const char *text, int32_t *ids, int ctx, int *len,
                         tok_spm_stats *stats, clip_err *err);

#endif
