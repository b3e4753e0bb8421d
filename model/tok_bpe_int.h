/*
 * tok_bpe_int.h: CLIP's byte-level BPE tokenizer, private to the model
 * module (clip_tokenize in clip.h is the public entry point).
 *
 * Reproduces open_clip v2.20's SimpleTokenizer id for id from the Hugging
 * Face vocab.json and merges.txt: HTML unescaping (twice), whitespace
 * cleaning, Python's str.lower(), the pre-tokenisation regex, byte symbols
 * and BPE merges. The one step left out is ftfy.fix_text, which has no C
 * port; see the header of tok_bpe.c for what that changes.
 *
 * Ownership: tok_open returns a tok that the caller frees with tok_close.
 * Output arrays belong to the caller.
 *
 * Thread-safety: a tok is read-only once open except for its word cache,
 * which has its own lock. tok_encode may run on one tok from any number of
 * threads at once; tok_close must not overlap any other call.
 */
#ifndef CLIPD_TOKENIZER_INT_H
#define CLIPD_TOKENIZER_INT_H

#include <stdint.h>

#include "clip.h"

typedef struct tok tok;

/* Loads the vocabulary (vocab.json: token string -> id, in byte-symbol
 * form) and the merges (merges.txt: an optional "#version" header line,
 * then one "left right" pair per line, highest priority first). Every
 * merge must name symbols of the vocabulary, and so must its result; the
 * 256 byte symbols, their "</w>" forms, <|startoftext|> and <|endoftext|>
 * must be present.
 * Returns CLIP_OK and sets *out; on failure *out is NULL and the code is
 * CLIP_EIO (a file cannot be read), CLIP_EMODEL (a file is malformed; the
 * message names the file and, for merges.txt, the line), CLIP_EINVAL or
 * CLIP_ENOMEM. */
int tok_open(const char *vocab_json, const char *merges_txt, tok **out, clip_err *err);

/* Frees t. Accepts NULL. */
void tok_close(tok *t);

/* Encodes the UTF-8 text into ids[ctx]: <|startoftext|>, the BPE tokens,
 * <|endoftext|>, then zeros. A text too long for ctx is truncated, keeping
 * <|endoftext|> as the last token (as open_clip's tokenize() does).
 * *len (optional) receives the number of tokens before the padding.
 * Returns CLIP_OK, CLIP_ETEXT for text that is not valid UTF-8, CLIP_EINVAL
 * for a NULL argument or ctx < 2, CLIP_ENOMEM. On failure ids is all
 * zeros (when ids and ctx are usable) and *len is 0.
 * The work and memory of a call are bounded by the ctx tokens it keeps: the
 * text is normalised and encoded a few KB at a time and reading stops once
 * ctx is full, whatever the length of the text (only the UTF-8 check reads
 * it all). The ids are those of the whole text normalised at once except
 * past bounds no written text reaches (see tok_bpe.c). */
int tok_encode(tok *t, const char *text, int32_t *ids, int ctx, int *len, clip_err *err);

/* The id of <|startoftext|>. */
int32_t tok_sot(const tok *t);

/* The id of <|endoftext|>. */
int32_t tok_eot(const tok *t);

/* The number of entries of vocab.json (49408 for CLIP). */
int tok_vocab_size(const tok *t);

#endif
