/*
 * worker.c: the consumer side of the work queue: the background indexing
 * threads that encode the items ingest.c (and POST /v1/texts) queued.
 *
 * DESIGN: threads and state.
 * - Each of the n workers is a pair of threads: a decoder, which claims a
 *   batch, reads its rows and decodes and preprocesses its images (or
 *   tokenizes its texts), and an encoder, which encodes that batch, commits
 *   it and signals progress. They hand batches over through two slots (a
 *   double buffer): while the encoder runs batch k from one slot, the
 *   decoder prepares batch k+1 in the other, so bulk ingest runs at the
 *   encoder's speed as long as a batch decodes faster than it encodes
 *   (bench/server). Every buffer is sized once at start: nothing in the
 *   loop allocates but the store's strings and libvips' own buffers.
 * - Threads on the cores: the workers' products already take every core
 *   (workers x threads per product = cores, main.c), and each worker adds
 *   one decoding thread. Measured on 2 cores (1 worker, bf16, ViT-B/32
 *   shape; figures vary with the machine's other load):
 *   - 640x480 JPEGs: a batch of 16 decodes in about 80 ms against about
 *     500 ms of encoding; over 200 images the encoder waited 0.1-0.2 s for
 *     the decoder and was encoding 98% of the time until done (bench/server
 *     "encoder busy"; 81-82% with decoding in line, before). What is left
 *     of the gap to the bare encoder (82-84% of its images/s, 78-81%
 *     before) is that the products run 10-15% slower beside the decoder:
 *     its tenth of a core is taken from one of their two threads, and a
 *     product waits for its slowest thread. Giving the decoder a core of
 *     its own (1 thread per product) cost far more: 16 images/s against
 *     30 in the same quiet minute.
 *   - 4000x3000 camera JPEGs (about 200 ms each to decode exactly, 70 with
 *     --fast-decode): ingest is bound by the one decoder (5-7 images/s).
 *     Two decoding threads per worker were tried: beside the encoder's two
 *     threads they slowed its products from 13-23 to 9-12 images/s (a
 *     product waits for its slowest thread) and ingest was no faster
 *     (4.7-5.6 images/s); --fast-decode is the remedy (7-14 images/s).
 *   So one decoder per worker, not a pool shared by the workers: a pool
 *   would add a cross-worker hand-off for no gain, and each worker keeps
 *   its claims to itself.
 * - Slots: slot[i].state is FREE (the decoder's to fill) or FULL (the
 *   encoder's to drain), changed only under w->mu with w->cv signalled.
 *   The decoder fills slots 0, 1, 0, ... in turn and the encoder drains
 *   them in the same order, so batches are committed in claim order. A
 *   slot's buffers belong to whichever thread its state names; the
 *   decoder's scratch (item_ids, imgs, texts) and the encoder's (emb, put)
 *   are each touched by one thread only.
 * - The queue lives in the store (job_items); store_work_claim hands an
 *   item to exactly one decoder. A batch in which every item failed still
 *   goes through its slot (nkeep 0), so progress is signalled after it.
 * - wp->mu guards `stop` and `kicks`; `idle` is signalled by uploads (kick)
 *   and waited on by idle decoders; `progress` is broadcast by encoders
 *   after every batch, for ?wait=true waiters. Lock order: w->mu and wp->mu
 *   are never held together.
 * - An idle decoder wakes at least every IDLE_MS to look for work queued by
 *   another way (start-up requeue) and, every SYNC_EVERY_MS, re-syncs both
 *   indexes, which heals an index whose sync failed after a store write.
 *   Worker 0's decoder, when idle, also writes the snapshots of changed
 *   indexes every SNAPSHOT_EVERY_MS, so a kill -9 leaves little to catch up
 *   at start-up, and deletes the embeddings of a model switched away from
 *   (migrate.c), PRUNE_BATCH rows per transaction for PRUNE_SLICE_MS per
 *   idle wake-up: the bulk delete never holds the store's writer for long.
 * - Stop: `stop` is set and everyone is woken. A decoder claims nothing
 *   more: it finishes the batch it is preparing, marks itself done and
 *   exits; its encoder drains every full slot (at most two batches: the one
 *   it runs and the one prepared meanwhile), then exits. So claims that
 *   were never processed still cannot exist after a clean stop; a kill -9
 *   leaves claims behind, and start-up requeues them.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "space.h"
#include "worker.h"

#define IDLE_MS 1000
#define SYNC_EVERY_MS 5000
/* Snapshots while running bound the catch-up after a crash. */
#define SNAPSHOT_EVERY_MS (10 * 60 * 1000)
/* Pruning a switched-away model's embeddings: rows per transaction, and
 * the most time one idle tick gives it. */
