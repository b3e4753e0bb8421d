/*
 * encode_pool.c: a pool of clip contexts for request-time encodes, the
 * cross-request batcher in front of it, and the prompt cache.
 *
 * DESIGN: batching single queries across requests. A search query is one
 * short text or one image; encoding queries one by one leaves the cores
 * waiting on memory (every encode reads all of a tower's weights for a few
 * rows). So a request with one text or image queues it (tq, in the tower's
 * batcher, under its mu) and waits; whichever waiting thread finds no
 * leader becomes the leader, takes up to max_batch queued inputs, encodes
 * them as one batch on a borrowed context, hands each its vector, and
 * leads again while its own input is not done. Once it is, it stops
 * leading and wakes the others: one still queued leads next, so a leader's
 * reply waits for at most the batches queued ahead of it, never for inputs
 * that come after. Inputs that arrive while a batch runs form the next
 * batch, so under load batches grow by themselves and a lone query waits
 * for nobody. Each batcher has one leader at a time, so
 * its batch buffers are allocated once. Lock order: a batcher's mu is never
 * held while taking the context pool's mu (borrow) or encoding.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "clock.h"
#include "encode_pool.h"
#include "metrics.h"

/* The prompt cache's budget in bytes: prompt, embedding and table entry
 * (CACHE_ENTRY_OVERHEAD, GLib's node and two allocations). 4 MiB holds
 * ~1,900 prompts at 512 floats (ViT-B), ~1,300 at 768 (ViT-L): a few label
 * sets of hundreds of labels. A count alone let long prompts keep 48 MB. */
#define PROMPT_CACHE_BYTES (4u << 20)
#define CACHE_ENTRY_OVERHEAD 64

/* One queued single-input encode. */
typedef struct tq {
	const void *in;        /* int32 ids [ctxlen] or float pixels [3][S][S] */
	float *out;            /* [dim] */
	int done, rc;
	api_err err;
	struct tq *next;
} tq;

typedef struct batcher {
	pthread_mutex_t mu;    /* guards head, tail, leader; waiters sleep on cv */
	pthread_cond_t cv;
	tq *head, *tail;
	int leader;
	int tower;             /* METRICS_TOWER_TEXT or _IMAGE */
	size_t in_bytes;       /* one input */
	tq **batch;            /* [max_batch], the leader's */
	void *in;              /* [max_batch] inputs, the leader's */
	float *out;            /* [max_batch][dim], the leader's */
} batcher;

struct encode_pool {
	const clip_model *m;
	/* cmu guards cache: prompt text -> normalised embedding [dim], both
	 * owned by the table, and cache_bytes, their cost against
	 * PROMPT_CACHE_BYTES. Taken alone, never with another lock. */
	pthread_mutex_t cmu;
	GHashTable *cache;
	size_t cache_bytes;
	batcher text, image;   /* see DESIGN */
	int dim, ctxlen, max_batch, size;
	/* mu guards free_ctx, nfree and the tickets; waiters sleep on cv.
	 * Contexts go to borrowers in the order they asked (a ticket each),
	 * so a request that encodes many batches, borrowing for each, lets
	 * those that arrived meanwhile take their turn. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	clip_ctx **free_ctx;   /* [nctx] stack of idle contexts */
	clip_ctx **all;        /* [nctx] */
	int nctx, nfree;
	uint64_t next_ticket, serving;
};

