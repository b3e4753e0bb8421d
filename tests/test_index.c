/*
 * test_index.c: unit tests of the vector index module (index/).
 *
 * Everything runs on real FAISS and, for syncing, a real SQLite store in a
 * temporary directory: exact search against a brute force computed here,
 * removal and replacement for each kind, refused arguments, HNSW recall,
 * IVF's life from pending flat vectors to a trained index, snapshot round
 * trips, torn and damaged snapshots, model and dimension mismatches,
 * rebuilding and catching up from the store, the choices vidx_open_synced
 * makes, and searches running while another thread writes.
 *
 * Data are random unit vectors from a fixed seed, so every run sees the same
 * numbers. Sizes are small (dimension 16-32, at most 10000 vectors). An IVF
 * index trains at 39 vectors per list (624 for IVF16,Flat), and at no fewer
 * than 39 * 256 = 9984 when its codes are PQ (vidx_wrap).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "index.h"
#include "index_int.h"
#include "store.h"
#include "tap.h"

#define K 10
#define MODEL "m1"
/* index.c trains "IVF16,Flat" at 39 * nlist vectors. */
#define IVF_TRAIN_AT (39 * 16)
/* Buffers for the temporary directory and the paths made in it. */
#define DIR_CAP 1024
#define PATH_CAP (DIR_CAP + 64)
#define TMP_PATH_CAP (PATH_CAP + 32)

/* ENSURE: like REQUIRE, but goes to the case's `out:` label so that the
 * case frees what it holds. */
#define ENSURE(cond)                                                                               \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			tap_diag(__FILE__, __LINE__, "ENSURE(%s) failed", #cond);                  \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

