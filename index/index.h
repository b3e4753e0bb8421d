/*
 * index: the vector index over one collection, on FAISS through its C API.
 *
 * Vectors are float32 of a fixed dimension and are compared by inner
 * product; callers pass L2-normalised vectors, so scores are cosines. Every
 * vector carries the caller's 64-bit id (the store's item id).
 *
 * Kinds, chosen by a FAISS factory string (aliases in brackets):
 *   "Flat"        [exact]  exhaustive search; the default.
 *   "HNSW32,Flat" [hnsw]   graph search for large collections. FAISS cannot
 *                          remove from HNSW: a removed vector stays in the
 *                          graph, is hidden from results, and goes away when
 *                          the index is rebuilt (vidx_dead tells how many).
 *   "IVFn,PQm"    [ivfpq]  compressed, for collections beyond memory
 *                          ("ivfpq" is IVF1024,PQ<dim/8>np). It needs
 *                          training: until it has enough vectors (39 per
 *                          list, and at least 9984 with PQ codes) they are
 *                          searched exactly, then it trains on them and
 *                          switches over by itself. IVF must come first in
 *                          the string (no transform such as PCA before it).
 * Other FAISS factory strings (PQ, SQ8, ...) work the same way.
 *   "auto"                 exact while small; past a threshold (about 128k
 *                          vectors of 512 dimensions: where one exact query
 *                          passes ~10 ms on two cores, see README) an
 *                          IVF-PQ index with re-ranking, trained by
 *                          vidx_maintain, retrained as it grows 8-fold.
 * IVF and other compressed kinds keep the float vectors too (a file mapped
 * beside the snapshot, PATH.vec), to re-rank candidates with: recall close
 * to exact search at the price of reading refine * k vectors a query.
 * Adding an id that is already present replaces its vector.
 *
 * Snapshots: vidx_save writes the whole index atomically (temporary file,
 * fsync, rename, fsync of the directory) with a header naming the model,
 * dimension, kind and the highest store sequence it contains, and a CRC-32
 * of the whole file (header included, the CRC's own bytes taken as zero). vidx_load refuses a snapshot of another model or dimension,
 * and a damaged one, with a clear message. vidx_sync brings an index up to
 * date from the store, which stays the source of truth.
 *
 * Ownership: a vidx is owned by its creator and freed with vidx_close.
 * Result arrays are the caller's.
 *
 * Errors: functions return a vidx_code (VIDX_OK is 0) and fill err, when
 * non-NULL, with the code and one message.
 *
 * Thread-safety: any number of threads may search at once while one other
 * thread adds, removes or saves; see the DESIGN comment in index.c.
 */
#ifndef CLIPD_INDEX_H
#define CLIPD_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef enum vidx_code {
	VIDX_OK = 0,
	VIDX_EINVAL,      /* bad argument, or a factory string FAISS rejects */
	VIDX_EMISMATCH,   /* snapshot of another model or dimension */
	VIDX_EFORMAT,     /* snapshot in a format version this build does not read */
	VIDX_ECORRUPT,    /* damaged or truncated snapshot */
	VIDX_ENOENT,      /* no snapshot at that path */
	VIDX_EIO,
	VIDX_ENOMEM,
	VIDX_ESTORE,      /* the store failed while syncing; message is the store's */
	VIDX_EFAISS,      /* anything else FAISS reported */
	VIDX_ECANCELLED,  /* a maintenance stopped by vidx_cancel_maintenance */
} vidx_code;

typedef struct vidx_err {
	vidx_code code;
	char msg[256];
} vidx_err;

typedef struct vidx vidx;

/* Creates an empty index of dimension dim for the named model. factory is a
 * FAISS factory string or one of the aliases above; NULL or "" means exact.
 * On failure *out is NULL. */
int vidx_create(const char *factory, int dim, const char *model, vidx **out, vidx_err *err);

/* Frees the index. Accepts NULL. */
void vidx_close(vidx *v);

/* Adds n vectors x[n][dim] with ids[n]; an id already present is replaced.
 * Ids must be >= 0. */
int vidx_add(vidx *v, size_t n, const float *x, const int64_t *ids, vidx_err *err);

/* Removes the ids present among ids[n]; *removed (optional) counts them. */
int vidx_remove(vidx *v, size_t n, const int64_t *ids, size_t *removed, vidx_err *err);

/* Searches nq queries q[nq][dim] for their k best: scores[nq][k] (inner
 * product, best first) and ids[nq][k]. Missing results have id -1 and score
 * -INFINITY. */
