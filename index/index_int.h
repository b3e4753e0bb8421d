/* Private to the index module. */
#ifndef CLIPD_INDEX_INT_H
#define CLIPD_INDEX_INT_H

#include <pthread.h>
#include <stdint.h>

#include <faiss/c_api/Index_c.h>

#include "index.h"

/* A hash map from id (>= 0) to a value, open addressing with linear probing
 * and backward-shift deletion; the empty key is -1. */
typedef struct idset {
	int64_t *keys;
	int64_t *vals;
	size_t cap;   /* power of two, or 0 */
	size_t n;
} idset;

void idset_free(idset *s);
/* 0 on success, -1 when out of memory. Replaces an existing value. */
int idset_put(idset *s, int64_t key, int64_t val);
/* 1 and *val when present, else 0. val may be NULL. */
int idset_get(const idset *s, int64_t key, int64_t *val);
/* 1 when it was present. */
int idset_del(idset *s, int64_t key);

typedef enum vidx_kind {
	VIDX_EXACT = 0,   /* IDMap over Flat */
	VIDX_HNSW = 1,    /* HNSW with our own slot -> id table */
	VIDX_IVF = 2,     /* IVF*, native ids */
	VIDX_OTHER = 3,   /* IDMap over any other FAISS index */
} vidx_kind;

struct vidx {
	/* DESIGN: lock. `lock` is a readers-writer lock over everything below
	 * except the constants (dim, kind, model, factory). Searches and
	 * vidx_save take it shared: FAISS search is const and safe to run
	 * concurrently. vidx_add, vidx_remove, vidx_set_param and
	 * vidx_set_seq take it exclusive. FAISS's own OpenMP threads run inside
	 * one call and never outlive it. */
	pthread_rwlock_t lock;

	int dim;                 /* constant */
	vidx_kind kind;          /* constant */
	char *model;             /* constant */
	char *factory;           /* constant, aliases expanded */

	FaissIndex *main;
	FaissIndex *pending;     /* IDMap,Flat holding vectors until main is trained */
	size_t train_min;        /* vectors needed before training main */

	idset ids;               /* live id -> slot (HNSW) or 0 */
	int64_t *slot_id;        /* HNSW: [nslots] id of each graph node, -1 when removed */
	size_t nslots, slots_cap;
	size_t ndead;            /* HNSW: removed nodes still in the graph */

	uint64_t seq;

	char train_error[256];   /* the last failed training's message, "" after a success */
	int fail_adds;           /* tests: this many FAISS adds fail (vidx_inject_add_failures) */
};

int vidx_fail(vidx_err *err, vidx_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Reports the last FAISS error of this thread, prefixed with what. */
int vidx_faiss_fail(vidx_err *err, const char *what);

/* Resolves aliases and classifies a factory string. *expanded is malloc'ed. */
int vidx_parse_factory(const char *factory, int dim, char **expanded, vidx_kind *kind,
                       vidx_err *err);

/* Allocates a vidx around indexes that already exist (create and load). Takes
 * ownership of main and pending even on failure. */
int vidx_wrap(int dim, vidx_kind kind, const char *model, const char *factory, FaissIndex *main,
              FaissIndex *pending, vidx **out, vidx_err *err);

/* Exact search of one query q[dim] over the n rows of xb[n][dim] (ids
 * row_id[n]) in `threads` threads: the k best, best first, ties by the
 * smaller id; missing results have id -1. (scan.c) */
int vidx_scan_topk(const float *xb, const int64_t *row_id, size_t n, int dim, const float *q,
                   int k, int threads, float *scores, int64_t *ids, vidx_err *err);

/* For tests of the failure paths: the next n adds to FAISS fail as if FAISS
 * had refused them, after everything before them was done. */
void vidx_inject_add_failures(vidx *v, int n);

/* Rebuilds v->ids (and checks slot tables) from the FAISS indexes. */
int vidx_index_ids(vidx *v, vidx_err *err);

#endif