/* VOK: a vidx call that must succeed (uses the case's `err`). */
#define VOK(call)                                                                                  \
	do {                                                                                       \
		int rc_ = (call);                                                                  \
		if (rc_ != VIDX_OK) {                                                              \
			tap_diag(__FILE__, __LINE__, "%s = %d: %s", #call, rc_, err.msg);          \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

/* SOK: a store call that must succeed (uses the case's `serr`). */
#define SOK(call)                                                                                  \
	do {                                                                                       \
		int rc_ = (call);                                                                  \
		if (rc_ != STORE_OK) {                                                             \
			tap_diag(__FILE__, __LINE__, "%s = %d: %s", #call, rc_, serr.msg);         \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

/* ---- random data --------------------------------------------------------- */

/* splitmix64 */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in (0, 1). */
static double rng_unif(uint64_t *s)
{
	return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_gauss(uint64_t *s)
{
	double u = rng_unif(s), w = rng_unif(s);
	return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * w);
}

/* A Gaussian vector scaled to unit length: uniform on the sphere. */
static void rand_unit(uint64_t *s, float *x, int dim)
{
	double n = 0;
	for (int i = 0; i < dim; i++) {
		x[i] = (float)rng_gauss(s);
		n += (double)x[i] * x[i];
	}
	n = sqrt(n);
	for (int i = 0; i < dim; i++)
		x[i] = (float)(x[i] / n);
}

/* n unit vectors, malloc'ed (NULL when out of memory). */
static float *rand_units(uint64_t *s, size_t n, int dim)
{
	float *x = malloc((n ? n : 1) * (size_t)dim * sizeof *x);
	if (x)
		for (size_t i = 0; i < n; i++)
			rand_unit(s, x + i * (size_t)dim, dim);
	return x;
}

/* Ids that are neither dense nor starting at 0. */
static int64_t id_of(size_t i)
{
	return (int64_t)i * 7 + 3;
}

/* The i of id_of(i), or -1 when id is not one of them (below n). */
static ssize_t index_of(int64_t id, size_t n)
{
	if (id < 3 || (id - 3) % 7 != 0 || (size_t)((id - 3) / 7) >= n)
		return -1;
	return (ssize_t)((id - 3) / 7);
}

/* ---- brute-force reference ----------------------------------------------- */

/* The set of vectors an index should hold, searched exhaustively. */
typedef struct ref {
	int dim;
	size_t n, cap;
	int64_t *ids;   /* [cap] */
	float *x;       /* [cap][dim] */
} ref;

static void ref_init(ref *r, int dim)
{
	memset(r, 0, sizeof *r);
	r->dim = dim;
}

static void ref_free(ref *r)
{
	free(r->ids);
	free(r->x);
	memset(r, 0, sizeof *r);
}

static ssize_t ref_find(const ref *r, int64_t id)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->ids[i] == id)
			return (ssize_t)i;
	return -1;
}

/* Appends n vectors whose ids are known to be new. 0 or -1 (out of memory). */
static int ref_add_new(ref *r, size_t n, const float *x, const int64_t *ids)
{
	if (r->n + n > r->cap) {
		size_t cap = r->cap ? r->cap : 256;
		while (cap < r->n + n)
			cap *= 2;
		int64_t *ni = realloc(r->ids, cap * sizeof *ni);
		if (!ni)
			return -1;
		r->ids = ni;
		float *nx = realloc(r->x, cap * (size_t)r->dim * sizeof *nx);
		if (!nx)
			return -1;
		r->x = nx;
		r->cap = cap;
	}
	memcpy(r->ids + r->n, ids, n * sizeof *ids);
	memcpy(r->x + r->n * (size_t)r->dim, x, n * (size_t)r->dim * sizeof *x);
	r->n += n;
	return 0;
}

/* Adds or replaces one vector. */
static int ref_put(ref *r, int64_t id, const float *x)
{
	ssize_t i = ref_find(r, id);
	if (i < 0)
		return ref_add_new(r, 1, x, &id);
	memcpy(r->x + (size_t)i * (size_t)r->dim, x, (size_t)r->dim * sizeof *x);
	return 0;
}

static void ref_del(ref *r, int64_t id)
{
	ssize_t i = ref_find(r, id);
	if (i < 0)
		return;
	r->n--;
	r->ids[i] = r->ids[r->n];
	memmove(r->x + (size_t)i * (size_t)r->dim, r->x + r->n * (size_t)r->dim,
	        (size_t)r->dim * sizeof *r->x);
}

/* The exact k best by inner product, best first; -1 and -inf past the end. */
static void ref_search(const ref *r, size_t nq, const float *q, int k, float *scores,
                       int64_t *ids)
{
	for (size_t qi = 0; qi < nq; qi++) {
		float *s = scores + qi * (size_t)k;
		int64_t *l = ids + qi * (size_t)k;
		const float *qq = q + qi * (size_t)r->dim;
		for (int j = 0; j < k; j++) {
			s[j] = -INFINITY;
			l[j] = -1;
		}
		for (size_t i = 0; i < r->n; i++) {
			const float *x = r->x + i * (size_t)r->dim;
			double d = 0;
			for (int t = 0; t < r->dim; t++)
				d += (double)qq[t] * x[t];
			float f = (float)d;
			if (l[k - 1] >= 0 && f <= s[k - 1])
				continue;
			int j = k - 1;
			while (j > 0 && (l[j - 1] < 0 || f > s[j - 1])) {
				s[j] = s[j - 1];
				l[j] = l[j - 1];
				j--;
			}
			s[j] = f;
			l[j] = r->ids[i];
		}
	}
}

/* ---- checking results ---------------------------------------------------- */

/* What is wrong with nq rows of k results, or NULL: scores must not rise,
 * ids must be distinct, and missing results (id -1, score -inf) come last. */
static const char *rows_fault(size_t nq, int k, const float *s, const int64_t *l)
{
	static __thread char buf[200];
	for (size_t qi = 0; qi < nq; qi++) {
		const float *rs = s + qi * (size_t)k;
		const int64_t *rl = l + qi * (size_t)k;
		int missing = 0;
		for (int j = 0; j < k; j++) {
			if (rl[j] < 0) {
				if (rl[j] != -1 || !(isinf(rs[j]) && rs[j] < 0)) {
					snprintf(buf, sizeof buf, "row %zu rank %d: missing result is id %lld score %g",
					         qi, j, (long long)rl[j], rs[j]);
					return buf;
				}
				missing = 1;
				continue;
			}
			if (missing) {
				snprintf(buf, sizeof buf, "row %zu rank %d: id %lld after a missing result", qi,
				         j, (long long)rl[j]);
				return buf;
			}
			if (!isfinite(rs[j])) {
				snprintf(buf, sizeof buf, "row %zu rank %d: score %g", qi, j, rs[j]);
				return buf;
			}
			if (j > 0 && rs[j] > rs[j - 1] + 1e-6f) {
				snprintf(buf, sizeof buf, "row %zu: score rises at rank %d (%g after %g)", qi, j,
				         rs[j], rs[j - 1]);
				return buf;
			}
			for (int i = 0; i < j; i++)
				if (rl[i] == rl[j]) {
					snprintf(buf, sizeof buf, "row %zu: id %lld at ranks %d and %d", qi,
					         (long long)rl[j], i, j);
					return buf;
				}
		}
	}
	return NULL;
}

/* Places where two result sets of n entries differ in id, or in score by
 * more than tol; the first is reported as a diagnostic under what. */
static size_t diff_results(const char *what, size_t n, const float *s1, const int64_t *l1,
                           const float *s2, const int64_t *l2, float tol)
{
	size_t d = 0;
	for (size_t i = 0; i < n; i++) {
		int same = l1[i] == l2[i] &&
		           (l1[i] < 0 ? 1 : fabsf(s1[i] - s2[i]) <= tol);
		if (!same && d++ == 0)
			printf("# %s: first difference at %zu: id %lld score %g vs id %lld score %g\n", what,
			       i, (long long)l1[i], s1[i], (long long)l2[i], s2[i]);
	}
	return d;
}

/* Searches v and the reference with the same queries; the number of
 * differences, or (size_t)-1 when the search fails. */
static size_t diff_vs_ref(const char *what, vidx *v, const ref *r, size_t nq, const float *q,
                          int k)
{
	size_t n = nq * (size_t)k, d = (size_t)-1;
	float *s1 = malloc(n * sizeof *s1), *s2 = malloc(n * sizeof *s2);
	int64_t *l1 = malloc(n * sizeof *l1), *l2 = malloc(n * sizeof *l2);
	vidx_err err = {0};
	if (!s1 || !s2 || !l1 || !l2)
		goto out;
	if (vidx_search(v, nq, q, k, s1, l1, &err) != VIDX_OK) {
		printf("# %s: search failed: %s\n", what, err.msg);
		goto out;
	}
	const char *fault = rows_fault(nq, k, s1, l1);
	if (fault) {
		printf("# %s: %s\n", what, fault);
		goto out;
	}
	ref_search(r, nq, q, k, s2, l2);
	d = diff_results(what, n, s1, l1, s2, l2, 1e-4f);
out:
	free(s1);
	free(s2);
	free(l1);
	free(l2);
	return d;
}

/* The same for two indexes. */
static size_t diff_indexes(const char *what, vidx *a, vidx *b, size_t nq, const float *q, int k)
{
	size_t n = nq * (size_t)k, d = (size_t)-1;
	float *s1 = malloc(n * sizeof *s1), *s2 = malloc(n * sizeof *s2);
	int64_t *l1 = malloc(n * sizeof *l1), *l2 = malloc(n * sizeof *l2);
	vidx_err err = {0};
	if (!s1 || !s2 || !l1 || !l2)
		goto out;
	if (vidx_search(a, nq, q, k, s1, l1, &err) != VIDX_OK ||
	    vidx_search(b, nq, q, k, s2, l2, &err) != VIDX_OK) {
		printf("# %s: search failed: %s\n", what, err.msg);
		goto out;
	}
	d = diff_results(what, n, s1, l1, s2, l2, 1e-4f);
out:
	free(s1);
	free(s2);
	free(l1);
	free(l2);
	return d;
}

/* Recall@k of got against truth (nq rows of k). */
static double recall(size_t nq, int k, const int64_t *got, const int64_t *truth)
{
	size_t found = 0, total = 0;
	for (size_t qi = 0; qi < nq; qi++)
		for (int j = 0; j < k; j++) {
			int64_t t = truth[qi * (size_t)k + j];
			if (t < 0)
				continue;
			total++;
			for (int i = 0; i < k; i++)
				if (got[qi * (size_t)k + i] == t) {
					found++;
					break;
				}
		}
	return total ? (double)found / (double)total : 1.0;
}

/* The fraction of the given rows whose best result is want[i]; (-1 on a
 * search failure). Queries are x[rows[i]]. */
static double self_top1(vidx *v, const float *x, int dim, size_t nrows, const size_t *rows,
                        const int64_t *want)
{
	size_t hits = 0;
	float s[K];
	int64_t l[K];
	vidx_err err = {0};
	for (size_t i = 0; i < nrows; i++) {
		if (vidx_search(v, 1, x + rows[i] * (size_t)dim, K, s, l, &err) != VIDX_OK) {
			printf("# search failed: %s\n", err.msg);
			return -1;
		}
		hits += l[0] == want[i];
	}
	return nrows ? (double)hits / (double)nrows : 1.0;
}

/* ---- files --------------------------------------------------------------- */

static int make_tmpdir(char *dir, size_t size)
{
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	if ((size_t)snprintf(dir, size, "%s/test_index.XXXXXX", base) >= size)
		return -1;
	return mkdtemp(dir) ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void remove_tree(const char *dir)
{
	if (dir && *dir)
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The whole file, malloc'ed; NULL on failure. */
static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	long n;
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
		*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

static int spit(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	int ok = fwrite(buf, 1, len, f) == len;
	return fclose(f) == 0 && ok ? 0 : -1;
}

/* The temporary name vidx_save writes before renaming (snapshot.c). */
static void tmp_name_of(const char *path, char *out, size_t size)
{
	snprintf(out, size, "%s.tmp.%ld", path, (long)getpid());
}

/* ---- building indexes ---------------------------------------------------- */

/* Creates an index and adds x[n][dim] with ids id_of(i), in batches. */
static int build_random(const char *factory, int dim, size_t n, const float *x, vidx **out,
                        vidx_err *err)
{
	int rc = vidx_create(factory, dim, MODEL, out, err);
	for (size_t at = 0; rc == VIDX_OK && at < n; at += 1000) {
		size_t m = n - at < 1000 ? n - at : 1000;
		int64_t ids[1000];
		for (size_t i = 0; i < m; i++)
			ids[i] = id_of(at + i);
		rc = vidx_add(*out, m, x + at * (size_t)dim, ids, err);
	}
	if (rc != VIDX_OK) {
		vidx_close(*out);
		*out = NULL;
	}
	return rc;
}

/* ---- 1. exact search ----------------------------------------------------- */

static void t_exact_search(void)
{
	enum { DIM = 32, N = 2000, NQ = 32 };
	uint64_t seed = 101;
	vidx_err err = {0};
	vidx *v = NULL, *small = NULL, *empty = NULL;
	ref r;
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N, DIM), *q = rand_units(&seed, NQ, DIM);
	float s[NQ * K], rs[NQ * K];
	int64_t l[NQ * K], rl[NQ * K], ids[N];
	ENSURE(x && q);

	for (size_t i = 0; i < N; i++)
		ids[i] = id_of(i);
	VOK(vidx_create("exact", DIM, MODEL, &v, &err));
	VOK(vidx_add(v, N, x, ids, &err));
	ENSURE(ref_add_new(&r, N, x, ids) == 0);
	CHECK(vidx_count(v) == N);
	CHECK(vidx_dead(v) == 0);

	/* One query. */
	VOK(vidx_search(v, 1, q, K, s, l, &err));
	CHECKF(rows_fault(1, K, s, l) == NULL, "%s", rows_fault(1, K, s, l));
	ref_search(&r, 1, q, K, rs, rl);
	CHECK(diff_results("single query", K, s, l, rs, rl, 1e-4f) == 0);
	/* A database vector finds itself with score 1. */
	VOK(vidx_search(v, 1, x + 123 * DIM, K, s, l, &err));
	CHECK(l[0] == id_of(123));
	CHECKF(fabsf(s[0] - 1.0f) < 1e-4f, "self score %g", s[0]);

	/* A batch: each row is that query's own answer. */
	VOK(vidx_search(v, NQ, q, K, s, l, &err));
	CHECKF(rows_fault(NQ, K, s, l) == NULL, "%s", rows_fault(NQ, K, s, l));
	ref_search(&r, NQ, q, K, rs, rl);
	CHECK(diff_results("batch", NQ * K, s, l, rs, rl, 1e-4f) == 0);
	/* Strictly descending, barring ties that random floats do not make. */
	for (size_t i = 0; i < NQ; i++)
		for (int j = 1; j < K; j++)
			CHECKF(s[i * K + j] < s[i * K + j - 1], "row %zu rank %d not below rank %d", i, j,
			       j - 1);

	/* k larger than the index: the missing places are -1 and -inf. */
	VOK(vidx_create("exact", DIM, MODEL, &small, &err));
	VOK(vidx_add(small, 5, x, ids, &err));
	{
		ref r5;
		ref_init(&r5, DIM);
		float s8[2 * 8], rs8[2 * 8];
		int64_t l8[2 * 8], rl8[2 * 8];
		int ok = ref_add_new(&r5, 5, x, ids) == 0;
		CHECK(ok);
		if (ok && vidx_search(small, 2, q, 8, s8, l8, &err) == VIDX_OK) {
			CHECKF(rows_fault(2, 8, s8, l8) == NULL, "%s", rows_fault(2, 8, s8, l8));
			ref_search(&r5, 2, q, 8, rs8, rl8);
			CHECK(diff_results("k > count", 16, s8, l8, rs8, rl8, 1e-4f) == 0);
			for (int qi = 0; qi < 2; qi++)
				for (int j = 5; j < 8; j++) {
					CHECK(l8[qi * 8 + j] == -1);
					CHECK(isinf(s8[qi * 8 + j]) && s8[qi * 8 + j] < 0);
				}
		} else {
			CHECKF(0, "search of a small index: %s", err.msg);
		}
		ref_free(&r5);
	}

	/* An empty index answers with nothing, not an error. */
	VOK(vidx_create(NULL, DIM, MODEL, &empty, &err));
	VOK(vidx_search(empty, 2, q, K, s, l, &err));
	for (int i = 0; i < 2 * K; i++)
		CHECK(l[i] == -1 && isinf(s[i]) && s[i] < 0);

	/* k out of range. */
	CHECK(vidx_search(v, 1, q, 0, s, l, &err) == VIDX_EINVAL);
	CHECK(err.code == VIDX_EINVAL && err.msg[0]);
	CHECK(vidx_search(v, 1, q, -3, s, l, NULL) == VIDX_EINVAL);
out:
	vidx_close(v);
	vidx_close(small);
	vidx_close(empty);
	ref_free(&r);
	free(x);
	free(q);
}

/* 1b. An exact index past the split threshold (index.c: 16384) searches a
 * single query on every core (scan.c): the same answers as the reference,
 * after removals and replacements have reordered the rows, for one query, a
 * few (fewer than the cores) and k above the count of a filtered run. */
static void t_exact_split(void)
{
	enum { DIM = 64, N = 40000, NQ = 3, KB = 100 };
	uint64_t seed = 303;
	vidx_err err = {0};
	vidx *v = NULL;
	ref r;
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N, DIM), *q = rand_units(&seed, NQ, DIM);
	float *y = rand_units(&seed, 500, DIM);
	float s[NQ * KB], rs[NQ * KB];
	int64_t l[NQ * KB], rl[NQ * KB];
	int64_t *ids = malloc(N * sizeof *ids), gone[700];
	ENSURE(x && q && y && ids);

	for (size_t i = 0; i < N; i++)
		ids[i] = id_of(i);
	VOK(vidx_create("exact", DIM, MODEL, &v, &err));
	VOK(vidx_add(v, N, x, ids, &err));
	ENSURE(ref_add_new(&r, N, x, ids) == 0);
	for (int i = 0; i < 700; i++) {
		gone[i] = id_of((size_t)i * 53);
		ref_del(&r, gone[i]);
	}
	VOK(vidx_remove(v, 700, gone, NULL, &err));
	/* Replace 500 vectors (ids 1..500 of the id_of range's order). */
	VOK(vidx_add(v, 500, y, ids + 1000, &err));
	for (int i = 0; i < 500; i++)
		ENSURE(ref_put(&r, ids[1000 + i], y + (size_t)i * DIM) == 0);
	/* The replaced range brings back the removed ids among it. */
	size_t back = 0;
	for (size_t i = 1000; i < 1500; i++)
		back += i % 53 == 0 && i / 53 < 700;
	CHECK(vidx_count(v) == N - 700 + back);

	VOK(vidx_search(v, 1, q, KB, s, l, &err));
	CHECKF(rows_fault(1, KB, s, l) == NULL, "%s", rows_fault(1, KB, s, l));
	ref_search(&r, 1, q, KB, rs, rl);
	CHECK(diff_results("split, one query", KB, s, l, rs, rl, 1e-4f) == 0);
	VOK(vidx_search(v, NQ, q, KB, s, l, &err));
	ref_search(&r, NQ, q, KB, rs, rl);
	CHECK(diff_results("split, a few queries", NQ * KB, s, l, rs, rl, 1e-4f) == 0);
	/* A replaced vector finds itself. */
	VOK(vidx_search(v, 1, y + 7 * DIM, K, s, l, &err));
	CHECK(l[0] == ids[1007]);
out:
	vidx_close(v);
	ref_free(&r);
	free(x), free(q), free(y), free(ids);
}

/* ---- 2. remove ----------------------------------------------------------- */

/* Removes every 10th vector (with duplicates and absent ids in the list)
 * and checks counts and that removed ids never come back. min_top1: the
 * share of live vectors that must find themselves first. exact_results: the
 * kind searches exhaustively here, so results must equal brute force. */
static void remove_case(const char *factory, int dim, size_t n, double min_top1,
                        int exact_results)
{
	uint64_t seed = 202 + n;
	vidx_err err = {0};
	vidx *v = NULL;
	ref r;
	ref_init(&r, dim);
	float *x = rand_units(&seed, n, dim), *q = rand_units(&seed, 16, dim);
	char *gone = calloc(n, 1);
	size_t cap = n / 10 + 16, nrm = 0, nuniq = 0, removed = 99;
	int64_t *rm = malloc(cap * sizeof *rm);
	size_t *rows = malloc(n * sizeof *rows);
	int64_t *want = malloc(n * sizeof *want);
	int is_hnsw = strcmp(factory, "hnsw") == 0;
	ENSURE(x && q && gone && rm && rows && want);

	printf("# remove: %s, dim %d, %zu vectors\n", factory, dim, n);
	VOK(build_random(factory, dim, n, x, &v, &err));
	for (size_t i = 0; i < n; i++) {
		int64_t id = id_of(i);
		ENSURE(ref_add_new(&r, 1, x + i * (size_t)dim, &id) == 0);
	}
	CHECK(vidx_count(v) == n);

	for (size_t i = 0; i < n; i += 10) {
		rm[nrm++] = id_of(i);
		gone[i] = 1;
		nuniq++;
		ref_del(&r, id_of(i));
	}
	rm[nrm++] = id_of(0);        /* duplicates */
	rm[nrm++] = id_of(10);
	rm[nrm++] = id_of(0);
	rm[nrm++] = 1;               /* absent: not of the form 7i+3 */
	rm[nrm++] = 2;
	rm[nrm++] = 123456789;
	VOK(vidx_remove(v, nrm, rm, &removed, &err));
	CHECKF(removed == nuniq, "removed %zu, expected %zu", removed, nuniq);
	CHECKF(vidx_count(v) == n - nuniq, "count %zu, expected %zu", vidx_count(v), n - nuniq);
	if (is_hnsw)
		CHECKF(vidx_dead(v) == nuniq, "dead %zu, expected %zu", vidx_dead(v), nuniq);
	else
		CHECK(vidx_dead(v) == 0);
	for (size_t i = 0; i < n; i++)
		if (vidx_contains(v, id_of(i)) != !gone[i]) {
			CHECKF(0, "contains(%lld) = %d", (long long)id_of(i), vidx_contains(v, id_of(i)));
			break;
		}
	CHECK(!vidx_contains(v, 1) && !vidx_contains(v, 123456789));

	/* Again: nothing left to remove. */
	VOK(vidx_remove(v, nrm, rm, &removed, &err));
	CHECK(removed == 0);
	int64_t absent[3] = {1, 2, 99999999};
	VOK(vidx_remove(v, 3, absent, &removed, &err));
	CHECK(removed == 0);
	VOK(vidx_remove(v, 0, NULL, &removed, &err));
	CHECK(removed == 0);
	CHECK(vidx_count(v) == n - nuniq);
	if (is_hnsw)
		CHECK(vidx_dead(v) == nuniq);

	/* The removed vectors themselves as queries: their ids never come
	 * back, and k live results still fill each row. */
	{
		size_t nq = 0, bad = 0, short_rows = 0;
		float s[K];
		int64_t l[K];
		for (size_t i = 0; i < n && nq < 64; i += 10, nq++) {
			VOK(vidx_search(v, 1, x + i * (size_t)dim, K, s, l, &err));
			CHECKF(rows_fault(1, K, s, l) == NULL, "%s", rows_fault(1, K, s, l));
			for (int j = 0; j < K; j++) {
				ssize_t at = l[j] < 0 ? -1 : index_of(l[j], n);
				if (l[j] >= 0 && (at < 0 || gone[at]))
					bad++;
			}
			short_rows += l[K - 1] < 0;
		}
		CHECKF(bad == 0, "%zu removed or unknown ids in results", bad);
		CHECKF(short_rows == 0, "%zu of %zu rows have fewer than %d results", short_rows, nq,
		       K);
	}

	/* Live vectors still find themselves. */
	{
		size_t nrows = 0;
		for (size_t i = 1; i < n && nrows < 200; i += 7)
			if (!gone[i]) {
				rows[nrows] = i;
				want[nrows++] = id_of(i);
			}
		double f = self_top1(v, x, dim, nrows, rows, want);
		CHECKF(f >= min_top1, "self top-1 %.3f", f);
	}
	if (exact_results)
		CHECK(diff_vs_ref(factory, v, &r, 16, q, K) == 0);
out:
	vidx_close(v);
	ref_free(&r);
	free(x);
	free(q);
	free(gone);
	free(rm);
	free(rows);
	free(want);
}

static void t_remove(void)
{
	remove_case("exact", 32, 2000, 1.0, 1);
	remove_case("hnsw", 32, 2000, 0.95, 0);
	remove_case("IVF16,Flat", 16, 600, 1.0, 1);       /* still pending */
	remove_case("IVF16,Flat", 16, 10000, 1.0, 1);     /* trained; nprobe covers every list */
	/* Trained and compressed. "np": FAISS's polysemous training, on by
	 * default for PQ, takes 10+ s here and the index never uses it. */
	remove_case("IVF16,PQ4np", 16, 10000, 0.8, 0);
}

/* ---- 3. replace, and refused adds ---------------------------------------- */

static void replace_case(const char *factory, int dim, size_t n)
{
	uint64_t seed = 303 + (uint64_t)dim;
	vidx_err err = {0};
	vidx *v = NULL;
	ref r;
	ref_init(&r, dim);
	float *x = rand_units(&seed, n, dim), *w = rand_units(&seed, 3, dim);
	float *q = rand_units(&seed, 16, dim);
	float s[K];
	int64_t l[K];
	int is_hnsw = strcmp(factory, "hnsw") == 0, exact = strcmp(factory, "exact") == 0;
	ENSURE(x && w && q);

	printf("# replace: %s\n", factory);
	VOK(build_random(factory, dim, n, x, &v, &err));
	for (size_t i = 0; i < n; i++) {
		int64_t id = id_of(i);
		ENSURE(ref_add_new(&r, 1, x + i * (size_t)dim, &id) == 0);
	}

	size_t t = n / 2;
	int64_t target = id_of(t);
	VOK(vidx_add(v, 1, w, &target, &err));
	ENSURE(ref_put(&r, target, w) == 0);
	CHECKF(vidx_count(v) == n, "count %zu after replacing", vidx_count(v));
	CHECK(vidx_contains(v, target));
	if (is_hnsw)
		CHECK(vidx_dead(v) == 1);
	else
		CHECK(vidx_dead(v) == 0);

	/* The new vector finds the id with score 1... */
	VOK(vidx_search(v, 1, w, K, s, l, &err));
	CHECKF(l[0] == target, "new vector's best is %lld", (long long)l[0]);
	CHECKF(fabsf(s[0] - 1.0f) < 1e-4f, "score %g", s[0]);
	/* ...the old one no longer finds it first, and finds it only once. */
	VOK(vidx_search(v, 1, x + t * (size_t)dim, K, s, l, &err));
	CHECKF(l[0] != target, "old vector still finds id %lld first (score %g)", (long long)target,
	       s[0]);
	CHECKF(rows_fault(1, K, s, l) == NULL, "%s", rows_fault(1, K, s, l));

	/* A batch mixing a replacement and a new id. */
	int64_t mix[2] = {id_of(7), 999999};
	VOK(vidx_add(v, 2, w + dim, mix, &err));
	ENSURE(ref_put(&r, mix[0], w + dim) == 0 && ref_put(&r, mix[1], w + 2 * (size_t)dim) == 0);
	CHECK(vidx_count(v) == n + 1);
	if (is_hnsw)
		CHECK(vidx_dead(v) == 2);
	VOK(vidx_search(v, 1, w + dim, K, s, l, &err));
	CHECK(l[0] == mix[0] && fabsf(s[0] - 1.0f) < 1e-4f);
	VOK(vidx_search(v, 1, w + 2 * (size_t)dim, K, s, l, &err));
	CHECK(l[0] == mix[1] && fabsf(s[0] - 1.0f) < 1e-4f);
	VOK(vidx_search(v, 1, x + 7 * (size_t)dim, K, s, l, &err));
	CHECK(l[0] != mix[0]);

	/* Replaced twice: still one live copy. */
	VOK(vidx_add(v, 1, x + t * (size_t)dim, &target, &err));
	ENSURE(ref_put(&r, target, x + t * (size_t)dim) == 0);
	CHECK(vidx_count(v) == n + 1);
	VOK(vidx_search(v, 1, x + t * (size_t)dim, K, s, l, &err));
	CHECK(l[0] == target);
	VOK(vidx_search(v, 1, w, K, s, l, &err));
	CHECK(l[0] != target);
	CHECKF(rows_fault(1, K, s, l) == NULL, "%s", rows_fault(1, K, s, l));
	if (exact)
		CHECK(diff_vs_ref(factory, v, &r, 16, q, K) == 0);
out:
	vidx_close(v);
	ref_free(&r);
	free(x);
	free(w);
	free(q);
}

/* A replacement whose add FAISS refuses keeps the old vectors: the ids stay
 * present and still find themselves with their old vectors; the new ids of
 * the same batch are absent. Then the same replacement without the fault
 * goes through. */
static void failed_replace_case(const char *factory, size_t n, int exact_scores)
{
	enum { DIM = 16 };
	uint64_t seed = 717;
	vidx_err err = {0};
	vidx *v = NULL;
	float *x = rand_units(&seed, n, DIM), *y = rand_units(&seed, 4, DIM);
	float s[K];
	int64_t l[K];
	ENSURE(x && y);

	printf("# failed replace: %s, %zu vectors\n", factory, n);
	VOK(build_random(factory, DIM, n, x, &v, &err));
	int64_t ids[4] = {id_of(3), id_of(9), 900001, id_of(n - 1)};
	/* What the old vectors find before the failure. */
	size_t olds[3] = {3, 9, n - 1};
	float bs[3 * K];
	int64_t bl[3 * K];
	for (int i = 0; i < 3; i++)
		VOK(vidx_search(v, 1, x + olds[i] * DIM, K, bs + i * K, bl + i * K, &err));
	vidx_inject_add_failures(v, 1);
	memset(&err, 0, sizeof err);
	CHECK(vidx_add(v, 4, y, ids, &err) == VIDX_EFAISS);
	CHECKF(err.msg[0], "no message");
	CHECKF(vidx_count(v) == n, "count %zu after the failed replacement", vidx_count(v));
	CHECK(!vidx_contains(v, 900001));
	for (int i = 0; i < 3; i++) {
		CHECK(vidx_contains(v, id_of(olds[i])));
		VOK(vidx_search(v, 1, x + olds[i] * DIM, K, s, l, &err));
		CHECKF(diff_results("after the failed replacement", K, s, l, bs + i * K, bl + i * K,
		                    1e-4f) == 0, "old vector %zu", olds[i]);
	}
	VOK(vidx_add(v, 4, y, ids, &err));
	CHECK(vidx_count(v) == n + 1);
	if (exact_scores)
		for (int i = 0; i < 4; i++) {
			VOK(vidx_search(v, 1, y + i * DIM, K, s, l, &err));
			CHECKF(l[0] == ids[i] && s[0] > 0.999f, "new vector %d: top %lld score %g", i,
			       (long long)l[0], s[0]);
		}
out:
	vidx_close(v);
	free(x);
	free(y);
}

static void t_failed_replace(void)
{
	failed_replace_case("exact", 300, 1);
	failed_replace_case("hnsw", 300, 1);
	failed_replace_case("IVF16,Flat", 300, 1);   /* untrained: in pending */
	failed_replace_case("IVF16,PQ4np", 5000, 1); /* untrained */
	failed_replace_case("IVF16,Flat", 2000, 1);  /* trained: from its own vectors */
	failed_replace_case("IVF16,PQ4np", 10000, 1);
	failed_replace_case("PQ4np", 10000, 0);      /* "other" over IDMap, decoded */
}

/* Re-ranking: a compressed IVF index proposes refine * k candidates and the
 * exact vectors order them. Recall against exact search rises from what the
 * codes alone give to nearly all; the scores returned are exact; the vector
 * file saved beside the snapshot brings it back after a load; a damaged or
 * missing vector file makes the snapshot unusable. */
static void t_refine(void)
{
	enum { DIM = 32, N = 12000, NQ = 64 };
	uint64_t seed = 919;
	vidx_err err = {0};
	vidx *v = NULL, *w = NULL;
	ref r;
	char dir[PATH_MAX], path[PATH_MAX + 16], vpath[PATH_MAX + 32];
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N, DIM), *q = rand_units(&seed, NQ, DIM);
	float *s = malloc(NQ * K * sizeof *s), *rs = malloc(NQ * K * sizeof *rs);
	int64_t *l = malloc(NQ * K * sizeof *l), *rl = malloc(NQ * K * sizeof *rl);
	int64_t *ids = malloc(N * sizeof *ids);
	dir[0] = 0;
	ENSURE(x && q && s && rs && l && rl && ids && make_tmpdir(dir, sizeof dir) == 0);
	snprintf(path, sizeof path, "%s/ivfpq.vidx", dir);
	snprintf(vpath, sizeof vpath, "%s.vec", path);

	VOK(build_random("IVF16,PQ8np", DIM, N, x, &v, &err));
	for (size_t i = 0; i < N; i++)
		ids[i] = id_of(i);
	ENSURE(ref_add_new(&r, N, x, ids) == 0);
	ref_search(&r, NQ, q, K, rs, rl);
	VOK(vidx_set_param(v, "nprobe", 16, &err));

	VOK(vidx_set_param(v, "refine", 0, &err));
	VOK(vidx_search(v, NQ, q, K, s, l, &err));
	double raw = recall(NQ, K, l, rl);
	VOK(vidx_set_param(v, "refine", 10, &err));
	VOK(vidx_search(v, NQ, q, K, s, l, &err));
	double refined = recall(NQ, K, l, rl);
	printf("# refine: recall@%d %.3f from PQ codes alone, %.3f re-ranked (x10)\n", K, raw,
	       refined);
	CHECKF(raw < 0.9, "PQ8 alone finds %.3f: the test does not test re-ranking", raw);
	CHECKF(refined >= 0.95, "re-ranked recall %.3f", refined);
	CHECKF(rows_fault(NQ, K, s, l) == NULL, "%s", rows_fault(NQ, K, s, l));
	/* Each score is the exact inner product of its id's vector. */
	for (size_t i = 0; i < NQ * K; i += 7) {
		size_t row = 0;
		while (row < N && ids[row] != l[i])
			row++;
		ENSURE(row < N);
		float d = 0;
		for (int t = 0; t < DIM; t++)
			d += x[row * DIM + t] * q[(i / K) * DIM + t];
		CHECKF(fabsf(d - s[i]) < 1e-4f, "score %g, exact %g", s[i], d);
	}
	CHECK(vidx_set_param(v, "refine", -1, &err) == VIDX_EINVAL);
	CHECK(vidx_set_param(v, "refine", 2.5, &err) == VIDX_EINVAL);

	/* Saved and loaded: the same answers, from the mapped file. */
	VOK(vidx_search(v, NQ, q, K, rs, rl, &err));
	VOK(vidx_save(v, path, &err));
	VOK(vidx_load(path, MODEL, DIM, &w, &err));
	/* Search parameters are the opener's, not the snapshot's. */
	VOK(vidx_set_param(w, "nprobe", 16, &err));
	VOK(vidx_set_param(w, "refine", 10, &err));
	VOK(vidx_search(w, NQ, q, K, s, l, &err));
	CHECK(diff_results("refined after load", NQ * K, s, l, rs, rl, 1e-5f) == 0);
	/* Changes after the load go to the overlay, and a second save folds
	 * them into a new file. */
	VOK(vidx_add(w, 1, q, &ids[N - 1], &err));
	VOK(vidx_search(w, 1, q, K, s, l, &err));
	CHECK(l[0] == ids[N - 1] && fabsf(s[0] - 1) < 1e-4f);
	VOK(vidx_save(w, path, &err));
	vidx_close(w);
	w = NULL;
	VOK(vidx_load(path, MODEL, DIM, &w, &err));
	VOK(vidx_set_param(w, "nprobe", 16, &err));
	VOK(vidx_search(w, 1, q, K, s, l, &err));
	CHECK(l[0] == ids[N - 1] && fabsf(s[0] - 1) < 1e-4f);
	vidx_close(w);
	w = NULL;

	/* A flipped byte in the vector file, then none at all. */
	{
		int fd = open(vpath, O_RDWR);
		ENSURE(fd >= 0);
		unsigned char b;
		off_t at = lseek(fd, 0, SEEK_END) - 5;
		ENSURE(pread(fd, &b, 1, at) == 1);
		b ^= 0x40;
		ENSURE(pwrite(fd, &b, 1, at) == 1);
		close(fd);
	}
	memset(&err, 0, sizeof err);
	CHECK(vidx_load(path, MODEL, DIM, &w, &err) == VIDX_ECORRUPT);
	printf("# damaged vector file: %s\n", err.msg);
	CHECK(strstr(err.msg, "checksum") != NULL);
	unlink(vpath);
	memset(&err, 0, sizeof err);
	CHECK(vidx_load(path, MODEL, DIM, &w, &err) == VIDX_ECORRUPT);
	printf("# missing vector file: %s\n", err.msg);
	/* Exact kinds keep no vector file and refuse the parameter. */
	{
		vidx *e = NULL;
		VOK(vidx_create("exact", DIM, MODEL, &e, &err));
		CHECK(vidx_set_param(e, "refine", 4, &err) == VIDX_EINVAL);
		vidx_close(e);
	}
out:
	vidx_close(v);
	vidx_close(w);
	ref_free(&r);
	remove_tree(dir);
	free(x), free(q), free(s), free(rs), free(l), free(rl), free(ids);
}

/* ---- maintenance off the lock ------------------------------------------- */

struct churn {
	vidx *v;
	const float *y;   /* [300][dim] new vectors */
	int dim;
	int64_t base;     /* new ids base .. base + 299 */
	const int64_t *gone;  /* [200] ids to remove */
	const int64_t *repl;  /* [100] ids to replace with y[200..299] */
	int searches, errors;
};

/* Changes and searches while a maintenance runs in another thread. */
static void *churn_run(void *p)
{
	struct churn *c = p;
	vidx_err e;
	float s[K];
	int64_t l[K];
	for (int i = 0; i < 200; i++) {
		int64_t id = c->base + i;
		if (vidx_add(c->v, 1, c->y + (size_t)i * c->dim, &id, &e) != VIDX_OK)
			c->errors++;
		if (vidx_remove(c->v, 1, &c->gone[i], NULL, &e) != VIDX_OK)
			c->errors++;
		if (i < 100 &&
		    vidx_add(c->v, 1, c->y + (size_t)(200 + i) * c->dim, &c->repl[i], &e) != VIDX_OK)
			c->errors++;
		if (vidx_search(c->v, 1, c->y + (size_t)i * c->dim, K, s, l, &e) != VIDX_OK)
			c->errors++;
		c->searches++;
	}
	return NULL;
}

struct maint_arg {
	vidx *v;
	int rc;
	vidx_maint did;
	vidx_err err;
};

static void *maint_run(void *p)
{
	struct maint_arg *a = p;
	a->rc = vidx_maintain(a->v, &a->did, &a->err);
	return NULL;
}

/* Runs the due maintenance of v in a thread while churn_run changes v;
 * then checks v against the reference r given the same changes. */
static void maintain_under_churn(vidx *v, ref *r, int dim, size_t n, const int64_t *ids,
                                 vidx_maint want, uint64_t *seed)
{
	float *y = rand_units(seed, 300, dim);
	int64_t gone[200], repl[100];
	pthread_t tm, tc;
	ENSURE(y);
	for (int i = 0; i < 200; i++)
		gone[i] = ids[(size_t)i * (n / 200)];
	for (int i = 0; i < 100; i++)
		repl[i] = ids[(size_t)i * (n / 200) + 1];
	CHECKF(vidx_maintenance_due(v) == want, "due %s, not %s",
	       vidx_maint_name(vidx_maintenance_due(v)), vidx_maint_name(want));
	struct maint_arg a = {v, -1, VIDX_MAINT_NONE, {0}};
	struct churn c = {v, y, dim, 5000000, gone, repl, 0, 0};
	ENSURE(pthread_create(&tm, NULL, maint_run, &a) == 0);
	ENSURE(pthread_create(&tc, NULL, churn_run, &c) == 0);
	pthread_join(tc, NULL);
	pthread_join(tm, NULL);
	CHECKF(a.rc == VIDX_OK, "maintenance: %s", a.err.msg);
	CHECKF(a.did == want, "did %s", vidx_maint_name(a.did));
	CHECK(c.errors == 0 && c.searches == 200);
	for (int i = 0; i < 200; i++) {
		ENSURE(ref_put(r, 5000000 + i, y + (size_t)i * dim) == 0);
		ref_del(r, gone[i]);
		if (i < 100)
			ENSURE(ref_put(r, repl[i], y + (size_t)(200 + i) * dim) == 0);
	}
	/* Everything done meanwhile is in the new index. */
	for (int i = 0; i < 200; i++) {
		CHECK(vidx_contains(v, 5000000 + i));
		CHECK(vidx_contains(v, gone[i]) == (ref_find(r, gone[i]) >= 0));
	}
	CHECKF(vidx_count(v) == r->n, "count %zu, reference %zu", vidx_count(v), r->n);
	CHECK(vidx_maintenance_due(v) == VIDX_MAINT_NONE);
	vidx_state st;
	vidx_get_state(v, &st);
	CHECK(st.maintenances == 1 && st.running == VIDX_MAINT_NONE && !st.error[0]);
	printf("# %s: %.1f ms, the exchange held the lock %.2f ms\n", vidx_maint_name(want),
	       st.last_ms, st.last_swap_ms);
out:
	free(y);
}

/* The search defaults: nprobe an eighth of the lists (at least 32, at
 * most all of them), refine 100 for compressed codes, none for exact
 * ones; a loaded snapshot gets the defaults, not the nprobe it was saved
 * with (FAISS writes nprobe into the file). */
/* ---- filtered search (filter.c) ------------------------------------------ */

/* Every kind, filters keeping 1/2 to 1/500 of the vectors: k results when
 * k are allowed, only allowed ids, and, wherever the index scores the
 * allowed vectors exactly (exact; a filter keeping at most 1/8), exactly
 * the brute-force k best of the allowed set. */
static void t_search_among(void)
{
	enum { DIM = 32, N = 12000, NQ = 8 };
	static const char *const kinds[] = {"exact", "HNSW32,Flat", "IVF16,Flat", "IVF16,PQ8np",
	                                    "auto"};
	static const size_t every[] = {2, 10, 100, 500};
	vidx_err err;
	vidx *v = NULL;
	ref r;
	uint64_t seed = 29;
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N, DIM), *q = rand_units(&seed, NQ, DIM);
	int64_t *allow = malloc((N + 2) * sizeof *allow);
	ENSURE(x && q && allow);
	for (size_t f = 0; f < sizeof kinds / sizeof kinds[0]; f++) {
		VOK(build_random(kinds[f], DIM, N, x, &v, &err));
		for (size_t e = 0; e < sizeof every / sizeof every[0]; e++) {
			size_t n = 0;
			ref_free(&r);
			ref_init(&r, DIM);
			for (size_t i = 0; i < N; i += every[e]) {
				allow[n++] = id_of(i);
				ENSURE(ref_add_new(&r, 1, x + i * DIM, &allow[n - 1]) == 0);
			}
			allow[n++] = id_of(N) + 1000; /* not in the index: ignored */
			int exact = !strcmp(kinds[f], "exact") || !strcmp(kinds[f], "auto") ||
			            every[e] >= 8;
			size_t hits = 0, bad = 0, shortfall = 0, diff = 0;
			for (int qi = 0; qi < NQ; qi++) {
				float s[K], rs[K];
				int64_t l[K], rl[K];
				VOK(vidx_search_among(v, q + qi * DIM, K, allow, n, s, l, &err));
				ref_search(&r, 1, q + qi * DIM, K, rs, rl);
				for (int j = 0; j < K; j++) {
					if (l[j] < 0) {
						shortfall++;
						continue;
					}
					ssize_t i = index_of(l[j], N);
					bad += i < 0 || (size_t)i % every[e] != 0;
					for (int t = 0; t < K; t++)
						hits += rl[t] == l[j];
					if (exact && (l[j] != rl[j] || fabsf(s[j] - rs[j]) > 1e-4f))
						diff++;
				}
			}
			CHECKF(bad == 0 && shortfall == 0, "%s, 1/%zu allowed: %zu results not allowed, "
			       "%zu missing", kinds[f], every[e], bad, shortfall);
			if (exact)
				CHECKF(diff == 0, "%s, 1/%zu allowed: %zu results differ from brute force",
				       kinds[f], every[e], diff);
			else
				CHECKF(hits >= (size_t)(0.8 * NQ * K), "%s, 1/%zu allowed: recall %.2f",
				       kinds[f], every[e], (double)hits / (NQ * K));
		}
		/* Fewer allowed than k: all of them, then -1. */
		float s[K];
		int64_t l[K];
		int64_t three[3] = {id_of(5), id_of(77), id_of(4000)};
		VOK(vidx_search_among(v, q, K, three, 3, s, l, &err));
		CHECKF(l[3] == -1 && isinf(s[3]) && l[0] >= 0 && l[1] >= 0 && l[2] >= 0,
		       "%s: 3 allowed gave %lld %lld %lld %lld", kinds[f], (long long)l[0],
		       (long long)l[1], (long long)l[2], (long long)l[3]);
		VOK(vidx_search_among(v, q, K, three, 0, s, l, &err));
		CHECKF(l[0] == -1, "%s: none allowed gave id %lld", kinds[f], (long long)l[0]);
		int64_t unsorted[2] = {id_of(9), id_of(1)};
		CHECKF(vidx_search_among(v, q, K, unsorted, 2, s, l, &err) == VIDX_EINVAL,
		       "%s: unsorted ids accepted", kinds[f]);
		vidx_close(v);
		v = NULL;
	}
	/* Ids too sparse for a bitmap: searched by bisection, same answer. */
	VOK(vidx_create("exact", DIM, MODEL, &v, &err));
	int64_t big[4] = {5, 1ll << 40, (1ll << 41) + 3, 1ll << 50};
	VOK(vidx_add(v, 4, x, big, &err));
	float s[4];
	int64_t l[4];
	int64_t two[2] = {1ll << 40, 1ll << 50};
	VOK(vidx_search_among(v, x + DIM, 4, two, 2, s, l, &err));
	CHECKF(l[0] == (1ll << 40) && l[1] == (1ll << 50) && l[2] == -1,
	       "sparse ids: got %lld %lld %lld", (long long)l[0], (long long)l[1], (long long)l[2]);
out:
	vidx_close(v);
	ref_free(&r);
	free(x);
	free(q);
	free(allow);
}

static void t_default_params(void)
{
	static const struct {
		const char *factory;
		int nprobe, refine;
	} cases[] = {
		{"IVF16,PQ8np", 16, 100},
		{"IVF64,Flat", 32, 0},
		{"IVF1024,PQ16np", 128, 100},
		{"IVF4096,Flat", 512, 0},
		{"exact", 0, 0},
		{"auto", 0, 0},
	};
	vidx_err err;
	vidx_state st;
	char dir[512], path[600];
	vidx *v = NULL, *w = NULL;
	float *x = NULL;
	dir[0] = 0;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		VOK(vidx_create(cases[i].factory, 64, MODEL, &v, &err));
		vidx_get_state(v, &st);
		CHECKF(st.nprobe == cases[i].nprobe && st.refine == cases[i].refine,
		       "%s: nprobe %d refine %d, want %d and %d", cases[i].factory, st.nprobe,
		       st.refine, cases[i].nprobe, cases[i].refine);
		vidx_close(v);
		v = NULL;
	}
	uint64_t seed = 11;
	const size_t n = 16 * 40;
	x = rand_units(&seed, n, 64);
	ENSURE(x && make_tmpdir(dir, sizeof dir) == 0);
	snprintf(path, sizeof path, "%s/ivf.vidx", dir);
	VOK(build_random("IVF16,Flat", 64, n, x, &v, &err));
	VOK(vidx_set_param(v, "nprobe", 3, &err));
	vidx_get_state(v, &st);
	CHECKF(st.nprobe == 3, "nprobe %d after setting 3", st.nprobe);
	VOK(vidx_save(v, path, &err));
	VOK(vidx_load(path, MODEL, 64, &w, &err));
	vidx_get_state(w, &st);
	CHECKF(st.nprobe == 16, "loaded with nprobe %d, want the default 16", st.nprobe);
out:
	vidx_close(v);
	vidx_close(w);
	free(x);
	remove_tree(dir);
}

/* An IVF index in the background: adds do not train it, vidx_maintain
 * does, on a copy, while adds, removals and searches go on. */
static void t_maint_train(void)
{
	enum { DIM = 16, N = 3000, NQ = 32 };
	uint64_t seed = 1201;
	vidx_err err = {0};
	vidx *v = NULL;
	ref r;
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N, DIM), *q = rand_units(&seed, NQ, DIM);
	int64_t *ids = malloc(N * sizeof *ids);
	ENSURE(x && q && ids);
	for (size_t i = 0; i < N; i++)
		ids[i] = id_of(i);
	VOK(vidx_create("IVF16,Flat", DIM, MODEL, &v, &err));
	vidx_set_background(v, 1);
	VOK(vidx_set_param(v, "nprobe", 16, &err));
	VOK(vidx_add(v, N, x, ids, &err));
	ENSURE(ref_add_new(&r, N, x, ids) == 0);
	vidx_state st;
	vidx_get_state(v, &st);
	CHECKF(st.pending == N, "%zu pending: an add trained in the background mode", st.pending);
	maintain_under_churn(v, &r, DIM, N, ids, VIDX_MAINT_TRAIN, &seed);
	vidx_get_state(v, &st);
	CHECK(st.pending == 0 && !strcmp(st.kind, "ivf"));
	/* All lists probed (the caller's nprobe carried over): exact. */
	CHECK(diff_vs_ref("trained in the background", v, &r, NQ, q, K) == 0);
out:
	vidx_close(v);
	ref_free(&r);
	free(x), free(q), free(ids);
}

