/*
 * worker.c: the background indexing threads.
 *
 * DESIGN: threads and state.
 * - n worker threads, each owning its clip_ctx and batch buffers (sized once
 *   at start: nothing in the loop allocates but the store's strings).
 * - The queue lives in the store (job_items); store_work_claim hands an item
 *   to exactly one worker, so workers share nothing but the pool's mutex.
 * - wp->mu guards `stop` and `kicks`; `idle` is signalled by uploads (kick),
 *   `progress` is broadcast after every batch for ?wait=true waiters.
 *   Nothing else is taken while holding wp->mu.
 * - An idle worker wakes at least every IDLE_MS to look for work queued by
 *   another way (start-up requeue) and, every SYNC_EVERY_MS, re-syncs both
 *   indexes, which heals an index whose sync failed after a store write.
 *   Worker 0, when idle, also writes the snapshots of changed indexes every
 *   SNAPSHOT_EVERY_MS, so a kill -9 leaves little to catch up at start-up.
 * - Stop: `stop` is set, everyone is woken, each worker finishes the batch in
 *   hand (embedding, index, completion) and exits. Claims that were never
 *   processed cannot exist: a worker only claims what it processes next. A
 *   kill -9 leaves claims behind; start-up requeues them.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "worker.h"

#define IDLE_MS 1000
#define SYNC_EVERY_MS 5000
/* Snapshots while running bound the catch-up after a crash. */
#define SNAPSHOT_EVERY_MS (10 * 60 * 1000)

struct worker {
	worker_pool *wp;
	pthread_t th;
	int started;
	clip_ctx *ctx;
	float *pixels;      /* [batch][3][S][S] */
	float *emb;         /* [batch][dim] */
	int32_t *ids;       /* [batch][context] */
	store_work *work;   /* [batch] */
	int *keep;          /* [batch] indexes into work of items still going */
	int64_t *item_ids;  /* [batch] */
	store_image *imgs;  /* [batch] rows of the batch being decoded */
	store_text *texts;  /* [batch] */
	int *wh;            /* [batch][2] decoded width and height of the kept items */
	store_embedding_item *put; /* [batch] */
};

