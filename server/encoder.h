/*
 * encoder: request-time encoding (search queries, classify, embed) on a
 * small pool of clip_ctx, so HTTP threads never allocate activations and at
 * most `nctx` encodes run at once (the cores are shared with the background
 * workers). A context is borrowed for one batch at a time, in the order the
 * requests asked, so a request of many batches (classify, embed) does not
 * keep the others waiting until it is done.
 *
 * Outputs are L2-normalised. Thread-safe.
 */
#ifndef CLIPD_ENCODER_H
#define CLIPD_ENCODER_H

#include <stddef.h>

#include "clip.h"
#include "errors.h"

typedef struct encoder encoder;

int encoder_open(const clip_model *m, int nctx, int max_batch, encoder **out, api_err *err);
void encoder_close(encoder *e);

/* Encodes n texts into out[n][dim]. A text that is not valid UTF-8 is a
 * 400 naming its position. */
int encoder_texts(encoder *e, size_t n, const char *const *texts, float *out, api_err *err);

/* The same as encoder_texts, through a cache of up to 4 MiB of texts and
 * their embeddings (the classify prompts: labels x templates come back
 * request after request). Cached results are identical to fresh ones. */
int encoder_texts_cached(encoder *e, size_t n, const char *const *texts, float *out, api_err *err);

/* Texts in the cache, and the bytes they are counted for against its
 * budget (for /v1/stats and tests). */
size_t encoder_cache_size(encoder *e);
size_t encoder_cache_bytes(encoder *e);

/* Encodes one preprocessed image px[3][S][S] (clip_preprocess_*, S the
 * model's image size) into out[dim], normalised, batched with whatever
 * other single images are waiting. The decode is the caller's: it runs on
 * the caller's thread, under the caller's own bounds (--max-decodes). */
int encoder_pixels(encoder *e, const float *px, float *out, api_err *err);

#endif