/* HNSW: removed nodes past a fifth of the graph are compacted away. */
static void t_maint_compact(void)
{
	enum { DIM = 16, N = 5000, NQ = 32 };
	uint64_t seed = 1301;
	vidx_err err = {0};
	vidx *v = NULL;
	ref r;
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N, DIM), *q = rand_units(&seed, NQ, DIM);
	int64_t *ids = malloc(N * sizeof *ids);
	ENSURE(x && q && ids);
	for (size_t i = 0; i < N; i++)
		ids[i] = id_of(i);
	VOK(vidx_create("hnsw", DIM, MODEL, &v, &err));
	VOK(vidx_set_param(v, "efSearch", 128, &err));
	VOK(vidx_add(v, N, x, ids, &err));
	ENSURE(ref_add_new(&r, N, x, ids) == 0);
	int64_t *rm = malloc(1000 * sizeof *rm);
	ENSURE(rm);
	for (int i = 0; i < 1000; i++) {
		rm[i] = ids[N - 1 - i];
		ref_del(&r, rm[i]);
	}
	VOK(vidx_remove(v, 1000, rm, NULL, &err));
	free(rm);
	CHECK(vidx_maintenance_due(v) == VIDX_MAINT_NONE); /* 1000 of 5000: not a fifth yet */
	int64_t one = ids[0];
	VOK(vidx_remove(v, 1, &one, NULL, &err));
	ref_del(&r, one);
	CHECK(vidx_dead(v) == 1001);
	maintain_under_churn(v, &r, DIM, N / 2, ids + 1, VIDX_MAINT_COMPACT, &seed);
	/* The 200 removed and 100 replaced during the compaction were
	 * removed from the new graph: they are its only dead nodes. */
	CHECKF(vidx_dead(v) <= 300, "%zu dead after compaction", vidx_dead(v));
	float s[NQ * K], rs[NQ * K];
	int64_t l[NQ * K], rl[NQ * K];
	VOK(vidx_search(v, NQ, q, K, s, l, &err));
	ref_search(&r, NQ, q, K, rs, rl);
	double rec = recall(NQ, K, l, rl);
	printf("# compacted hnsw recall@%d = %.3f\n", K, rec);
	CHECK(rec >= 0.95);
