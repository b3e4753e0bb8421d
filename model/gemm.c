/*
 * gemm.c: the float32 products on OpenBLAS (the reference backend), the
 * attention kernel both backends use, and the helper thread (see
 * gemm_int.h). Layers packed for oneDNN go to gemm_dnnl.c.
 *
 * Large products go to OpenBLAS. A linear layer over a few rows (a short
 * text: 7 tokens) is a different problem: it reads every weight once and
 * does little with it, so it is bound by memory bandwidth, and OpenBLAS's
 * packing of the weight matrix costs more than the product. Those go to a
 * streaming kernel here that reads each weight row once, dots it with every
 * input row while it sits in L1, and splits the output columns across the
 * threads. It is compiled for AVX-512, AVX2 and baseline x86-64, picked at
 * run time (target_clones), so one binary serves every CPU.
 *
 * DESIGN: threads. OpenBLAS keeps its own pool (mm_set_threads). The
 * streaming kernel and the encoders' element-wise work (mm_parallel) use
 * the calling thread plus at most one helper thread of our own. Between
 * jobs the helper spins for at most SPIN_NS, and only once a layer runs on
 * oneDNN (mm_spin_between_jobs), then sleeps on a condition variable: an
 * unbounded spinning waiter (OpenMP's default) made a 7-token text 10x
 * slower next to OpenBLAS's threads on two cores, while waking a sleeping
 * helper for every job of an encode cost more than the bounded spin (see
 * mm_parallel below). One caller at a time owns the helper (pool.use, taken
 * with trylock); any other caller meanwhile runs single-threaded instead of
 * waiting. Lock order: pool.use, then pool.mu.
 */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "clip_int.h"
#include "gemm_int.h"
#include "simd_int.h"

/* gemm_dnnl.c, when oneDNN is built in. */
void mm_dnnl_linear(int n, const mm_weight *W, const float *x, float *y, int flags);

/* At or below this many rows, mm_linear streams instead of calling sgemm.
 * Measured with bench/model on ViT-B/32 shapes (see the note of the model
 * issue): 7-token texts gain most; at 50 rows (one image) sgemm wins. */
#define SMALL_ROWS 16

static int nthreads = 0; /* mm_set_threads; 0: follow OpenBLAS's own setting */


/* Output columns o0..o1 of y = x . w^T + bias, for n rows of x. Four rows at
 * a time share each load of the weights and give four independent chains
 * of multiply-adds (one chain would wait on its own latency). */
MULTIVERSION
static void linear_rows(int n, int in, int o0, int o1, int out, const float *x, const float *w,
                        const float *bias, float *y, int acc)
{
	for (int o = o0; o < o1; o++) {
		const float *wo = w + (size_t)o * in;
		float b = bias ? bias[o] : 0.0f;
		for (int i0 = 0; i0 < n; i0 += 4) {
			/* Missing rows of the last group repeat row i0; their
			 * results are not stored. */
			const float *x0 = x + (size_t)i0 * in;
			const float *x1 = i0 + 1 < n ? x0 + in : x0;
			const float *x2 = i0 + 2 < n ? x0 + 2 * (size_t)in : x0;
			const float *x3 = i0 + 3 < n ? x0 + 3 * (size_t)in : x0;
			v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
			int k = 0;
			for (; k + 16 <= in; k += 16) {
				v16 wv = LOAD16(wo + k);
				a0 += LOAD16(x0 + k) * wv;
				a1 += LOAD16(x1 + k) * wv;
				a2 += LOAD16(x2 + k) * wv;
				a3 += LOAD16(x3 + k) * wv;
			}
			float s[4] = {hsum(&a0), hsum(&a1), hsum(&a2), hsum(&a3)};
			for (; k < in; k++) {
				s[0] += x0[k] * wo[k];
				s[1] += x1[k] * wo[k];
				s[2] += x2[k] * wo[k];
				s[3] += x3[k] * wo[k];
			}
			for (int j = 0; j < 4 && i0 + j < n; j++) {
				float *yo = y + (size_t)(i0 + j) * out + o;
				*yo = acc ? *yo + s[j] + b : s[j] + b;
			}
		}
	}
}

