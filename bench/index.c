/*
 * bench/index.c: what the vector index kinds cost and how well they find.
 *
 * For each database size N and each kind (exact, hnsw, ivfpq, ivfpq-raw,
 * auto) it adds N
 * random L2-normalised vectors (isotropic Gaussian by default; --data lowdim
 * concentrates their variance in a few dozen directions, closer to real
 * embeddings; fixed seed, and a smaller N is a prefix of a larger one) in
 * batches through vidx_add, then measures:
 *   - add throughput for all N (for ivfpq this includes training, which
 *     happens inside the batch that crosses the training threshold; that
 *     batch is also timed on its own, and the rate after it is given),
 *   - single-query search latency, p50 and p99 (k=10),
 *   - latency of 32-query batches, p50 and p99 per batch,
 *   - recall@10 (and @1) against exact search over the same queries,
 *   - resident memory the index added, and the process's peak (VmHWM).
 * ivfpq is re-ranked with the exact vectors (refine 100, the default, and nprobe an eighth of the lists);
 * ivfpq-raw is the same index without (refine 0). auto is added as exact
 * (it is one below its threshold) and then moved to IVF-PQ by
 * vidx_maintain. For auto, and with --maint for hnsw (after removing a
 * quarter of the vectors: compaction) and ivfpq (added untrained in the
 * background mode: training), the maintenance runs while one thread
 * searches single queries back to back and another adds a vector every
 * 10 ms; the searches' latency during it (p50, p99, max: the worst wait)
 * is printed on a "# maintenance" line. The maintenance runs on a thread
 * of its own at the lowest CPU priority, as in clipd (--maint-priority
 * normal: at the default one, to compare).
 * --stream DIR measures collections larger than memory instead: for each
 * N the index auto moves to at N, built from rows generated a chunk at a
 * time with snapshots in DIR, then loaded cold (see run_stream).
 * Queries are perturbed database vectors, normalise(x[r] + s*g/sqrt(dim))
 * with g ~ N(0, I), so every query has a meaningful nearest neighbour.
 *
 * Run (FAISS threads follow OMP_NUM_THREADS; progress goes to stderr):
 *   ./build/bench/index [--n 100000,1000000] [--kinds exact,hnsw,ivfpq]
 *       [--dim 512] [--queries 200] [--batches 30] [--noise 0.5]
 *       [--ef-search E] [--nprobe P] [--data gaussian|lowdim] [--seed S] [--json]
 * 1M x 512 takes about 2 GB for the data and as much again for the exact
 * index. The default run took 40 minutes on two cores, 32 of them building
 * HNSW over 1M isotropic vectors (about 500 vectors/s at the end). Leaving
 * OMP_WAIT_POLICY unset lets libgomp's threads spin against OpenBLAS's:
 * batched exact search was 5x slower that way than with
 * OMP_WAIT_POLICY=passive.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "index.h"
#include "timing.h"

#define K 10
#define BATCH_NQ 32
#define ADD_BATCH 10000
#define MAX_SIZES 16
#define WARMUP 5
/* index.c trains "ivfpq" (IVF1024,PQ<dim/8>np) once it holds 39 vectors per
 * list (and at least 9984): the add batch that crosses this count carries
 * the training. */
#define IVFPQ_TRAIN_AT (39 * 1024)

enum { KIND_EXACT, KIND_HNSW, KIND_IVFPQ, KIND_IVFPQ_RAW, KIND_AUTO, NKINDS };
static const char *const kind_names[NKINDS] = {"exact", "hnsw", "ivfpq", "ivfpq-raw", "auto"};
/* What vidx_create is given for each. */
static const char *const kind_factory[NKINDS] = {"exact", "hnsw", "ivfpq", "ivfpq", "auto"};

enum { DATA_GAUSSIAN, DATA_LOWDIM, NDATA };
static const char *const data_names[NDATA] = {"gaussian", "lowdim"};
/* Spectrum exponent of "lowdim": a participation ratio of about 46 at
 * dim 512, i.e. the variance is spread like over ~46 equal directions. */
#define LOWDIM_ALPHA 0.9

struct opts {
	size_t n[MAX_SIZES];
	int nn;
	int kinds[NKINDS];       /* run order; exact first when present */
	int nk;
	int dim;
	int data;                /* DATA_* */
	int queries;             /* single-query searches */
	int batches;             /* BATCH_NQ-query searches */
	double noise;
	double ef_search;        /* 0: the index's default */
	double nprobe;           /* 0: the index's default */
	uint64_t seed;
	int json;
	int maint;               /* --maint: hnsw compaction, ivfpq training under load */
	int nsweep;              /* --sweep nprobe:refine,...: IVF settings tried after the row */
	int sweep_nprobe[16], sweep_refine[16];
	const char *stream;      /* --stream DIR: data generated a chunk at a time */
	size_t save_every;       /* --stream: a snapshot after this many adds */
};