out:
	vidx_close(v);
	ref_free(&r);
	free(x), free(q), free(ids);
}

/* auto: exact below its threshold; past it, vidx_maintain moves it to a
 * re-ranked IVF-PQ index on a copy while changes and searches go on; a
 * snapshot remembers that it is auto, and vidx_open_synced takes it for
 * "auto". */
static void t_maint_auto(void)
{
	enum { DIM = 32, N = 12000, NQ = 32 };
	uint64_t seed = 1401;
	vidx_err err = {0};
	vidx *v = NULL, *w = NULL;
	ref r;
	char dir[PATH_MAX], path[PATH_MAX + 16];
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N, DIM), *q = rand_units(&seed, NQ, DIM);
	int64_t *ids = malloc(N * sizeof *ids);
	dir[0] = 0;
	ENSURE(x && q && ids && make_tmpdir(dir, sizeof dir) == 0);
	snprintf(path, sizeof path, "%s/auto.vidx", dir);
	for (size_t i = 0; i < N; i++)
		ids[i] = id_of(i);
	VOK(vidx_create("auto", DIM, MODEL, &v, &err));
	CHECK(!strcmp(vidx_requested(v), "auto") && !strcmp(vidx_kind_name(v), "exact"));
	vidx_state st;
	vidx_get_state(v, &st);
	CHECKF(st.auto_threshold == 128 * 1024 * 512 / DIM, "threshold %zu", st.auto_threshold);
	VOK(vidx_set_param(v, "auto_threshold", N, &err));
	/* 4-byte codes of isotropic 32-d noise are a hard case: more
	 * candidates, which the new index takes over. */
	VOK(vidx_set_param(v, "refine", 40, &err));
	vidx_set_background(v, 1);
	VOK(vidx_add(v, N - 1, x, ids, &err));
	CHECK(vidx_maintenance_due(v) == VIDX_MAINT_NONE);
	VOK(vidx_add(v, 1, x + (N - 1) * DIM, ids + N - 1, &err));
	ENSURE(ref_add_new(&r, N, x, ids) == 0);
	maintain_under_churn(v, &r, DIM, N, ids, VIDX_MAINT_UPGRADE, &seed);
	vidx_get_state(v, &st);
	CHECKF(!strcmp(st.kind, "ivf") && strstr(st.factory, ",PQ4np") && st.refine == 40,
	       "%s %s refine %d", st.kind, st.factory, st.refine);
	printf("# auto moved to %s\n", st.factory);
	VOK(vidx_set_param(v, "nprobe", 128, &err));
	float s[NQ * K], rs[NQ * K];
	int64_t l[NQ * K], rl[NQ * K];
	VOK(vidx_search(v, NQ, q, K, s, l, &err));
	ref_search(&r, NQ, q, K, rs, rl);
	double rec = recall(NQ, K, l, rl);
	printf("# auto (IVF-PQ re-ranked x40, all lists) recall@%d = %.3f\n", K, rec);
	CHECK(rec >= 0.9);
	/* Snapshot: still auto, loaded for "auto", the same answers. */
	VOK(vidx_save(v, path, &err));
	VOK(vidx_load(path, MODEL, DIM, &w, &err));
	CHECK(!strcmp(vidx_requested(w), "auto") && !strcmp(vidx_kind_name(w), "ivf"));
	VOK(vidx_set_param(w, "nprobe", 128, &err));
	VOK(vidx_set_param(w, "refine", 40, &err));
	float s2[NQ * K];
	int64_t l2[NQ * K];
	VOK(vidx_search(w, NQ, q, K, s2, l2, &err));
	CHECK(diff_results("auto after load", NQ * K, s2, l2, s, l, 1e-5f) == 0);
out:
	vidx_close(v);
	vidx_close(w);
	ref_free(&r);
	remove_tree(dir);
	free(x), free(q), free(ids);
}

/* Each refused add leaves the index as it was: same count, no new ids, and
 * the existing ids it named keep their vectors. */
static void refused_add_case(const char *factory)
{
	enum { DIM = 16, N = 100 };
	uint64_t seed = 313;
	vidx_err err = {0};
	vidx *v = NULL;
	float *x = rand_units(&seed, N, DIM), *y = rand_units(&seed, 3, DIM);
	float s[K];
	int64_t l[K];
	ENSURE(x && y);

	printf("# refused adds: %s\n", factory);
	VOK(build_random(factory, DIM, N, x, &v, &err));

	int64_t dup_new[3] = {1000, 1001, 1000};
	memset(&err, 0, sizeof err);
	CHECK(vidx_add(v, 3, y, dup_new, &err) == VIDX_EINVAL);
	CHECK(err.code == VIDX_EINVAL && err.msg[0]);
	CHECK(!vidx_contains(v, 1000) && !vidx_contains(v, 1001));

	int64_t dup_old[3] = {id_of(5), 2000, id_of(5)};
	memset(&err, 0, sizeof err);
	CHECK(vidx_add(v, 3, y, dup_old, &err) == VIDX_EINVAL);
	CHECK(err.code == VIDX_EINVAL && err.msg[0]);
	CHECK(!vidx_contains(v, 2000));

	int64_t neg[2] = {3000, -5};
	memset(&err, 0, sizeof err);
	CHECK(vidx_add(v, 2, y, neg, &err) == VIDX_EINVAL);
	CHECK(err.code == VIDX_EINVAL && err.msg[0]);
	CHECK(!vidx_contains(v, 3000));

	int64_t nan_ids[2] = {4000, id_of(7)};
	y[DIM + 3] = NAN;
	memset(&err, 0, sizeof err);
	CHECK(vidx_add(v, 2, y, nan_ids, &err) == VIDX_EINVAL);
	CHECK(err.code == VIDX_EINVAL && err.msg[0]);
	CHECK(!vidx_contains(v, 4000));
	y[DIM + 3] = INFINITY;
	CHECK(vidx_add(v, 2, y, nan_ids, NULL) == VIDX_EINVAL);
	CHECK(!vidx_contains(v, 4000));
	CHECK(vidx_add(v, 1, NULL, nan_ids, NULL) == VIDX_EINVAL);

	CHECKF(vidx_count(v) == N, "count %zu after refused adds", vidx_count(v));
	CHECK(vidx_dead(v) == 0);
	/* The ids named in refused batches still hold their old vectors. */
	VOK(vidx_search(v, 1, x + 5 * DIM, K, s, l, &err));
	CHECK(l[0] == id_of(5) && fabsf(s[0] - 1.0f) < 1e-4f);
	VOK(vidx_search(v, 1, x + 7 * DIM, K, s, l, &err));
	CHECK(l[0] == id_of(7) && fabsf(s[0] - 1.0f) < 1e-4f);
	/* Nothing to add is fine. */
	VOK(vidx_add(v, 0, NULL, NULL, &err));
	CHECK(vidx_count(v) == N);
	/* Removing with ids missing is refused too. */
	CHECK(vidx_remove(v, 2, NULL, NULL, NULL) == VIDX_EINVAL);
out:
	vidx_close(v);
	free(x);
	free(y);
}

static void t_replace(void)
{
	replace_case("exact", 32, 500);
	replace_case("hnsw", 32, 500);
	replace_case("IVF16,Flat", 16, 500);
}

static void t_refused_add(void)
{
	refused_add_case("exact");
	refused_add_case("hnsw");
	refused_add_case("IVF16,Flat");
}

/* ---- 4. factories and arguments ------------------------------------------ */