/* One head of attention for T positions: out[i] = softmax(scale * q[i] .
 * k[j]^T over j) . v, with j <= i when causal. q, k, v rows are ld floats
 * apart (they sit side by side in the qkv buffer), out rows ldo apart; s
 * is scratch of (dh + 4) * T16 + T * T16 floats, T16 = T rounded up to 16.
 * These are 50x50x64 products: OpenBLAS's threading and packing cost more
 * than they compute. The keys are transposed first, so that a score row is
 * a sum over d of q[i][d] times a row of k^T: 16 scores per vector, four
 * query rows sharing each load. The weighted sum of values keeps the output
 * row in registers across all j. */
MULTIVERSION
void mm_attention(int T, int dh, float scale, int causal, const float *q, const float *k,
                  const float *v, int ld, float *out, int ldo, float *s)
{
	int T16 = (T + 15) & ~15;
	float *kt = s, *sc = s + (size_t)dh * T16; /* kt[dh][T16], sc[T][T16] */
	for (int j = 0; j < T; j++)
		for (int d = 0; d < dh; d++)
			kt[(size_t)d * T16 + j] = k[(size_t)j * ld + d] * scale;
	for (int d = 0; d < dh; d++)
		for (int j = T; j < T16; j++)
			kt[(size_t)d * T16 + j] = 0;
	for (int i0 = 0; i0 < T; i0 += 4) {
		int ni = T - i0 < 4 ? T - i0 : 4;
		const float *qi[4];
		for (int r = 0; r < 4; r++)
			qi[r] = q + (size_t)(i0 + (r < ni ? r : 0)) * ld;
		int jn = causal ? i0 + ni : T;
		for (int j = 0; j < jn; j += 16) {
			v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
			for (int d = 0; d < dh; d++) {
				v16 kv = LOAD16(kt + (size_t)d * T16 + j);
				a0 += qi[0][d] * kv;
				a1 += qi[1][d] * kv;
				a2 += qi[2][d] * kv;
				a3 += qi[3][d] * kv;
			}
			v16 *acc[4] = {&a0, &a1, &a2, &a3};
			for (int r = 0; r < ni; r++)
				memcpy(sc + (size_t)(i0 + r) * T16 + j, acc[r], sizeof a0);
		}
	}
	const v16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
	for (int i = 0; i < T; i++) {
		float *r = sc + (size_t)i * T16;
		int n = causal ? i + 1 : T;
		float mx = r[0], sum = 0;
		for (int j = 1; j < n; j++)
			mx = r[j] > mx ? r[j] : mx;
		/* Sixteen at a time; lanes at or past n become 0. */
		v16 vs = {0};
		for (int j = 0; j < n; j += 16) {
			v16 e = LOAD16(r + j) - mx;
			vexp(&e);
			v16i keep = (v16i)(lane < (float)(n - j));
			e = (v16)((v16i)e & keep);
			memcpy(r + j, &e, sizeof e);
			vs += e;
		}
		sum = hsum(&vs);
		float inv = 1.0f / sum;
		float *o = out + (size_t)i * ldo;
		int d = 0;
		for (; d + 64 <= dh; d += 64) {
			v16 o0 = {0}, o1 = {0}, o2 = {0}, o3 = {0};
			for (int j = 0; j < n; j++) {
				const float *vj = v + (size_t)j * ld + d;
				float p = r[j];
				o0 += LOAD16(vj) * p;
				o1 += LOAD16(vj + 16) * p;
				o2 += LOAD16(vj + 32) * p;
				o3 += LOAD16(vj + 48) * p;
			}
			o0 *= inv, o1 *= inv, o2 *= inv, o3 *= inv;
			memcpy(o + d, &o0, sizeof o0);
			memcpy(o + d + 16, &o1, sizeof o1);
			memcpy(o + d + 32, &o2, sizeof o2);
			memcpy(o + d + 48, &o3, sizeof o3);
		}
		for (; d < dh; d++) {
			float a = 0;
			for (int j = 0; j < n; j++)
				a += v[(size_t)j * ld + d] * r[j];
			o[d] = a * inv;
		}
	}
}

