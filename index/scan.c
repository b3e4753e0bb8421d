/*
 * scan.c: exact inner-product search of one query over a row-major matrix,
 * split over the cores.
 *
 * FAISS's flat search gives one query one thread (its loop is over
 * queries), so a single search of a large exact index ran on one core while
 * the other idled. Here the rows are cut into one range per thread; each
 * thread keeps its own k best in a heap, and the heaps are merged. The
 * arithmetic is the same dot product, so results equal FAISS's up to float
 * rounding (the sum's order differs); ties are broken by the smaller id so
 * that the order is reproducible.
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "index_int.h"

/* The dot product, compiled for AVX-512, AVX2 and plain x86-64 (the binary
 * runs on any of them; the loader picks one once). "omp simd" lets the
 * compiler reorder the sum into vector lanes. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static float dot(const float *a, const float *b, int dim)
{
	float s = 0;
#pragma omp simd reduction(+ : s)
	for (int i = 0; i < dim; i++)
		s += a[i] * b[i];
	return s;
}

/* The same for the other files of index/: a plain function, because clang
 * emits the resolver of a target_clones function only for calls in its
 * own file (the fuzz build failed to link an exported one). */
float vidx_dot(const float *a, const float *b, int dim)
{
	return dot(a, b, dim);
}

/* Min-heap of the k best so far, worst at the root: (score, id) pairs where
 * a lower score, or an equal score with a larger id, is worse. */
typedef struct heap {
	float *s;
	int64_t *id;
	int n, k;
} heap;

static int worse(float sa, int64_t ia, float sb, int64_t ib)
{
	return sa < sb || (sa == sb && ia > ib);
}

static void heap_sift_down(heap *h, int i)
{
	for (;;) {
		int l = 2 * i + 1, r = l + 1, m = i;
		if (l < h->n && worse(h->s[l], h->id[l], h->s[m], h->id[m]))
			m = l;
		if (r < h->n && worse(h->s[r], h->id[r], h->s[m], h->id[m]))
			m = r;
		if (m == i)
			return;
		float ts = h->s[i];
		int64_t ti = h->id[i];
		h->s[i] = h->s[m], h->id[i] = h->id[m];
		h->s[m] = ts, h->id[m] = ti;
		i = m;
	}
}

static void heap_push(heap *h, float s, int64_t id)
{
	if (h->n < h->k) {
		int i = h->n++;
		h->s[i] = s, h->id[i] = id;
		while (i > 0) {
			int p = (i - 1) / 2;
			if (!worse(h->s[i], h->id[i], h->s[p], h->id[p]))
				break;
			float ts = h->s[i];
			int64_t ti = h->id[i];
			h->s[i] = h->s[p], h->id[i] = h->id[p];
			h->s[p] = ts, h->id[p] = ti;
			i = p;
		}
	} else if (worse(h->s[0], h->id[0], s, id)) {
		h->s[0] = s, h->id[0] = id;
		heap_sift_down(h, 0);
	}
}

int vidx_scan_topk(const float *xb, const int64_t *row_id, size_t n, int dim, const float *q,
                   int k, int threads, float *scores, int64_t *ids, vidx_err *err)
{
	return vidx_scan_sel(xb, NULL, row_id, n, dim, q, k, threads, NULL, scores, ids, err);
}

int vidx_scan_sel(const float *xb, const float *const *rowp, const int64_t *row_id, size_t n,
                  int dim, const float *q, int k, int threads, const vidx_sel *sel,
                  float *scores, int64_t *ids, vidx_err *err)
{
	if (threads < 1)
		threads = 1;
	if ((size_t)threads > n)
		threads = n ? (int)n : 1;
	heap *hs = calloc((size_t)threads, sizeof *hs);
	float *hsc = malloc((size_t)threads * (size_t)k * sizeof *hsc);
	int64_t *hid = malloc((size_t)threads * (size_t)k * sizeof *hid);
	if (!hs || !hsc || !hid) {
		free(hs), free(hsc), free(hid);
		return vidx_fail(err, VIDX_ENOMEM, "out of memory searching");
	}
	for (int t = 0; t < threads; t++)
		hs[t] = (heap){hsc + (size_t)t * k, hid + (size_t)t * k, 0, k};

#pragma omp parallel num_threads(threads)
	{
		int t = omp_get_thread_num(), nt = omp_get_num_threads();
		/* The team may be smaller than asked: ranges follow its size. */
		size_t lo = n * (size_t)t / (size_t)nt, hi = n * (size_t)(t + 1) / (size_t)nt;
		heap *h = &hs[t];
		for (size_t r = lo; r < hi; r++) {
			if (sel && !vidx_sel_has(sel, row_id[r]))
				continue;
			const float *x = rowp ? rowp[r] : xb + r * (size_t)dim;
			heap_push(h, dot(x, q, dim), row_id[r]);
		}
	}

	/* Merge: every thread's k into the first heap, then pop in order. */
	heap all = hs[0];
	for (int t = 1; t < threads; t++)
		for (int i = 0; i < hs[t].n; i++)
			heap_push(&all, hs[t].s[i], hs[t].id[i]);
	int m = all.n;
	for (int o = m - 1; o >= 0; o--) {
		scores[o] = all.s[0];
		ids[o] = all.id[0];
		all.s[0] = all.s[all.n - 1], all.id[0] = all.id[all.n - 1];
		all.n--;
		heap_sift_down(&all, 0);
	}
	for (int o = m; o < k; o++)
		ids[o] = -1;
	free(hs), free(hsc), free(hid);
	return VIDX_OK;
}