static void t_factory(void)
{
	static const char *const bad[] = {"NotAFactory", "IDMap,Flat", "IDMap2,Flat", "IVF16,Bogus",
	                                  "PCA16,IVF16,Flat"};
	static const struct {
		const char *factory;
		int dim;
		const char *expanded, *kind;
	} good[] = {
		{NULL, 16, "Flat", "exact"},
		{"", 16, "Flat", "exact"},
		{"exact", 16, "Flat", "exact"},
		{"FLAT", 16, "Flat", "exact"},
		{"hnsw", 16, "HNSW32,Flat", "hnsw"},
		{"HNSW16,Flat", 16, "HNSW16,Flat", "hnsw"},
		{"IVF16,Flat", 16, "IVF16,Flat", "ivf"},
		{"ivfpq", 16, "IVF1024,PQ2np", "ivf"},
		{"ivfpq", 512, "IVF1024,PQ64np", "ivf"},
		{"IVF16_HNSW32,Flat", 16, "IVF16_HNSW32,Flat", "ivf"},
		{"PQ4", 16, "PQ4", "other"},
	};
	vidx_err err;
	vidx *v;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&err, 0, sizeof err);
		v = (vidx *)&err; /* must be reset to NULL */
		int rc = vidx_create(bad[i], 16, MODEL, &v, &err);
		CHECKF(rc == VIDX_EINVAL, "factory \"%s\": rc %d", bad[i], rc);
		CHECKF(err.code == VIDX_EINVAL && err.msg[0], "factory \"%s\": message \"%s\"", bad[i],
		       err.msg);
		CHECK(v == NULL);
		if (rc == VIDX_OK)
			vidx_close(v);
	}
	memset(&err, 0, sizeof err);
	CHECK(vidx_create("IDMap,Flat", 16, MODEL, &v, &err) == VIDX_EINVAL);
	CHECKF(strstr(err.msg, "IDMap") != NULL, "message \"%s\"", err.msg);

	static const int bad_dims[] = {0, -1, -512};
	for (size_t i = 0; i < sizeof bad_dims / sizeof bad_dims[0]; i++) {
		memset(&err, 0, sizeof err);
		v = (vidx *)&err;
		CHECK(vidx_create("exact", bad_dims[i], MODEL, &v, &err) == VIDX_EINVAL);
		CHECK(err.code == VIDX_EINVAL && err.msg[0]);
		CHECK(v == NULL);
	}
	CHECK(vidx_create("exact", 16, NULL, &v, NULL) == VIDX_EINVAL && v == NULL);
	CHECK(vidx_create("exact", 16, "", &v, NULL) == VIDX_EINVAL && v == NULL);

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		memset(&err, 0, sizeof err);
		v = NULL;
		int rc = vidx_create(good[i].factory, good[i].dim, MODEL, &v, &err);
		CHECKF(rc == VIDX_OK, "factory \"%s\": %s", good[i].factory ? good[i].factory : "(null)",
		       err.msg);
		if (rc != VIDX_OK)
			continue;
		CHECKF(strcmp(vidx_factory(v), good[i].expanded) == 0, "\"%s\" expands to \"%s\"",
		       good[i].factory ? good[i].factory : "(null)", vidx_factory(v));
		CHECKF(strcmp(vidx_kind_name(v), good[i].kind) == 0, "\"%s\" is of kind %s",
		       good[i].factory ? good[i].factory : "(null)", vidx_kind_name(v));
		CHECK(vidx_dim(v) == good[i].dim);
		CHECK(strcmp(vidx_model(v), MODEL) == 0);
		CHECK(vidx_count(v) == 0 && vidx_seq(v) == 0);
		vidx_close(v);
	}

	/* Search parameters: the kind's own are accepted, unknown ones refused. */
	if (vidx_create("hnsw", 16, MODEL, &v, &err) == VIDX_OK) {
		CHECK(vidx_set_param(v, "efSearch", 32, &err) == VIDX_OK);
		memset(&err, 0, sizeof err);
		CHECK(vidx_set_param(v, "noSuchParameter", 1, &err) == VIDX_EINVAL);
		CHECK(err.msg[0]);
		vidx_close(v);
	}
	if (vidx_create("IVF16,Flat", 16, MODEL, &v, &err) == VIDX_OK) {
		CHECK(vidx_set_param(v, "nprobe", 4, &err) == VIDX_OK);
		vidx_close(v);
	}
	vidx_close(NULL);
}

/* ---- 5. HNSW recall ------------------------------------------------------ */

static void t_hnsw_recall(void)
{
	enum { DIM = 32, N = 2000, NQ = 200 };
	uint64_t seed = 505;
	vidx_err err = {0};
	vidx *v = NULL;
	ref r;
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N, DIM), *q = rand_units(&seed, NQ, DIM);
	float *s = malloc(NQ * K * sizeof *s), *rs = malloc(NQ * K * sizeof *rs);
	int64_t *l = malloc(NQ * K * sizeof *l), *rl = malloc(NQ * K * sizeof *rl);
	int64_t ids[N];
	ENSURE(x && q && s && rs && l && rl);

	for (size_t i = 0; i < N; i++)
		ids[i] = id_of(i);
	VOK(vidx_create("hnsw", DIM, MODEL, &v, &err));
	VOK(vidx_add(v, N, x, ids, &err));
	ENSURE(ref_add_new(&r, N, x, ids) == 0);
	VOK(vidx_search(v, NQ, q, K, s, l, &err));
	CHECKF(rows_fault(NQ, K, s, l) == NULL, "%s", rows_fault(NQ, K, s, l));
	ref_search(&r, NQ, q, K, rs, rl);
	double rec = recall(NQ, K, l, rl);
	printf("# hnsw recall@%d = %.3f (efSearch 64, %d x %d)\n", K, rec, N, DIM);
	CHECKF(rec >= 0.9, "recall@%d %.3f", K, rec);
	/* Scores of found ids are the true inner products. */
	for (size_t i = 0; i < NQ * K; i++) {
		ssize_t at = index_of(l[i], N);
		if (at < 0)
			continue;
		double d = 0;
		for (int t = 0; t < DIM; t++)
			d += (double)q[(i / K) * DIM + t] * x[(size_t)at * DIM + t];
		if (fabs(d - s[i]) > 1e-4) {
			CHECKF(0, "score %g for id %lld, true %g", s[i], (long long)l[i], d);
			break;
		}
	}
out:
	vidx_close(v);
	ref_free(&r);
	free(x);
	free(q);
	free(s);
	free(rs);
	free(l);
	free(rl);
}

/* ---- 6. IVF -------------------------------------------------------------- */

static void t_ivf(void)
{
	enum { DIM = 16, N = 10000, NQ = 64 };
	uint64_t seed = 606;
	vidx_err err = {0};
	vidx *v = NULL;
	ref r;
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N + 1, DIM), *q = rand_units(&seed, NQ, DIM);
	float *s = malloc(NQ * K * sizeof *s), *rs = malloc(NQ * K * sizeof *rs);
	int64_t *l = malloc(NQ * K * sizeof *l), *rl = malloc(NQ * K * sizeof *rl);
	int64_t *ids = malloc(N * sizeof *ids);
	size_t *rows = malloc(N * sizeof *rows);
	int64_t *want = malloc(N * sizeof *want);
	ENSURE(x && q && s && rs && l && rl && ids && rows && want);

	for (size_t i = 0; i < N; i++)
		ids[i] = id_of(i);
	VOK(vidx_create("IVF16,Flat", DIM, MODEL, &v, &err));
	CHECK(strcmp(vidx_kind_name(v), "ivf") == 0);
	/* With one list probed, a trained IVF index misses neighbours; while
	 * its vectors are pending they are searched exactly whatever nprobe. */
	VOK(vidx_set_param(v, "nprobe", 1, &err));

	/* One short of the threshold: still pending, still exact. */
	for (size_t at = 0; at < IVF_TRAIN_AT - 1; at += 1000) {
		size_t m = IVF_TRAIN_AT - 1 - at < 1000 ? IVF_TRAIN_AT - 1 - at : 1000;
		VOK(vidx_add(v, m, x + at * DIM, ids + at, &err));
	}
	ENSURE(ref_add_new(&r, IVF_TRAIN_AT - 1, x, ids) == 0);
	CHECK(vidx_count(v) == IVF_TRAIN_AT - 1);
	CHECK(diff_vs_ref("pending, nprobe 1", v, &r, NQ, q, K) == 0);

	/* The vector that reaches it trains the index. */
	VOK(vidx_add(v, 1, x + (IVF_TRAIN_AT - 1) * DIM, ids + IVF_TRAIN_AT - 1, &err));
	ENSURE(ref_add_new(&r, 1, x + (IVF_TRAIN_AT - 1) * DIM, ids + IVF_TRAIN_AT - 1) == 0);
	CHECK(vidx_count(v) == IVF_TRAIN_AT);
	VOK(vidx_search(v, NQ, q, K, s, l, &err));
	CHECKF(rows_fault(NQ, K, s, l) == NULL, "%s", rows_fault(NQ, K, s, l));
	ref_search(&r, NQ, q, K, rs, rl);
	double rec1 = recall(NQ, K, l, rl);
	printf("# ivf trained: recall@%d with nprobe 1 = %.3f\n", K, rec1);
	CHECKF(rec1 < 0.99, "nprobe 1 still finds everything (%.3f): not trained?", rec1);
	CHECKF(rec1 > 0.05, "nprobe 1 finds almost nothing (%.3f)", rec1);
	/* Probing every list is exhaustive again. */
	VOK(vidx_set_param(v, "nprobe", 16, &err));
	CHECK(diff_vs_ref("trained, nprobe 16", v, &r, NQ, q, K) == 0);
	VOK(vidx_set_param(v, "nprobe", 4, &err));

	/* Adds after training go into the trained index. */
	VOK(vidx_add(v, N - IVF_TRAIN_AT, x + IVF_TRAIN_AT * DIM, ids + IVF_TRAIN_AT, &err));
	ENSURE(ref_add_new(&r, N - IVF_TRAIN_AT, x + IVF_TRAIN_AT * DIM, ids + IVF_TRAIN_AT) == 0);
	CHECK(vidx_count(v) == N);
	size_t nrows = 0;
	for (size_t i = 0; i < N; i += 7) {
		rows[nrows] = i;
		want[nrows++] = ids[i];
	}
	double top1 = self_top1(v, x, DIM, nrows, rows, want);
	printf("# ivf: self top-1 with nprobe 4 = %.3f\n", top1);
	CHECKF(top1 >= 0.9, "self top-1 %.3f", top1);

	/* Removal after training. */
	{
		int64_t rm[100];
		size_t removed = 0;
		for (size_t i = 0; i < 100; i++) {
			rm[i] = ids[i * 100 + 3];
			ref_del(&r, rm[i]);
		}
		VOK(vidx_remove(v, 100, rm, &removed, &err));
		CHECK(removed == 100);
		CHECK(vidx_count(v) == N - 100);
		size_t bad = 0;
		for (size_t i = 0; i < 100; i++) {
			CHECK(!vidx_contains(v, rm[i]));
			VOK(vidx_search(v, 1, x + (i * 100 + 3) * DIM, K, s, l, &err));
			for (int j = 0; j < K; j++)
				for (size_t t = 0; t < 100; t++)
					bad += l[j] == rm[t];
		}
		CHECKF(bad == 0, "%zu removed ids in results", bad);
		VOK(vidx_set_param(v, "nprobe", 16, &err));
		CHECK(diff_vs_ref("trained, after removal", v, &r, NQ, q, K) == 0);
	}

	/* A new id after training finds itself; replacing one works too. */
	{
		int64_t nid = 5000000;
		VOK(vidx_add(v, 1, x + (size_t)N * DIM, &nid, &err));
		VOK(vidx_search(v, 1, x + (size_t)N * DIM, K, s, l, &err));
		CHECK(l[0] == nid && fabsf(s[0] - 1.0f) < 1e-4f);
		VOK(vidx_add(v, 1, x + (size_t)N * DIM, &ids[50], &err));
		CHECK(vidx_count(v) == N - 100 + 1);
		VOK(vidx_search(v, 1, x + 50 * DIM, K, s, l, &err));
		CHECK(l[0] != ids[50]);
		VOK(vidx_search(v, 1, x + (size_t)N * DIM, 2, s, l, &err));
		CHECK((l[0] == nid && l[1] == ids[50]) || (l[0] == ids[50] && l[1] == nid));
	}
out:
	vidx_close(v);
	ref_free(&r);
	free(x);
	free(q);
	free(s);
	free(rs);
	free(l);
	free(rl);
	free(ids);
	free(rows);
	free(want);
}

/* ---- 7. save and load ---------------------------------------------------- */

/* Builds, removes every 13th vector, saves and loads; the loaded index must
 * answer as the saved one. grow_to > n: then adds up to grow_to vectors to
 * the loaded index (to train an IVF index loaded untrained). */
static void roundtrip_case(const char *dir, const char *factory, int dim, size_t n,
                           size_t grow_to)
{
	enum { NQ = 32 };
	uint64_t seed = 707 + n;
	size_t total = grow_to > n ? grow_to : n;
	vidx_err err = {0};
	vidx *v = NULL, *w = NULL;
	char path[PATH_CAP], tmp[TMP_PATH_CAP];
	float *x = rand_units(&seed, total + 1, dim), *q = rand_units(&seed, NQ, dim);
	int64_t *rm = malloc((n / 13 + 1) * sizeof *rm);
	size_t nrm = 0, removed = 0;
	float s[K];
	int64_t l[K];
	ENSURE(x && q && rm);

	printf("# save/load: %s, dim %d, %zu vectors\n", factory, dim, n);
	snprintf(path, sizeof path, "%s/roundtrip-%zu.vidx", dir, n);
	VOK(build_random(factory, dim, n, x, &v, &err));
	for (size_t i = 0; i < n; i += 13)
		rm[nrm++] = id_of(i);
	VOK(vidx_remove(v, nrm, rm, &removed, &err));
	CHECK(removed == nrm);
	vidx_set_seq(v, 4242 + n);
	VOK(vidx_save(v, path, &err));
	tmp_name_of(path, tmp, sizeof tmp);
	CHECK(access(tmp, F_OK) != 0 && errno == ENOENT);

	VOK(vidx_load(path, MODEL, dim, &w, &err));
	CHECK(vidx_count(w) == vidx_count(v));
	CHECK(vidx_count(w) == n - nrm);
	CHECK(vidx_dead(w) == vidx_dead(v));
	CHECK(vidx_seq(w) == 4242 + n);
	CHECK(vidx_dim(w) == dim);
	CHECK(strcmp(vidx_model(w), MODEL) == 0);
	CHECK(strcmp(vidx_factory(w), vidx_factory(v)) == 0);
	CHECK(strcmp(vidx_kind_name(w), vidx_kind_name(v)) == 0);
	CHECK(diff_indexes("loaded vs saved", v, w, NQ, q, K) == 0);
	for (size_t i = 0; i < n; i++)
		if (vidx_contains(w, id_of(i)) != vidx_contains(v, id_of(i))) {
			CHECKF(0, "contains(%lld) differs after loading", (long long)id_of(i));
			break;
		}
	if (strcmp(vidx_kind_name(v), "hnsw") == 0)
		CHECKF(vidx_dead(w) == nrm, "dead %zu after loading", vidx_dead(w));
	/* Removed ids stay hidden: query with their own vectors. */
	{
		size_t bad = 0;
		for (size_t i = 0; i < nrm && i < 40; i++) {
			VOK(vidx_search(w, 1, x + (size_t)(i * 13) * (size_t)dim, K, s, l, &err));
			for (int j = 0; j < K; j++) {
				ssize_t at = l[j] < 0 ? -1 : index_of(l[j], n);
				bad += l[j] >= 0 && (at < 0 || at % 13 == 0);
			}
		}
		CHECKF(bad == 0, "%zu removed ids in results after loading", bad);
	}

	/* The loaded index takes changes: a new id and a replacement. */
	{
		int64_t nid = 7777777, old = id_of(1);
		size_t before = vidx_count(w);
		VOK(vidx_add(w, 1, x + total * (size_t)dim, &nid, &err));
		CHECK(vidx_count(w) == before + 1);
		VOK(vidx_search(w, 1, x + total * (size_t)dim, K, s, l, &err));
		CHECK(l[0] == nid);
		VOK(vidx_remove(w, 1, &nid, &removed, &err));
		CHECK(removed == 1);
		if (n > 1) {
			VOK(vidx_add(w, 1, x + 2 * (size_t)dim, &old, &err));
			CHECK(vidx_count(w) == before);
			VOK(vidx_search(w, 1, x + 1 * (size_t)dim, K, s, l, &err));
			CHECK(l[0] != old);
		}
	}
	if (grow_to > n) {
		size_t *rows = malloc(200 * sizeof *rows);
		int64_t *want = malloc(200 * sizeof *want);
		size_t nrows = 0;
		if (!rows || !want) {
			free(rows);
			free(want);
			ENSURE(0);
		}
		for (size_t at = n; at < grow_to; at += 1000) {
			size_t m = grow_to - at < 1000 ? grow_to - at : 1000;
			int64_t ids[1000];
			for (size_t i = 0; i < m; i++)
				ids[i] = id_of(at + i);
			if (vidx_add(w, m, x + at * (size_t)dim, ids, &err) != VIDX_OK) {
				CHECKF(0, "adding after loading: %s", err.msg);
				break;
			}
		}
		for (size_t i = n + 5; i < grow_to && nrows < 200; i += 37) {
			rows[nrows] = i;
			want[nrows++] = id_of(i);
		}
		double f = self_top1(w, x, dim, nrows, rows, want);
		CHECKF(f >= 0.9, "self top-1 %.3f after growing the loaded index", f);
		free(rows);
		free(want);
		/* It has trained: probing one list now gives other answers than
		 * probing them all. */
		float sa[NQ * K], sb[NQ * K];
		int64_t la[NQ * K], lb[NQ * K];
		VOK(vidx_set_param(w, "nprobe", 1024, &err));
		VOK(vidx_search(w, NQ, q, K, sa, la, &err));
		VOK(vidx_set_param(w, "nprobe", 1, &err));
		VOK(vidx_search(w, NQ, q, K, sb, lb, &err));
		size_t d = 0;
		for (size_t i = 0; i < NQ * K; i++)
			d += la[i] != lb[i];
		CHECKF(d > 0, "nprobe 1 answers as nprobe 1024: the loaded index did not train");
	}
out:
	vidx_close(v);
	vidx_close(w);
	free(x);
	free(q);
	free(rm);
}