struct result {
	size_t n;
	int kind;
	char factory[64];
	double add_s, add_rate;
	double train_s;          /* ivfpq: the batch that trained; else -1 */
	double rate_after_train; /* ivfpq: add rate after that batch; else -1 */
	double single_p50, single_p99, batch_p50, batch_p99; /* ms */
	double recall10, recall1;
	double index_mb, peak_mb;
	/* a maintenance under load, when one ran */
	const char *maint;       /* "upgrade", ...; NULL */
	double maint_s, maint_p50, maint_p99, maint_max, maint_excl_ms, add_max_ms;
	size_t maint_searches, maint_adds;
	char factory_before[64];
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench/index: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

/* ---- random vectors ------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

typedef struct rng {
	uint64_t s[4];
} rng;

/* A xoshiro256** stream per (seed, stream): rows are generated in parallel
 * and still come out the same for any thread count. */
static void rng_init(rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t sm = seed ^ (stream * 0xd1b54a32d192ed03ULL);
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&sm);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

/* Uniform in (0, 1]: never 0, so log() below is finite. */
static double rng_unit(rng *r)
{
	return ((double)(rng_next(r) >> 11) + 1.0) * 0x1.0p-53;
}

/* dim standard normal values (Box-Muller). */
static void gaussian(rng *r, float *out, int dim)
{
	for (int i = 0; i < dim; i += 2) {
		double rad = sqrt(-2.0 * log(rng_unit(r))), th = 2.0 * M_PI * rng_unit(r);
		out[i] = (float)(rad * cos(th));
		if (i + 1 < dim)
			out[i + 1] = (float)(rad * sin(th));
	}
}

static void normalise(float *v, int dim)
{
	double ss = 0;
	for (int i = 0; i < dim; i++)
		ss += (double)v[i] * v[i];
	float inv = (float)(1.0 / sqrt(ss));
	for (int i = 0; i < dim; i++)
		v[i] *= inv;
}

/* In-place Walsh-Hadamard transform, unnormalised; n a power of two. */
static void fwht(float *v, int n)
{
	for (int h = 1; h < n; h *= 2)
		for (int i = 0; i < n; i += 2 * h)
			for (int j = i; j < i + h; j++) {
				float a = v[j], b = v[j + h];
				v[j] = a + b;
				v[j + h] = a - b;
			}
}

/* Fills rows [from, to) of the data set into x[to - from][dim] (row i at
 * x + (i - from) * dim; a row depends on the seed and its number only).
 * DATA_GAUSSIAN rows are isotropic.
 * DATA_LOWDIM rows have a power-law spectrum (variance of component j
 * proportional to j^-LOWDIM_ALPHA) turned by a fixed random rotation
 * (random signs, then Hadamard), like embeddings whose variance sits in a
 * few dozen directions. */
static void gen_rows(float *x, size_t from, size_t to, int dim, int data, uint64_t seed)
{
	float *sign = NULL;
	if (data == DATA_LOWDIM) {
		rng r;
		sign = xmalloc((size_t)dim * sizeof *sign);
		rng_init(&r, seed ^ 0x2545f4914f6cdd1dULL, 0);
		for (int j = 0; j < dim; j++)
			sign[j] = (float)((rng_next(&r) >> 63 ? 1.0 : -1.0) * pow(j + 1, -LOWDIM_ALPHA / 2));
	}
#pragma omp parallel for schedule(static)
	for (size_t i = from; i < to; i++) {
		rng r;
		float *row = x + (i - from) * (size_t)dim;
		rng_init(&r, seed, i);
		gaussian(&r, row, dim);
		if (sign) {
			for (int j = 0; j < dim; j++)
				row[j] *= sign[j];
			fwht(row, dim);
		}
		normalise(row, dim);
	}
	free(sign);
}

/* q[nq][dim]: database rows picked at random, plus noise of norm ~noise. */
static void make_queries(const float *x, size_t n, int dim, size_t nq, double noise,
                         uint64_t seed, float *q)
{
	rng r;
	float *g = xmalloc((size_t)dim * sizeof *g);
	rng_init(&r, seed ^ 0x51ed2701a3c4e6bfULL, n);
	for (size_t i = 0; i < nq; i++) {
		size_t src = (size_t)(rng_next(&r) % n);
		float *qi = q + i * (size_t)dim;
		gaussian(&r, g, dim);
		for (int j = 0; j < dim; j++)
			qi[j] = x[src * (size_t)dim + j] + (float)(noise / sqrt(dim)) * g[j];
		normalise(qi, dim);
	}
	free(g);
}

/* ---- measuring ----------------------------------------------------------- */

/* A "VmXXX:" field of /proc/self/status in MB, or -1. */
static double proc_status_mb(const char *field)
{
	char line[256];
	size_t len = strlen(field);
	double mb = -1;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, field, len) == 0 && line[len] == ':') {
			mb = strtod(line + len + 1, NULL) / 1024.0;
			break;
		}
	fclose(f);
	return mb;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0), so each kind's peak is
 * its own. */
static void reset_peak_rss(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	if (f) {
		fputs("5", f);
		fclose(f);
	}
}

/* Nearest-rank percentile; sorts v. */
static double percentile(double *v, size_t n, double p)
{
	qsort(v, n, sizeof *v, bench_cmp_double);
	size_t rank = (size_t)ceil(p / 100.0 * (double)n);
	return v[rank ? rank - 1 : 0];
}

/* Adds to *hits10 how many of got[K] are in want[K], and to *hits1 whether
 * the best ones agree. */
static void count_hits(const int64_t *got, const int64_t *want, size_t *hits10, size_t *hits1)
{
	for (int i = 0; i < K; i++) {
		if (got[i] < 0)
			continue;
		for (int j = 0; j < K; j++)
			if (got[i] == want[j]) {
				(*hits10)++;
				break;
			}
	}
	if (got[0] >= 0 && got[0] == want[0])
		(*hits1)++;
}

static void check(int rc, const vidx_err *err, const char *what)
{
	if (rc != VIDX_OK)
		die("%s: %s", what, err->msg);
}

/* Adds rows [0, n) of x with their row numbers as ids. For ivfpq, fills
 * the training figures of res. */
static void add_all(vidx *v, const float *x, size_t n, int dim, int kind, struct result *res)
{
	int64_t *ids = xmalloc(ADD_BATCH * sizeof *ids);
	double t0 = bench_now(), last_note = t0, train_end = -1;
	size_t after_train = 0;
	vidx_err err;

	res->train_s = res->rate_after_train = -1;
	for (size_t at = 0; at < n; at += ADD_BATCH) {
		size_t b = n - at < ADD_BATCH ? n - at : ADD_BATCH;
		for (size_t i = 0; i < b; i++)
			ids[i] = (int64_t)(at + i);
		double t = bench_now();
		check(vidx_add(v, b, x + at * (size_t)dim, ids, &err), &err, "adding");
		double t1 = bench_now();
		if (kind == KIND_IVFPQ || kind == KIND_IVFPQ_RAW) {
			if (at < IVFPQ_TRAIN_AT && at + b >= IVFPQ_TRAIN_AT) {
				res->train_s = t1 - t;
				train_end = t1;
			} else if (train_end >= 0) {
				after_train += b;
			}
		}
		if (t1 - last_note >= 5.0 || at + b == n) {
			fprintf(stderr, "  %s N=%zu: added %zu/%zu (%.0f/s)\n", kind_names[kind], n,
			        at + b, n, (double)(at + b) / (t1 - t0));
			last_note = t1;
		}
	}
	res->add_s = bench_now() - t0;
	res->add_rate = (double)n / res->add_s;
	if (train_end >= 0 && after_train > 0)
		res->rate_after_train = (double)after_train / (t0 + res->add_s - train_end);
	if (vidx_count(v) != n)
		die("%s: index holds %zu vectors after adding %zu", kind_names[kind], vidx_count(v), n);
	free(ids);
}

/* The queries each result row of a run covers: singles first, then the
 * batches (batch b searches queries b*BATCH_NQ ...). */
static size_t query_count(const struct opts *o)
{
	size_t nb = (size_t)o->batches * BATCH_NQ;
	return (size_t)o->queries > nb ? (size_t)o->queries : nb;
}

/* Times single and batched searches. got_single[queries][K] and
 * got_batch[batches * BATCH_NQ][K] receive the ids found. */