/* mm_parallel: the calling thread plus at most one helper thread of our
 * own. Between jobs the helper first spins for up to SPIN_NS, then sleeps
 * on a condition variable: within one encode the next job comes a few
 * microseconds later, and waking a sleeping thread cost 30-50 us here
 * (a KVM guest), about 150 times per 7-token text. The spin is bounded,
 * so an idle server does not burn a core, and it is ours alone: OpenMP
 * stays passive for FAISS (spinning OpenMP threads made FAISS's 32-query
 * search 2-2.7x slower, measured). One caller at a time owns the helper
 * (pool.use, taken with trylock); another caller meanwhile runs its job
 * alone. gen and finished are atomics; sleeping and waiting, under mu,
 * tell the other side that it must signal (seq_cst on both sides, so a
 * flag set is never missed by a store it raced with). */
#define SPIN_NS 100000

/* Set once a layer runs on oneDNN (mm_spin_between_jobs). The OpenBLAS
 * reference path does not spin: there OpenBLAS's own threads want the
 * cores between our jobs (a ViT-B/32 image went from 80 to 99 ms). */
static int pool_spin;

void mm_spin_between_jobs(void)
{
	__atomic_store_n(&pool_spin, 1, __ATOMIC_RELAXED);
}

static struct {
	pthread_mutex_t use;      /* held by the one caller that owns the helper */
	pthread_mutex_t mu;       /* guards sleeping, waiting, and the waits */
	pthread_cond_t go, done;
	void (*fn)(void *ctx, int i0, int i1);
	void *ctx;
	int i0, i1;
	unsigned gen, finished;   /* atomics: the job posted, the job done */
	int sleeping, waiting;    /* atomics, set under mu */
	int started;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0, 0, 0, 0, 0};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* Spins while *v == same, for at most SPIN_NS; returns the last value
 * read. */
static unsigned spin_while_equal(const unsigned *v, unsigned same)
{
	unsigned x = __atomic_load_n(v, __ATOMIC_SEQ_CST);
	if (x != same || !__atomic_load_n(&pool_spin, __ATOMIC_RELAXED))
		return x;
	int64_t end = mono_ns() + SPIN_NS;
	for (int i = 1;; i++) {
		cpu_relax();
		x = __atomic_load_n(v, __ATOMIC_SEQ_CST);
		if (x != same || ((i & 63) == 0 && mono_ns() > end))
			return x;
	}
}

static void *pool_main(void *arg)
{
	(void)arg;
	unsigned seen = 0;
	for (;;) {
		unsigned g = spin_while_equal(&pool.gen, seen);
		if (g == seen) {
			pthread_mutex_lock(&pool.mu);
			__atomic_store_n(&pool.sleeping, 1, __ATOMIC_SEQ_CST);
			while ((g = __atomic_load_n(&pool.gen, __ATOMIC_SEQ_CST)) == seen)
				pthread_cond_wait(&pool.go, &pool.mu);
			__atomic_store_n(&pool.sleeping, 0, __ATOMIC_SEQ_CST);
			pthread_mutex_unlock(&pool.mu);
		}
		seen = g;
		/* The job's fields were written before gen (seq_cst store). */
		pool.fn(pool.ctx, pool.i0, pool.i1);
		__atomic_store_n(&pool.finished, seen, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&pool.waiting, __ATOMIC_SEQ_CST)) {
			pthread_mutex_lock(&pool.mu);
			pthread_cond_signal(&pool.done);
			pthread_mutex_unlock(&pool.mu);
		}
	}
	return NULL;
}

static void pool_start(void)
{
	pthread_t t;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	pool.started = pthread_create(&t, &a, pool_main, NULL) == 0;
	pthread_attr_destroy(&a);
}

void mm_parallel(int n, int work, void (*fn)(void *ctx, int i0, int i1), void *ctx)
{
	int want = nthreads > 0 ? nthreads : openblas_get_num_threads();
	/* Little work, one thread wanted, or the helper busy: run alone. */
	if (n < 2 || want < 2 || work < (1 << 15) || pthread_mutex_trylock(&pool.use) != 0) {
		fn(ctx, 0, n);
		return;
	}
	pthread_once(&pool_once, pool_start);
	if (!pool.started) {
		pthread_mutex_unlock(&pool.use);
		fn(ctx, 0, n);
		return;
	}
	int half = n / 2;
	pool.fn = fn;
	pool.ctx = ctx;
	pool.i0 = half;
	pool.i1 = n;
	unsigned gen = __atomic_load_n(&pool.gen, __ATOMIC_RELAXED) + 1;
	__atomic_store_n(&pool.gen, gen, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&pool.sleeping, __ATOMIC_SEQ_CST)) {
		pthread_mutex_lock(&pool.mu);
		pthread_cond_signal(&pool.go);
		pthread_mutex_unlock(&pool.mu);
	}
	fn(ctx, 0, half);
	if (spin_while_equal(&pool.finished, gen - 1) != gen) {
		pthread_mutex_lock(&pool.mu);
		__atomic_store_n(&pool.waiting, 1, __ATOMIC_SEQ_CST);
		while (__atomic_load_n(&pool.finished, __ATOMIC_SEQ_CST) != gen)
			pthread_cond_wait(&pool.done, &pool.mu);
		__atomic_store_n(&pool.waiting, 0, __ATOMIC_SEQ_CST);
		pthread_mutex_unlock(&pool.mu);
	}
	pthread_mutex_unlock(&pool.use);
}