#define PRUNE_BATCH 1000
#define PRUNE_SLICE_MS 200

enum slot_state { SLOT_FREE, SLOT_FULL };

/* One batch on its way from the decoder to the encoder. */
struct slot {
	enum slot_state state; /* under w->mu; see DESIGN */
	store_kind kind;
	size_t n;           /* items claimed, work[0..n) */
	int nkeep;          /* items that go on to the encoder */
	int64_t decode_ms;  /* time the decoder spent on it */
	float *pixels;      /* [batch][3][S][S] of the kept images */
	int32_t *ids;       /* [batch][context] of the kept texts */
	store_work *work;   /* [batch] */
	int *keep;          /* [batch] indexes into work of the kept items */
	int *wh;            /* [batch][2] decoded width and height of the kept images */
};

struct worker {
	worker_pool *wp;
	pthread_t enc_th, dec_th;
	int enc_started, dec_started, sync_ready;
	pthread_mutex_t mu; /* guards the slots' state and dec_done */
	pthread_cond_t cv;  /* a slot changed state, or the decoder is done */
	int dec_done;       /* the decoder has exited: it fills no more slots */
	struct slot slot[2];
	/* the decoder's */
	int64_t *item_ids;  /* [batch] */
	store_image *imgs;  /* [batch] rows of the batch being decoded */
	store_text *texts;  /* [batch] */
	/* the encoder's */
	clip_ctx *ctx;
	float *emb;         /* [batch][dim] */
	store_embedding_item *put; /* [batch] */
	int64_t *release;   /* [batch] work ids to give back (ESTALE) */
};

struct worker_pool {
	app *a;
	space *sp;          /* the model the workers embed with: read by their
	                     * threads, written only while none runs
	                     * (worker_pool_retarget) */
	int n, batch;
	struct worker *w;   /* [n] */
	pthread_mutex_t mu; /* see DESIGN */
	pthread_cond_t idle, progress;
	int stop;
	uint64_t kicks;
	int prune_pending;  /* worker 0's decoder's: embeddings of an old model
	                     * may be left (store_embeddings_prune); set before
	                     * the threads start */
	int64_t pruned;
};

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

/* ---- the decoder ---------------------------------------------------------- */

/* The rows of the claimed items, in one read. Non-zero (items failed)
 * when the store cannot be read. */
static int read_rows(struct worker *w, struct slot *sl)
{
	app *a = w->wp->a;
	store_err se;
	for (size_t i = 0; i < sl->n; i++)
		w->item_ids[i] = sl->work[i].item_id;
	int rc = sl->kind == STORE_IMAGE
	                 ? store_images_get_many(a->st, w->item_ids, sl->n, w->imgs, &se)
	                 : store_texts_get_many(a->st, w->item_ids, sl->n, w->texts, &se);
	if (rc == STORE_OK)
		return 0;
	for (size_t i = 0; i < sl->n; i++)
		fail_item(a, &sl->work[i], se.msg);
	return -1;
}

/* Decodes and preprocesses the claimed images into the slot; the ones that
 * fail are failed here, with their reason. */
