/*
 * encode_pool: request-time encoding (search queries, classify, embed) for
 * the HTTP threads, not the transformer itself (that is model/vision.c and text.c,
 * behind clip_encode_texts and clip_encode_images). Three parts:
 *
 * - A pool of `nctx` clip_ctx, so HTTP threads never allocate activations
 *   and at most `nctx` encodes run at once (the cores are shared with the
 *   background workers). A context is lent for one batch at a time, in the
 *   order the requests asked, so a request of many batches (classify,
 *   embed) does not keep the others waiting until it is done.
 * - Cross-request batching of single inputs. A call with one text (or one
 *   image) does not encode it alone: it queues it and waits. One waiting
 *   thread at a time is the leader: it takes up to `max_batch` queued
 *   inputs, its own and other requests', encodes them as one batch and
 *   hands each caller its vector. Once its own input is done it stops
 *   leading and wakes the others, and a caller still queued leads next, so
 *   a call waits at most for the batches queued ahead of its input, never
 *   for inputs that arrive after it. A lone query waits for nobody; under
 *   load batches grow by themselves. Calls of several texts are batched
 *   within the call only.
 * - A prompt cache (encode_pool_texts_cached) for classify's label prompts.
 *
 * Every call blocks its caller until its own vectors are ready. Outputs are
 * L2-normalised, written into the caller's buffer. All calls are
 * thread-safe; encode_pool_close must come after the last of them.
 */
#ifndef CLIPD_ENCODE_POOL_H
#define CLIPD_ENCODE_POOL_H

#include <stddef.h>

#include "clip.h"
#include "errors.h"

typedef struct encode_pool encode_pool;

/* Opens a pool of nctx contexts for batches of up to max_batch inputs on m
 * (which must outlive the pool). Returns 0 and sets *out, or an API_ code
 * with err filled and *out = NULL. */
int encode_pool_open(const clip_model *m, int nctx, int max_batch, encode_pool **out, api_err *err);
/* Frees the pool and its contexts; NULL is a no-op. */
void encode_pool_close(encode_pool *e);

/* Encodes n texts into out[n][dim]. A text that is not valid UTF-8 is a
 * 400 naming its position. One text joins the cross-request batch; more
 * are encoded max_batch at a time, a context borrowed per batch. */
int encode_pool_texts(encode_pool *e, size_t n, const char *const *texts, float *out, api_err *err);

/* The same as encode_pool_texts, through a cache of up to 4 MiB of texts and
 * their embeddings (the classify prompts: labels x templates come back
 * request after request). Cached results are identical to fresh ones. */
int encode_pool_texts_cached(encode_pool *e, size_t n, const char *const *texts, float *out, api_err *err);

/* Texts in the cache, and the bytes they are counted for against its
 * budget (for /v1/stats and tests). */
size_t encode_pool_cache_size(encode_pool *e);
size_t encode_pool_cache_bytes(encode_pool *e);

/* Encodes one preprocessed image px[3][S][S] (clip_preprocess_*, S the
 * model's image size) into out[dim], normalised, batched with whatever
 * other single images are waiting. The decode is the caller's: it runs on
 * the caller's thread, under the caller's own bounds (--max-decodes). */
int encode_pool_pixels(encode_pool *e, const float *px, float *out, api_err *err);

#endif