static void t_save_load(void)
{
	char dir[DIR_CAP];
	REQUIRE(make_tmpdir(dir, sizeof dir) == 0);
	roundtrip_case(dir, "exact", 32, 1000, 0);
	roundtrip_case(dir, "hnsw", 32, 1001, 0);
	roundtrip_case(dir, "IVF16,Flat", 16, 600, IVF_TRAIN_AT + 400); /* untrained */
	roundtrip_case(dir, "IVF16,PQ4np", 16, 10000, 0);               /* trained */
	roundtrip_case(dir, "exact", 32, 0, 0);                         /* empty */
	roundtrip_case(dir, "hnsw", 32, 3, 0);
	remove_tree(dir);
}

/* ---- 8. torn and damaged snapshots --------------------------------------- */

/* Loads path expecting code; checks the error is reported properly. */
static void expect_load_fails(const char *what, const char *path, int dim, int code)
{
	vidx_err err;
	vidx *v = (vidx *)&err;
	memset(&err, 0, sizeof err);
	int rc = vidx_load(path, MODEL, dim, &v, &err);
	CHECKF(rc == code, "%s: rc %d (%s), expected %d", what, rc, err.msg, code);
	CHECKF((int)err.code == rc && err.msg[0], "%s: err %d \"%s\"", what, err.code, err.msg);
	CHECKF(v == NULL, "%s: an index came back", what);
	if (rc == VIDX_OK)
		vidx_close(v);
	else
		printf("# %s: %s\n", what, err.msg);
}

static void t_torn_snapshot(void)
{
	enum { DIM = 32, NA = 300, NB = 500, NQ = 16 };
	uint64_t seed = 808;
	char dir[DIR_CAP] = "", path[PATH_CAP], other[PATH_CAP], tmp[TMP_PATH_CAP];
	vidx_err err = {0};
	vidx *v = NULL, *w = NULL;
	float *x = rand_units(&seed, NB, DIM), *q = rand_units(&seed, NQ, DIM);
	float sa[NQ * K], s[NQ * K];
	int64_t la[NQ * K], l[NQ * K];
	unsigned char *b = NULL;
	size_t blen = 0;
	ENSURE(x && q);
	ENSURE(make_tmpdir(dir, sizeof dir) == 0);
	snprintf(path, sizeof path, "%s/index.vidx", dir);
	snprintf(other, sizeof other, "%s/b.vidx", dir);
	tmp_name_of(path, tmp, sizeof tmp);

	/* A: saved. */
	VOK(build_random("exact", DIM, NA, x, &v, &err));
	vidx_set_seq(v, 7);
	VOK(vidx_save(v, path, &err));
	VOK(vidx_search(v, NQ, q, K, sa, la, &err));

	/* B: more vectors; its save dies half way through writing the
	 * temporary file, before the rename. */
	{
		int64_t ids[NB - NA];
		for (size_t i = 0; i < NB - NA; i++)
			ids[i] = id_of(NA + i);
		VOK(vidx_add(v, NB - NA, x + NA * DIM, ids, &err));
	}
	vidx_set_seq(v, 9);
	VOK(vidx_save(v, other, &err));
	ENSURE((b = slurp(other, &blen)) != NULL);
	ENSURE(spit(tmp, b, blen / 2) == 0);

	VOK(vidx_load(path, MODEL, DIM, &w, &err));
	CHECK(vidx_count(w) == NA);
	CHECK(vidx_seq(w) == 7);
	VOK(vidx_search(w, NQ, q, K, s, l, &err));
	CHECK(diff_results("A after a torn save", NQ * K, s, l, sa, la, 1e-5f) == 0);
	vidx_close(w);
	w = NULL;

	/* Garbage in the temporary file: the same. */
	for (size_t i = 0; i < blen; i++)
		b[i] = (unsigned char)rng_next(&seed);
	ENSURE(spit(tmp, b, blen) == 0);
	VOK(vidx_load(path, MODEL, DIM, &w, &err));
	CHECK(vidx_count(w) == NA && vidx_seq(w) == 7);
	vidx_close(w);
	w = NULL;

	/* The next save goes through despite the leftover and takes its place. */
	VOK(vidx_save(v, path, &err));
	CHECK(access(tmp, F_OK) != 0);
	VOK(vidx_load(path, MODEL, DIM, &w, &err));
	CHECK(vidx_count(w) == NB && vidx_seq(w) == 9);
	CHECK(diff_indexes("B", v, w, NQ, q, K) == 0);
out:
	vidx_close(v);
	vidx_close(w);
	free(b);
	free(x);
	free(q);
	remove_tree(dir);
}

static void corrupt_case(const char *dir, const char *factory)
{
	enum { DIM = 32, N = 300 };
	uint64_t seed = 818;
	char good[PATH_CAP], bad[PATH_CAP], what[96];
	vidx_err err = {0};
	vidx *v = NULL, *w = NULL;
	float *x = rand_units(&seed, N, DIM);
	unsigned char *b = NULL, *c = NULL;
	size_t len = 0;
	ENSURE(x);

	snprintf(good, sizeof good, "%s/good-%s.vidx", dir, factory);
	snprintf(bad, sizeof bad, "%s/bad-%s.vidx", dir, factory);
	VOK(build_random(factory, DIM, N, x, &v, &err));
	VOK(vidx_save(v, good, &err));
	ENSURE((b = slurp(good, &len)) != NULL && len > 200);
	ENSURE((c = malloc(len + 16)) != NULL);
	VOK(vidx_load(good, MODEL, DIM, &w, &err)); /* the original is fine */
	CHECK(vidx_count(w) == N);

	/* Truncated: in the payload, just short of the end, in the header. */
	const size_t cuts[] = {len / 2, len - 1, 60, 20, 8};
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		snprintf(what, sizeof what, "%s truncated to %zu of %zu bytes", factory, cuts[i], len);
		ENSURE(spit(bad, b, cuts[i]) == 0);
		expect_load_fails(what, bad, DIM, VIDX_ECORRUPT);
	}
	/* Too long. */
	memcpy(c, b, len);
	memset(c + len, 0, 16);
	ENSURE(spit(bad, c, len + 16) == 0);
	snprintf(what, sizeof what, "%s with bytes appended", factory);
	expect_load_fails(what, bad, DIM, VIDX_ECORRUPT);
	/* One payload byte flipped, at several places (the payload is the
	 * file's tail past a header of about 60 bytes). */
	const size_t at[] = {len - 1, len - len / 4, len / 2, 120};
	for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
		memcpy(c, b, len);
		c[at[i]] ^= 0x10;
		ENSURE(spit(bad, c, len) == 0);
		snprintf(what, sizeof what, "%s with byte %zu of %zu flipped", factory, at[i], len);
		expect_load_fails(what, bad, DIM, VIDX_ECORRUPT);
	}
	/* Header fields the checksum covers: dim, kind, seq, the model id.
	 * A damaged seq would otherwise skip changes at the next sync. */
	const size_t hdr_at[] = {12, 16, 24, 50};
	for (size_t i = 0; i < sizeof hdr_at / sizeof hdr_at[0]; i++) {
		memcpy(c, b, len);
		c[hdr_at[i]] ^= 0x20;
		ENSURE(spit(bad, c, len) == 0);
		snprintf(what, sizeof what, "%s with header byte %zu flipped", factory, hdr_at[i]);
		expect_load_fails(what, bad, DIM, VIDX_ECORRUPT);
	}
	/* A format version this build does not read. */
	memcpy(c, b, len);
	c[8] ^= 0x02;
	ENSURE(spit(bad, c, len) == 0);
	expect_load_fails("version changed", bad, DIM, VIDX_EFORMAT);
	/* The magic damaged. */
	memcpy(c, b, len);
	c[0] ^= 0x01;
	ENSURE(spit(bad, c, len) == 0);
	expect_load_fails("magic flipped", bad, DIM, VIDX_ECORRUPT);
out:
	vidx_close(v);
	vidx_close(w);
	free(x);
	free(b);
	free(c);
}

static void t_corrupt_snapshot(void)
{
	char dir[DIR_CAP], path[PATH_CAP];
	static const char text[] = "This is not an index snapshot, just some text in a file.\n";
	char big[4096];
	REQUIRE(make_tmpdir(dir, sizeof dir) == 0);

	corrupt_case(dir, "exact");
	corrupt_case(dir, "hnsw");

	snprintf(path, sizeof path, "%s/text.vidx", dir);
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = text[i % (sizeof text - 1)];
	CHECK(spit(path, big, sizeof big) == 0);
	expect_load_fails("a text file", path, 32, VIDX_ECORRUPT);
	snprintf(path, sizeof path, "%s/empty.vidx", dir);
	CHECK(spit(path, "", 0) == 0);
	expect_load_fails("an empty file", path, 32, VIDX_ECORRUPT);
	snprintf(path, sizeof path, "%s/missing.vidx", dir);
	expect_load_fails("a missing file", path, 32, VIDX_ENOENT);
	remove_tree(dir);
}

/* ---- 9. mismatch --------------------------------------------------------- */

static void t_mismatch(void)
{
	enum { DIM = 32, N = 50 };
	uint64_t seed = 909;
	char dir[DIR_CAP] = "", path[PATH_CAP];
	vidx_err err = {0};
	vidx *v = NULL, *w = NULL;
	float *x = rand_units(&seed, N, DIM);
	int64_t ids[N];
	ENSURE(x);
	ENSURE(make_tmpdir(dir, sizeof dir) == 0);
	snprintf(path, sizeof path, "%s/index.vidx", dir);
	for (size_t i = 0; i < N; i++)
		ids[i] = id_of(i);
	VOK(vidx_create("exact", DIM, "clip-vit-b32", &v, &err));
	VOK(vidx_add(v, N, x, ids, &err));
	VOK(vidx_save(v, path, &err));

	memset(&err, 0, sizeof err);
	w = (vidx *)&err;
	CHECK(vidx_load(path, "clip-vit-l14", DIM, &w, &err) == VIDX_EMISMATCH);
	CHECK(w == NULL);
	CHECK(err.code == VIDX_EMISMATCH);
	CHECKF(strstr(err.msg, "clip-vit-b32") && strstr(err.msg, "clip-vit-l14"),
	       "message \"%s\" does not name both models", err.msg);

	memset(&err, 0, sizeof err);
	w = (vidx *)&err;
	CHECK(vidx_load(path, "clip-vit-b32", 64, &w, &err) == VIDX_EMISMATCH);
	CHECK(w == NULL);
	CHECK(err.code == VIDX_EMISMATCH);
	CHECKF(strstr(err.msg, "32") && strstr(err.msg, "64"),
	       "message \"%s\" does not name both dimensions", err.msg);
	CHECKF(strstr(err.msg, "dimension") != NULL, "message \"%s\"", err.msg);

	memset(&err, 0, sizeof err);
	w = NULL;
	CHECK(vidx_load(path, "other", 16, &w, &err) == VIDX_EMISMATCH && w == NULL);

	/* And the right pair still loads. */
	w = NULL;
	VOK(vidx_load(path, "clip-vit-b32", DIM, &w, &err));
	CHECK(vidx_count(w) == N);
	CHECK(strcmp(vidx_model(w), "clip-vit-b32") == 0);
out:
	vidx_close(v);
	vidx_close(w);
	free(x);
	remove_tree(dir);
}

/* ---- store fixtures ------------------------------------------------------ */

static int64_t image_serial = 1;

/* Inserts an image with a fresh content hash; its id, or -1. */
static int64_t new_image(store *s)
{
	store_image img;
	store_err serr;
	int64_t id = -1;
	uint64_t n = (uint64_t)image_serial++;
	memset(&img, 0, sizeof img);
	snprintf(img.sha256, sizeof img.sha256, "%016llx%016llx%016llx%016llx", (unsigned long long)n,
	         0x0123456789abcdefULL, 0xfedcba9876543210ULL, (unsigned long long)(n * 2654435761u));
	img.mime = "image/png";
	img.bytes = 1000;
	if (store_image_insert(s, &img, &id, &serr) != STORE_OK) {
		printf("# store_image_insert: %s\n", serr.msg);
		return -1;
	}
	return id;
}

/* An image with an m1 embedding v (dim), also added to the index and the
 * reference when they are non-NULL. Its id, or -1. */
static int64_t new_embedded_image(store *s, const float *vec, int dim, vidx *v, ref *r)
{
	store_err serr;
	vidx_err err;
	uint64_t seq;
	int64_t id = new_image(s);
	if (id < 0)
		return -1;
	if (store_embedding_put(s, STORE_IMAGE, id, MODEL, vec, dim, &seq, &serr) != STORE_OK) {
		printf("# store_embedding_put: %s\n", serr.msg);
		return -1;
	}
	if (v) {
		if (vidx_add(v, 1, vec, &id, &err) != VIDX_OK) {
			printf("# vidx_add: %s\n", err.msg);
			return -1;
		}
		vidx_set_seq(v, seq);
	}
	if (r && ref_put(r, id, vec) != 0)
		return -1;
	return id;
}