int vidx_search(vidx *v, size_t nq, const float *q, int k, float *scores, int64_t *ids,
                vidx_err *err);

/* Searches one query q[dim] for its k best among the ids allow[nallow]
 * (ascending, distinct; ids not in the index are ignored), as vidx_search
 * otherwise. The filter is applied inside the search (filter.c): when k
 * of the allowed ids are in the index, k are returned, however few the
 * filter keeps; exact and compressed kinds score them exactly. */
int vidx_search_among(vidx *v, const float *q, int k, const int64_t *allow, size_t nallow,
                      float *scores, int64_t *ids, vidx_err *err);

/* Sets a search parameter: "efSearch" (HNSW), "nprobe" (IVF), "refine"
 * (IVF and other compressed kinds: candidates per result re-ranked by the
 * exact vectors, 0 for none) or "auto_threshold" (auto: the vector count
 * at which it moves from exact to IVF). */
int vidx_set_param(vidx *v, const char *name, double value, vidx_err *err);

/* Whether id is in the index. */
int vidx_contains(vidx *v, int64_t id);

size_t vidx_count(vidx *v);       /* live vectors */
size_t vidx_dead(vidx *v);        /* removed but still held (HNSW) */
int vidx_dim(const vidx *v);
const char *vidx_model(const vidx *v);
const char *vidx_factory(const vidx *v);  /* the factory string, aliases expanded */
const char *vidx_requested(const vidx *v); /* "auto", or the factory string */
const char *vidx_kind_name(const vidx *v); /* "exact", "hnsw", "ivf" or "other" */

/* The highest store sequence whose change is in the index. The caller sets
 * it only when every change up to it has been applied (vidx_sync does). */
uint64_t vidx_seq(vidx *v);
void vidx_set_seq(vidx *v, uint64_t seq);

/* The factory string "auto" moves to for n vectors of dim: IVF with about
 * sqrt(n) lists (a power of two, 64 to 16384, at least 39 training points
 * each) and 8-dimensional PQ sub-vectors as "ivfpq", re-ranked
 * (maint.c). bench/index --stream builds it directly. */
void vidx_auto_factory(size_t n, int dim, char *buf, size_t size);

/* Writes a snapshot to path atomically. */
int vidx_save(vidx *v, const char *path, vidx_err *err);

/* Loads a snapshot. model and dim must match what it was built for
 * (VIDX_EMISMATCH otherwise); VIDX_ENOENT when there is none. */
int vidx_load(const char *path, const char *model, int dim, vidx **out, vidx_err *err);

/* Applies every change of collection kind from the store newer than
 * vidx_seq(v), and advances the sequence. *applied (optional) counts them. */
int vidx_sync(vidx *v, store *s, store_kind kind, size_t *applied, vidx_err *err);

/* Builds an index from scratch from the store. */
int vidx_build(store *s, store_kind kind, const char *factory, int dim, const char *model,
               vidx **out, vidx_err *err);

/* Start-up: loads the snapshot at path when there is a usable one for this
 * model, dimension and factory, else builds from the store; then syncs.
 * note (optional, note_size bytes) says which happened and why. A snapshot
 * of another model or dimension is an error (VIDX_EMISMATCH): the data
 * directory belongs to another model. */
int vidx_open_synced(const char *path, store *s, store_kind kind, const char *factory, int dim,
                     const char *model, vidx **out, char *note, size_t note_size, vidx_err *err);

/* ---- near-duplicate groups (groups.c) -------------------------------------
 *
 * A grouping joins two ids when a k-nearest-neighbour search from one finds
 * the other with a score >= threshold; its groups are the connected sets of
 * two or more ids (one group may be a chain a~b~c where a and c are far
 * apart). The searches are the caller's (vidx_groups_search runs them on an
 * index): what a group holds is exactly what those searches found. Memory
 * is bounded by the number of grouped ids, never by the number of pairs.
 * A vidx_groups is used by one thread while it is built; once finished it
 * is read-only and any number of threads may read it. */
typedef struct vidx_groups vidx_groups;

/* An empty grouping at threshold (-1 <= threshold <= 1). */
int vidx_groups_new(float threshold, vidx_groups **out, vidx_err *err);
void vidx_groups_free(vidx_groups *g);   /* accepts NULL */

/* Joins, for each query q < nq, qids[q] with every result ids[q][j] (j < k)
 * that is >= 0, not qids[q] itself, and scores[q][j] >= the threshold. */
int vidx_groups_join(vidx_groups *g, size_t nq, const int64_t *qids, int k, const float *scores,
                     const int64_t *ids, vidx_err *err);