struct linear_job {
	int n, in, out, acc;
	const float *x, *w, *bias;
	float *y;
};

static void linear_part(void *ctx, int o0, int o1)
{
	struct linear_job *j = ctx;
	linear_rows(j->n, j->in, o0, o1, j->out, j->x, j->w, j->bias, j->y, j->acc);
}

struct act_job {
	float *x;
	size_t chunk, n;
	int flags;
};

static void activate_part(void *ctx, int c0, int c1)
{
	struct act_job *j = ctx;
	size_t i0 = (size_t)c0 * j->chunk, i1 = (size_t)c1 * j->chunk;
	float *x = j->x;
	if (i1 > j->n)
		i1 = j->n;
	if (j->flags & MM_QUICK_GELU) {
		for (size_t i = i0; i < i1; i++)
			x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
	} else if (j->flags & MM_GELU) {
		for (size_t i = i0; i < i1; i++)
			x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
	}
}

static void mm_activate(float *x, size_t n, int flags)
{
	if (!(flags & (MM_QUICK_GELU | MM_GELU)))
		return;
	/* In chunks of 4096 so that the part count fits an int. */
	struct act_job j = {x, 4096, n, flags};
	int chunks = (int)((n + j.chunk - 1) / j.chunk);
	mm_parallel(chunks, (int)(n < (1u << 28) ? n * 8 : 1u << 30), activate_part, &j);
}

void mm_linear(int n, const mm_weight *W, const float *x, float *y, int flags)
{
	if (W->packed) {
		mm_dnnl_linear(n, W, x, y, flags);
		return;
	}
	int in = W->in, out = W->out, acc = (flags & MM_ACCUMULATE) != 0;
	const float *w = W->w, *bias = W->b;
	if (n <= SMALL_ROWS) {
		struct linear_job j = {n, in, out, acc, x, w, bias, y};
		/* Work: the weights read; tiny layers stay on one thread. */
		mm_parallel(out, (int)((size_t)in * out >> 1), linear_part, &j);
	} else {
		/* Start from the bias (or add it to the residual) and let sgemm
		 * accumulate: one pass less. */
		if (bias)
			for (int i = 0; i < n; i++) {
				float *yi = y + (size_t)i * out;
				if (acc)
					for (int o = 0; o < out; o++)
						yi[o] += bias[o];
				else
					memcpy(yi, bias, (size_t)out * sizeof *y);
			}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in,
		            bias || acc ? 1.0f : 0.0f, y, out);
	}
	mm_activate(y, (size_t)n * out, flags);
}

void mm_set_threads(int n)
{
	nthreads = n;
	openblas_set_num_threads(n);
}

#ifndef CLIPD_HAVE_DNNL
/* Built without oneDNN: every layer stays on OpenBLAS. */
void mm_dnnl_linear(int n, const mm_weight *W, const float *x, float *y, int flags)
{
	(void)n, (void)W, (void)x, (void)y, (void)flags;
}

int mm_pack(mm_weight *W, clip_precision p, clip_err *err)
{
	(void)W;
	return clip_fail(err, CLIP_EINVAL, "precision %s needs oneDNN, and this build has none",
	                 clip_precision_name(p));
}

void mm_unpack(mm_weight *W)
{
	(void)W;
}

int mm_have_dnnl(void)
{
	return 0;
}

int mm_precision_supported(clip_precision p, const char **why)
{
	if (p == CLIP_PRECISION_AUTO || p == CLIP_PRECISION_F32)
		return 1;
	if (why)
		*why = "this build has no oneDNN";
	return 0;
}
#endif