static void prepare_images(struct worker *w, struct slot *sl)
{
	app *a = w->wp->a;
	const clip_model *m = w->wp->sp->model;
	size_t S3 = (size_t)3 * (size_t)clip_model_image_size(m) * (size_t)clip_model_image_size(m);
	if (read_rows(w, sl))
		return;
	for (size_t i = 0; i < sl->n; i++) {
		const store_work *wk = &sl->work[i];
		store_image *img = &w->imgs[i];
		clip_err ce;
		char path[4096];
		if (img->id == 0)
			continue; /* deleted: its job item is failed already */
		blobs_path(a->blobs, img->sha256, path, sizeof path);
		int wd = 0, ht = 0;
		int rc = clip_preprocess_file(m, path, &a->limits,
		                              sl->pixels + (size_t)sl->nkeep * S3, &wd, &ht, &ce);
		if (rc != CLIP_OK) {
			fail_item(a, wk, ce.msg);
		} else {
			/* Recorded with the embedding when the header did not tell. */
			int changed = wd != img->width || ht != img->height;
			sl->wh[2 * sl->nkeep] = changed ? wd : 0;
			sl->wh[2 * sl->nkeep + 1] = changed ? ht : 0;
			sl->keep[sl->nkeep++] = (int)i;
		}
		store_image_clear(img);
	}
}

/* Tokenizes the claimed texts into the slot. */
static void prepare_texts(struct worker *w, struct slot *sl)
{
	app *a = w->wp->a;
	const clip_model *m = w->wp->sp->model;
	size_t C = (size_t)clip_model_context(m);
	if (read_rows(w, sl))
		return;
	for (size_t i = 0; i < sl->n; i++) {
		const store_work *wk = &sl->work[i];
		store_text *t = &w->texts[i];
		clip_err ce;
		if (t->id == 0)
			continue;
		if (clip_tokenize(m, t->text, sl->ids + (size_t)sl->nkeep * C, NULL, &ce) !=
		    CLIP_OK)
			fail_item(a, wk, ce.msg);
		else
			sl->keep[sl->nkeep++] = (int)i;
		store_text_clear(t);
	}
}

/* Claims the next batch into sl (images first, then texts). 0 when there
 * was nothing to claim. */
static size_t claim(struct worker *w, struct slot *sl)
{
	worker_pool *wp = w->wp;
	store_err se;
	size_t n = 0;
	sl->kind = STORE_IMAGE;
	int rc = store_work_claim(wp->a->st, STORE_IMAGE, sl->work, (size_t)wp->batch, &n, &se);
	if (rc == STORE_OK && n == 0) {
		sl->kind = STORE_TEXT;
		rc = store_work_claim(wp->a->st, STORE_TEXT, sl->work, (size_t)wp->batch, &n, &se);
	}
	if (rc != STORE_OK) {
		log_error("claiming work: %s", se.msg);
		n = 0;
	}
	return n;
}

/* Deletes embeddings of a model the data directory switched away from, for
 * at most PRUNE_SLICE_MS: the workers' lowest-priority work, done only
 * when they have nothing else. */
static void prune_some(worker_pool *wp)
{
	int64_t t0 = clock_ms(), n = 0;
	int done = 0;
	store_err se;
	while (!done && clock_ms() - t0 < PRUNE_SLICE_MS) {
		if (store_embeddings_prune(wp->a->st, PRUNE_BATCH, &n, &done, &se) != STORE_OK) {
			log_error("deleting unused embeddings (retried): %s", se.msg);
			return;
		}
		wp->pruned += n;
	}
	if (done) {
		wp->prune_pending = 0;
		if (wp->pruned)
			log_info("deleted %lld embeddings of models no longer used", (long long)wp->pruned);
	}
}

/* Nothing to claim: periodic upkeep, then a wait for a kick, a stop or
 * IDLE_MS. */
static void idle(struct worker *w, uint64_t seen, int64_t *last_sync, int64_t *last_save)
{
	worker_pool *wp = w->wp;
	if (clock_ms() - *last_sync >= SYNC_EVERY_MS) {
		api_err ae;
		for (int k = 0; k < 2; k++)
			if (coll_sync(wp->sp->coll, (store_kind)k, &ae))
				log_error("periodic index sync: %s", ae.msg);
		*last_sync = clock_ms();
	}
	if (w == &wp->w[0] && wp->prune_pending)
		prune_some(wp);
	if (w == &wp->w[0] && clock_ms() - *last_save >= SNAPSHOT_EVERY_MS) {
		api_err ae;
		coll_save_changed(wp->sp->coll, &ae); /* failures are logged */
		*last_save = clock_ms();
	}
	struct timespec dl;
	deadline_in(&dl, IDLE_MS);
	pthread_mutex_lock(&wp->mu);
	while (!wp->stop && wp->kicks == seen)
		if (pthread_cond_timedwait(&wp->idle, &wp->mu, &dl) != 0)
			break;
	pthread_mutex_unlock(&wp->mu);
}