/* Replaces item id's m1 embedding in the store, the index and the reference. */
static int replace_embedding(store *s, int64_t id, const float *vec, int dim, vidx *v, ref *r)
{
	store_err serr;
	vidx_err err;
	uint64_t seq;
	if (store_embedding_put(s, STORE_IMAGE, id, MODEL, vec, dim, &seq, &serr) != STORE_OK) {
		printf("# store_embedding_put: %s\n", serr.msg);
		return -1;
	}
	if (v) {
		if (vidx_add(v, 1, vec, &id, &err) != VIDX_OK) {
			printf("# vidx_add: %s\n", err.msg);
			return -1;
		}
		vidx_set_seq(v, seq);
	}
	return r ? ref_put(r, id, vec) : 0;
}

/* Deletes an image in the store, the index and the reference. */
static int delete_image(store *s, int64_t id, vidx *v, ref *r)
{
	store_err serr;
	vidx_err err;
	uint64_t seq;
	size_t removed;
	if (store_image_delete(s, id, &serr) != STORE_OK ||
	    store_last_seq(s, &seq, &serr) != STORE_OK) {
		printf("# deleting image %lld: %s\n", (long long)id, serr.msg);
		return -1;
	}
	if (v) {
		if (vidx_remove(v, 1, &id, &removed, &err) != VIDX_OK || removed != 1) {
			printf("# vidx_remove(%lld): %s\n", (long long)id, err.msg);
			return -1;
		}
		vidx_set_seq(v, seq);
	}
	if (r)
		ref_del(r, id);
	return 0;
}

/* Whether a and b hold the same ids among 0..maxid. */
static int same_ids(vidx *a, vidx *b, int64_t maxid)
{
	for (int64_t id = 0; id <= maxid; id++)
		if (vidx_contains(a, id) != vidx_contains(b, id)) {
			printf("# id %lld: %d vs %d\n", (long long)id, vidx_contains(a, id),
			       vidx_contains(b, id));
			return 0;
		}
	return 1;
}

/* ---- 10. rebuild from the store ------------------------------------------ */

static void t_rebuild_from_store(void)
{
	enum { DIM = 32, N = 400, NT = 50, NQ = 32 };
	uint64_t seed = 1010;
	char dir[DIR_CAP] = "", db[PATH_CAP];
	store *s = NULL;
	store_err serr = {0};
	vidx_err err = {0};
	vidx *inc = NULL, *built = NULL, *texts = NULL, *hnsw = NULL;
	ref r;
	ref_init(&r, DIM);
	float *x = rand_units(&seed, N + 10, DIM), *q = rand_units(&seed, NQ, DIM);
	float *other = rand_units(&seed, 1, 8);
	int64_t *ids = malloc(N * sizeof *ids), maxid = 0;
	ENSURE(x && q && other && ids);
	ENSURE(make_tmpdir(dir, sizeof dir) == 0);
	snprintf(db, sizeof db, "%s/clipd.db", dir);
	SOK(store_open(db, 0, &s, &serr));
	VOK(vidx_create("exact", DIM, MODEL, &inc, &err));

	for (size_t i = 0; i < N; i++) {
		ENSURE((ids[i] = new_embedded_image(s, x + i * DIM, DIM, inc, &r)) >= 0);
		maxid = ids[i];
		/* Texts with m1 embeddings (their ids overlap the images'), and
		 * another model's 8-d embeddings for some images: neither may
		 * reach the image index. */
		if (i % 8 == 0) {
			int64_t tid;
			float tv[DIM];
			rand_unit(&seed, tv, DIM);
			SOK(store_text_insert(s, "a text", NULL, &tid, &serr));
			SOK(store_embedding_put(s, STORE_TEXT, tid, MODEL, tv, DIM, NULL, &serr));
		}
		if (i % 10 == 0)
			SOK(store_embedding_put(s, STORE_IMAGE, ids[i], "m2", other, 8, NULL, &serr));
		if (i % 50 == 0)
			ENSURE(new_image(s) >= 0); /* pending: no embedding */
	}
	CHECK(vidx_count(inc) == N);

	/* Deletes (some with an m2 embedding too), and replacements. */
	size_t ndel = 0;
	for (size_t i = 0; i < N; i += 20, ndel++)
		ENSURE(delete_image(s, ids[i], inc, &r) == 0);
	for (size_t i = 3; i < 60; i += 11)
		ENSURE(replace_embedding(s, ids[i], x + (N + i % 10) * DIM, DIM, inc, &r) == 0);
	/* The last change is an image embedding, so the index's sequence is
	 * the store's. */
	ENSURE((maxid = new_embedded_image(s, x + (N + 9) * DIM, DIM, inc, &r)) >= 0);
	CHECK(vidx_count(inc) == N - ndel + 1);

	VOK(vidx_build(s, STORE_IMAGE, "exact", DIM, MODEL, &built, &err));
	CHECKF(vidx_count(built) == vidx_count(inc), "built %zu, incremental %zu", vidx_count(built),
	       vidx_count(inc));
	CHECK(same_ids(built, inc, maxid));
	CHECK(diff_indexes("built vs incremental", built, inc, NQ, q, K) == 0);
	CHECK(diff_vs_ref("built vs brute force", built, &r, NQ, q, K) == 0);
	/* The replaced vectors are the ones in use. */
	for (size_t i = 3; i < 60; i += 11) {
		float sc[K];
		int64_t l[K];
		VOK(vidx_search(built, 1, x + (N + i % 10) * DIM, K, sc, l, &err));
		CHECK(fabsf(sc[0] - 1.0f) < 1e-4f);
		VOK(vidx_search(built, 1, x + i * DIM, K, sc, l, &err));
		CHECK(l[0] != ids[i]);
	}
	{
		uint64_t last = 0;
		SOK(store_last_seq(s, &last, &serr));
		CHECKF(vidx_seq(built) == last, "built at %llu, store at %llu",
		       (unsigned long long)vidx_seq(built), (unsigned long long)last);
		CHECK(vidx_seq(inc) == last);
	}

	/* The texts are their own collection. */
	VOK(vidx_build(s, STORE_TEXT, "exact", DIM, MODEL, &texts, &err));
	CHECKF(vidx_count(texts) == NT, "text index holds %zu", vidx_count(texts));

	/* Another kind built from the same store holds the same ids. */
	VOK(vidx_build(s, STORE_IMAGE, "hnsw", DIM, MODEL, &hnsw, &err));
	CHECK(vidx_count(hnsw) == vidx_count(inc));
	CHECK(vidx_dead(hnsw) == 0); /* removals before the item's add are skipped */
	CHECK(same_ids(hnsw, inc, maxid));

	/* A store of another dimension for this model is refused. */
	{
		vidx *bad = (vidx *)&err;
		memset(&err, 0, sizeof err);
		CHECK(vidx_build(s, STORE_IMAGE, "exact", 16, MODEL, &bad, &err) == VIDX_EMISMATCH);
		CHECK(bad == NULL && err.msg[0]);
	}
out:
	vidx_close(inc);
	vidx_close(built);
	vidx_close(texts);
	vidx_close(hnsw);
	store_close(s);
	ref_free(&r);
	free(x);
	free(q);
	free(other);
	free(ids);
	remove_tree(dir);
}

static void t_snapshot_catch_up(void)
{
	enum { DIM = 32, N1 = 300, N2 = 100, NQ = 32 };
	uint64_t seed = 1111;
	char dir[DIR_CAP] = "", db[PATH_CAP], pe[PATH_CAP], ph[PATH_CAP];
	store *s = NULL;
	store_err serr = {0};
	vidx_err err = {0};
	vidx *ve = NULL, *vh = NULL, *le = NULL, *lh = NULL, *built = NULL;
	float *x = rand_units(&seed, N1 + N2 + 20, DIM), *q = rand_units(&seed, NQ, DIM);
	int64_t *ids = malloc((N1 + N2 + 1) * sizeof *ids), maxid = 0;
	char *touched = calloc(2 * (N1 + N2) + 100, 1);
	size_t ntouched = 0, applied = 0, hdead = 0;
	uint64_t snap_seq = 0, last = 0;
	ENSURE(x && q && ids && touched);
	ENSURE(make_tmpdir(dir, sizeof dir) == 0);
	snprintf(db, sizeof db, "%s/clipd.db", dir);
	snprintf(pe, sizeof pe, "%s/exact.vidx", dir);
	snprintf(ph, sizeof ph, "%s/hnsw.vidx", dir);
	SOK(store_open(db, 0, &s, &serr));
	VOK(vidx_create("exact", DIM, MODEL, &ve, &err));
	VOK(vidx_create("hnsw", DIM, MODEL, &vh, &err));

	/* Phase 1, then snapshots. */
	for (size_t i = 0; i < N1; i++) {
		ENSURE((ids[i] = new_embedded_image(s, x + i * DIM, DIM, ve, NULL)) >= 0);
		int64_t id = ids[i];
		VOK(vidx_add(vh, 1, x + i * DIM, &id, &err));
		vidx_set_seq(vh, vidx_seq(ve));
	}
	snap_seq = vidx_seq(ve);
	VOK(vidx_save(ve, pe, &err));
	VOK(vidx_save(vh, ph, &err));

	/* Phase 2 in the store only: new images, deletes of old and new ones,
	 * replacements, texts, and an image embedding last. */
	for (size_t i = N1; i < N1 + N2; i++) {
		ENSURE((ids[i] = new_embedded_image(s, x + i * DIM, DIM, NULL, NULL)) >= 0);
		touched[ids[i]] = 1;
	}
	for (size_t i = 5; i < N1 + N2; i += 25) {
		ENSURE(delete_image(s, ids[i], NULL, NULL) == 0);
		touched[ids[i]] = 1;
		hdead += i < N1;
	}
	for (size_t i = 2, k = 0; i < N1; i += 30, k++) {
		ENSURE(replace_embedding(s, ids[i], x + (N1 + N2 + k) * DIM, DIM, NULL, NULL) == 0);
		touched[ids[i]] = 1;
		hdead++;
	}
	{
		int64_t tid;
		SOK(store_text_insert(s, "later text", NULL, &tid, &serr));
		SOK(store_embedding_put(s, STORE_TEXT, tid, MODEL, x, DIM, NULL, &serr));
	}
	ENSURE((ids[N1 + N2] = new_embedded_image(s, x + (N1 + N2 + 19) * DIM, DIM, NULL, NULL)) >= 0);
	touched[ids[N1 + N2]] = 1;
	maxid = ids[N1 + N2];
	for (int64_t id = 0; id <= maxid; id++)
		ntouched += touched[id];
	SOK(store_last_seq(s, &last, &serr));

	/* Exact: load the snapshot and catch up. */
	VOK(vidx_load(pe, MODEL, DIM, &le, &err));
	CHECK(vidx_seq(le) == snap_seq);
	VOK(vidx_sync(le, s, STORE_IMAGE, &applied, &err));
	CHECKF(applied == ntouched, "applied %zu changes, expected %zu", applied, ntouched);
	CHECKF(vidx_seq(le) == last, "synced to %llu, store at %llu", (unsigned long long)vidx_seq(le),
	       (unsigned long long)last);
	VOK(vidx_build(s, STORE_IMAGE, "exact", DIM, MODEL, &built, &err));
	CHECK(vidx_count(le) == vidx_count(built));
	CHECK(same_ids(le, built, maxid));
	CHECK(diff_indexes("snapshot + sync vs build", le, built, NQ, q, K) == 0);
	CHECK(vidx_seq(built) == last);
	/* Nothing more to do. */
	VOK(vidx_sync(le, s, STORE_IMAGE, &applied, &err));
	CHECK(applied == 0);
	CHECK(vidx_seq(le) == last);

	/* HNSW: the same ids, the dropped ones as dead nodes. */
	VOK(vidx_load(ph, MODEL, DIM, &lh, &err));
	VOK(vidx_sync(lh, s, STORE_IMAGE, &applied, &err));
	CHECK(applied == ntouched);
	CHECK(vidx_seq(lh) == last);
	CHECK(vidx_count(lh) == vidx_count(built));
	CHECK(same_ids(lh, built, maxid));
	CHECKF(vidx_dead(lh) == hdead, "dead %zu, expected %zu", vidx_dead(lh), hdead);
	for (size_t i = 2, k = 0; i < N1; i += 30, k++) {
		float sc[K];
		int64_t l[K];
		VOK(vidx_search(lh, 1, x + (N1 + N2 + k) * DIM, K, sc, l, &err));
		CHECK(l[0] == ids[i] && fabsf(sc[0] - 1.0f) < 1e-4f);
	}
out:
	vidx_close(ve);
	vidx_close(vh);
	vidx_close(le);
	vidx_close(lh);
	vidx_close(built);
	store_close(s);
	free(x);
	free(q);
	free(ids);
	free(touched);
	remove_tree(dir);
}

/* ---- 11. vidx_open_synced ------------------------------------------------ */