struct worker_pool {
	app *a;
	int n, batch;
	struct worker *w;   /* [n] */
	pthread_mutex_t mu; /* see DESIGN */
	pthread_cond_t idle, progress;
	int stop;
	uint64_t kicks;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void deadline_in(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void fail_item(app *a, const store_work *wk, const char *why)
{
	store_err se;
	log_warn("%s %lld failed: %s", wk->kind == STORE_IMAGE ? "image" : "text",
	         (long long)wk->item_id, why);
	int rc = store_work_fail(a->st, wk->work_id, why, &se);
	if (rc != STORE_OK && rc != STORE_ENOTFOUND) /* ENOTFOUND: deleted meanwhile */
		log_error("recording the failure of item %lld: %s", (long long)wk->item_id, se.msg);
}

/* Stores the embeddings of the kept items and completes their job items in
 * one transaction, then syncs the index. */
static void commit_batch(struct worker *w, store_kind kind, int nkeep)
{
	app *a = w->wp->a;
	store_err se;
	api_err ae;
	for (int j = 0; j < nkeep; j++) {
		const store_work *wk = &w->work[w->keep[j]];
		float *v = w->emb + (size_t)j * (size_t)a->dim;
		clip_normalize(v, a->dim);
		w->put[j] = (store_embedding_item){
			.item_id = wk->item_id,
			.work_id = wk->work_id,
			.width = kind == STORE_IMAGE ? w->wh[2 * j] : 0,
			.height = kind == STORE_IMAGE ? w->wh[2 * j + 1] : 0,
			.vec = v,
		};
	}
	if (store_embeddings_put_many(a->st, kind, a->model_id, a->dim, w->put, (size_t)nkeep, &se) !=
	    STORE_OK) {
		/* Nothing was written: the items fail with the reason. */
		for (int j = 0; j < nkeep; j++)
			fail_item(a, &w->work[w->keep[j]], se.msg);
		return;
	}
	int ncommit = 0;
	for (int j = 0; j < nkeep; j++)
		ncommit += w->put[j].stored; /* 0: deleted while we worked, its job item failed */
	if (ncommit && coll_sync(a->coll, kind, &ae))
		log_error("%s index sync failed (retried later): %s",
		          kind == STORE_IMAGE ? "images" : "texts", ae.msg);
}

/* The rows of the claimed items, in one read. Non-zero (items failed)
 * when the store cannot be read. */
static int read_rows(struct worker *w, store_kind kind, size_t n)
{
	app *a = w->wp->a;
	store_err se;
	for (size_t i = 0; i < n; i++)
		w->item_ids[i] = w->work[i].item_id;
	int rc = kind == STORE_IMAGE ? store_images_get_many(a->st, w->item_ids, n, w->imgs, &se)
	                             : store_texts_get_many(a->st, w->item_ids, n, w->texts, &se);
	if (rc == STORE_OK)
		return 0;
	for (size_t i = 0; i < n; i++)
		fail_item(a, &w->work[i], se.msg);
	return -1;
}

static void process_images(struct worker *w, size_t n)
{
	app *a = w->wp->a;
	size_t S3 = (size_t)3 * (size_t)clip_model_image_size(a->model) *
	            (size_t)clip_model_image_size(a->model);
	int nkeep = 0;
	int64_t t0 = now_ms();
	if (read_rows(w, STORE_IMAGE, n))
		return;
	for (size_t i = 0; i < n; i++) {
		const store_work *wk = &w->work[i];
		store_image *img = &w->imgs[i];
		clip_err ce;
		char path[4096];
		if (img->id == 0)
			continue; /* deleted: its job item is failed already */
		blobs_path(a->blobs, img->sha256, path, sizeof path);
		int wd = 0, ht = 0;
		int rc = clip_preprocess_file(a->model, path, &a->limits, w->pixels + (size_t)nkeep * S3,
		                              &wd, &ht, &ce);
		if (rc != CLIP_OK) {
			fail_item(a, wk, ce.msg);
		} else {
			/* Recorded with the embedding when the header did not tell. */
			int changed = wd != img->width || ht != img->height;
			w->wh[2 * nkeep] = changed ? wd : 0;
			w->wh[2 * nkeep + 1] = changed ? ht : 0;
			w->keep[nkeep++] = (int)i;
		}
		store_image_clear(img);
	}
	if (nkeep == 0)
		return;
	clip_err ce;
	int64_t t1 = now_ms();
	double e0 = metrics_now();
	if (clip_encode_images(w->ctx, nkeep, w->pixels, w->emb, &ce) != CLIP_OK) {
		for (int j = 0; j < nkeep; j++)
			fail_item(a, &w->work[w->keep[j]], ce.msg);
		return;
	}
	metrics_encode_done(METRICS_TOWER_IMAGE, nkeep, metrics_now() - e0);
	int64_t t2 = now_ms();
	commit_batch(w, STORE_IMAGE, nkeep);
	log_debug("indexed %d images: decode %lld ms, encode %lld ms, commit %lld ms", nkeep,
	          (long long)(t1 - t0), (long long)(t2 - t1), (long long)(now_ms() - t2));
}

static void process_texts(struct worker *w, size_t n)
{
	app *a = w->wp->a;
	size_t C = (size_t)clip_model_context(a->model);
	int nkeep = 0;
	if (read_rows(w, STORE_TEXT, n))
		return;
	for (size_t i = 0; i < n; i++) {
		const store_work *wk = &w->work[i];
		store_text *t = &w->texts[i];
		clip_err ce;
		if (t->id == 0)
			continue;
		if (clip_tokenize(a->model, t->text, w->ids + (size_t)nkeep * C, NULL, &ce) != CLIP_OK)
			fail_item(a, wk, ce.msg);
		else
			w->keep[nkeep++] = (int)i;
		store_text_clear(t);
	}
	if (nkeep == 0)
		return;
	clip_err ce;
	double e0 = metrics_now();
	if (clip_encode_texts(w->ctx, nkeep, w->ids, w->emb, &ce) != CLIP_OK) {
		for (int j = 0; j < nkeep; j++)
			fail_item(a, &w->work[w->keep[j]], ce.msg);
		return;
	}
	metrics_encode_done(METRICS_TOWER_TEXT, nkeep, metrics_now() - e0);
	commit_batch(w, STORE_TEXT, nkeep);
	log_debug("indexed %d texts", nkeep);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	worker_pool *wp = w->wp;
	app *a = wp->a;
	uint64_t seen = 0;
	int64_t last_sync = now_ms(), last_save = now_ms();

	for (;;) {
		pthread_mutex_lock(&wp->mu);
		int stop = wp->stop;
		seen = wp->kicks;
		pthread_mutex_unlock(&wp->mu);
		if (stop)
			break;

		size_t n = 0;
		store_err se;
		store_kind kind = STORE_IMAGE;
		int rc = store_work_claim(a->st, STORE_IMAGE, w->work, (size_t)wp->batch, &n, &se);
		if (rc == STORE_OK && n == 0) {
			kind = STORE_TEXT;
			rc = store_work_claim(a->st, STORE_TEXT, w->work, (size_t)wp->batch, &n, &se);
		}
		if (rc != STORE_OK) {
			log_error("claiming work: %s", se.msg);
			n = 0;
		}
		if (n > 0) {
			if (kind == STORE_IMAGE)
				process_images(w, n);
			else
				process_texts(w, n);
			pthread_mutex_lock(&wp->mu);
			pthread_cond_broadcast(&wp->progress);
			pthread_mutex_unlock(&wp->mu);
			continue;
		}

		if (now_ms() - last_sync >= SYNC_EVERY_MS) {
			api_err ae;
			for (int k = 0; k < 2; k++)
				if (coll_sync(a->coll, (store_kind)k, &ae))
					log_error("periodic index sync: %s", ae.msg);
			last_sync = now_ms();
		}
		if (w == &wp->w[0] && now_ms() - last_save >= SNAPSHOT_EVERY_MS) {
			api_err ae;
			coll_save_changed(a->coll, &ae); /* failures are logged */
			last_save = now_ms();
		}
		struct timespec dl;
		deadline_in(&dl, IDLE_MS);
		pthread_mutex_lock(&wp->mu);
		while (!wp->stop && wp->kicks == seen)
			if (pthread_cond_timedwait(&wp->idle, &wp->mu, &dl) != 0)
				break;
		pthread_mutex_unlock(&wp->mu);
	}
	return NULL;
}

static void free_worker(struct worker *w)
{
	clip_ctx_free(w->ctx);
	free(w->pixels);
	free(w->emb);
	free(w->ids);
	free(w->work);
	free(w->keep);
	free(w->item_ids);
	free(w->imgs);
	free(w->texts);
	free(w->wh);
	free(w->put);
}

int worker_pool_start(app *a, int n, int batch, worker_pool **out, api_err *err)
{
	worker_pool *wp = calloc(1, sizeof *wp);
	int rc = 0;
	*out = NULL;
	if (!wp || !(wp->w = calloc((size_t)n, sizeof *wp->w))) {
		free(wp);
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	wp->a = a;
	wp->n = n;
	wp->batch = batch;
	pthread_mutex_init(&wp->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&wp->idle, &ca);
	pthread_cond_init(&wp->progress, &ca);
	pthread_condattr_destroy(&ca);

	size_t S = (size_t)clip_model_image_size(a->model), C = (size_t)clip_model_context(a->model);
	for (int i = 0; i < n; i++) {
		struct worker *w = &wp->w[i];
		clip_err ce;
		w->wp = wp;
		if (clip_ctx_new(a->model, batch, &w->ctx, &ce) != CLIP_OK) {
			rc = api_from_clip(err, &ce);
			goto out;
		}
		w->pixels = malloc((size_t)batch * 3 * S * S * sizeof *w->pixels);
		w->emb = malloc((size_t)batch * (size_t)a->dim * sizeof *w->emb);
		w->ids = malloc((size_t)batch * C * sizeof *w->ids);
		w->work = malloc((size_t)batch * sizeof *w->work);
		w->keep = malloc((size_t)batch * sizeof *w->keep);
		w->item_ids = malloc((size_t)batch * sizeof *w->item_ids);
		w->imgs = calloc((size_t)batch, sizeof *w->imgs);
		w->texts = calloc((size_t)batch, sizeof *w->texts);
		w->wh = malloc((size_t)batch * 2 * sizeof *w->wh);
		w->put = malloc((size_t)batch * sizeof *w->put);
		if (!w->pixels || !w->emb || !w->ids || !w->work || !w->keep || !w->item_ids ||
		    !w->imgs || !w->texts || !w->wh || !w->put) {
			rc = api_fail(err, API_ENOMEM, "out of memory");
			goto out;
		}
	}
	for (int i = 0; i < n; i++) {
		if (pthread_create(&wp->w[i].th, NULL, worker_main, &wp->w[i]) != 0) {
			rc = api_fail(err, API_EINTERNAL, "cannot start a worker thread");
			goto out;
		}
		wp->w[i].started = 1;
	}
	*out = wp;
	wp = NULL;
out:
	worker_pool_stop(wp);
	return rc;
}

void worker_pool_kick(worker_pool *wp)
{
	pthread_mutex_lock(&wp->mu);
	wp->kicks++;
	pthread_cond_broadcast(&wp->idle);
	pthread_mutex_unlock(&wp->mu);
}

int worker_pool_wait_job(worker_pool *wp, int64_t job_id, int timeout_ms, store_job *job, int *done,
                         api_err *err)
{
	int64_t end = now_ms() + timeout_ms;
	store_err se;
	*done = 0;
	for (;;) {
		if (store_job_get(wp->a->st, job_id, job, &se) != STORE_OK)
			return api_from_store(err, &se);
		if (job->state == STORE_JOB_DONE) {
			/* Its last embeddings may be committed but not yet in the
			 * index (see DESIGN). */
			api_err ae;
			for (int k = 0; k < 2; k++)
				if (coll_sync(wp->a->coll, (store_kind)k, &ae))
					log_error("index sync for a finished job (retried later): %s", ae.msg);
			*done = 1;
			return 0;
		}
		int64_t left = end - now_ms();
		if (left <= 0 || atomic_load(&wp->a->stopping))
			return 0; /* not done: the caller answers 202 */
		store_job_clear(job);
		struct timespec dl;
		/* Re-read at least every 250 ms: another process may do the work. */
		deadline_in(&dl, left < 250 ? (int)left : 250);
		pthread_mutex_lock(&wp->mu);
		pthread_cond_timedwait(&wp->progress, &wp->mu, &dl);
		pthread_mutex_unlock(&wp->mu);
	}
}

void worker_pool_stop(worker_pool *wp)
{
	if (!wp)
		return;
	pthread_mutex_lock(&wp->mu);
	wp->stop = 1;
	pthread_cond_broadcast(&wp->idle);
	pthread_cond_broadcast(&wp->progress);
	pthread_mutex_unlock(&wp->mu);
	for (int i = 0; i < wp->n; i++) {
		if (wp->w[i].started)
			pthread_join(wp->w[i].th, NULL);
		free_worker(&wp->w[i]);
	}
	pthread_mutex_destroy(&wp->mu);
	pthread_cond_destroy(&wp->idle);
	pthread_cond_destroy(&wp->progress);
	free(wp->w);
	free(wp);
}