static void *decoder_main(void *arg)
{
	struct worker *w = arg;
	worker_pool *wp = w->wp;
	int64_t last_sync = clock_ms(), last_save = clock_ms();
	int next = 0;

	for (;;) {
		struct slot *sl = &w->slot[next];
		/* The slot is free once the encoder has committed what it held. */
		pthread_mutex_lock(&w->mu);
		while (sl->state != SLOT_FREE)
			pthread_cond_wait(&w->cv, &w->mu);
		pthread_mutex_unlock(&w->mu);

		pthread_mutex_lock(&wp->mu);
		int stop = wp->stop;
		uint64_t seen = wp->kicks;
		pthread_mutex_unlock(&wp->mu);
		if (stop)
			break;

		int64_t t0 = clock_ms();
		sl->n = claim(w, sl);
		if (sl->n == 0) {
			idle(w, seen, &last_sync, &last_save);
			continue;
		}
		sl->nkeep = 0;
		if (sl->kind == STORE_IMAGE)
			prepare_images(w, sl);
		else
			prepare_texts(w, sl);
		sl->decode_ms = clock_ms() - t0;
		pthread_mutex_lock(&w->mu);
		sl->state = SLOT_FULL;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		next ^= 1;
	}
	pthread_mutex_lock(&w->mu);
	w->dec_done = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* ---- the encoder ---------------------------------------------------------- */

/* Stores the embeddings of the kept items and completes their job items in
 * one transaction, then syncs the index. */
static void commit_batch(struct worker *w, const struct slot *sl)
{
	app *a = w->wp->a;
	space *sp = w->wp->sp;
	store_err se;
	api_err ae;
	for (int j = 0; j < sl->nkeep; j++) {
		const store_work *wk = &sl->work[sl->keep[j]];
		float *v = w->emb + (size_t)j * (size_t)sp->dim;
		clip_normalize(v, sp->dim);
		w->put[j] = (store_embedding_item){
			.item_id = wk->item_id,
			.work_id = wk->work_id,
			.width = sl->kind == STORE_IMAGE ? sl->wh[2 * j] : 0,
			.height = sl->kind == STORE_IMAGE ? sl->wh[2 * j + 1] : 0,
			.vec = v,
		};
	}
	int rc = store_embeddings_put_many(a->st, sl->kind, sp->model_id, sp->dim, w->put,
	                                   (size_t)sl->nkeep, &se);
	if (rc == STORE_ESTALE) {
		/* The data directory switched models while this batch was
		 * encoded (migrate.c): the items go back to the queue for the
		 * workers of the new model. */
		for (int j = 0; j < sl->nkeep; j++)
			w->release[j] = sl->work[sl->keep[j]].work_id;
		if (store_work_release(a->st, w->release, (size_t)sl->nkeep, &se) != STORE_OK)
			log_error("returning items to the queue (requeued at start-up): %s", se.msg);
		return;
	}
	if (rc != STORE_OK) {
		/* Nothing was written: the items fail with the reason. */
		for (int j = 0; j < sl->nkeep; j++)
			fail_item(a, &sl->work[sl->keep[j]], se.msg);
		return;
	}
	int ncommit = 0;
	for (int j = 0; j < sl->nkeep; j++)
		ncommit += w->put[j].stored; /* 0: deleted while we worked, its job item failed */
	if (ncommit && coll_sync(sp->coll, sl->kind, &ae))
		log_error("%s index sync failed (retried later): %s",
		          sl->kind == STORE_IMAGE ? "images" : "texts", ae.msg);
}

/* Encodes and commits the kept items of a full slot. */
static void encode_slot(struct worker *w, const struct slot *sl, int64_t waited_ms)
{
	app *a = w->wp->a;
	int image = sl->kind == STORE_IMAGE;
	clip_err ce;
	if (sl->nkeep == 0)
		return;
	int64_t t1 = clock_ms();
	double e0 = clock_s();
	int rc = image ? clip_encode_images(w->ctx, sl->nkeep, sl->pixels, w->emb, &ce)
	               : clip_encode_texts(w->ctx, sl->nkeep, sl->ids, w->emb, &ce);
	if (rc != CLIP_OK) {
		for (int j = 0; j < sl->nkeep; j++)
			fail_item(a, &sl->work[sl->keep[j]], ce.msg);
		return;
	}
	metrics_encode_done(image ? METRICS_TOWER_IMAGE : METRICS_TOWER_TEXT, sl->nkeep,
	                    clock_s() - e0);
	int64_t t2 = clock_ms();
	commit_batch(w, sl);
	/* waited: how long this encoder sat idle for the batch (0 when the
	 * decoder kept ahead). */
	log_debug("indexed %d %s: decode %lld ms (waited %lld ms), encode %lld ms, commit %lld ms",
	          sl->nkeep, image ? "images" : "texts", (long long)sl->decode_ms,
	          (long long)waited_ms, (long long)(t2 - t1), (long long)(clock_ms() - t2));
}

static void *encoder_main(void *arg)
{
	struct worker *w = arg;
	worker_pool *wp = w->wp;
	int next = 0;

	for (;;) {
		struct slot *sl = &w->slot[next];
		int64_t t0 = clock_ms();
		pthread_mutex_lock(&w->mu);
		while (sl->state != SLOT_FULL && !w->dec_done)
			pthread_cond_wait(&w->cv, &w->mu);
		/* Slots fill in order: this one is the next to fill, if any. */
		int full = sl->state == SLOT_FULL;
		pthread_mutex_unlock(&w->mu);
		if (!full)
			break;
		encode_slot(w, sl, clock_ms() - t0);

		pthread_mutex_lock(&w->mu);
		sl->state = SLOT_FREE;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_mutex_lock(&wp->mu);
		pthread_cond_broadcast(&wp->progress);
		pthread_mutex_unlock(&wp->mu);
		next ^= 1;
	}
	return NULL;
}

/* ---- the pool ------------------------------------------------------------- */

static void halt_threads(worker_pool *wp);

static void free_worker(struct worker *w)
{
	clip_ctx_free(w->ctx);
	for (int k = 0; k < 2; k++) {
		struct slot *sl = &w->slot[k];
		free(sl->pixels);
		free(sl->ids);
		free(sl->work);
		free(sl->keep);
		free(sl->wh);
	}
	free(w->emb);
	free(w->item_ids);
	free(w->imgs);
	free(w->texts);
	free(w->put);
	free(w->release);
	if (w->sync_ready) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv);
	}
	worker_pool *wp = w->wp;
	memset(w, 0, sizeof *w);
	w->wp = wp;
}