/* Searches v for the k nearest neighbours of each of x[n][dim] (whose ids
 * are ids[n]; the vector itself is asked for too and skipped) in batches,
 * and joins them as vidx_groups_join. Memory: about 12 * (k + 1) KB of
 * results at a time beside FAISS's own. */
int vidx_groups_search(vidx_groups *g, vidx *v, size_t n, const float *x, const int64_t *ids,
                       int k, vidx_err *err);

/* A new index to group n vectors of dimension dim with: exact ("Flat") up
 * to 10,000 vectors; beyond, "IVF<n/100>,Flat" (at most 4096 lists; it
 * trains by itself once it holds 39 vectors per list) searched in 8 lists
 * per query, so a vector is compared with about 8 * 100 others instead of
 * all of them and a pair is found when the second lies in one of the 8
 * lists nearest the first. Its scores are exact inner products. Add the
 * vectors, then vidx_groups_search them. */
int vidx_groups_index(size_t n, int dim, vidx **out, vidx_err *err);

/* Ends the joining and lays the groups out: largest first, equal sizes by
 * their smallest id; each group's ids in ascending order. Idempotent. */
int vidx_groups_finish(vidx_groups *g, vidx_err *err);

/* After vidx_groups_finish (0 and -1 before it): */
size_t vidx_groups_count(const vidx_groups *g);           /* groups */
size_t vidx_groups_grouped(const vidx_groups *g);         /* ids in some group */
/* Group i's ids in *ids (the grouping's memory); returns how many. */
size_t vidx_groups_members(const vidx_groups *g, size_t i, const int64_t **ids);
/* The group number of id, or -1 when it is in none. */
int64_t vidx_groups_find(const vidx_groups *g, int64_t id);

/* ---- maintenance (maint.c) -------------------------------------------------
 *
 * Work that rebuilds an index (training an IVF index, compacting an HNSW
 * graph's removed nodes, an auto index moving from exact to IVF or
 * retraining as it grows) is done on a copy: the vectors are copied under
 * the shared lock, the new index is built with no lock held, and the
 * changes made meanwhile (kept in a journal) are replayed onto it under the
 * exclusive lock, which is held only for that replay and the exchange.
 * Searches go on against the current index throughout. */
typedef enum vidx_maint {
	VIDX_MAINT_NONE = 0,
	VIDX_MAINT_TRAIN,     /* an IVF index has enough vectors to train */
	VIDX_MAINT_COMPACT,   /* an HNSW graph holds many removed nodes */
	VIDX_MAINT_UPGRADE,   /* auto: exact has grown past its threshold */
	VIDX_MAINT_RETRAIN,   /* auto: IVF has grown 8-fold since training */
} vidx_maint;

const char *vidx_maint_name(vidx_maint m);   /* "train", ...; "none" */

/* background != 0: adds never train an IVF index inline (under the
 * exclusive lock, which blocked searches for the training's length); the
 * caller runs vidx_maintain from a thread of its own instead. */
void vidx_set_background(vidx *v, int background);

/* What vidx_maintain would do now. */
vidx_maint vidx_maintenance_due(vidx *v);

/* Does the due maintenance, if any, and returns when it is swapped in
 * (*did, optional, says which). One caller at a time. Adds and removals
 * may run meanwhile. On failure the current index stays as it was. */
int vidx_maintain(vidx *v, vidx_maint *did, vidx_err *err);

/* Makes the calling thread, and the OpenMP workers it starts from now on,
 * run at the lowest CPU priority (nice 19; Linux nice values are per
 * thread and inherited by the threads it creates). For a thread that does
 * only maintenance: a rebuild then takes what searches leave of the cores
 * instead of half of them. It cannot be undone without privilege. 0, or
 * -1 with errno when the system refused. */
int vidx_lower_priority(void);

/* Asks a running (or the next) vidx_maintain to stop at its next batch of
 * adds; it returns VIDX_ECANCELLED and the current index stays. FAISS's
 * training itself cannot be interrupted: it finishes first. */
void vidx_cancel_maintenance(vidx *v);

typedef struct vidx_state {
	const char *kind, *factory, *requested;
	size_t count, dead, pending;
	int refine, nprobe;
	size_t auto_threshold;       /* auto only, else 0 */
	vidx_maint running, due;
	uint64_t maintenances;
	double last_ms, last_swap_ms;
	char error[320];             /* the last failed maintenance or training */
} vidx_state;

void vidx_get_state(vidx *v, vidx_state *out);

#endif
