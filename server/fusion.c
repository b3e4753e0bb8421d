/* fusion.c: reciprocal-rank fusion (fusion.h). */
#include <stdlib.h>

#include "fusion.h"

static int by_id(const void *a, const void *b)
{
	const fused *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Ranks compare with 0 (absent) as the worst. */
static int better_rank(int64_t a, int64_t b)
{
	if (a == b)
		return 0;
	if (!a)
		return 1;
	if (!b)
		return -1;
	return a < b ? -1 : 1;
}

static int by_score(const void *a, const void *b)
{
	const fused *x = a, *y = b;
	int c;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	if ((c = better_rank(x->vector_rank, y->vector_rank)))
		return c;
	if ((c = better_rank(x->keyword_rank, y->keyword_rank)))
		return c;
	return x->id < y->id ? -1 : x->id > y->id;
}

void fusion_rrf(const int64_t *vids, int nv, const int64_t *kids, int nk, int rrf_k, fused *out,
               int *n)
{
	int m = 0;
	for (int i = 0; i < nv; i++)
		out[m++] = (fused){.id = vids[i], .vector_rank = i + 1};
	for (int i = 0; i < nk; i++)
		out[m++] = (fused){.id = kids[i], .keyword_rank = i + 1};
	/* Entries of one id meet when sorted by id, and merge. */
	qsort(out, (size_t)m, sizeof *out, by_id);
	int w = 0;
	for (int i = 0; i < m; i++) {
		if (w > 0 && out[w - 1].id == out[i].id) {
			if (out[i].vector_rank)
				out[w - 1].vector_rank = out[i].vector_rank;
			if (out[i].keyword_rank)
				out[w - 1].keyword_rank = out[i].keyword_rank;
		} else {
			out[w++] = out[i];
		}
	}
	for (int i = 0; i < w; i++) {
		double s = 0;
		if (out[i].vector_rank)
			s += 1.0 / (double)(rrf_k + out[i].vector_rank);
		if (out[i].keyword_rank)
			s += 1.0 / (double)(rrf_k + out[i].keyword_rank);
		out[i].score = s;
	}
	qsort(out, (size_t)w, sizeof *out, by_score);
	*n = w;
}