static void t_open_synced(void)
{
	enum { DIM = 32, N = 200, NQ = 16 };
	uint64_t seed = 1212;
	char dir[DIR_CAP] = "", db[PATH_CAP], path[PATH_CAP], note[400];
	store *s = NULL;
	store_err serr = {0};
	vidx_err err = {0};
	vidx *v = NULL, *built = NULL, *tmp = NULL;
	float *x = rand_units(&seed, N + 40, DIM), *q = rand_units(&seed, NQ, DIM);
	int64_t ids[N + 40], maxid = 0;
	unsigned char *b = NULL;
	size_t len = 0;
	uint64_t last = 0;
	ENSURE(x && q);
	ENSURE(make_tmpdir(dir, sizeof dir) == 0);
	snprintf(db, sizeof db, "%s/clipd.db", dir);
	snprintf(path, sizeof path, "%s/images.vidx", dir);
	SOK(store_open(db, 0, &s, &serr));
	for (size_t i = 0; i < N; i++)
		ENSURE((ids[i] = new_embedded_image(s, x + i * DIM, DIM, NULL, NULL)) >= 0);
	maxid = ids[N - 1] + 100;

	/* No snapshot: built. */
	note[0] = 0;
	VOK(vidx_open_synced(path, s, STORE_IMAGE, "exact", DIM, MODEL, &v, note, sizeof note, &err));
	printf("# no snapshot: %s\n", note);
	CHECKF(strstr(note, "no snapshot") != NULL, "note \"%s\"", note);
	CHECK(vidx_count(v) == N);
	SOK(store_last_seq(s, &last, &serr));
	CHECK(vidx_seq(v) == last);
	VOK(vidx_save(v, path, &err));
	vidx_close(v);
	v = NULL;

	/* A valid snapshot, then newer changes: loaded and caught up. */
	for (size_t i = N; i < N + 20; i++)
		ENSURE((ids[i] = new_embedded_image(s, x + i * DIM, DIM, NULL, NULL)) >= 0);
	for (size_t i = 0; i < 5; i++)
		ENSURE(delete_image(s, ids[i * 10], NULL, NULL) == 0);
	ENSURE(replace_embedding(s, ids[33], x + (N + 30) * DIM, DIM, NULL, NULL) == 0);
	VOK(vidx_build(s, STORE_IMAGE, "exact", DIM, MODEL, &built, &err));
	note[0] = 0;
	VOK(vidx_open_synced(path, s, STORE_IMAGE, "exact", DIM, MODEL, &v, note, sizeof note, &err));
	printf("# valid snapshot: %s\n", note);
	CHECKF(strstr(note, "loaded snapshot") && strstr(note, "applied 26"), "note \"%s\"", note);
	CHECK(vidx_count(v) == N + 20 - 5);
	CHECK(vidx_count(v) == vidx_count(built));
	CHECK(same_ids(v, built, maxid));
	CHECK(diff_indexes("loaded + synced vs built", v, built, NQ, q, K) == 0);
	SOK(store_last_seq(s, &last, &serr));
	CHECK(vidx_seq(v) == last);
	vidx_close(v);
	v = NULL;

	/* A damaged snapshot: rebuilt, and the note says why. */
	ENSURE((b = slurp(path, &len)) != NULL && len > 100);
	b[len - 10] ^= 0x40;
	ENSURE(spit(path, b, len) == 0);
	note[0] = 0;
	VOK(vidx_open_synced(path, s, STORE_IMAGE, "exact", DIM, MODEL, &v, note, sizeof note, &err));
	printf("# damaged snapshot: %s\n", note);
	CHECKF(strstr(note, "damaged") && strstr(note, "rebuilt"), "note \"%s\"", note);
	CHECK(vidx_count(v) == vidx_count(built));
	CHECK(same_ids(v, built, maxid));
	CHECK(diff_indexes("rebuilt vs built", v, built, NQ, q, K) == 0);
	CHECK(vidx_seq(v) == last);
	vidx_close(v);
	v = NULL;
	/* Truncated: the same. */
	ENSURE(spit(path, b, len / 3) == 0);
	note[0] = 0;
	VOK(vidx_open_synced(path, s, STORE_IMAGE, "exact", DIM, MODEL, &v, note, sizeof note, &err));
	printf("# truncated snapshot: %s\n", note);
	CHECKF(strstr(note, "truncated") && strstr(note, "rebuilt"), "note \"%s\"", note);
	CHECK(vidx_count(v) == vidx_count(built));
	vidx_close(v);
	v = NULL;

	/* A snapshot of another factory: rebuilt as asked. */
	VOK(vidx_save(built, path, &err));
	note[0] = 0;
	VOK(vidx_open_synced(path, s, STORE_IMAGE, "hnsw", DIM, MODEL, &v, note, sizeof note, &err));
	printf("# other factory: %s\n", note);
	CHECKF(strstr(note, "rebuilt") != NULL, "note \"%s\"", note);
	CHECK(strcmp(vidx_kind_name(v), "hnsw") == 0);
	CHECK(vidx_count(v) == vidx_count(built));
	CHECK(same_ids(v, built, maxid));
	vidx_close(v);
	v = NULL;

	/* A snapshot newer than the database: rebuilt. An empty index claiming
	 * a later sequence would, if loaded, stay empty. */
	VOK(vidx_create("exact", DIM, MODEL, &tmp, &err));
	vidx_set_seq(tmp, last + 1000);
	VOK(vidx_save(tmp, path, &err));
	vidx_close(tmp);
	tmp = NULL;
	note[0] = 0;
	VOK(vidx_open_synced(path, s, STORE_IMAGE, "exact", DIM, MODEL, &v, note, sizeof note, &err));
	printf("# newer snapshot: %s\n", note);
	CHECKF(strstr(note, "newer") && strstr(note, "rebuilt"), "note \"%s\"", note);
	CHECK(vidx_count(v) == vidx_count(built));
	CHECK(vidx_seq(v) == last);
	vidx_close(v);
	v = NULL;

	/* Another model's snapshot, or another dimension's: refused. */
	VOK(vidx_create("exact", DIM, "m2", &tmp, &err));
	VOK(vidx_save(tmp, path, &err));
	vidx_close(tmp);
	tmp = NULL;
	memset(&err, 0, sizeof err);
	note[0] = 0;
	v = (vidx *)&err;
	CHECK(vidx_open_synced(path, s, STORE_IMAGE, "exact", DIM, MODEL, &v, note, sizeof note,
	                       &err) == VIDX_EMISMATCH);
	printf("# other model: %s\n", note);
	CHECK(v == NULL);
	CHECK(err.code == VIDX_EMISMATCH);
	CHECKF(strstr(note, "m2") != NULL, "note \"%s\"", note);
	CHECKF(strstr(err.msg, "m2") != NULL, "message \"%s\"", err.msg);
	v = NULL;

	VOK(vidx_create("exact", 16, MODEL, &tmp, &err));
	VOK(vidx_save(tmp, path, &err));
	vidx_close(tmp);
	tmp = NULL;
	memset(&err, 0, sizeof err);
	v = (vidx *)&err;
	CHECK(vidx_open_synced(path, s, STORE_IMAGE, "exact", DIM, MODEL, &v, NULL, 0, &err) ==
	      VIDX_EMISMATCH);
	CHECK(v == NULL && err.code == VIDX_EMISMATCH && err.msg[0]);
	v = NULL;

	/* A bad factory is refused before anything is read. */
	memset(&err, 0, sizeof err);
	CHECK(vidx_open_synced(path, s, STORE_IMAGE, "IDMap,Flat", DIM, MODEL, &v, NULL, 0, &err) ==
	      VIDX_EINVAL);
	CHECK(v == NULL);
out:
	vidx_close(v);
	vidx_close(built);
	vidx_close(tmp);
	store_close(s);
	free(x);
	free(q);
	free(b);
	remove_tree(dir);
}

/* ---- 12. concurrency ----------------------------------------------------- */

enum { CC_DIM = 32, CC_INIT = 1000, CC_ROUNDS = 200, CC_ADD = 5, CC_DEL = 3, CC_READERS = 3,
       CC_SEARCHES = 150, CC_NQ = 4 };

struct cc {
	vidx *v;
	const float *x;                 /* [CC_INIT + CC_ROUNDS * CC_ADD][CC_DIM] */
	const char *path;               /* snapshot written half way */
	pthread_barrier_t start;
	int writer_failed;
	size_t count_at_save;
};

struct cc_reader {
	struct cc *c;
	uint64_t seed;
	size_t failed, malformed, searches;
	char msg[256];
};

static void *cc_read(void *p)
{
	struct cc_reader *rd = p;
	float q[CC_NQ * CC_DIM], s[CC_NQ * K];
	int64_t l[CC_NQ * K];
	vidx_err err;
	const int64_t maxid = CC_INIT + CC_ROUNDS * CC_ADD;
	pthread_barrier_wait(&rd->c->start);
	for (int it = 0; it < CC_SEARCHES; it++) {
		/* Half the queries are database vectors, half random. */
		for (int i = 0; i < CC_NQ; i++) {
			if (i % 2)
				rand_unit(&rd->seed, q + i * CC_DIM, CC_DIM);
			else
				memcpy(q + i * CC_DIM,
				       rd->c->x + (rng_next(&rd->seed) % (uint64_t)maxid) * CC_DIM,
				       CC_DIM * sizeof *q);
		}
		rd->searches++;
		if (vidx_search(rd->c->v, CC_NQ, q, K, s, l, &err) != VIDX_OK) {
			if (!rd->failed++)
				snprintf(rd->msg, sizeof rd->msg, "%s", err.msg);
			continue;
		}
		const char *fault = rows_fault(CC_NQ, K, s, l);
		for (int i = 0; !fault && i < CC_NQ * K; i++)
			if (l[i] >= maxid)
				fault = "unknown id";
		/* The index never holds fewer than CC_INIT vectors. */
		for (int i = 0; !fault && i < CC_NQ; i++)
			if (l[i * K + K - 1] < 0)
				fault = "a row with fewer than k results";
		if (fault && !rd->malformed++)
			snprintf(rd->msg, sizeof rd->msg, "%s", fault);
	}
	return NULL;
}

/* Round r adds ids CC_INIT + r*CC_ADD ... and removes the CC_DEL oldest
 * live ones (ids 3r ...); it saves a snapshot half way. */
static void *cc_write(void *p)
{
	struct cc *c = p;
	vidx_err err;
	pthread_barrier_wait(&c->start);
	for (int r = 0; r < CC_ROUNDS; r++) {
		int64_t add[CC_ADD], del[CC_DEL];
		size_t removed = 0;
		for (int i = 0; i < CC_ADD; i++)
			add[i] = CC_INIT + (int64_t)r * CC_ADD + i;
		for (int i = 0; i < CC_DEL; i++)
			del[i] = (int64_t)r * CC_DEL + i;
		if (vidx_add(c->v, CC_ADD, c->x + (size_t)add[0] * CC_DIM, add, &err) != VIDX_OK ||
		    vidx_remove(c->v, CC_DEL, del, &removed, &err) != VIDX_OK || removed != CC_DEL) {
			printf("# writer, round %d: %s\n", r, err.msg);
			c->writer_failed = 1;
			return NULL;
		}
		vidx_set_seq(c->v, (uint64_t)r + 1);
		if (r == CC_ROUNDS / 2) {
			c->count_at_save = vidx_count(c->v);
			if (vidx_save(c->v, c->path, &err) != VIDX_OK) {
				printf("# writer, saving: %s\n", err.msg);
				c->writer_failed = 1;
				return NULL;
			}
		}
	}
	return NULL;
}

static void concurrency_case(const char *dir, const char *factory)
{
	const size_t nall = CC_INIT + CC_ROUNDS * CC_ADD;
	uint64_t seed = 1313;
	char path[PATH_CAP];
	vidx_err err = {0};
	vidx *w = NULL;
	float *x = rand_units(&seed, nall, CC_DIM);
	int64_t *ids = malloc(CC_INIT * sizeof *ids);
	struct cc c = {0};
	struct cc_reader rd[CC_READERS];
	pthread_t th[CC_READERS + 1];
	int started = 0, barrier = 0;
	ENSURE(x && ids);

	printf("# concurrency: %s\n", factory);
	snprintf(path, sizeof path, "%s/cc-%s.vidx", dir, factory);
	for (size_t i = 0; i < CC_INIT; i++)
		ids[i] = (int64_t)i;
	VOK(vidx_create(factory, CC_DIM, MODEL, &c.v, &err));
	VOK(vidx_add(c.v, CC_INIT, x, ids, &err));
	c.x = x;
	c.path = path;
	ENSURE(pthread_barrier_init(&c.start, NULL, CC_READERS + 1) == 0);
	barrier = 1;
	for (int i = 0; i < CC_READERS; i++) {
		memset(&rd[i], 0, sizeof rd[i]);
		rd[i].c = &c;
		rd[i].seed = 77 + (uint64_t)i;
	}
	ENSURE(pthread_create(&th[0], NULL, cc_write, &c) == 0);
	started = 1;
	for (int i = 0; i < CC_READERS; i++) {
		if (pthread_create(&th[i + 1], NULL, cc_read, &rd[i]) != 0) {
			CHECKF(0, "pthread_create");
			/* The barrier would never open: stand in for the rest. */
			for (int j = i; j < CC_READERS; j++) {
				rd[j].searches = CC_SEARCHES;
				pthread_barrier_wait(&c.start);
			}
			break;
		}
		started++;
	}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	started = 0;

	CHECK(!c.writer_failed);
	for (int i = 0; i < CC_READERS; i++) {
		CHECK(rd[i].searches == CC_SEARCHES);
		CHECKF(rd[i].failed == 0, "reader %d: %zu searches failed: %s", i, rd[i].failed,
		       rd[i].msg);
		CHECKF(rd[i].malformed == 0, "reader %d: %zu malformed results: %s", i,
		       rd[i].malformed, rd[i].msg);
	}
	size_t want = CC_INIT + CC_ROUNDS * (CC_ADD - CC_DEL);
	CHECKF(vidx_count(c.v) == want, "count %zu, expected %zu", vidx_count(c.v), want);
	CHECK(vidx_seq(c.v) == CC_ROUNDS);
	for (int64_t id = 0; id < (int64_t)nall; id++)
		if (vidx_contains(c.v, id) != (id >= CC_ROUNDS * CC_DEL)) {
			CHECKF(0, "contains(%lld) = %d", (long long)id, vidx_contains(c.v, id));
			break;
		}
	/* Removed vectors do not come back. */
	{
		float s[K];
		int64_t l[K];
		size_t bad = 0;
		for (int id = 0; id < CC_ROUNDS * CC_DEL; id += 7) {
			VOK(vidx_search(c.v, 1, x + (size_t)id * CC_DIM, K, s, l, &err));
			for (int j = 0; j < K; j++)
				bad += l[j] >= 0 && l[j] < CC_ROUNDS * CC_DEL;
		}
		CHECKF(bad == 0, "%zu removed ids in results", bad);
	}
	/* The snapshot taken mid-way is whole. */
	VOK(vidx_load(path, MODEL, CC_DIM, &w, &err));
	CHECK(vidx_count(w) == c.count_at_save);
	CHECK(vidx_seq(w) == CC_ROUNDS / 2 + 1);
out:
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (barrier)
		pthread_barrier_destroy(&c.start);
	vidx_close(c.v);
	vidx_close(w);
	free(x);
	free(ids);
}

static void t_concurrency(void)
{
	char dir[DIR_CAP];
	REQUIRE(make_tmpdir(dir, sizeof dir) == 0);
	concurrency_case(dir, "exact");
	concurrency_case(dir, "hnsw");
	concurrency_case(dir, "IVF16,Flat");
	remove_tree(dir);
}

/* The id map filled in another map's slot order (as a vector file lists
 * its ids, and a maintenance copy reads them): every key found with its
 * value, none lost, deletions after reserve; the probe runs that order
 * made in one shared hash function are bench/index --stream's to show. */
static void t_idset_slot_order(void)
{
	idset a = {0}, b = {0};
	size_t n = 300000;
	for (size_t i = 0; i < n; i++)
		REQUIRE(idset_put(&a, (int64_t)i * 3, (int64_t)i) == 0);
	REQUIRE(idset_reserve(&b, n / 2) == 0);
	size_t cap0 = b.cap;
	for (size_t i = 0; i < a.cap; i++)
		if (a.keys[i] >= 0)
			REQUIRE(idset_put(&b, a.keys[i], a.vals[i]) == 0);
	CHECK(b.n == n && b.cap > cap0);
	size_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		int64_t v = -1;
		bad += !idset_get(&b, (int64_t)i * 3, &v) || v != (int64_t)i;
		bad += idset_get(&b, (int64_t)i * 3 + 1, NULL);
	}
	CHECKF(bad == 0, "%zu keys wrong after the slot-order refill", bad);
	for (size_t i = 0; i < n; i += 2)
		CHECK(idset_del(&b, (int64_t)i * 3) == 1);
	bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += idset_get(&b, (int64_t)i * 3, NULL) != (int)(i % 2);
	CHECKF(bad == 0, "%zu keys wrong after deleting every other one", bad);
	CHECK(b.n == n / 2);
	idset_free(&a);
	idset_free(&b);
}

int main(void)
{
	TAP_RUN(t_idset_slot_order);
	TAP_RUN(t_exact_search);
	TAP_RUN(t_exact_split);
	TAP_RUN(t_remove);
	TAP_RUN(t_replace);
	TAP_RUN(t_refused_add);
	TAP_RUN(t_failed_replace);
	TAP_RUN(t_refine);
	TAP_RUN(t_search_among);
	TAP_RUN(t_default_params);
	TAP_RUN(t_maint_train);
	TAP_RUN(t_maint_compact);
	TAP_RUN(t_maint_auto);
	TAP_RUN(t_factory);
	TAP_RUN(t_hnsw_recall);
	TAP_RUN(t_ivf);
	TAP_RUN(t_save_load);
	TAP_RUN(t_torn_snapshot);
	TAP_RUN(t_corrupt_snapshot);
	TAP_RUN(t_mismatch);
	TAP_RUN(t_rebuild_from_store);
	TAP_RUN(t_snapshot_catch_up);
	TAP_RUN(t_open_synced);
	TAP_RUN(t_concurrency);
	return tap_done();
}