static void time_searches(vidx *v, const struct opts *o, const float *q, struct result *res,
                          int64_t *got_single, int64_t *got_batch)
{
	size_t nb = (size_t)o->batches, nq = query_count(o), dim = (size_t)o->dim;
	size_t nlat = (size_t)o->queries > nb ? (size_t)o->queries : nb;
	double *lat = xmalloc(nlat * sizeof *lat);
	float *scores = xmalloc(BATCH_NQ * K * sizeof *scores);
	int64_t *scratch = xmalloc(BATCH_NQ * K * sizeof *scratch);
	vidx_err err;

	/* Warm-up: first touches of the index's memory are not search cost. */
	for (size_t i = 0; i < WARMUP; i++)
		check(vidx_search(v, 1, q + (i % nq) * dim, K, scores, scratch, &err), &err,
		      "searching");
	for (int i = 0; i < o->queries; i++) {
		double t = bench_now();
		check(vidx_search(v, 1, q + (size_t)i * dim, K, scores, got_single + (size_t)i * K, &err),
		      &err, "searching");
		lat[i] = (bench_now() - t) * 1e3;
	}
	res->single_p50 = percentile(lat, (size_t)o->queries, 50);
	res->single_p99 = percentile(lat, (size_t)o->queries, 99);
	fprintf(stderr, "  %s N=%zu: %d single queries, p50 %.3f ms\n", kind_names[res->kind],
	        res->n, o->queries, res->single_p50);

	check(vidx_search(v, BATCH_NQ, q, K, scores, scratch, &err), &err, "searching");
	for (size_t b = 0; b < nb; b++) {
		double t = bench_now();
		check(vidx_search(v, BATCH_NQ, q + b * BATCH_NQ * dim, K, scores,
		                  got_batch + b * BATCH_NQ * K, &err),
		      &err, "searching");
		lat[b] = (bench_now() - t) * 1e3;
	}
	res->batch_p50 = percentile(lat, nb, 50);
	res->batch_p99 = percentile(lat, nb, 99);
	fprintf(stderr, "  %s N=%zu: %zu batches of %d, p50 %.3f ms\n", kind_names[res->kind],
	        res->n, nb, BATCH_NQ, res->batch_p50);
	free(lat);
	free(scores);
	free(scratch);
}

/* Exact top-K ids of all nq queries, in one untimed batched search. */
static void ground_truth(vidx *exact, const float *q, size_t nq, int64_t *gt)
{
	float *scores = xmalloc(nq * K * sizeof *scores);
	vidx_err err;
	check(vidx_search(exact, nq, q, K, scores, gt, &err), &err, "ground truth");
	free(scores);
}

static vidx *new_index(int kind, const struct opts *o)
{
	vidx *v;
	vidx_err err;
	check(vidx_create(kind_factory[kind], o->dim, "bench", &v, &err), &err,
	      "creating the index");
	if (kind == KIND_HNSW && o->ef_search > 0)
		check(vidx_set_param(v, "efSearch", o->ef_search, &err), &err, "efSearch");
	if ((kind == KIND_IVFPQ || kind == KIND_IVFPQ_RAW) && o->nprobe > 0)
		check(vidx_set_param(v, "nprobe", o->nprobe, &err), &err, "nprobe");
	if (kind == KIND_IVFPQ_RAW)
		check(vidx_set_param(v, "refine", 0, &err), &err, "refine");
	/* auto moves by vidx_maintain only; --maint trains ivfpq that way. */
	if (kind == KIND_AUTO || (kind == KIND_IVFPQ && o->maint))
		vidx_set_background(v, 1);
	return v;
}

/* ---- a maintenance under load ------------------------------------------------ */

struct load {
	vidx *v;
	const float *q;
	size_t nq;
	int dim;
	int stop;                /* atomic */
	double *lat;             /* search latencies, ms */
	size_t nlat, cap;
	size_t adds;
	double add_max;
	int64_t next_id;
	uint64_t rng;
};

static void *searcher(void *p)
{
	struct load *l = p;
	float s[K];
	int64_t ids[K];
	vidx_err err;
	for (size_t i = 0; !__atomic_load_n(&l->stop, __ATOMIC_RELAXED); i++) {
		double t = bench_now();
		check(vidx_search(l->v, 1, l->q + (i % l->nq) * (size_t)l->dim, K, s, ids, &err), &err,
		      "searching during maintenance");
		if (l->nlat < l->cap)
			l->lat[l->nlat++] = (bench_now() - t) * 1e3;
	}
	return NULL;
}

