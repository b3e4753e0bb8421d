/* Private to the index module. */
#ifndef CLIPD_INDEX_INT_H
#define CLIPD_INDEX_INT_H

#include <pthread.h>
#include <stdint.h>

#include <faiss/c_api/Index_c.h>

#include "index.h"

/* A hash map from id (>= 0) to a value, open addressing with linear probing
 * and backward-shift deletion; the empty key is -1. Each table hashes with
 * a seed of its own, drawn anew when it grows: keys listed in another
 * table's slot order (vecs_write writes ids so, maintenance copies them
 * so) would otherwise arrive in the order of this table's own probe runs,
 * and filling a smaller table in that order makes runs as long as the
 * table (10M ids took over ten minutes to load). */
typedef struct idset {
	int64_t *keys;
	int64_t *vals;
	size_t cap;   /* power of two, or 0 */
	size_t n;
	uint64_t seed;
} idset;

void idset_free(idset *s);
/* 0 on success, -1 when out of memory. Replaces an existing value. */
int idset_put(idset *s, int64_t key, int64_t val);
/* 1 and *val when present, else 0. val may be NULL. */
int idset_get(const idset *s, int64_t key, int64_t *val);
/* 1 when it was present. */
int idset_del(idset *s, int64_t key);
/* Makes room for n keys in all without growing again. -1 out of memory. */
int idset_reserve(idset *s, size_t n);

/* ---- vecs.c: float vectors by id, a mapped file and an overlay ---------- */
typedef struct vbase vbase;
typedef struct vecs {
	int dim;
	idset where;        /* id -> row: >= 0 of the base, < 0 the overlay's -(1 + r) */
	vbase *base;        /* the mapped file, or NULL */
	float *ov;          /* overlay rows [ov_cap][dim] */
	int64_t *ov_id;     /* id of each overlay row, -1 when dead */
	size_t ov_n, ov_cap, ov_dead;
	uint64_t changes;   /* puts and deletions so far */
} vecs;

void vecs_init(vecs *vs, int dim);
void vecs_free(vecs *vs);
size_t vecs_count(const vecs *vs);
/* The vector of id, or NULL; valid until the next change. */
const float *vecs_get(const vecs *vs, int64_t id);
/* 0, or -1 when out of memory (then nothing changed). Replaces. */
int vecs_put(vecs *vs, int64_t id, const float *x);
void vecs_del(vecs *vs, int64_t id);
/* Copies every live vector: *ids[*n], *x[*n][dim], the caller's. */
int vecs_export(const vecs *vs, int64_t **ids, float **x, size_t *n, vidx_err *err);
/* Writes every live vector to path atomically (temporary file, fsync,
 * rename); *crc and *n describe the file for the snapshot's header. */
int vecs_write(const vecs *vs, const char *path, uint32_t *crc, uint64_t *n, vidx_err *err);
/* Maps the file at path into *out (all base, no overlay) when it holds n
 * vectors of dim with the CRC crc; check: verify the CRC over the whole
 * file too (a file just written by vecs_write need not be). */
