/* encoder.c: a pool of clip contexts for request-time encodes. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "encoder.h"
#include "metrics.h"

struct encoder {
	const clip_model *m;
	int dim, ctxlen, max_batch, size;
	/* mu guards free_ctx and nfree; waiters sleep on cv. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	clip_ctx **free_ctx;   /* [nctx] stack of idle contexts */
	clip_ctx **all;        /* [nctx] */
	int nctx, nfree;
};

int encoder_open(const clip_model *m, int nctx, int max_batch, encoder **out, api_err *err)
{
	encoder *e = calloc(1, sizeof *e);
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
	encoder_close(e);
	return rc;
}

void encoder_close(encoder *e)
{
	if (!e)
		return;
	for (int i = 0; i < e->nctx; i++)
		clip_ctx_free(e->all[i]);
	if (e->all) {
		pthread_mutex_destroy(&e->mu);
		pthread_cond_destroy(&e->cv);
	}
	free(e->all);
	free(e->free_ctx);
	free(e);
}

static clip_ctx *borrow(encoder *e)
{
	pthread_mutex_lock(&e->mu);
	while (e->nfree == 0)
		pthread_cond_wait(&e->cv, &e->mu);
	clip_ctx *c = e->free_ctx[--e->nfree];
	pthread_mutex_unlock(&e->mu);
	return c;
}

static void give_back(encoder *e, clip_ctx *c)
{
	pthread_mutex_lock(&e->mu);
	e->free_ctx[e->nfree++] = c;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

int encoder_texts(encoder *e, size_t n, const char *const *texts, float *out, api_err *err)
{
	size_t B = (size_t)e->max_batch;
	int32_t *ids = malloc(B * (size_t)e->ctxlen * sizeof *ids);
	clip_ctx *c = NULL;
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
		if (!c)
			c = borrow(e);
		double t0 = metrics_now();
		if (clip_encode_texts(c, (int)nb, ids, out + i0 * (size_t)e->dim, &ce) != CLIP_OK) {
			rc = api_from_clip(err, &ce);
			goto out;
		}
		metrics_encode_done(METRICS_TOWER_TEXT, (int)nb, metrics_now() - t0);
	}
	for (size_t i = 0; i < n; i++)
		clip_normalize(out + i * (size_t)e->dim, e->dim);
out:
	if (c)
		give_back(e, c);
	free(ids);
	return rc;
}

int encoder_image(encoder *e, const void *data, size_t len, const clip_image_limits *limits,
                  float *out, int *w, int *h, api_err *err)
{
	float *px = malloc((size_t)3 * (size_t)e->size * (size_t)e->size * sizeof *px);
	clip_err ce;
	int rc = 0;
	if (!px)
		return api_fail(err, API_ENOMEM, "out of memory");
	if (clip_preprocess_buffer(e->m, data, len, limits, px, w, h, &ce) != CLIP_OK) {
		rc = api_from_clip(err, &ce);
		goto out;
	}
	clip_ctx *c = borrow(e);
	double t0 = metrics_now();
	if (clip_encode_images(c, 1, px, out, &ce) != CLIP_OK)
		rc = api_from_clip(err, &ce);
	else
		metrics_encode_done(METRICS_TOWER_IMAGE, 1, metrics_now() - t0);
	give_back(e, c);
	if (!rc)
		clip_normalize(out, e->dim);
out:
	free(px);
	return rc;
}