static double unit_normal(uint64_t *s)
{
	/* Box-Muller over a 64-bit LCG: enough for a writer's vectors. */
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	double u1 = ((*s >> 11) + 1.0) / 9007199254740993.0;
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	double u2 = (*s >> 11) / 9007199254740992.0;
	return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

static void *writer(void *p)
{
	struct load *l = p;
	float *x = xmalloc((size_t)l->dim * sizeof *x);
	vidx_err err;
	while (!__atomic_load_n(&l->stop, __ATOMIC_RELAXED)) {
		double norm = 0;
		for (int i = 0; i < l->dim; i++) {
			x[i] = (float)unit_normal(&l->rng);
			norm += (double)x[i] * x[i];
		}
		for (int i = 0; i < l->dim; i++)
			x[i] = (float)(x[i] / sqrt(norm));
		int64_t id = l->next_id + (int64_t)l->adds;
		double t = bench_now();
		check(vidx_add(l->v, 1, x, &id, &err), &err, "adding during maintenance");
		double ms = (bench_now() - t) * 1e3;
		if (ms > l->add_max)
			l->add_max = ms;
		l->adds++;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	free(x);
	return NULL;
}

/* --maint-priority normal: the maintenance thread keeps the default
 * priority (to compare with clipd's lowered one). */
static int o_maint_normal;

struct maint_run {
	vidx *v;
	int low, rc;
	vidx_maint did;
	vidx_err err;
};

static void *maint_thread(void *p)
{
	struct maint_run *m = p;
	if (m->low && vidx_lower_priority() != 0)
		perror("bench/index: lowering the maintenance thread's priority");
	m->rc = vidx_maintain(m->v, &m->did, &m->err);
	return NULL;
}

/* Runs v's due maintenance while a searcher and a writer work on it; then
 * removes what the writer added, so recall is measured over the rows. */
static void maintain_under_load(vidx *v, const float *q, size_t nq, int dim, size_t n,
                                struct result *res)
{
	struct load l = {.v = v, .q = q, .nq = nq, .dim = dim, .cap = 10000000,
	                 .next_id = (int64_t)n + 100000000, .rng = 7};
	pthread_t ts, tw;
	vidx_err err;
	vidx_maint did;
	vidx_state st;

	snprintf(res->factory_before, sizeof res->factory_before, "%s", vidx_factory(v));
	l.lat = xmalloc(l.cap * sizeof *l.lat);
	if (vidx_maintenance_due(v) == VIDX_MAINT_NONE)
		die("%s N=%zu: no maintenance due", kind_names[res->kind], n);
	fprintf(stderr, "  %s N=%zu: %s under load\n", kind_names[res->kind], n,
	        vidx_maint_name(vidx_maintenance_due(v)));
	pthread_create(&ts, NULL, searcher, &l);
	pthread_create(&tw, NULL, writer, &l);
	/* On a thread of its own, as clipd's (server/collections.c), at the
	 * lowest CPU priority unless --maint-priority normal. */
	struct maint_run mr = {.v = v, .low = !o_maint_normal};
	pthread_t tm;
	double t0 = bench_now();
	pthread_create(&tm, NULL, maint_thread, &mr);
	pthread_join(tm, NULL);
	check(mr.rc, &mr.err, "maintenance");
	did = mr.did;
	res->maint_s = bench_now() - t0;
	__atomic_store_n(&l.stop, 1, __ATOMIC_RELAXED);
	pthread_join(ts, NULL);
	pthread_join(tw, NULL);
	vidx_get_state(v, &st);
	res->maint = vidx_maint_name(did);
	res->maint_excl_ms = st.last_swap_ms;
	res->maint_searches = l.nlat;
	res->maint_adds = l.adds;
	res->add_max_ms = l.add_max;
	if (l.nlat) {
		res->maint_max = percentile(l.lat, l.nlat, 100);
		res->maint_p50 = percentile(l.lat, l.nlat, 50);
		res->maint_p99 = percentile(l.lat, l.nlat, 99);
	}
	int64_t *ids = xmalloc((l.adds ? l.adds : 1) * sizeof *ids);
	for (size_t i = 0; i < l.adds; i++)
		ids[i] = l.next_id + (int64_t)i;
	check(vidx_remove(v, l.adds, ids, NULL, &err), &err, "removing the writer's vectors");
	free(ids);
	free(l.lat);
	snprintf(res->factory, sizeof res->factory, "%s", vidx_factory(v));
}

/* Each --sweep setting on the built IVF index: single-query p50/p99 and
 * recall@10 over the single queries, one "# sweep" line each. */
static void sweep(vidx *v, const struct opts *o, const float *q, const int64_t *gt, size_t n,
                  int kind)
{
	double *lat = xmalloc((size_t)o->queries * sizeof *lat);
	float s[K];
	int64_t got[K];
	vidx_err err;
	for (int i = 0; i < o->nsweep; i++) {
		check(vidx_set_param(v, "nprobe", o->sweep_nprobe[i], &err), &err, "nprobe");
		check(vidx_set_param(v, "refine", o->sweep_refine[i], &err), &err, "refine");
		size_t h10 = 0, h1 = 0;
		for (int j = 0; j < o->queries; j++) {
			double t = bench_now();
			check(vidx_search(v, 1, q + (size_t)j * (size_t)o->dim, K, s, got, &err), &err,
			      "searching");
			lat[j] = (bench_now() - t) * 1e3;
			count_hits(got, gt + (size_t)j * K, &h10, &h1);
		}
		double p50 = percentile(lat, (size_t)o->queries, 50);
		double p99 = percentile(lat, (size_t)o->queries, 99);
		printf("# sweep %s N=%zu %s nprobe %d refine %d: 1q p50 %.3f p99 %.3f ms, "
		       "recall@10 %.4f, @1 %.4f\n",
		       kind_names[kind], n, vidx_factory(v), o->sweep_nprobe[i], o->sweep_refine[i],
		       p50, p99, (double)h10 / (o->queries * K), (double)h1 / o->queries);
		fflush(stdout);
	}
	free(lat);
}

/* Builds and measures one kind over x[n]. gt is the exact top-K of the
 * queries; when it is NULL (the exact kind runs first) it is computed here
 * from this index, into gt_out. */
static void run_kind(int kind, const struct opts *o, const float *x, size_t n, const float *q,
                     const int64_t *gt, int64_t *gt_out, struct result *res)
{
	size_t nq = query_count(o), nbq = (size_t)o->batches * BATCH_NQ;
	int64_t *got_single = xmalloc((size_t)o->queries * K * sizeof *got_single);
	int64_t *got_batch = xmalloc(nbq * K * sizeof *got_batch);

	memset(res, 0, sizeof *res);
	res->n = n;
	res->kind = kind;
	fprintf(stderr, "%s N=%zu: building\n", kind_names[kind], n);
	reset_peak_rss();
	double rss0 = proc_status_mb("VmRSS");
	vidx *v = new_index(kind, o);
	snprintf(res->factory, sizeof res->factory, "%s", vidx_factory(v));
	if (kind == KIND_AUTO) {
		/* Its move is due once it holds the N rows, whatever N. */
		vidx_err err;
		check(vidx_set_param(v, "auto_threshold", (double)n, &err), &err, "auto_threshold");
	}
	if (kind == KIND_IVFPQ && o->maint && n > IVFPQ_TRAIN_AT) {
		/* As in the daemon: due once it holds enough to train, trained
		 * then under load, the rest added after. */
		add_all(v, x, IVFPQ_TRAIN_AT, o->dim, kind, res);
		maintain_under_load(v, q, nq, o->dim, IVFPQ_TRAIN_AT, res);
		vidx_err err;
		int64_t *ids = xmalloc(ADD_BATCH * sizeof *ids);
		double t0 = bench_now();
		for (size_t at = IVFPQ_TRAIN_AT; at < n; at += ADD_BATCH) {
			size_t b = n - at < ADD_BATCH ? n - at : ADD_BATCH;
			for (size_t i = 0; i < b; i++)
				ids[i] = (int64_t)(at + i);
			check(vidx_add(v, b, x + at * (size_t)o->dim, ids, &err), &err, "adding");
		}
		res->add_s += bench_now() - t0;
		res->add_rate = (double)n / res->add_s;
		free(ids);
	} else {
		add_all(v, x, n, o->dim, kind, res);
	}
	if (kind == KIND_AUTO) {
		maintain_under_load(v, q, nq, o->dim, n, res);
	} else if (kind == KIND_HNSW && o->maint) {
		/* A quarter removed (every fourth row), then compacted. */
		vidx_err err;
		int64_t *rm = xmalloc((n / 4 + 1) * sizeof *rm);
		size_t nrm = 0;
		for (size_t i = 3; i < n; i += 4)
			rm[nrm++] = (int64_t)i;
		check(vidx_remove(v, nrm, rm, NULL, &err), &err, "removing");
		maintain_under_load(v, q, nq, o->dim, n, res);
		/* Back in, so recall compares like with like. */
		float *back = xmalloc(nrm * (size_t)o->dim * sizeof *back);
		for (size_t i = 0; i < nrm; i++)
			memcpy(back + i * (size_t)o->dim, x + (size_t)rm[i] * (size_t)o->dim,
			       (size_t)o->dim * sizeof *back);
		check(vidx_add(v, nrm, back, rm, &err), &err, "adding back");
		free(back);
		free(rm);
	}
	res->index_mb = proc_status_mb("VmRSS") - rss0;
	time_searches(v, o, q, res, got_single, got_batch);
	if (!gt) {
		ground_truth(v, q, nq, gt_out);
		gt = gt_out;
	}
	res->peak_mb = proc_status_mb("VmHWM");
	if (o->nsweep && gt && strstr(vidx_factory(v), "IVF"))
		sweep(v, o, q, gt, n, kind);
	vidx_close(v);

	size_t h10 = 0, h1 = 0;
	for (int i = 0; i < o->queries; i++)
		count_hits(got_single + (size_t)i * K, gt + (size_t)i * K, &h10, &h1);
	for (size_t i = 0; i < nbq; i++)
		count_hits(got_batch + i * K, gt + i * K, &h10, &h1);
	size_t lists = (size_t)o->queries + nbq;
	res->recall10 = (double)h10 / (double)(lists * K);
	res->recall1 = (double)h1 / (double)lists;
	free(got_single);
	free(got_batch);
}

/* ---- output -------------------------------------------------------------- */

static void print_table_head(void)
{
	printf("%-8s %-6s %-16s %9s %8s %9s %9s %9s %9s %9s %7s %7s %8s %8s\n", "N", "kind",
	       "factory", "add/s", "build_s", "train_s", "1q_p50ms", "1q_p99ms", "32q_p50ms",
	       "32q_p99ms", "rec@10", "rec@1", "index_MB", "peak_MB");
	fflush(stdout);
}

static void print_row(const struct result *r)
{
	char train[16];
	if (r->train_s >= 0)
		snprintf(train, sizeof train, "%.2f", r->train_s);
	else
		snprintf(train, sizeof train,
		         (r->kind == KIND_IVFPQ || r->kind == KIND_IVFPQ_RAW) && !r->maint ? "untrained"
		                                                                           : "-");
	printf("%-8zu %-6s %-16s %9.0f %8.1f %9s %9.3f %9.3f %9.3f %9.3f %7.4f %7.4f %8.0f %8.0f\n",
	       r->n, kind_names[r->kind], r->factory, r->add_rate, r->add_s, train, r->single_p50,
	       r->single_p99, r->batch_p50, r->batch_p99, r->recall10, r->recall1, r->index_mb,
	       r->peak_mb);
	if (r->maint)
		printf("# maintenance %s N=%zu: %s (%s -> %s) %.1f s; %zu searches during it: p50 "
		       "%.3f, p99 %.3f, max %.3f ms; exclusive hold %.3f ms; %zu adds, slowest %.1f ms\n",
		       kind_names[r->kind], r->n, r->maint, r->factory_before, r->factory, r->maint_s,
		       r->maint_searches, r->maint_p50, r->maint_p99, r->maint_max, r->maint_excl_ms,
		       r->maint_adds, r->add_max_ms);
	fflush(stdout);
}

static void print_json(const struct result *r, const struct opts *o)
{
	printf("{\"n\":%zu,\"kind\":\"%s\",\"factory\":\"%s\",\"dim\":%d,\"data\":\"%s\","
	       "\"threads\":%d,\"add_s\":%.3f,\"add_per_s\":%.1f,",
	       r->n, kind_names[r->kind], r->factory, o->dim, data_names[o->data],
	       omp_get_max_threads(), r->add_s, r->add_rate);
	if ((r->kind == KIND_IVFPQ || r->kind == KIND_IVFPQ_RAW) && r->train_s < 0 && !r->maint)
		printf("\"trained\":false,");
	else if (r->train_s >= 0)
		printf("\"trained\":true,\"train_batch_s\":%.3f,\"add_per_s_after_train\":%.1f,",
		       r->train_s, r->rate_after_train);
	printf("\"queries\":%d,\"single_p50_ms\":%.4f,\"single_p99_ms\":%.4f,"
	       "\"batch_size\":%d,\"batches\":%d,\"batch_p50_ms\":%.4f,\"batch_p99_ms\":%.4f,"
	       "\"k\":%d,\"recall_at_10\":%.4f,\"recall_at_1\":%.4f,"
	       "\"index_rss_mb\":%.1f,\"peak_rss_mb\":%.1f",
	       o->queries, r->single_p50, r->single_p99, BATCH_NQ, o->batches, r->batch_p50,
	       r->batch_p99, K, r->recall10, r->recall1, r->index_mb, r->peak_mb);
	if (r->maint)
		printf(",\"maintenance\":{\"task\":\"%s\",\"from\":\"%s\",\"s\":%.3f,"
		       "\"searches\":%zu,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f,"
		       "\"exclusive_ms\":%.4f,\"adds\":%zu,\"add_max_ms\":%.3f}",
		       r->maint, r->factory_before, r->maint_s, r->maint_searches, r->maint_p50,
		       r->maint_p99, r->maint_max, r->maint_excl_ms, r->maint_adds, r->add_max_ms);
	printf("}\n");
}

static void print_settings(const struct opts *o)
{
	/* The last two decide how FAISS's OpenMP threads and OpenBLAS's own
	 * share the cores, which shows in batched search latency. */
	static const char *const env[] = {"OMP_NUM_THREADS", "OMP_WAIT_POLICY",
	                                  "OPENBLAS_NUM_THREADS"};
	printf("# bench/index: vector index add throughput, search latency, recall\n");
	printf("# cores online: %ld; OpenMP threads: %d;", sysconf(_SC_NPROCESSORS_ONLN),
	       omp_get_max_threads());
	for (size_t i = 0; i < sizeof env / sizeof *env; i++)
		printf(" %s=%s", env[i], getenv(env[i]) ? getenv(env[i]) : "unset");
	printf("\n");
	if (!getenv("OMP_WAIT_POLICY"))
		printf("# note: OpenMP threads spin while idle (OMP_WAIT_POLICY unset), which slows "
		       "OpenBLAS on few cores\n");
	printf("# N:");
	for (int i = 0; i < o->nn; i++)
		printf(" %zu", o->n[i]);
	printf("; kinds:");
	for (int i = 0; i < o->nk; i++)
		printf(" %s", kind_names[o->kinds[i]]);
	printf("; dim %d; seed %llu\n", o->dim, (unsigned long long)o->seed);
	if (o->data == DATA_GAUSSIAN)
		printf("# data: gaussian: isotropic Gaussian vectors, L2-normalised");
	else
		printf("# data: lowdim: Gaussian with variance of component j ~ j^-%.1f, randomly "
		       "rotated, L2-normalised", LOWDIM_ALPHA);
	printf("; added in batches of %d, id = row\n", ADD_BATCH);
	printf("# queries: perturbed database vectors, normalise(x[r] + %.2f*g/sqrt(dim)), "
	       "g ~ N(0,I), r uniform\n", o->noise);
	printf("# search: k=%d; %d single queries (p50/p99 per query); %d batches of %d "
	       "(p50/p99 per batch); %d warm-up searches untimed\n",
	       K, o->queries, o->batches, BATCH_NQ, WARMUP);
	printf("# recall: against exact search of the same queries, over all %d single and %d "
	       "batched result lists; rec@1: the first result is exact's first\n", o->queries,
	       o->batches * BATCH_NQ);
	if (o->ef_search > 0)
		printf("# hnsw efSearch %.0f\n", o->ef_search);
	else
		printf("# hnsw efSearch: the index's default\n");
	if (o->nprobe > 0)
		printf("# ivfpq nprobe %.0f\n", o->nprobe);
	else
		printf("# ivfpq nprobe: the index's default\n");
	printf("# ivfpq train_s: the add batch that crossed %d vectors (training plus moving them "
	       "into IVF-PQ); add/s includes it. Below that N it stays untrained (exact search)\n",
	       IVFPQ_TRAIN_AT);
	printf("# index_MB: RSS growth while building; peak_MB: VmHWM during the row, data "
	       "included\n");
	fflush(stdout);
}

/* ---- options ------------------------------------------------------------- */

static size_t parse_size(const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno)
		die("bad size \"%s\"", s);
	if (*end == 'k' || *end == 'K')
		v *= 1e3, end++;
	else if (*end == 'm' || *end == 'M')
		v *= 1e6, end++;
	if ((*end && *end != ',') || v < 1 || v > 1e9)
		die("bad size \"%s\"", s);
	return (size_t)v;
}

static void parse_sizes(struct opts *o, const char *arg)
{
	o->nn = 0;
	for (const char *p = arg; *p;) {
		if (o->nn == MAX_SIZES)
			die("at most %d sizes", MAX_SIZES);
		o->n[o->nn++] = parse_size(p);
		p += strcspn(p, ",");
		if (*p)
			p++;
	}
	if (o->nn == 0)
		die("--n needs at least one size");
}

static void parse_kinds(struct opts *o, const char *arg)
{
	int want[NKINDS] = {0};
	for (const char *p = arg; *p;) {
		size_t len = strcspn(p, ",");
		int k;
		for (k = 0; k < NKINDS; k++)
			if (strlen(kind_names[k]) == len && strncmp(p, kind_names[k], len) == 0)
				break;
		if (k == NKINDS)
			die("unknown kind \"%.*s\" (exact, hnsw, ivfpq, ivfpq-raw, auto)", (int)len, p);
		want[k] = 1;
		p += len;
		if (*p)
			p++;
	}
	/* Exact first: its results are the ground truth for the others. */
	o->nk = 0;
	for (int k = 0; k < NKINDS; k++)
		if (want[k])
			o->kinds[o->nk++] = k;
	if (o->nk == 0)
		die("--kinds needs at least one kind");
}

static long parse_long(const char *s, const char *name, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || *end || errno || v < lo || v > hi)
		die("--%s must be an integer from %ld to %ld", name, lo, hi);
	return v;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: index [--n 100000,1000000] [--kinds exact,hnsw,ivfpq,ivfpq-raw,auto]\n"
	           "             [--dim 512] [--queries 200] [--batches 30] [--noise 0.5]\n"
	           "             [--ef-search E] [--nprobe P] [--data gaussian|lowdim] [--seed S]\n"
	           "             [--maint] [--maint-priority low|normal] [--sweep nprobe:refine,...] [--json]\n"
	           "             [--stream DIR [--save-every N]]\n");
}

