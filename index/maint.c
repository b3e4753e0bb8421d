/*
 * maint.c: rebuilding an index on a copy while searches go on.
 *
 * DESIGN: maintenance off the lock. Training an IVF index on 1M vectors
 * takes tens of seconds and rebuilding an HNSW graph minutes; done under
 * the exclusive lock (as adds used to train), every search waited that long.
 * Here a maintenance is four steps:
 *   1. exclusive, brief: mark it running and switch the journal on: from
 *      now each add and removal is also recorded there;
 *   2. shared: copy the live vectors and ids (writers wait for the copy,
 *      searches do not);
 *   3. no lock: build the new index from the copy (train, add);
 *   4. shared: replay the journal onto the new index, a chunk of 256
 *      entries per hold of the lock, until a few entries are left (a
 *      writer waits for one chunk, searches not at all); exclusive:
 *      replay those, exchange the two indexes' contents, switch the
 *      journal off.
 * Replaying is idempotent (each entry sets an id to a vector or to absent,
 * in order), so a change that reached the copy and the journal both lands
 * once. Only the end of step 4 holds searches back: its length is that of
 * a few dozen changes and the exchange; vidx_get_state
 * reports it (last_swap_ms), bench/index --maint measures the searches'
 * worst wait.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>

#include "index_int.h"

/* auto leaves exact search when vectors x dimensions pass this: 128 Ki
 * vectors of 512 dimensions, where one exact query passes ~10 ms on the
 * development machine's two cores (bench/index; README, "Large
 * collections"). */
#define AUTO_FLOATS ((size_t)128 * 1024 * 512)
/* HNSW compaction: this many removed nodes, and more than a fifth of the
 * graph. */
#define COMPACT_MIN 1000
/* auto retrains its IVF index once it holds this many times the vectors it
 * was trained on (the lists were sized for that count). */
#define RETRAIN_GROWTH 8
/* Adds in batches this large, checking for a cancel between them. */
#define ADD_BATCH 4096
/* Journal entries left for the exclusive lock to replay before the swap. */
#define REPLAY_EXCLUSIVE 32
#define REPLAY_CHUNK 256

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

void vidx_make_auto(vidx *v)
{
	v->auto_mode = 1;
	v->auto_at = AUTO_FLOATS / (size_t)v->dim;
	if (v->auto_at < 1)
		v->auto_at = 1;
}

const char *vidx_maint_name(vidx_maint m)
{
	static const char *const names[] = {"none", "train", "compact", "upgrade", "retrain"};
	return (unsigned)m < sizeof names / sizeof *names ? names[m] : "none";
}

void vidx_cancel_maintenance(vidx *v)
{
	__atomic_store_n(&v->cancel, 1, __ATOMIC_RELAXED);
}

void vidx_set_background(vidx *v, int background)
{
	pthread_rwlock_wrlock(&v->lock);
	v->background = background;
	pthread_rwlock_unlock(&v->lock);
}

static vidx_maint due_locked(vidx *v)
{
	if (v->maint != VIDX_MAINT_NONE)
		return VIDX_MAINT_NONE;
	if (v->kind == VIDX_HNSW)
		return v->ndead >= COMPACT_MIN && v->ndead * 5 > v->nslots ? VIDX_MAINT_COMPACT
		                                                            : VIDX_MAINT_NONE;
	if (v->auto_mode && v->kind == VIDX_EXACT)
		return v->ids.n >= v->auto_at ? VIDX_MAINT_UPGRADE : VIDX_MAINT_NONE;
	if (v->pending && v->background && (size_t)faiss_Index_ntotal(v->pending) >= v->train_min)
		return VIDX_MAINT_TRAIN;
	if (v->auto_mode && v->kind == VIDX_IVF && !v->pending && v->trained_n &&
	    v->ids.n >= RETRAIN_GROWTH * v->trained_n)
		return VIDX_MAINT_RETRAIN;
	return VIDX_MAINT_NONE;
}

vidx_maint vidx_maintenance_due(vidx *v)
{
	pthread_rwlock_rdlock(&v->lock);
	vidx_maint m = due_locked(v);
	pthread_rwlock_unlock(&v->lock);
	return m;
}

/* ---- the journal ------------------------------------------------------- */