/* Buffers and context of one worker; non-zero on failure (what was made is
 * released by free_worker). */
static int init_worker(worker_pool *wp, struct worker *w, api_err *err)
{
	const clip_model *m = wp->sp->model;
	size_t B = (size_t)wp->batch;
	size_t S = (size_t)clip_model_image_size(m), C = (size_t)clip_model_context(m);
	clip_err ce;
	w->wp = wp;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->sync_ready = 1;
	if (clip_ctx_new(m, wp->batch, &w->ctx, &ce) != CLIP_OK)
		return api_from_clip(err, &ce);
	int fail = 0;
	for (int k = 0; k < 2; k++) {
		struct slot *sl = &w->slot[k];
		sl->pixels = malloc(B * 3 * S * S * sizeof *sl->pixels);
		sl->ids = malloc(B * C * sizeof *sl->ids);
		sl->work = malloc(B * sizeof *sl->work);
		sl->keep = malloc(B * sizeof *sl->keep);
		sl->wh = malloc(B * 2 * sizeof *sl->wh);
		fail |= !sl->pixels || !sl->ids || !sl->work || !sl->keep || !sl->wh;
	}
	w->emb = malloc(B * (size_t)wp->sp->dim * sizeof *w->emb);
	w->item_ids = malloc(B * sizeof *w->item_ids);
	w->imgs = calloc(B, sizeof *w->imgs);
	w->texts = calloc(B, sizeof *w->texts);
	w->put = malloc(B * sizeof *w->put);
	w->release = malloc(B * sizeof *w->release);
	if (fail || !w->emb || !w->item_ids || !w->imgs || !w->texts || !w->put || !w->release)
		return api_fail(err, API_ENOMEM, "out of memory");
	return 0;
}