static void parse_opts(struct opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"n", required_argument, NULL, 'n'},
		{"kinds", required_argument, NULL, 'k'},
		{"dim", required_argument, NULL, 'd'},
		{"data", required_argument, NULL, 'D'},
		{"queries", required_argument, NULL, 'q'},
		{"batches", required_argument, NULL, 'b'},
		{"noise", required_argument, NULL, 'z'},
		{"ef-search", required_argument, NULL, 'e'},
		{"nprobe", required_argument, NULL, 'p'},
		{"seed", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"maint", no_argument, NULL, 'm'},
		{"maint-priority", required_argument, NULL, 'P'},
		{"sweep", required_argument, NULL, 'S'},
		{"stream", required_argument, NULL, 'T'},
		{"save-every", required_argument, NULL, 'E'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	*o = (struct opts){.dim = 512, .queries = 200, .batches = 30, .noise = 0.5, .seed = 42,
	                   .save_every = 2000000};
	parse_sizes(o, "100000,1000000");
	parse_kinds(o, "exact,hnsw,ivfpq");
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n': parse_sizes(o, optarg); break;
		case 'k': parse_kinds(o, optarg); break;
		case 'd': o->dim = (int)parse_long(optarg, "dim", 8, 65536); break;
		case 'q': o->queries = (int)parse_long(optarg, "queries", 1, 1000000); break;
		case 'b': o->batches = (int)parse_long(optarg, "batches", 1, 100000); break;
		case 'z': o->noise = strtod(optarg, NULL); break;
		case 'D':
			for (o->data = 0; o->data < NDATA; o->data++)
				if (strcmp(optarg, data_names[o->data]) == 0)
					break;
			if (o->data == NDATA)
				die("--data is gaussian or lowdim");
			break;
		case 'e': o->ef_search = (double)parse_long(optarg, "ef-search", 1, 100000); break;
		case 'p': o->nprobe = (double)parse_long(optarg, "nprobe", 1, 1 << 20); break;
		case 's': o->seed = (uint64_t)strtoull(optarg, NULL, 0); break;
		case 'j': o->json = 1; break;
		case 'm': o->maint = 1; break;
		case 'P':
			if (strcmp(optarg, "low") && strcmp(optarg, "normal"))
				die("--maint-priority is low (clipd's) or normal");
			o_maint_normal = !strcmp(optarg, "normal");
			break;
		case 'S':
			for (const char *p = optarg; *p && o->nsweep < 16;) {
				int np, rf, used;
				if (sscanf(p, "%d:%d%n", &np, &rf, &used) != 2 || np < 1 || rf < 0)
					die("--sweep takes nprobe:refine pairs, e.g. 32:10,64:20");
				o->sweep_nprobe[o->nsweep] = np;
				o->sweep_refine[o->nsweep++] = rf;
				p += used;
				if (*p == ',')
					p++;
			}
			break;
		case 'T': o->stream = optarg; break;
		case 'E': o->save_every = parse_size(optarg); break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind < argc) {
		usage(stderr);
		exit(2);
	}
	if (o->data == DATA_LOWDIM && (o->dim & (o->dim - 1)) != 0)
		die("--data lowdim needs a power-of-two dimension");
	if (!(o->noise >= 0))
		die("--noise must be >= 0");
	for (int i = 0; i < o->nn; i++)
		if (o->n[i] < K)
			die("N must be at least %d", K);
}

