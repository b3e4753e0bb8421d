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

/* Sets a search parameter: "efSearch" (HNSW) or "nprobe" (IVF). */
int vidx_set_param(vidx *v, const char *name, double value, vidx_err *err);

/* Whether id is in the index. */
int vidx_contains(vidx *v, int64_t id);

size_t vidx_count(vidx *v);       /* live vectors */
size_t vidx_dead(vidx *v);        /* removed but still held (HNSW) */
int vidx_dim(const vidx *v);
const char *vidx_model(const vidx *v);
const char *vidx_factory(const vidx *v);  /* the factory string, aliases expanded */
const char *vidx_kind_name(const vidx *v); /* "exact", "hnsw", "ivf" or "other" */

/* The highest store sequence whose change is in the index. The caller sets
 * it only when every change up to it has been applied (vidx_sync does). */
uint64_t vidx_seq(vidx *v);
void vidx_set_seq(vidx *v, uint64_t seq);

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

#endif