/* Sizes every worker for wp->sp and starts its threads; on failure what
 * was started is halted and freed (halt_threads). */
static int start_threads(worker_pool *wp, api_err *err)
{
	int rc = 0;
	wp->stop = 0;
	wp->prune_pending = 1; /* cheap to find there is nothing */
	wp->pruned = 0;
	for (int i = 0; i < wp->n; i++) {
		wp->w[i].wp = wp;
		if ((rc = init_worker(wp, &wp->w[i], err)))
			goto out;
	}
	for (int i = 0; i < wp->n; i++) {
		struct worker *w = &wp->w[i];
		if (pthread_create(&w->enc_th, NULL, encoder_main, w) != 0) {
			rc = api_fail(err, API_EINTERNAL, "cannot start a worker thread");
			goto out;
		}
		w->enc_started = 1;
		if (pthread_create(&w->dec_th, NULL, decoder_main, w) != 0) {
			/* Its encoder waits for a decoder that will never come. */
			pthread_mutex_lock(&w->mu);
			w->dec_done = 1;
			pthread_cond_signal(&w->cv);
			pthread_mutex_unlock(&w->mu);
			rc = api_fail(err, API_EINTERNAL, "cannot start a decoder thread");
			goto out;
		}
		w->dec_started = 1;
	}
	return 0;
out:
	halt_threads(wp);
	return rc;
}

int worker_pool_start(app *a, space *sp, int n, int batch, worker_pool **out, api_err *err)
{
	worker_pool *wp = calloc(1, sizeof *wp);
	int rc = 0;
	*out = NULL;
	if (!wp || !(wp->w = calloc((size_t)n, sizeof *wp->w))) {
		free(wp);
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	wp->a = a;
	wp->sp = sp;
	wp->n = n;
	wp->batch = batch;
	pthread_mutex_init(&wp->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&wp->idle, &ca);
	pthread_cond_init(&wp->progress, &ca);
	pthread_condattr_destroy(&ca);

	if ((rc = start_threads(wp, err)))
		goto out;
	*out = wp;
	wp = NULL;
out:
	worker_pool_stop(wp);
	return rc;
}

int worker_pool_retarget(worker_pool *wp, space *sp, api_err *err)
{
	halt_threads(wp);
	wp->sp = sp;
	return start_threads(wp, err);
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
	int64_t end = clock_ms() + timeout_ms;
	store_err se;
	*done = 0;
	for (;;) {
		if (store_job_get(wp->a->st, job_id, job, &se) != STORE_OK)
			return api_from_store(err, &se);
		if (job->state == STORE_JOB_DONE) {
			/* Its last embeddings may be committed but not yet in the
			 * index (see DESIGN). */
			for (int k = 0; k < 2; k++)
				space_sync(wp->a, (store_kind)k);
			*done = 1;
			return 0;
		}
		int64_t left = end - clock_ms();
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

/* Stops every worker after the batches in hand, joins its threads and
 * frees its buffers; the pool itself (its mutex, kicks, waiters) stays. */
static void halt_threads(worker_pool *wp)
{
	pthread_mutex_lock(&wp->mu);
	wp->stop = 1;
	pthread_cond_broadcast(&wp->idle);
	pthread_cond_broadcast(&wp->progress);
	pthread_mutex_unlock(&wp->mu);
	/* Decoders first: each finishes the batch it prepares, then its
	 * encoder drains the full slots and sees it done. */
	for (int i = 0; i < wp->n; i++)
		if (wp->w[i].dec_started)
			pthread_join(wp->w[i].dec_th, NULL);
	for (int i = 0; i < wp->n; i++) {
		if (wp->w[i].enc_started)
			pthread_join(wp->w[i].enc_th, NULL);
		free_worker(&wp->w[i]);
	}
}

void worker_pool_stop(worker_pool *wp)
{
	if (!wp)
		return;
	halt_threads(wp);
	pthread_mutex_destroy(&wp->mu);
	pthread_cond_destroy(&wp->idle);
	pthread_cond_destroy(&wp->progress);
	free(wp->w);
	free(wp);
}