static int journal_room(vidx *v, size_t more)
{
	struct journal *j = &v->jr;
	if (j->failed)
		return -1;
	if (j->n + more <= j->cap)
		return 0;
	size_t cap = j->cap ? j->cap : 256;
	while (cap < j->n + more)
		cap *= 2;
	int64_t *id = realloc(j->id, cap * sizeof *id);
	if (id)
		j->id = id;
	unsigned char *rm = realloc(j->rm, cap);
	if (rm)
		j->rm = rm;
	float *x = realloc(j->x, cap * (size_t)v->dim * sizeof *x);
	if (x)
		j->x = x;
	if (!id || !rm || !x) {
		/* The maintenance cannot replay what it missed: it gives up
		 * at its swap, and the current index stays. */
		j->failed = 1;
		return -1;
	}
	j->cap = cap;
	return 0;
}

void vidx_journal_set(vidx *v, size_t n, const int64_t *ids, const float *x)
{
	if (journal_room(v, n) != 0)
		return;
	size_t d = (size_t)v->dim;
	for (size_t i = 0; i < n; i++, v->jr.n++) {
		v->jr.id[v->jr.n] = ids[i];
		v->jr.rm[v->jr.n] = 0;
		memcpy(v->jr.x + v->jr.n * d, x + i * d, d * sizeof *x);
	}
}

void vidx_journal_remove(vidx *v, size_t n, const int64_t *ids)
{
	if (journal_room(v, n) != 0)
		return;
	for (size_t i = 0; i < n; i++, v->jr.n++) {
		v->jr.id[v->jr.n] = ids[i];
		v->jr.rm[v->jr.n] = 1;
	}
}

/* ---- copying and building ---------------------------------------------- */

/* Every live vector of v, under the shared lock. */
static int copy_locked(vidx *v, int64_t **ids, float **x, size_t *n, vidx_err *err)
{
	size_t d = (size_t)v->dim, m = v->ids.n, o = 0;
	if (v->has_vecs)
		return vecs_export(&v->vecs, ids, x, n, err);
	*ids = malloc((m ? m : 1) * sizeof **ids);
	*x = malloc((m ? m : 1) * d * sizeof **x);
	if (!*ids || !*x) {
		free(*ids), free(*x);
		*ids = NULL, *x = NULL;
		return vidx_fail(err, VIDX_ENOMEM, "out of memory copying %zu vectors", m);
	}
	if (v->kind == VIDX_HNSW) {
		for (size_t slot = 0; slot < v->nslots; slot++) {
			if (v->slot_id[slot] < 0)
				continue;
			if (faiss_Index_reconstruct(v->main, (idx_t)slot, *x + o * d) != 0)
				return vidx_faiss_fail(err, "copying the graph's vectors");
			(*ids)[o++] = v->slot_id[slot];
		}
	} else {
		/* Exact: an IDMap over Flat, whose rows are the vectors. */
		FaissIndexIDMap *map = faiss_IndexIDMap_cast(v->main);
		FaissIndexFlat *flat =
			map ? faiss_IndexFlat_cast(faiss_IndexIDMap_sub_index(map)) : NULL;
		float *xb;
		int64_t *row_id;
		size_t nx, nrows;
		if (!flat)
			return vidx_fail(err, VIDX_EFAISS, "exact index is not an IDMap over Flat");
		faiss_IndexFlat_xb(flat, &xb, &nx);
		faiss_IndexIDMap_id_map(map, &row_id, &nrows);
		if (nrows != m || nx != nrows * d)
			return vidx_fail(err, VIDX_EFAISS, "exact index holds %zu rows for %zu ids", nrows,
			                 m);
		memcpy(*x, xb, m * d * sizeof **x);
		memcpy(*ids, row_id, m * sizeof **ids);
		o = m;
	}
	*n = o;
	return VIDX_OK;
}

void vidx_auto_factory(size_t n, int dim, char *buf, size_t size)
{
	size_t nlist = 64;
	while (nlist * nlist < n && nlist < 16384)
		nlist *= 2;
	while (nlist > 64 && nlist * 39 > n)
		nlist /= 2;
	int m = dim / 8;
	while (m > 1 && dim % m != 0)
		m--;
	snprintf(buf, size, "IVF%zu,PQ%dnp", nlist, m > 0 ? m : 1);
}

/* A new index of factory holding ids[n], x[n][dim], with v's search
 * parameters. An IVF index is trained on all of them at once (FAISS's
 * k-means samples what it needs). */