/* ---- --stream DIR: collections larger than memory ------------------------
 *
 * For each N: the index "auto" would move to at N (vidx_auto_factory:
 * IVF-PQ re-ranked with the float vectors), built without holding the data
 * set: rows are generated STREAM_CHUNK at a time (a row depends on the seed
 * and its number only), added, and forgotten; every --save-every adds a
 * snapshot is written to DIR, which moves the float vectors added so far
 * out of the process into the mapped file beside it (index/vecs.c). The
 * exact top-K of the single queries is computed on the way from the same
 * chunks (an exact index per chunk, merged), so recall is against exact
 * search over all N. Then the index is closed, the page cache dropped when
 * the kernel allows it (root), and the snapshot loaded as clipd loads it
 * at start-up: its time is the cold start of the index, and the RSS after
 * it (anonymous: PQ codes, lists, id maps; file: mapped vectors paged in)
 * what serving N costs. Searches as in the other rows. */
#define STREAM_CHUNK 262144

/* The queries of make_queries, each database row generated on its own. */
static void make_queries_stream(size_t n, const struct opts *o, size_t nq, float *q)
{
	rng r;
	int dim = o->dim;
	float *g = xmalloc((size_t)dim * sizeof *g), *row = xmalloc((size_t)dim * sizeof *row);
	rng_init(&r, o->seed ^ 0x51ed2701a3c4e6bfULL, n);
	for (size_t i = 0; i < nq; i++) {
		size_t src = (size_t)(rng_next(&r) % n);
		float *qi = q + i * (size_t)dim;
		gen_rows(row, src, src + 1, dim, o->data, o->seed);
		gaussian(&r, g, dim);
		for (int j = 0; j < dim; j++)
			qi[j] = row[j] + (float)(o->noise / sqrt(dim)) * g[j];
		normalise(qi, dim);
	}
	free(g);
	free(row);
}

