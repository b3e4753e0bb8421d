/*
 * collections: the two vector indexes (images, texts) the daemon searches,
 * kept in step with the store. Owns the rule for the index sequence; see the
 * DESIGN comment in collections.c.
 *
 * Thread-safety: every function may be called from any thread. Searches run
 * concurrently; changes to one index are serialised.
 */
#ifndef CLIPD_COLLECTIONS_H
#define CLIPD_COLLECTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "index.h"
#include "store.h"

typedef struct collections collections;

/* Opens DIR/images.vidx and DIR/texts.vidx with vidx_open_synced (load the
 * snapshot, else build from the store; then catch up), logging which
 * happened. A snapshot of another model is an error; so is a setting of
 * io the index refuses. Starts the thread
 * that runs the indexes' maintenance (vidx_maintain: IVF training, HNSW
 * compaction, auto's move to IVF) while searches go on; coll_close stops
 * it. */
/* How the indexes are made: --index, --index-auto-threshold (0: the
 * index's own), --index-nprobe (0: the kind's default), --index-refine
 * (-1: the default). */
typedef struct coll_index_opts {
	const char *factory;
	size_t auto_at;
	int nprobe;
	int refine;
} coll_index_opts;

int coll_open(store *st, const char *dir, const coll_index_opts *io, int dim,
              const char *model_id, collections **out, api_err *err);
void coll_close(collections *c);

/* Brings one index up to date with the store: call after any store change
 * of that collection (embedding written, item deleted). */
int coll_sync(collections *c, store_kind kind, api_err *err);

/* k best of one collection for query q[dim] (normalised): scores[k], ids[k];
 * missing results have id -1. */
int coll_search(collections *c, store_kind kind, const float *q, int k, float *scores,
                int64_t *ids, api_err *err);

/* coll_search among the ids allow[nallow] (ascending): vidx_search_among. */
int coll_search_among(collections *c, store_kind kind, const float *q, int k,
                      const int64_t *allow, size_t nallow, float *scores, int64_t *ids,
                      api_err *err);

/* Writes both snapshots atomically. */
int coll_save(collections *c, api_err *err);

/* Writes the snapshots whose index changed since its last snapshot. */
int coll_save_changed(collections *c, api_err *err);

typedef struct coll_stats {
	size_t count, dead;
	uint64_t seq;
	const char *kind;     /* "exact", "hnsw", "ivf", "other" */
	const char *factory;
	vidx_state state;     /* what it is now and its maintenance */
} coll_stats;

void coll_get_stats(collections *c, store_kind kind, coll_stats *out);

#endif
