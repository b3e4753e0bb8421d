/*
 * space.c: a model and its indexes and encoders; the served one and its
 * swap.
 *
 * DESIGN: holders and the swap.
 * app.sp is read and written under app.space_mu, and each space counts its
 * holders (refs, under the same mutex). space_swap writes the new pointer;
 * space_wait_unheld then waits on app.space_cv until the old space's count is 0: a holder
 * took it before the swap and still uses its model, encoders and indexes,
 * which must outlive it. Nothing else is held while waiting, and no holder
 * waits for the swapper, so the wait ends when the last request on the old
 * space does. space_mu is a leaf: held only around these few lines.
 */
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "space.h"

int space_load(const char *dir, clip_precision p, space **out, api_err *err)
{
	space *sp = calloc(1, sizeof *sp);
	clip_options mo = {p};
	clip_err ce;
	int rc = 0;
	*out = NULL;
	/* Absolute: the data directory records it for a later switch of
	 * models, which may start from another working directory. */
	char *abs = realpath(dir, NULL);
	if (!sp || !(sp->model_dir = abs ? abs : strdup(dir))) {
		free(sp);
		free(abs);
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	if (clip_model_open_opts(dir, &mo, &sp->model, &ce) != CLIP_OK) {
		rc = api_fail(err, API_EBADREQ, "cannot load the model from %s: %s", dir, ce.msg);
		goto out;
	}
	if (clip_fingerprint(dir, sp->model_id, sizeof sp->model_id, &ce) != CLIP_OK) {
		rc = api_fail(err, API_EIO, "%s", ce.msg);
		goto out;
	}
	sp->dim = clip_model_dim(sp->model);
	*out = sp;
	sp = NULL;
out:
	space_close(sp);
	return rc;
}

void space_index_dir(const char *root, const char *model_id, char *out, size_t size)
{
	snprintf(out, size, "%s/%s", root, model_id);
}

int space_open_index(space *sp, store *st, const char *root, const coll_index_opts *io,
                     api_err *err)
{
	char dir[4096];
	space_index_dir(root, sp->model_id, dir, sizeof dir);
	if (g_mkdir_with_parents(dir, 0755) != 0)
		return api_fail(err, API_EIO, "cannot create the index directory %s", dir);
	return coll_open(st, dir, io, sp->dim, sp->model_id, &sp->coll, err);
}

int space_open_encoders(space *sp, int nctx, int batch, api_err *err)
{
	return encode_pool_open(sp->model, nctx, batch, &sp->enc, err);
}

void space_close(space *sp)
{
	if (!sp)
		return;
	coll_close(sp->coll);
	encode_pool_close(sp->enc);
	clip_model_close(sp->model);
	free(sp->model_dir);
	free(sp);
}

space *space_hold(app *a)
{
	pthread_mutex_lock(&a->space_mu);
	space *sp = a->sp;
	sp->refs++;
	pthread_mutex_unlock(&a->space_mu);
	return sp;
}

void space_release(app *a, space *sp)
{
	if (!sp)
		return;
	pthread_mutex_lock(&a->space_mu);
	if (--sp->refs == 0)
		pthread_cond_broadcast(&a->space_cv);
	pthread_mutex_unlock(&a->space_mu);
}

space *space_swap(app *a, space *next)
{
	pthread_mutex_lock(&a->space_mu);
	space *old = a->sp;
	a->sp = next;
	pthread_mutex_unlock(&a->space_mu);
	return old;
}

void space_wait_unheld(app *a, space *old)
{
	pthread_mutex_lock(&a->space_mu);
	while (old->refs > 0)
		pthread_cond_wait(&a->space_cv, &a->space_mu);
	pthread_mutex_unlock(&a->space_mu);
}

void space_sync(app *a, store_kind kind)
{
	api_err e;
	space *sp = space_hold(a);
	if (coll_sync(sp->coll, kind, &e))
		log_error("%s index sync failed (retried later): %s",
		          kind == STORE_IMAGE ? "images" : "texts", e.msg);
	space_release(a, sp);
}