/* Merges a chunk's top-K (scores s, ids id) into the running best[K] /
 * best_id[K] of one query, both sorted best first. */
static void merge_topk(float *best, int64_t *best_id, const float *s, const int64_t *id)
{
	float ms[K];
	int64_t mi[K];
	int a = 0, b = 0;
	for (int k = 0; k < K; k++) {
		int take_b = b < K && id[b] >= 0 && (a >= K || best_id[a] < 0 || s[b] > best[a]);
		ms[k] = take_b ? s[b] : best[a];
		mi[k] = take_b ? id[b] : best_id[a];
		take_b ? b++ : a++;
	}
	memcpy(best, ms, sizeof ms);
	memcpy(best_id, mi, sizeof mi);
}

/* 1 when the page cache could be dropped (root, and a kernel that lets
 * this namespace do it). */
static int drop_page_cache(void)
{
	sync();
	FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
	if (!f)
		return 0;
	int ok = fputs("3\n", f) >= 0;
	return fclose(f) == 0 && ok;
}

static double file_mb(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (double)st.st_size / (1 << 20) : -1;
}

static void run_stream(const struct opts *o, size_t n, struct result *res)
{
	size_t dim = (size_t)o->dim, nq = query_count(o), ngt = (size_t)o->queries;
	char path[4096], vpath[4200];
	vidx_err err;
	vidx *v;

	memset(res, 0, sizeof *res);
	res->n = n;
	res->kind = KIND_AUTO;
	res->train_s = res->rate_after_train = -1;
	vidx_auto_factory(n, o->dim, res->factory, sizeof res->factory);
	snprintf(path, sizeof path, "%s/stream-%zu.vidx", o->stream, n);
	snprintf(vpath, sizeof vpath, "%s.vec", path);
	float *q = xmalloc(nq * dim * sizeof *q);
	make_queries_stream(n, o, nq, q);

	float *gs = xmalloc(ngt * K * sizeof *gs), *cs = xmalloc(ngt * K * sizeof *cs);
	int64_t *gi = xmalloc(ngt * K * sizeof *gi), *ci = xmalloc(ngt * K * sizeof *ci);
	for (size_t i = 0; i < ngt * K; i++)
		gi[i] = -1, gs[i] = -INFINITY;
	float *x = xmalloc(STREAM_CHUNK * dim * sizeof *x);
	int64_t *ids = xmalloc(STREAM_CHUNK * sizeof *ids);

	double rss0 = proc_status_mb("VmRSS");
	reset_peak_rss();
	check(vidx_create(res->factory, o->dim, "bench", &v, &err), &err, "creating the index");
	if (o->nprobe > 0)
		check(vidx_set_param(v, "nprobe", o->nprobe, &err), &err, "nprobe");
	double gen_s = 0, gt_s = 0, add_s = 0, save_s = 0, t0 = bench_now(), last_note = t0;
	size_t since_save = 0;
	int saves = 0;
	for (size_t at = 0; at < n; at += STREAM_CHUNK) {
		size_t b = n - at < STREAM_CHUNK ? n - at : STREAM_CHUNK;
		double t = bench_now();
		gen_rows(x, at, at + b, o->dim, o->data, o->seed);
		for (size_t i = 0; i < b; i++)
			ids[i] = (int64_t)(at + i);
		gen_s += bench_now() - t;

		t = bench_now();
		vidx *ex;
		check(vidx_create("exact", o->dim, "bench", &ex, &err), &err, "creating the index");
		check(vidx_add(ex, b, x, ids, &err), &err, "adding to the exact chunk");
		check(vidx_search(ex, ngt, q, K, cs, ci, &err), &err, "ground truth");
		vidx_close(ex);
		for (size_t j = 0; j < ngt; j++)
			merge_topk(gs + j * K, gi + j * K, cs + j * K, ci + j * K);
		gt_s += bench_now() - t;

		t = bench_now();
		for (size_t i = 0; i < b; i += ADD_BATCH) {
			size_t c = b - i < ADD_BATCH ? b - i : ADD_BATCH;
			double t1 = bench_now();
			check(vidx_add(v, c, x + i * dim, ids + i, &err), &err, "adding");
			if (at + i < IVFPQ_TRAIN_AT && at + i + c >= IVFPQ_TRAIN_AT)
				res->train_s = bench_now() - t1;
		}
		add_s += bench_now() - t;
		since_save += b;
		if (since_save >= o->save_every || at + b == n) {
			t = bench_now();
			check(vidx_save(v, path, &err), &err, "saving");
			save_s += bench_now() - t;
			since_save = 0;
			saves++;
		}
		double now = bench_now();
		if (now - last_note >= 30 || at + b == n) {
			fprintf(stderr, "  stream N=%zu: %zu added in %.0f s (RSS %.0f MB; adds %.0f s, "
			        "ground truth %.0f s, snapshots %.0f s)\n",
			        n, at + b, now - t0, proc_status_mb("VmRSS"), add_s, gt_s, save_s);
			last_note = now;
		}
	}
	free(x);
	free(ids);
	free(cs);
	free(ci);
	res->add_s = add_s;
	res->add_rate = (double)n / add_s;
	double build_peak = proc_status_mb("VmHWM");
	if (vidx_count(v) != n)
		die("stream: index holds %zu vectors after adding %zu", vidx_count(v), n);
	vidx_close(v);

	int cold = drop_page_cache();
	reset_peak_rss();
	double before = proc_status_mb("VmRSS"), t = bench_now();
	check(vidx_load(path, "bench", o->dim, &v, &err), &err, "loading the snapshot");
	double load_s = bench_now() - t;
	double rss_load = proc_status_mb("VmRSS") - before, anon_load = proc_status_mb("RssAnon");
	res->index_mb = rss_load;

	int64_t *got = xmalloc((size_t)o->queries * K * sizeof *got);
	int64_t *got_b = xmalloc((size_t)o->batches * BATCH_NQ * K * sizeof *got_b);
	time_searches(v, o, q, res, got, got_b);
	size_t h10 = 0, h1 = 0;
	for (size_t j = 0; j < ngt; j++)
		count_hits(got + j * K, gi + j * K, &h10, &h1);
	res->recall10 = (double)h10 / (double)(ngt * K);
	res->recall1 = (double)h1 / (double)ngt;
	res->peak_mb = proc_status_mb("VmHWM");
	print_row(res);
	printf("# stream N=%zu %s: generating %.0f s, exact top-%d of %zu queries %.0f s, adds %.0f s "
	       "(training batch %.1f s), %d snapshots %.0f s; build RSS peak %.0f MB (process at "
	       "start %.0f MB)\n",
	       n, res->factory, gen_s, K, ngt, gt_s, add_s, res->train_s, saves, save_s, build_peak,
	       rss0);
	printf("# stream N=%zu: snapshot %.0f MB + vectors %.0f MB on disk; load %.2f s (%s page "
	       "cache); RSS after load +%.0f MB (process anon %.0f MB); after the searches: RSS "
	       "%.0f MB, anon %.0f MB, file %.0f MB, peak %.0f MB\n",
	       n, file_mb(path), file_mb(vpath), load_s, cold ? "dropped" : "warm (not dropped)",
	       rss_load, anon_load, proc_status_mb("VmRSS"), proc_status_mb("RssAnon"),
	       proc_status_mb("RssFile"), res->peak_mb);
	fflush(stdout);
	sweep(v, o, q, gi, n, KIND_AUTO);
	vidx_close(v);
	free(got);
	free(got_b);
	free(q);
	free(gs);
	free(gi);
}

