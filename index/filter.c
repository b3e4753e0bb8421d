/*
 * filter.c: search among a set of allowed ids (vidx_search_among).
 *
 * DESIGN: a filter is applied inside the search, never to a top k after
 * it, so that a filter keeping 1% of the collection still finds k results
 * when k exist. FAISS's C API (1.7.3) has no id selector for searches, so
 * the index does the equivalent itself, choosing by the share of the
 * collection the filter keeps:
 *   - exact: one scan of the flat rows that skips the ids not allowed
 *     (the same scan as an unfiltered search, split over the cores; a
 *     skipped row costs one bit test instead of a dot product);
 *   - other kinds, the filter keeping at most 1/GATHER_SHARE of the
 *     vectors: the allowed vectors themselves are scored exactly (from the
 *     float vectors kept beside a compressed index, or reconstructed from
 *     an HNSW graph's storage) - fewer dot products than the index's own
 *     search would read, and exact;
 *   - otherwise the index is asked for enough more candidates that k
 *     allowed ones are expected among them (k * collection / allowed, twice
 *     over), widened 4-fold while too few pass, and scored exactly as a
 *     last resort when the approximate search runs out before k.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/Index_c.h>

#include "index_int.h"

/* Past this share of the collection (1/8 of it) the index's own search is
 * cheaper than scoring every allowed vector. */
#define GATHER_SHARE 8

int vidx_sel_has(const vidx_sel *s, int64_t id)
{
	if (id < 0)
		return 0;
	if (s->bits)
		return (size_t)id < s->nbits && (s->bits[(size_t)id >> 6] >> (id & 63) & 1);
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->sorted[mid] < id)
			lo = mid + 1;
		else if (s->sorted[mid] > id)
			hi = mid;
		else
			return 1;
	}
	return 0;
}

/* A bitmap when it costs at most 8 bytes per allowed id (plus 128 KiB):
 * store ids are dense, so it nearly always is. */
static int sel_make(vidx_sel *s, const int64_t *allow, size_t n, vidx_err *err)
{
	*s = (vidx_sel){.sorted = allow, .n = n};
	for (size_t i = 0; i < n; i++)
		if (allow[i] < 0 || (i > 0 && allow[i] <= allow[i - 1]))
			return vidx_fail(err, VIDX_EINVAL,
			                 "allowed ids must be >= 0, ascending and distinct");
	if (n == 0)
		return VIDX_OK;
	size_t max = (size_t)allow[n - 1];
	if (max / 8 > 8 * n + (128u << 10))
		return VIDX_OK;
	s->nbits = max + 1;
	if (!(s->bits = calloc(s->nbits / 64 + 1, sizeof *s->bits)))
		return vidx_fail(err, VIDX_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		s->bits[(size_t)allow[i] >> 6] |= 1ull << (allow[i] & 63);
	return VIDX_OK;
}

/* Scores every allowed id that is in the index, exactly. */
static int gather(vidx *v, const float *q, int k, const vidx_sel *sel, float *scores,
                  int64_t *ids, vidx_err *err)
{
	size_t n = sel->n, m = 0, d = (size_t)v->dim;
	const float **rowp = malloc((n ? n : 1) * sizeof *rowp);
	int64_t *row_id = malloc((n ? n : 1) * sizeof *row_id);
	float *copies = NULL;
	int rc = VIDX_OK;
	if (!rowp || !row_id) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
		goto out;
	}
	if (v->has_vecs) {
		for (size_t i = 0; i < n; i++) {
			const float *x = vecs_get(&v->vecs, sel->sorted[i]);
			if (x) {
				rowp[m] = x;
				row_id[m++] = sel->sorted[i];
			}
		}
	} else if (v->kind == VIDX_HNSW) {
		/* The graph's storage holds each node's vector; reconstruct
		 * copies it out. At most 1/GATHER_SHARE of the index. */
		size_t live = 0;
		for (size_t i = 0; i < n; i++)
			live += idset_get(&v->ids, sel->sorted[i], NULL);
		if (live && !(copies = malloc(live * d * sizeof *copies))) {
			rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < n && m < live; i++) {
			int64_t slot;
			if (!idset_get(&v->ids, sel->sorted[i], &slot))
				continue;
			if (faiss_Index_reconstruct(v->main, (idx_t)slot, copies + m * d) != 0) {
				rc = vidx_faiss_fail(err, "reading a vector of the graph");
				goto out;
			}
			rowp[m] = copies + m * d;
			row_id[m++] = sel->sorted[i];
		}
	} else {
		rc = vidx_fail(err, VIDX_EINVAL, "a %s index cannot be searched with a filter",
		               vidx_kind_name(v));
		goto out;
	}
	rc = vidx_scan_sel(NULL, rowp, row_id, m, v->dim, q, k,
	                   m >= SCAN_SPLIT_MIN ? omp_get_max_threads() : 1, NULL, scores, ids, err);
out:
	free(rowp);
	free(row_id);
	free(copies);
	return rc;
}