int vecs_open_file(const char *path, int dim, uint32_t crc, uint64_t n, int check, vecs *out,
                   vidx_err *err);

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
	char *model;             /* constant */
	int auto_mode;           /* constant: created as "auto" */
	/* The kind and the factory string change when maintenance swaps in
	 * another index (auto: exact, then IVF); read them under the lock.
	 * Factory strings replaced are kept until close (retired), so a
	 * pointer vidx_factory returned stays valid. */
	vidx_kind kind;
	char *factory;           /* aliases expanded */
	struct retired { struct retired *next; char *s; } *retired;

	FaissIndex *main;
	FaissIndex *pending;     /* IDMap,Flat holding vectors until main is trained */
	size_t train_min;        /* vectors needed before training main */

	idset ids;               /* live id -> slot (HNSW) or 0 */
	int64_t *slot_id;        /* HNSW: [nslots] id of each graph node, -1 when removed */
	size_t nslots, slots_cap;
	size_t ndead;            /* HNSW: removed nodes still in the graph */

	uint64_t seq;

	/* IVF and other kinds: the float vectors (vecs.c). refine > 0:
	 * searches ask the compressed index for refine * k candidates and
	 * rank them by the exact vectors. */
	int has_vecs;            /* constant */
	vecs vecs;
	int refine;

	char train_error[256];   /* the last failed training's message, "" after a success */

	/* Maintenance (maint.c). background: adds never train inline; the
	 * thread that calls vidx_maintain does it. While a maintenance runs,
	 * each change is also written to the journal, replayed onto the new
	 * index before it is swapped in. Search parameters the caller set
	 * (0: the kind's default) carry over to the new index. */
	int background;
	int cancel;              /* atomic: vidx_cancel_maintenance */
	int maint;               /* vidx_maint running, VIDX_MAINT_NONE when idle */
	struct journal {
		int on, failed;
		size_t n, cap;
		int64_t *id;         /* [cap] */
		unsigned char *rm;   /* [cap] 1: removed, 0: set to x */
		float *x;            /* [cap][dim] */
	} jr;
	double nprobe, efsearch;
	int refine_set;          /* refine was set by the caller */
	size_t auto_at;          /* auto: vectors at which exact gives way to IVF */
	size_t trained_n;        /* vectors when the IVF index was last trained */
	uint64_t maint_count;    /* maintenances finished */
	double maint_last_ms;    /* how long the last one took */
	double maint_swap_ms;    /* how long its swap held the lock exclusively */
	char maint_error[320];

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

/* Marks a new exact index as auto (maint.c): its threshold from its
 * dimension. */
void vidx_make_auto(vidx *v);

/* The journal: called by writers under the exclusive lock when jr.on. */
void vidx_journal_set(vidx *v, size_t n, const int64_t *ids, const float *x);
void vidx_journal_remove(vidx *v, size_t n, const int64_t *ids);

/* a . b over dim floats, vectorised for the CPU it runs on (scan.c). */
float vidx_dot(const float *a, const float *b, int dim);

/* Exact search of one query q[dim] over the n rows of xb[n][dim] (ids
 * row_id[n]) in `threads` threads: the k best, best first, ties by the
 * smaller id; missing results have id -1. (scan.c) */
int vidx_scan_topk(const float *xb, const int64_t *row_id, size_t n, int dim, const float *q,
                   int k, int threads, float *scores, int64_t *ids, vidx_err *err);

/* vidx_search's work with v->lock already held (shared or exclusive):
 * the refined search when the kind re-ranks, else the plain one. ids[]
 * must be -1 on entry. */
int vidx_search_held(vidx *v, size_t nq, const float *q, int k, float *scores, int64_t *ids,
                     vidx_err *err);

/* The flat rows of an exact index (IDMap over Flat): xb[n][dim] and the
 * id of each row, FAISS's own memory, valid while the lock is held. */
int vidx_flat_rows(vidx *v, const float **xb, const int64_t **row_id, size_t *n, vidx_err *err);

/* An exact index this large is searched one query at a time on every core
 * (scan.c); below it a query takes well under a millisecond on one. */
#define SCAN_SPLIT_MIN 16384

/* The ids a filtered search may return (filter.c): a bitmap over 0..nbits
 * when the largest id is small enough for one, else the sorted ids
 * themselves, searched by bisection. */
typedef struct vidx_sel {
	uint64_t *bits;       /* [nbits / 64 + 1], or NULL */
	size_t nbits;
	const int64_t *sorted;
	size_t n;
} vidx_sel;

int vidx_sel_has(const vidx_sel *s, int64_t id);

/* vidx_scan_topk over the rows whose id sel holds (sel NULL: all). rowp,
 * when not NULL, gives each row's address instead of xb + r * dim. */
int vidx_scan_sel(const float *xb, const float *const *rowp, const int64_t *row_id, size_t n,
                  int dim, const float *q, int k, int threads, const vidx_sel *sel,
                  float *scores, int64_t *ids, vidx_err *err);

/* For tests of the failure paths: the next n adds to FAISS fail as if FAISS
 * had refused them, after everything before them was done. */
void vidx_inject_add_failures(vidx *v, int n);

/* Rebuilds v->ids (and checks slot tables) from the FAISS indexes. */
int vidx_index_ids(vidx *v, vidx_err *err);

#endif
