/*
 * collections.c: the image and text indexes and how they follow the store.
 *
 * DESIGN: the index sequence.
 * The store gives every embedding write and every removal the next value of
 * one sequence, inside the transaction that makes the change; transactions
 * commit one at a time, so committed changes always form a prefix of the
 * sequence. An index's sequence (saved in its snapshot) promises that every
 * change up to it is in the index, so it may only advance over a gap-free
 * prefix. Two workers that each add "their" vector and set the sequence to
 * "their" number would break that promise: worker A (seq 7) could set 7
 * while worker B's seq 6 is not yet added, and a snapshot then would skip 6
 * forever.
 * The rule here: nobody calls vidx_add or vidx_set_seq directly. After a
 * change is committed to the store, its writer calls coll_sync, which, under
 * the index's write mutex, runs vidx_sync: read every change after the
 * index's sequence from one consistent read of the store, apply them in
 * order, and advance the sequence to the last one applied. Whatever a
 * concurrent writer committed meanwhile is either in that read (and applied
 * now, in order) or after it (applied by that writer's own coll_sync). The
 * cost is one indexed range query per batch of changes. Deletions follow the
 * same path, so a removal can never be overtaken by an older add.
 *
 * Locks: wmu[kind] serialises changes and snapshot writes of one index; it
 * is taken alone (never with another lock of ours) and FAISS/the store take
 * their own internal locks underneath. Searches take no lock of ours: vidx
 * allows searches concurrent with one writer.
 *
 * Maintenance: one thread (maint_main) looks every second for work an
 * index has due (vidx_maintenance_due) and does it with vidx_maintain,
 * which rebuilds on a copy and needs no lock of ours: changes go on under
 * wmu meanwhile. The indexes are in background mode, so an add never
 * trains inline. After a maintenance the index's snapshot is out of date
 * (the same sequence, another structure): it is marked unsaved, and the
 * next periodic save writes it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "collections.h"
#include "log.h"

struct collections {
	store *st;
	vidx *v[2];                 /* by store_kind */
	char *path[2];
	pthread_mutex_t wmu[2];     /* see DESIGN */
	uint64_t saved_seq[2];      /* sequence of the last snapshot written; under wmu */
	int saved[2];
	pthread_t maint;
	int maint_started;
	pthread_mutex_t mmu;        /* guards stop; mcv wakes the thread to stop */
	pthread_cond_t mcv;
	int stop;
};

static void *maint_main(void *p);

static const char *const names[2] = {"images", "texts"};

int coll_open(store *st, const char *dir, const coll_index_opts *io, int dim,
              const char *model_id, collections **out, api_err *err)
{
	collections *c = calloc(1, sizeof *c);
	int rc = 0;
	*out = NULL;
	if (!c)
		return api_fail(err, API_ENOMEM, "out of memory");
	c->st = st;
	for (int k = 0; k < 2; k++)
		pthread_mutex_init(&c->wmu[k], NULL);
	pthread_mutex_init(&c->mmu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->mcv, &ca);
	pthread_condattr_destroy(&ca);
	for (int k = 0; k < 2; k++) {
		char note[512];
		vidx_err verr;
		if (asprintf(&c->path[k], "%s/%s.vidx", dir, names[k]) < 0) {
			c->path[k] = NULL;
			rc = api_fail(err, API_ENOMEM, "out of memory");
			goto out;
		}
		if (vidx_open_synced(c->path[k], st, (store_kind)k, io->factory, dim, model_id, &c->v[k], note,
		                     sizeof note, &verr) != VIDX_OK) {
			rc = api_from_vidx(err, &verr);
			goto out;
		}
		log_info("%s index (%s): %s; %zu vectors", names[k], vidx_factory(c->v[k]), note,
		         vidx_count(c->v[k]));
		c->saved[k] = strncmp(note, "loaded snapshot", 15) == 0;
		c->saved_seq[k] = vidx_seq(c->v[k]);
		vidx_set_background(c->v[k], 1);
		int is_auto = !strcmp(vidx_requested(c->v[k]), "auto");
		const char *kind = vidx_kind_name(c->v[k]);
		if ((io->auto_at && is_auto &&
		     vidx_set_param(c->v[k], "auto_threshold", (double)io->auto_at, &verr) != VIDX_OK) ||
		    (io->nprobe > 0 && (is_auto || !strcmp(kind, "ivf")) &&
		     vidx_set_param(c->v[k], "nprobe", io->nprobe, &verr) != VIDX_OK) ||
		    (io->refine >= 0 && (is_auto || !strcmp(kind, "ivf") || !strcmp(kind, "other")) &&
		     vidx_set_param(c->v[k], "refine", io->refine, &verr) != VIDX_OK)) {
			rc = api_from_vidx(err, &verr);
			goto out;
		}
	}
	if (pthread_create(&c->maint, NULL, maint_main, c) != 0) {
		rc = api_fail(err, API_EINTERNAL, "cannot start the index maintenance thread");
		goto out;
	}
	c->maint_started = 1;
	*out = c;
	c = NULL;
out:
	coll_close(c);
	return rc;
}