static int build_new(vidx *v, const char *factory, size_t n, const int64_t *ids, const float *x,
                     vidx **out, vidx_err *err)
{
	vidx *nv = NULL;
	int rc = vidx_create(factory, v->dim, v->model, &nv, err);
	*out = NULL;
	if (rc != VIDX_OK)
		return rc;
	if (v->nprobe > 0 && nv->kind == VIDX_IVF)
		rc = vidx_set_param(nv, "nprobe", v->nprobe, err);
	if (rc == VIDX_OK && v->efsearch > 0 && nv->kind == VIDX_HNSW)
		rc = vidx_set_param(nv, "efSearch", v->efsearch, err);
	if (rc == VIDX_OK && nv->has_vecs && v->refine_set)
		nv->refine = v->refine, nv->refine_set = 1;
	if (rc == VIDX_OK && nv->pending && n >= nv->train_min) {
		if (faiss_Index_train(nv->main, (idx_t)n, x) != 0) {
			rc = vidx_faiss_fail(err, "training the index");
		} else {
			faiss_Index_free(nv->pending);
			nv->pending = NULL;
			nv->trained_n = n;
		}
	}
	for (size_t at = 0; rc == VIDX_OK && at < n; at += ADD_BATCH) {
		size_t m = n - at < ADD_BATCH ? n - at : ADD_BATCH;
		if (__atomic_load_n(&v->cancel, __ATOMIC_RELAXED))
			rc = vidx_fail(err, VIDX_ECANCELLED, "cancelled");
		else
			rc = vidx_add(nv, m, x + at * (size_t)v->dim, ids + at, err);
	}
	if (rc != VIDX_OK) {
		vidx_close(nv);
		return rc;
	}
	*out = nv;
	return VIDX_OK;
}

/* Replays journal entries [*done, n) onto nv, in order, consecutive sets as
 * one add; *done advances. Under v's lock, shared or exclusive (writers
 * append under the exclusive lock only). */
static int replay(vidx *v, vidx *nv, size_t *done, size_t max, vidx_err *err)
{
	struct journal *j = &v->jr;
	size_t d = (size_t)v->dim, end = max < j->n - *done ? *done + max : j->n;
	if (j->failed)
		return vidx_fail(err, VIDX_ENOMEM, "out of memory keeping the changes made meanwhile");
	for (size_t i = *done; i < end;) {
		size_t e = i + 1;
		int rc;
		if (j->rm[i]) {
			while (e < end && j->rm[e])
				e++;
			rc = vidx_remove(nv, e - i, j->id + i, NULL, err);
		} else {
			/* One batch may not name an id twice: stop at a repeat. */
			idset seen = {0};
			idset_put(&seen, j->id[i], 0);
			while (e < end && !j->rm[e] && !idset_get(&seen, j->id[e], NULL) &&
			       idset_put(&seen, j->id[e], 0) == 0)
				e++;
			idset_free(&seen);
			rc = vidx_add(nv, e - i, j->x + i * d, j->id + i, err);
		}
		if (rc != VIDX_OK)
			return rc;
		i = e;
		*done = e;
	}
	return VIDX_OK;
}

#define SWAP(a, b)                                                                             \
	do {                                                                                   \
		__typeof__(a) t_ = (a);                                                        \
		(a) = (b);                                                                     \
		(b) = t_;                                                                      \
	} while (0)

/* Exchanges what v and nv hold; v's constants (lock, dim, model, sequence,
 * journal, settings) stay. Under v's exclusive lock. */
static void exchange(vidx *v, vidx *nv)
{
	SWAP(v->main, nv->main);
	SWAP(v->pending, nv->pending);
	SWAP(v->train_min, nv->train_min);
	SWAP(v->ids, nv->ids);
	SWAP(v->slot_id, nv->slot_id);
	SWAP(v->nslots, nv->nslots);
	SWAP(v->slots_cap, nv->slots_cap);
	SWAP(v->ndead, nv->ndead);
	SWAP(v->has_vecs, nv->has_vecs);
	SWAP(v->vecs, nv->vecs);
	SWAP(v->refine, nv->refine);
	SWAP(v->kind, nv->kind);
	v->trained_n = nv->trained_n ? nv->trained_n : v->trained_n;
	/* A pointer vidx_factory gave out stays valid: a replaced string is
	 * kept until close; an equal one is not replaced. */
	if (strcmp(v->factory, nv->factory) != 0) {
		struct retired *r = malloc(sizeof *r);
		if (r) {
			r->s = v->factory;
			r->next = v->retired;
			v->retired = r;
			v->factory = nv->factory;
			nv->factory = NULL;
		}
		/* Without memory for the note, v keeps the old string: a
		 * misnamed kind in the stats, nothing worse. */
	}
}