int main(int argc, char **argv)
{
	struct opts o;
	parse_opts(&o, argc, argv);
	print_settings(&o);
	if (o.stream) {
		struct result r;
		print_table_head();
		for (int s = 0; s < o.nn; s++)
			run_stream(&o, o.n[s], &r);
		return 0;
	}

	size_t nmax = 0, have = 0, dim = (size_t)o.dim, nq = query_count(&o);
	for (int i = 0; i < o.nn; i++)
		if (o.n[i] > nmax)
			nmax = o.n[i];
	struct result *res = xmalloc((size_t)o.nn * (size_t)o.nk * sizeof *res);
	float *x = xmalloc(nmax * dim * sizeof *x);
	float *q = xmalloc(nq * dim * sizeof *q);
	int64_t *gt = xmalloc(nq * K * sizeof *gt);
	int nres = 0;

	print_table_head();
	for (int s = 0; s < o.nn; s++) {
		size_t n = o.n[s];
		if (n > have) {
			/* Rows depend on the seed and their number only, so a smaller
			 * N is a prefix of a larger one and is generated once. */
			double t = bench_now();
			gen_rows(x + have * dim, have, n, o.dim, o.data, o.seed);
			fprintf(stderr, "generated rows %zu..%zu in %.1f s\n", have, n, bench_now() - t);
			have = n;
		}
		make_queries(x, n, o.dim, nq, o.noise, o.seed, q);

		const int64_t *truth = NULL;
		if (o.kinds[0] != KIND_EXACT) {
			/* No exact row asked for: ground truth from an untimed one. */
			vidx *ex = new_index(KIND_EXACT, &o);
			vidx_err err;
			int64_t *ids = xmalloc(ADD_BATCH * sizeof *ids);
			fprintf(stderr, "exact N=%zu: ground truth\n", n);
			for (size_t at = 0; at < n; at += ADD_BATCH) {
				size_t b = n - at < ADD_BATCH ? n - at : ADD_BATCH;
				for (size_t i = 0; i < b; i++)
					ids[i] = (int64_t)(at + i);
				check(vidx_add(ex, b, x + at * dim, ids, &err), &err, "adding");
			}
			free(ids);
			ground_truth(ex, q, nq, gt);
			vidx_close(ex);
			truth = gt;
		}
		for (int k = 0; k < o.nk; k++) {
			struct result *r = &res[nres++];
			run_kind(o.kinds[k], &o, x, n, q, truth, gt, r);
			truth = gt;
			print_row(r);
		}
	}
	if (o.json)
		for (int i = 0; i < nres; i++)
			print_json(&res[i], &o);
	free(res);
	free(x);
	free(q);
	free(gt);
	return 0;
}