void coll_close(collections *c)
{
	if (!c)
		return;
	if (c->maint_started) {
		pthread_mutex_lock(&c->mmu);
		c->stop = 1;
		pthread_cond_signal(&c->mcv);
		pthread_mutex_unlock(&c->mmu);
		for (int k = 0; k < 2; k++)
			vidx_cancel_maintenance(c->v[k]);
		pthread_join(c->maint, NULL);
	}
	pthread_mutex_destroy(&c->mmu);
	pthread_cond_destroy(&c->mcv);
	for (int k = 0; k < 2; k++) {
		vidx_close(c->v[k]);
		free(c->path[k]);
		pthread_mutex_destroy(&c->wmu[k]);
	}
	free(c);
}

static void *maint_main(void *p)
{
	collections *c = p;
	/* Rebuilds yield the cores to searches (issue 13: no search waits on
	 * maintenance); this thread does nothing else. */
	if (vidx_lower_priority() != 0)
		log_warn("index maintenance: cannot lower its CPU priority: %s", strerror(errno));
	pthread_mutex_lock(&c->mmu);
	while (!c->stop) {
		pthread_mutex_unlock(&c->mmu);
		for (int k = 0; k < 2; k++) {
			vidx_maint due = vidx_maintenance_due(c->v[k]);
			if (due == VIDX_MAINT_NONE)
				continue;
			vidx_err verr;
			vidx_maint did;
			vidx_state st;
			log_info("%s index: %s started (%s, %zu vectors); searches go on", names[k],
			         vidx_maint_name(due), vidx_factory(c->v[k]), vidx_count(c->v[k]));
			if (vidx_maintain(c->v[k], &did, &verr) != VIDX_OK) {
				if (verr.code != VIDX_ECANCELLED)
					log_error("%s index: %s failed: %s", names[k], vidx_maint_name(due),
					          verr.msg);
				continue;
			}
			vidx_get_state(c->v[k], &st);
			log_info("%s index: %s done in %.0f ms (the exchange %.2f ms): now %s", names[k],
			         vidx_maint_name(did), st.last_ms, st.last_swap_ms, st.factory);
			pthread_mutex_lock(&c->wmu[k]);
			c->saved[k] = 0;
			pthread_mutex_unlock(&c->wmu[k]);
		}
		pthread_mutex_lock(&c->mmu);
		if (c->stop)
			break;
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		t.tv_sec += 1;
		pthread_cond_timedwait(&c->mcv, &c->mmu, &t);
	}
	pthread_mutex_unlock(&c->mmu);
	return NULL;
}

int coll_sync(collections *c, store_kind kind, api_err *err)
{
	vidx_err verr;
	pthread_mutex_lock(&c->wmu[kind]);
	int rc = vidx_sync(c->v[kind], c->st, kind, NULL, &verr);
	pthread_mutex_unlock(&c->wmu[kind]);
	return rc == VIDX_OK ? 0 : api_from_vidx(err, &verr);
}

int coll_search(collections *c, store_kind kind, const float *q, int k, float *scores,
                int64_t *ids, api_err *err)
{
	vidx_err verr;
	if (vidx_search(c->v[kind], 1, q, k, scores, ids, &verr) != VIDX_OK)
		return api_from_vidx(err, &verr);
	return 0;
}

int coll_search_among(collections *c, store_kind kind, const float *q, int k,
                      const int64_t *allow, size_t nallow, float *scores, int64_t *ids,
                      api_err *err)
{
	vidx_err verr;
	if (vidx_search_among(c->v[kind], q, k, allow, nallow, scores, ids, &verr) != VIDX_OK)
		return api_from_vidx(err, &verr);
	return 0;
}

static int save(collections *c, int only_changed, api_err *err)
{
	int rc = 0;
	for (int k = 0; k < 2; k++) {
		vidx_err verr;
		pthread_mutex_lock(&c->wmu[k]);
		uint64_t seq = vidx_seq(c->v[k]);
		size_t n = vidx_count(c->v[k]);
		if (only_changed && c->saved[k] && c->saved_seq[k] == seq) {
			pthread_mutex_unlock(&c->wmu[k]);
			continue;
		}
		int r = vidx_save(c->v[k], c->path[k], &verr);
		if (r == VIDX_OK) {
			c->saved[k] = 1;
			c->saved_seq[k] = seq;
		}
		pthread_mutex_unlock(&c->wmu[k]);
		if (r != VIDX_OK) {
			if (!rc)
				rc = api_from_vidx(err, &verr);
			log_error("%s index: snapshot not saved: %s", names[k], verr.msg);
		} else {
			log_info("%s index: saved snapshot at sequence %llu (%zu vectors)", names[k],
			         (unsigned long long)seq, n);
		}
	}
	return rc;
}

int coll_save(collections *c, api_err *err)
{
	return save(c, 0, err);
}

int coll_save_changed(collections *c, api_err *err)
{
	return save(c, 1, err);
}

void coll_get_stats(collections *c, store_kind kind, coll_stats *out)
{
	vidx *v = c->v[kind];
	out->count = vidx_count(v);
	out->dead = vidx_dead(v);
	out->seq = vidx_seq(v);
	vidx_get_state(v, &out->state);
	out->kind = out->state.kind;
	out->factory = out->state.factory;
}
