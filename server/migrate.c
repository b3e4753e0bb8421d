/*
 * migrate.c: the model migration thread and the switch.
 *
 * DESIGN: one thread, the store as its state.
 * - The thread (nice 19) loops: while the work queue holds items
 *   (ordinary ingest comes first) it waits; else it lists up to MIG_BATCH
 *   ready items of a collection without an embedding for the target model
 *   and with an id past its cursor (images, then texts), decodes or
 *   tokenizes them with the target model, encodes them on its own context,
 *   stores them with store_embeddings_put_many (the target is named in kv
 *   migration.model.id, so the store accepts it) and syncs the target's
 *   indexes. An item the target cannot embed is marked failed. Nothing
 *   else is remembered: after kill -9 the listing starts where the
 *   embeddings end.
 * - Items that arrive meanwhile are embedded by the workers with the
 *   served model and, once ready, listed here too; deletions remove every
 *   model's embedding in the store, and the target's index follows at its
 *   next sync. When a pass from the start finds nothing, the switch:
 *   1. the target's encoders are created (a failure here leaves nothing
 *      half-done) and its indexes synced;
 *   2. store_model_switch: in one transaction, when still no ready item
 *      lacks a target embedding, kv model.* names the target, the
 *      migration keys go and the old model is marked for pruning (its
 *      embeddings are deleted in the background by worker 0, a batch per
 *      idle moment: one big DELETE would hold the store's writer).
 *      Otherwise (an item got ready in between) the loop goes on. A crash
 *      after this commit starts on the target as a normal start;
 *   3. space_swap: new requests get the target; requests in flight finish
 *      on the old space;
 *   4. worker_pool_retarget: the workers' batches in hand are refused by
 *      the store (STORE_ESTALE) and requeued, and they restart on the
 *      target;
 *   5. the target's indexes are synced again (removals committed between
 *      1 and 3), the old space is closed once unheld, its snapshots
 *      deleted.
 * - Locks: mu guards the figures migrate_get reads (a leaf). The thread
 *   holds no lock of ours while it encodes or waits in space_wait_unheld.
 * - Cores: nice applies to this thread only. Its products may borrow the
 *   model's one helper thread (model/gemm.c) when no other encode owns it,
 *   and run on OpenBLAS's pool for the f32 path, which run at normal
 *   priority; small batches bound how long they take at a time.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "migrate.h"
#include "space.h"
#include "worker.h"

#define MIG_BATCH 8
#define YIELD_MS 200      /* re-check of the work queue while it has items */
#define RETRY_MS 1000     /* after a failed switch or a store error */
#define PROGRESS_MS 1000  /* coverage and job counts at most this often */

struct migration {
	app *a;
	space *target;      /* ours until the switch gives it to app.sp */
	int64_t job_id;
	char to_id[32];     /* the target's, kept after the switch */
	int to_dim;
	pthread_t th;
	int started;
	pthread_mutex_t mu; /* guards stop and the figures below */
	pthread_cond_t cv;  /* stop was set */
	int stop;
	int switched;
	int64_t total, done, failed;
	uint64_t embedded;
	/* the thread's own */
	clip_ctx *ctx;
	float *pixels;      /* [MIG_BATCH][3][S][S] */
	int32_t *tokens;    /* [MIG_BATCH][context] */
	float *emb;         /* [MIG_BATCH][dim] */
	int64_t ids[MIG_BATCH];
	int keep[MIG_BATCH];
	store_image imgs[MIG_BATCH];
	store_text texts[MIG_BATCH];
	store_embedding_item put[MIG_BATCH];
	int64_t last_progress;
};

static int stopping(migration *m)
{
	pthread_mutex_lock(&m->mu);
	int s = m->stop;
	pthread_mutex_unlock(&m->mu);
	return s;
}

/* Waits ms or until stop. */
static void pause_ms(migration *m, int ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += ms / 1000;
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&m->mu);
	while (!m->stop)
		if (pthread_cond_timedwait(&m->cv, &m->mu, &dl) != 0)
			break;
	pthread_mutex_unlock(&m->mu);
}

/* Coverage from the store into the figures and the job, at most every
 * PROGRESS_MS unless forced. */