int encode_pool_open(const clip_model *m, int nctx, int max_batch, encode_pool **out, api_err *err)
{
	encode_pool *e = calloc(1, sizeof *e);
	int rc = 0;
	*out = NULL;
	if (!e || !(e->free_ctx = calloc((size_t)nctx, sizeof *e->free_ctx)) ||
	    !(e->all = calloc((size_t)nctx, sizeof *e->all))) {
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	e->m = m;
	e->dim = clip_model_dim(m);
	e->ctxlen = clip_model_context(m);
	e->size = clip_model_image_size(m);
	e->max_batch = max_batch;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	batcher *bs[2] = {&e->text, &e->image};
	for (int k = 0; k < 2; k++) {
		batcher *b = bs[k];
		pthread_mutex_init(&b->mu, NULL);
		pthread_cond_init(&b->cv, NULL);
		b->tower = k == 0 ? METRICS_TOWER_TEXT : METRICS_TOWER_IMAGE;
		b->in_bytes = k == 0 ? (size_t)e->ctxlen * sizeof(int32_t)
		                     : (size_t)3 * e->size * e->size * sizeof(float);
		b->batch = malloc((size_t)max_batch * sizeof *b->batch);
		b->in = malloc((size_t)max_batch * b->in_bytes);
		b->out = malloc((size_t)max_batch * (size_t)e->dim * sizeof *b->out);
		if (!b->batch || !b->in || !b->out) {
			rc = api_fail(err, API_ENOMEM, "out of memory");
			goto out;
		}
	}
	pthread_mutex_init(&e->cmu, NULL);
	e->cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	for (int i = 0; i < nctx; i++) {
		clip_err ce;
		if (clip_ctx_new(m, max_batch, &e->all[i], &ce) != CLIP_OK) {
			rc = api_from_clip(err, &ce);
			goto out;
		}
		e->free_ctx[e->nfree++] = e->all[i];
		e->nctx++;
	}
	*out = e;
	e = NULL;
out:
	encode_pool_close(e);
	return rc;
}

void encode_pool_close(encode_pool *e)
{
	if (!e)
		return;
	for (int i = 0; i < e->nctx; i++)
		clip_ctx_free(e->all[i]);
	if (e->all) {
		pthread_mutex_destroy(&e->mu);
		pthread_cond_destroy(&e->cv);
		batcher *bs[2] = {&e->text, &e->image};
		for (int k = 0; k < 2; k++) {
			pthread_mutex_destroy(&bs[k]->mu);
			pthread_cond_destroy(&bs[k]->cv);
		}
		pthread_mutex_destroy(&e->cmu);
	}
	if (e->cache)
		g_hash_table_destroy(e->cache);
	batcher *bf[2] = {&e->text, &e->image};
	for (int k = 0; k < 2; k++) {
		free(bf[k]->batch);
		free(bf[k]->in);
		free(bf[k]->out);
	}
	free(e->all);
	free(e->free_ctx);
	free(e);
}

static clip_ctx *borrow(encode_pool *e)
{
	pthread_mutex_lock(&e->mu);
	uint64_t me = e->next_ticket++;
	while (e->nfree == 0 || e->serving != me)
		pthread_cond_wait(&e->cv, &e->mu);
	e->serving++;
	clip_ctx *c = e->free_ctx[--e->nfree];
	/* the next ticket may find a context too */
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	return c;
}

static void give_back(encode_pool *e, clip_ctx *c)
{
	pthread_mutex_lock(&e->mu);
	e->free_ctx[e->nfree++] = c;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

/* The leader's work: encodes b->batch[0..n) as one batch and records each
 * result. */
static void run_batch(encode_pool *e, batcher *b, int n)
{
	clip_err ce;
	for (int i = 0; i < n; i++)
		memcpy((char *)b->in + (size_t)i * b->in_bytes, b->batch[i]->in, b->in_bytes);
	clip_ctx *c = borrow(e);
	double t0 = clock_s();
	int rc = b->tower == METRICS_TOWER_TEXT ? clip_encode_texts(c, n, b->in, b->out, &ce)
	                                        : clip_encode_images(c, n, b->in, b->out, &ce);
	give_back(e, c);
	if (rc == CLIP_OK)
		metrics_encode_done(b->tower, n, clock_s() - t0);
	for (int i = 0; i < n; i++) {
		tq *q = b->batch[i];
		if (rc != CLIP_OK) {
			q->rc = api_from_clip(&q->err, &ce);
			continue;
		}
		memcpy(q->out, b->out + (size_t)i * e->dim, (size_t)e->dim * sizeof(float));
		clip_normalize(q->out, e->dim);
		q->rc = 0;
	}
}

/* Queues one input and returns once it is encoded, by a leader: maybe this
 * thread. */
static int submit(encode_pool *e, batcher *b, const void *in, float *out, api_err *err)
{
	tq me = {.in = in, .out = out};
	pthread_mutex_lock(&b->mu);
	if (b->tail)
		b->tail->next = &me;
	else
		b->head = &me;
	b->tail = &me;
	while (!me.done) {
		if (b->leader) {
			pthread_cond_wait(&b->cv, &b->mu);
			continue;
		}
		/* Lead: encode batches, oldest first, until our own input
		 * is done, then hand over: a waiter still queued becomes the
		 * next leader, so no reply waits on others' later inputs. */
		b->leader = 1;
		while (b->head && !me.done) {
			int n = 0;
			while (b->head && n < e->max_batch) {
				b->batch[n++] = b->head;
				b->head = b->head->next;
			}
			if (!b->head)
				b->tail = NULL;
			pthread_mutex_unlock(&b->mu);
			run_batch(e, b, n);
			pthread_mutex_lock(&b->mu);
			/* After done is set a waiter may return and free its tq. */
			for (int i = 0; i < n; i++)
				b->batch[i]->done = 1;
			pthread_cond_broadcast(&b->cv);
		}
		b->leader = 0;
		pthread_cond_broadcast(&b->cv);
	}
	pthread_mutex_unlock(&b->mu);
	if (me.rc)
		*err = me.err;
	return me.rc;
}

/* One text, batched with whatever other single texts are waiting. */
static int encode_one(encode_pool *e, const char *text, float *out, api_err *err)
{
	clip_err ce;
	int32_t *ids = malloc((size_t)e->ctxlen * sizeof *ids);
	int rc;
	if (!ids)
		return api_fail(err, API_ENOMEM, "out of memory");
	if (clip_tokenize(e->m, text, ids, NULL, &ce) != CLIP_OK)
		rc = api_fail(err, API_EBADREQ, "text 0: %s", ce.msg);
	else
		rc = submit(e, &e->text, ids, out, err);
	free(ids);
	return rc;
}

int encode_pool_texts(encode_pool *e, size_t n, const char *const *texts, float *out, api_err *err)
{
	if (n == 1)
		return encode_one(e, texts[0], out, err);

	size_t B = (size_t)e->max_batch;
	int32_t *ids = malloc(B * (size_t)e->ctxlen * sizeof *ids);
	int rc = 0;
	if (!ids)
		return api_fail(err, API_ENOMEM, "out of memory");
	for (size_t i0 = 0; i0 < n; i0 += B) {
		size_t nb = n - i0 < B ? n - i0 : B;
		clip_err ce;
		for (size_t i = 0; i < nb; i++) {
			if (clip_tokenize(e->m, texts[i0 + i], ids + i * (size_t)e->ctxlen, NULL, &ce) !=
			    CLIP_OK) {
				rc = api_fail(err, API_EBADREQ, "text %zu: %s", i0 + i, ce.msg);
				goto out;
			}
		}
		/* A context per batch, not per request: others' encodes
		 * take their turn between our batches. */
		clip_ctx *c = borrow(e);
		double t0 = clock_s();
		int crc = clip_encode_texts(c, (int)nb, ids, out + i0 * (size_t)e->dim, &ce);
		give_back(e, c);
		if (crc != CLIP_OK) {
			rc = api_from_clip(err, &ce);
			goto out;
		}
		metrics_encode_done(METRICS_TOWER_TEXT, (int)nb, clock_s() - t0);
	}
	for (size_t i = 0; i < n; i++)
		clip_normalize(out + i * (size_t)e->dim, e->dim);
out:
	free(ids);
	return rc;
}

int encode_pool_pixels(encode_pool *e, const float *px, float *out, api_err *err)
{
	return submit(e, &e->image, px, out, err);
}

int encode_pool_texts_cached(encode_pool *e, size_t n, const char *const *texts, float *out, api_err *err)
{
	size_t dimb = (size_t)e->dim * sizeof(float), nmiss = 0;
	const char **miss = malloc((n ? n : 1) * sizeof *miss);
	size_t *where = malloc((n ? n : 1) * sizeof *where);
	float *emb = NULL;
	int rc = 0;
	if (!miss || !where) {
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	pthread_mutex_lock(&e->cmu);
	for (size_t i = 0; i < n; i++) {
		const float *v = g_hash_table_lookup(e->cache, texts[i]);
		if (v) {
			memcpy(out + i * (size_t)e->dim, v, dimb);
		} else {
			miss[nmiss] = texts[i];
			where[nmiss++] = i;
		}
	}
	pthread_mutex_unlock(&e->cmu);
	if (nmiss == 0)
		goto out;
	if (!(emb = malloc(nmiss * dimb))) {
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = encode_pool_texts(e, nmiss, miss, emb, err)) != 0)
		goto out;
	pthread_mutex_lock(&e->cmu);
	for (size_t j = 0; j < nmiss; j++) {
		memcpy(out + where[j] * (size_t)e->dim, emb + j * (size_t)e->dim, dimb);
		size_t cost = strlen(miss[j]) + 1 + dimb + CACHE_ENTRY_OVERHEAD;
		if (cost > PROMPT_CACHE_BYTES || g_hash_table_contains(e->cache, miss[j]))
			continue;
		/* Full: start over rather than track use; label sets are
		 * small and come back. */
		if (e->cache_bytes + cost > PROMPT_CACHE_BYTES) {
			g_hash_table_remove_all(e->cache);
			e->cache_bytes = 0;
		}
		g_hash_table_insert(e->cache, g_strdup(miss[j]),
		                    g_memdup2(emb + j * (size_t)e->dim, (gsize)dimb));
		e->cache_bytes += cost;
	}
	pthread_mutex_unlock(&e->cmu);
out:
	free(miss);
	free(where);
	free(emb);
	return rc;
}

size_t encode_pool_cache_size(encode_pool *e)
{
	pthread_mutex_lock(&e->cmu);
	size_t n = g_hash_table_size(e->cache);
	pthread_mutex_unlock(&e->cmu);
	return n;
}

size_t encode_pool_cache_bytes(encode_pool *e)
{
	pthread_mutex_lock(&e->cmu);
	size_t n = e->cache_bytes;
	pthread_mutex_unlock(&e->cmu);
	return n;
}