int vidx_maintain(vidx *v, vidx_maint *did, vidx_err *err)
{
	char factory[128];
	int64_t *ids = NULL;
	float *x = NULL;
	size_t n = 0;
	vidx *nv = NULL;
	int rc = VIDX_OK;
	double t0 = now_ms();

	if (did)
		*did = VIDX_MAINT_NONE;
	pthread_rwlock_wrlock(&v->lock);
	vidx_maint m = due_locked(v);
	if (m != VIDX_MAINT_NONE) {
		v->maint = m;
		v->jr.on = 1;
		v->jr.failed = 0;
		v->jr.n = 0;
		if (m == VIDX_MAINT_UPGRADE || m == VIDX_MAINT_RETRAIN)
			vidx_auto_factory(v->ids.n, v->dim, factory, sizeof factory);
		else
			snprintf(factory, sizeof factory, "%s", v->factory);
	}
	pthread_rwlock_unlock(&v->lock);
	if (m == VIDX_MAINT_NONE)
		return VIDX_OK;

	/* A writer may come between the journal's start and the copy: its
	 * change is in both. The copy holds every change journaled before it
	 * (a writer applies and journals in one exclusive hold), so the
	 * replay starts after them: replayed twice, a replacement would leave
	 * the new graph a dead node more. */
	pthread_rwlock_rdlock(&v->lock);
	size_t done = v->jr.n;
	rc = copy_locked(v, &ids, &x, &n, err);
	pthread_rwlock_unlock(&v->lock);
	if (rc == VIDX_OK)
		rc = build_new(v, factory, n, ids, x, &nv, err);
	free(ids);
	free(x);

	/* Catch up under the shared lock while searches go on, until what
	 * is left is a few changes, so the exclusive part stays short. */
	/* Each hold of the shared lock replays at most REPLAY_CHUNK changes,
	 * so a writer (which needs the lock exclusively) waits for one chunk,
	 * not for all the changes of a long build. Replaying outpaces the
	 * writers, so this ends; the bound on holds is a safeguard. */
	for (int hold = 0; rc == VIDX_OK && hold < 100000; hold++) {
		pthread_rwlock_rdlock(&v->lock);
		size_t left = v->jr.n - done;
		if (left > REPLAY_EXCLUSIVE)
			rc = replay(v, nv, &done, REPLAY_CHUNK, err);
		pthread_rwlock_unlock(&v->lock);
		if (left <= REPLAY_EXCLUSIVE)
			break;
	}
	pthread_rwlock_wrlock(&v->lock);
	double t1 = now_ms();
	if (rc == VIDX_OK && (rc = replay(v, nv, &done, SIZE_MAX, err)) == VIDX_OK)
		exchange(v, nv);
	v->jr.on = 0;
	v->jr.n = 0;
	v->maint = VIDX_MAINT_NONE;
	double t2 = now_ms();
	if (rc == VIDX_OK) {
		v->maint_count++;
		v->maint_last_ms = t2 - t0;
		v->maint_swap_ms = t2 - t1;
		v->maint_error[0] = 0;
		v->train_error[0] = 0;
	} else {
		snprintf(v->maint_error, sizeof v->maint_error, "%s: %s", vidx_maint_name(m),
		         err ? err->msg : "failed");
	}
	/* The journal's memory goes with the maintenance. */
	free(v->jr.id), free(v->jr.rm), free(v->jr.x);
	memset(&v->jr, 0, sizeof v->jr);
	pthread_rwlock_unlock(&v->lock);
	vidx_close(nv); /* now holding the old index */
	if (rc == VIDX_OK && did)
		*did = m;
	return rc;
}

void vidx_get_state(vidx *v, vidx_state *out)
{
	static const char *const names[] = {"exact", "hnsw", "ivf", "other"};
	memset(out, 0, sizeof *out);
	pthread_rwlock_rdlock(&v->lock);
	out->kind = names[v->kind];
	out->factory = v->factory;
	out->requested = v->auto_mode ? "auto" : v->factory;
	out->count = v->ids.n;
	out->dead = v->ndead;
	out->pending = v->pending ? (size_t)faiss_Index_ntotal(v->pending) : 0;
	out->refine = v->has_vecs ? v->refine : 0;
	FaissIndexIVF *ivf = v->kind == VIDX_IVF ? faiss_IndexIVF_cast(v->main) : NULL;
	out->nprobe = ivf ? (int)faiss_IndexIVF_nprobe(ivf) : 0;
	out->auto_threshold = v->auto_mode ? v->auto_at : 0;
	out->running = (vidx_maint)v->maint;
	out->due = due_locked(v);
	out->maintenances = v->maint_count;
	out->last_ms = v->maint_last_ms;
	out->last_swap_ms = v->maint_swap_ms;
	snprintf(out->error, sizeof out->error, "%s", v->maint_error[0] ? v->maint_error
	                                                                : v->train_error);
	pthread_rwlock_unlock(&v->lock);
}

int vidx_lower_priority(void)
{
	/* PRIO_PROCESS with a thread id sets that thread's nice value. */
	return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
}