static void progress(migration *m, int force)
{
	store_err se;
	int64_t ready, have;
	if (!force && clock_ms() - m->last_progress < PROGRESS_MS)
		return;
	m->last_progress = clock_ms();
	if (store_model_coverage(m->a->st, m->target->model_id, &ready, &have, &se) != STORE_OK) {
		log_warn("migration progress: %s", se.msg);
		return;
	}
	pthread_mutex_lock(&m->mu);
	m->total = ready;
	m->done = have;
	int64_t failed = m->failed;
	pthread_mutex_unlock(&m->mu);
	if (store_job_set_counts(m->a->st, m->job_id, ready, have, failed, 0, &se) != STORE_OK)
		log_warn("migration job %lld: %s", (long long)m->job_id, se.msg);
}

static void fail_item(migration *m, store_kind kind, int64_t id, const char *why)
{
	store_err se;
	char msg[512];
	snprintf(msg, sizeof msg, "cannot be embedded with model %s: %s", m->target->model_id, why);
	log_warn("migration: %s %lld %s", kind == STORE_IMAGE ? "image" : "text", (long long)id, msg);
	if (store_item_set_failed(m->a->st, kind, id, msg, &se) != STORE_OK)
		log_error("migration: marking %lld failed: %s", (long long)id, se.msg);
	pthread_mutex_lock(&m->mu);
	m->failed++;
	pthread_mutex_unlock(&m->mu);
}

/* Reads, prepares, encodes and stores ids[0..n) of kind with the target
 * model. Returns STORE_ESTALE when the store no longer takes the target's
 * embeddings (the migration was given up elsewhere), else 0. */
static int embed_batch(migration *m, store_kind kind, size_t n)
{
	app *a = m->a;
	space *t = m->target;
	size_t S = (size_t)clip_model_image_size(t->model), C = (size_t)clip_model_context(t->model);
	store_err se;
	clip_err ce;
	int nkeep = 0, rc;
	rc = kind == STORE_IMAGE ? store_images_get_many(a->st, m->ids, n, m->imgs, &se)
	                         : store_texts_get_many(a->st, m->ids, n, m->texts, &se);
	if (rc != STORE_OK) {
		log_error("migration: reading items: %s", se.msg);
		pause_ms(m, RETRY_MS);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (kind == STORE_IMAGE) {
			store_image *img = &m->imgs[i];
			char path[4096];
			if (img->id) {
				blobs_path(a->blobs, img->sha256, path, sizeof path);
				if (clip_preprocess_file(t->model, path, &a->limits,
				                         m->pixels + (size_t)nkeep * 3 * S * S, NULL, NULL,
				                         &ce) == CLIP_OK)
					m->keep[nkeep++] = (int)i;
				else
					fail_item(m, kind, img->id, ce.msg);
			}
			store_image_clear(img);
		} else {
			store_text *tx = &m->texts[i];
			if (tx->id) {
				if (clip_tokenize(t->model, tx->text, m->tokens + (size_t)nkeep * C, NULL, &ce) ==
				    CLIP_OK)
					m->keep[nkeep++] = (int)i;
				else
					fail_item(m, kind, tx->id, ce.msg);
			}
			store_text_clear(tx);
		}
	}
	if (nkeep == 0)
		return 0;
	double e0 = clock_s();
	rc = kind == STORE_IMAGE ? clip_encode_images(m->ctx, nkeep, m->pixels, m->emb, &ce)
	                         : clip_encode_texts(m->ctx, nkeep, m->tokens, m->emb, &ce);
	if (rc != CLIP_OK) {
		for (int j = 0; j < nkeep; j++)
			fail_item(m, kind, m->ids[m->keep[j]], ce.msg);
		return 0;
	}
	log_debug("migration: %d %s encoded in %.0f ms", nkeep, kind == STORE_IMAGE ? "images" : "texts",
	          (clock_s() - e0) * 1000);
	for (int j = 0; j < nkeep; j++) {
		float *v = m->emb + (size_t)j * (size_t)t->dim;
		clip_normalize(v, t->dim);
		m->put[j] = (store_embedding_item){.item_id = m->ids[m->keep[j]], .vec = v};
	}
	rc = store_embeddings_put_many(a->st, kind, t->model_id, t->dim, m->put, (size_t)nkeep, &se);
	if (rc == STORE_ESTALE)
		return rc;
	if (rc != STORE_OK) {
		log_error("migration: storing embeddings (retried): %s", se.msg);
		pause_ms(m, RETRY_MS);
		return 0;
	}
	int stored = 0;
	for (int j = 0; j < nkeep; j++)
		stored += m->put[j].stored;
	pthread_mutex_lock(&m->mu);
	m->embedded += (uint64_t)stored;
	m->done += stored;
	pthread_mutex_unlock(&m->mu);
	api_err ae;
	if (coll_sync(t->coll, kind, &ae))
		log_error("migration: index sync (retried): %s", ae.msg);
	return 0;
}

