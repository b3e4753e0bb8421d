/*
 * tok_wordpiece_int.h: BERT's WordPiece tokenizer as Chinese-CLIP uses it
 * (Hugging Face's slow BertTokenizer v4.44.2, do_lower_case, Chinese
 * characters split, accents stripped), private to the model module.
 * The rules, step by step, are in the header of tok_wordpiece.c.
 *
 * Ownership: tok_wp_open returns a tok_wp that the caller frees with
 * tok_wp_close. Output arrays belong to the caller.
 *
 * Thread-safety: a tok_wp is read-only once open; tok_wp_encode may run on
 * one tok_wp from any number of threads at once (every buffer is the
 * call's own). tok_wp_close must not overlap any other call.
 */
#ifndef CLIPD_TOK_WORDPIECE_INT_H
#define CLIPD_TOK_WORDPIECE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "clip.h"

typedef struct tok_wp tok_wp;

/* Loads vocab.txt: one token per line, id = line index, lines ended by
 * "\n" (or "\r\n" / "\r", as Python's text mode reads them; U+2028 is a
 * token, not a line end). A token listed twice takes its last id, as
 * transformers' load_vocab does. [PAD], [UNK], [CLS], [SEP] and [MASK]
 * must be present.
 * Returns CLIP_OK and sets *out; on failure *out is NULL and the code is
 * CLIP_EIO (the file cannot be read, or is a directory), CLIP_EMODEL (empty,
 * not UTF-8, a special token missing; the message names the file and the
 * line), CLIP_EINVAL or CLIP_ENOMEM. */
int tok_wp_open(const char *vocab_txt, tok_wp **out, clip_err *err);

/* Frees t. Accepts NULL. */
void tok_wp_close(tok_wp *t);

/* Encodes the UTF-8 text into ids[ctx]: [CLS], the first ctx-2 pieces,
 * [SEP], then [PAD] (id 0 in the real vocabulary). *len (optional) is the
 * count before the padding: the attention mask is 1 on [0, *len), also
 * where a [PAD] written in the text gave id 0 - never derive it from ids.
 * Returns CLIP_OK, CLIP_ETEXT for text that is not valid UTF-8,
 * CLIP_EINVAL for a NULL argument or ctx < 2, CLIP_ENOMEM. On failure ids
 * is all [PAD] (when ids and ctx are usable) and *len is 0.
 * Work and memory are bounded whatever the length of the text: it is
 * normalised a few KB at a time and reading stops once ctx-2 pieces are
 * known (only the UTF-8 check reads further; a run of more than 4 KB
 * without a word boundary is read a character at a time, in fixed memory,
 * up to its end). See tok_wordpiece.c for when the ids are exactly those
 * of the whole text (always, but for one ordering case of rare combining
 * characters in such runs). */
int tok_wp_encode(const tok_wp *t, const char *text, int32_t *ids, int ctx, int *len,
                  clip_err *err);

/* What one call did, for the tests of the bound. */
typedef struct tok_wp_stats {
	size_t normalised_bytes;  /* bytes of text that went through the pipeline */
	size_t chunks;            /* pieces of text normalised at once */
	size_t long_runs;         /* runs longer than a chunk with no word boundary */
	size_t run_bytes;         /* bytes of those runs, read a character at a time */
} tok_wp_stats;

/* tok_wp_encode, also filling *stats (optional). */
int tok_wp_encode_stats(const tok_wp *t, const char *text, int32_t *ids, int ctx, int *len,
                        tok_wp_stats *stats, clip_err *err);

/* The number of lines of vocab.txt (21128 for Chinese-CLIP): ids are
 * below it. */
int tok_wp_vocab_size(const tok_wp *t);

#endif
