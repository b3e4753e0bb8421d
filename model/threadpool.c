/*
 * threadpool.c: mm_parallel's one helper thread (gemm_int.h), which the
 * streaming products, the activations, LayerNorm and attention share.
 *
 * DESIGN: threads. The calling thread plus at most one helper thread of
 * our own. Between jobs the helper spins for at most SPIN_NS, and only once
 * a layer runs on oneDNN (mm_spin_between_jobs), then sleeps on a condition
 * variable: an unbounded spinning waiter (OpenMP's default) made a 7-token
 * text 10x slower next to OpenBLAS's threads on two cores, while waking a
 * sleeping helper for every job of an encode cost more than the bounded
 * spin (see mm_parallel below). One caller at a time owns the helper
 * (pool.use, taken with trylock); any other caller meanwhile runs
 * single-threaded instead of waiting. Lock order: pool.use, then pool.mu.
 */
#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "gemm_int.h"

static int nthreads = 0; /* mm_pool_set_threads; 0: follow OpenBLAS's own setting */

void mm_pool_set_threads(int n)
{
	__atomic_store_n(&nthreads, n, __ATOMIC_RELAXED);
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
	int nt = __atomic_load_n(&nthreads, __ATOMIC_RELAXED);
	int want = nt > 0 ? nt : openblas_get_num_threads();
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