static void remove_index_dir(app *a, const space *sp)
{
	char root[4096], dir[4096], path[4200];
	snprintf(root, sizeof root, "%s/index", a->cfg->data_dir);
	space_index_dir(root, sp->model_id, dir, sizeof dir);
	static const char *const files[] = {"images.vidx", "texts.vidx"};
	for (size_t i = 0; i < 2; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		unlink(path);
	}
	rmdir(dir);
}

/* The switch (see DESIGN). 1 when it happened, 0 to go on migrating. */
static int try_switch(migration *m)
{
	app *a = m->a;
	space *t = m->target;
	store_err se;
	api_err ae;
	int64_t missing = 0;
	if (!t->enc && space_open_encoders(t, a->cfg->encoders, a->cfg->batch, &ae)) {
		log_error("migration: cannot create the encoders of model %s (retried): %s",
		          t->model_id, ae.msg);
		pause_ms(m, RETRY_MS);
		return 0;
	}
	for (int k = 0; k < 2; k++)
		if (coll_sync(t->coll, (store_kind)k, &ae))
			log_error("migration: index sync: %s", ae.msg);
	if (store_model_switch(a->st, t->model_id, t->model_dir, t->dim, m->job_id, &missing, &se) !=
	    STORE_OK) {
		log_error("migration: the switch failed (retried): %s", se.msg);
		pause_ms(m, RETRY_MS);
		return 0;
	}
	if (missing) {
		log_debug("migration: %lld items became ready meanwhile", (long long)missing);
		return 0;
	}
	space *old = space_swap(a, t);
	log_info("switched to model %s (dim %d): searches use it from now on", t->model_id, t->dim);
	pthread_mutex_lock(&m->mu);
	m->switched = 1;
	m->target = NULL;
	pthread_mutex_unlock(&m->mu);
	if (worker_pool_retarget(a->workers, t, &ae))
		log_error("the workers cannot start on model %s (restart clipd): %s", t->model_id, ae.msg);
	for (int k = 0; k < 2; k++)
		if (coll_sync(t->coll, (store_kind)k, &ae))
			log_error("index sync after the switch (retried later): %s", ae.msg);
	space_wait_unheld(a, old);
	remove_index_dir(a, old);
	log_info("model %s unloaded; its embeddings and index are gone", old->model_id);
	space_close(old);
	/* Its weights and buffers went back to the heap; give the free pages
	 * back to the system, or the RSS of two models stays until exit. */
	malloc_trim(0);
	return 1;
}

static void lower_priority(void)
{
	/* Linux: nice is per thread, set on the thread's id. */
	pid_t tid = (pid_t)syscall(SYS_gettid);
	if (setpriority(PRIO_PROCESS, (id_t)tid, 19) != 0)
		log_warn("migration: cannot lower the thread's priority");
}