/* The index's own search, k * wide candidates at a time, keeping the
 * allowed ones; *short_ is 1 when fewer than k were found. */
static int overfetch(vidx *v, const float *q, int k, const vidx_sel *sel, float *scores,
                     int64_t *ids, int *short_, vidx_err *err)
{
	size_t live = v->ids.n, n = sel->n ? sel->n : 1;
	size_t kk = (size_t)k * 2 * ((live + n - 1) / n);
	int rc = VIDX_OK;
	*short_ = 1;
	for (;;) {
		if (kk > live)
			kk = live;
		if (kk > 100000)
			kk = 100000;
		if (kk < (size_t)k)
			kk = (size_t)k;
		float *s = malloc(kk * sizeof *s);
		int64_t *l = malloc(kk * sizeof *l);
		if (!s || !l) {
			free(s);
			free(l);
			return vidx_fail(err, VIDX_ENOMEM, "out of memory");
		}
		for (size_t i = 0; i < kk; i++)
			l[i] = -1;
		rc = vidx_search_held(v, 1, q, (int)kk, s, l, err);
		int o = 0;
		size_t got = 0;
		for (size_t j = 0; rc == VIDX_OK && j < kk; j++) {
			if (l[j] < 0)
				continue;
			got++;
			if (o < k && vidx_sel_has(sel, l[j])) {
				scores[o] = s[j];
				ids[o++] = l[j];
			}
		}
		free(s);
		free(l);
		if (rc != VIDX_OK)
			return rc;
		for (int j = o; j < k; j++)
			ids[j] = -1;
		/* Done when k passed, or when the search gave fewer than asked
		 * (nothing more to find that way), or it was asked for all. */
		if (o == k) {
			*short_ = 0;
			return VIDX_OK;
		}
		if (got < kk || kk >= live || kk >= 100000)
			return VIDX_OK;
		kk *= 4;
	}
}

int vidx_search_among(vidx *v, const float *q, int k, const int64_t *allow, size_t nallow,
                      float *scores, int64_t *ids, vidx_err *err)
{
	vidx_sel sel;
	int rc;
	if (k <= 0 || k > 100000)
		return vidx_fail(err, VIDX_EINVAL, "k must be between 1 and 100000");
	if (!q || !scores || !ids || (nallow && !allow))
		return vidx_fail(err, VIDX_EINVAL, "query, allowed ids and result arrays are required");
	for (int i = 0; i < k; i++)
		ids[i] = -1;
	if ((rc = sel_make(&sel, allow, nallow, err)) != VIDX_OK)
		return rc;

	pthread_rwlock_rdlock(&v->lock);
	size_t live = v->ids.n;
	if (nallow == 0 || live == 0) {
		rc = VIDX_OK;
	} else if (v->kind == VIDX_EXACT) {
		const float *xb;
		const int64_t *row_id;
		size_t n;
		if ((rc = vidx_flat_rows(v, &xb, &row_id, &n, err)) == VIDX_OK)
			rc = vidx_scan_sel(xb, NULL, row_id, n, v->dim, q, k,
			                   n >= SCAN_SPLIT_MIN ? omp_get_max_threads() : 1, &sel, scores,
			                   ids, err);
	} else if (nallow * GATHER_SHARE <= live) {
		rc = gather(v, q, k, &sel, scores, ids, err);
	} else {
		int short_;
		rc = overfetch(v, q, k, &sel, scores, ids, &short_, err);
		/* The approximate search ran out before k allowed ones: score
		 * them all (a filter keeping 1/8 or more of an index whose
		 * search reaches only part of it). */
		if (rc == VIDX_OK && short_ && (v->has_vecs || v->kind == VIDX_HNSW))
			rc = gather(v, q, k, &sel, scores, ids, err);
	}
	pthread_rwlock_unlock(&v->lock);
	free(sel.bits);
	if (rc == VIDX_OK)
		for (int i = 0; i < k; i++)
			if (ids[i] < 0)
				scores[i] = -INFINITY;
	return rc;
}