static void *mig_main(void *arg)
{
	migration *m = arg;
	app *a = m->a;
	space *t = m->target;
	int64_t cursor[2] = {0, 0};
	store_err se;
	lower_priority();
	progress(m, 1);
	log_info("migrating to model %s: %lld of %lld items have its embedding", t->model_id,
	         (long long)m->done, (long long)m->total);
	while (!stopping(m)) {
		int64_t depth = 0;
		if (store_work_depth(a->st, &depth, &se) == STORE_OK && depth > 0) {
			pause_ms(m, YIELD_MS);
			continue;
		}
		size_t n = 0;
		store_kind kind = STORE_IMAGE;
		int rc = store_missing_embeddings(a->st, STORE_IMAGE, t->model_id, cursor[0], m->ids,
		                                  MIG_BATCH, &n, &se);
		if (rc == STORE_OK && n == 0) {
			kind = STORE_TEXT;
			rc = store_missing_embeddings(a->st, STORE_TEXT, t->model_id, cursor[1], m->ids,
			                              MIG_BATCH, &n, &se);
		}
		if (rc != STORE_OK) {
			log_error("migration: listing items (retried): %s", se.msg);
			pause_ms(m, RETRY_MS);
			continue;
		}
		if (n == 0) {
			if (cursor[0] || cursor[1]) {
				/* Items below the cursors may have got ready since. */
				cursor[0] = cursor[1] = 0;
				continue;
			}
			progress(m, 1);
			if (try_switch(m))
				break;
			pause_ms(m, YIELD_MS);
			continue;
		}
		cursor[kind] = m->ids[n - 1];
		if (embed_batch(m, kind, n) == STORE_ESTALE) {
			log_error("migration: the data directory no longer migrates to model %s; stopped",
			          t->model_id);
			break;
		}
		progress(m, 0);
		if (a->cfg->migration_pause_ms)
			pause_ms(m, a->cfg->migration_pause_ms);
	}
	return NULL;
}

static void free_buffers(migration *m)
{
	clip_ctx_free(m->ctx);
	free(m->pixels);
	free(m->tokens);
	free(m->emb);
	m->ctx = NULL;
	m->pixels = m->emb = NULL;
	m->tokens = NULL;
}

int migrate_start(app *a, space *target, int64_t job_id, migration **out, api_err *err)
{
	migration *m = calloc(1, sizeof *m);
	clip_err ce;
	int rc = 0;
	*out = NULL;
	if (!m)
		return api_fail(err, API_ENOMEM, "out of memory");
	m->a = a;
	m->target = target;
	m->job_id = job_id;
	snprintf(m->to_id, sizeof m->to_id, "%s", target->model_id);
	m->to_dim = target->dim;
	store_job j;
	if (store_job_get(a->st, job_id, &j, NULL) == STORE_OK) {
		m->failed = j.failed; /* a resumed migration's failures so far */
		store_job_clear(&j);
	}
	pthread_mutex_init(&m->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cv, &ca);
	pthread_condattr_destroy(&ca);
	size_t S = (size_t)clip_model_image_size(target->model);
	size_t C = (size_t)clip_model_context(target->model);
	if (clip_ctx_new(target->model, MIG_BATCH, &m->ctx, &ce) != CLIP_OK) {
		rc = api_from_clip(err, &ce);
		goto out;
	}
	m->pixels = malloc(MIG_BATCH * 3 * S * S * sizeof *m->pixels);
	m->tokens = malloc(MIG_BATCH * C * sizeof *m->tokens);
	m->emb = malloc(MIG_BATCH * (size_t)target->dim * sizeof *m->emb);
	if (!m->pixels || !m->tokens || !m->emb) {
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	if (pthread_create(&m->th, NULL, mig_main, m) != 0) {
		rc = api_fail(err, API_EINTERNAL, "cannot start the migration thread");
		goto out;
	}
	m->started = 1;
	*out = m;
	return 0;
out:
	m->target = NULL; /* still the caller's on failure */
	migrate_stop(m);
	return rc;
}

void migrate_stop(migration *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->mu);
	m->stop = 1;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	if (m->started)
		pthread_join(m->th, NULL);
	free_buffers(m);
	if (m->target) {
		api_err ae;
		if (m->target->coll && coll_save(m->target->coll, &ae))
			log_error("migration: snapshots not saved (rebuilt from the database at start-up)");
		space_close(m->target);
	}
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
	free(m);
}

void migrate_get(migration *m, migrate_stats *out)
{
	memset(out, 0, sizeof *out);
	if (!m)
		return;
	pthread_mutex_lock(&m->mu);
	out->switched = m->switched;
	out->active = !m->switched;
	out->job_id = m->job_id;
	out->total = m->total;
	out->done = m->done < m->total ? m->done : m->total;
	out->failed = m->failed;
	out->embedded = m->embedded;
	pthread_mutex_unlock(&m->mu);
	snprintf(out->to_id, sizeof out->to_id, "%s", m->to_id);
	out->to_dim = m->to_dim;
}
