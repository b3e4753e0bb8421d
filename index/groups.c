/*
 * groups.c: near-duplicate groups, the connected sets of the graph whose
 * edges are the pairs found by k-nearest-neighbour searches with a score at
 * or above a threshold (see vidx_groups in index.h).
 *
 * A union-find over dense node numbers (union by size, path halving), an
 * id -> node map (idset), and after vidx_groups_finish the groups of two or
 * more, largest first. Memory: about 40 bytes per grouped id while joining
 * (the map at 3/4 load, node id, parent, size), about 35 once finished
 * (members, the id -> group map); nothing per edge, so a group of every
 * vector costs per id what a group of two does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_int.h"

/* Queries per FAISS call in vidx_groups_search: batches keep FAISS on its
 * matrix-product path; 1024 x k results stay small. */
#define SEARCH_BATCH 1024

/* vidx_groups_index: exact up to EXACT_MAX vectors (0.6 s for 10,000 of
 * dimension 512 on two cores, bench/dups), IVF beyond with about
 * VECTORS_PER_LIST vectors per list, NPROBE lists searched per query. */
#define EXACT_MAX 10000
#define VECTORS_PER_LIST 100
#define MAX_LISTS 4096
#define NPROBE 8

struct vidx_groups {
	float threshold;
	idset node_of;           /* id -> node */
	int64_t *id;             /* [n] node -> id */
	uint32_t *parent;        /* [n] */
	uint32_t *size;          /* [n] component size, valid at roots */
	size_t n, cap;
	int finished;
	/* After finish: */
	size_t ngroups;
	size_t *start;           /* [ngroups + 1] offsets into members */
	int64_t *members;        /* grouped ids, each group ascending */
	idset group_of;          /* grouped id -> group number */
};

int vidx_groups_new(float threshold, vidx_groups **out, vidx_err *err)
{
	*out = NULL;
	if (!(threshold >= -1.0f && threshold <= 1.0f))
		return vidx_fail(err, VIDX_EINVAL, "threshold must be between -1 and 1");
	vidx_groups *g = calloc(1, sizeof *g);
	if (!g)
		return vidx_fail(err, VIDX_ENOMEM, "out of memory");
	g->threshold = threshold;
	*out = g;
	return VIDX_OK;
}

void vidx_groups_free(vidx_groups *g)
{
	if (!g)
		return;
	idset_free(&g->node_of);
	idset_free(&g->group_of);
	free(g->id);
	free(g->parent);
	free(g->size);
	free(g->start);
	free(g->members);
	free(g);
}

/* The node of id, created when new; -1 when out of memory. */
static int64_t node(vidx_groups *g, int64_t id)
{
	int64_t v;
	if (idset_get(&g->node_of, id, &v))
		return v;
	if (g->n == UINT32_MAX)
		return -1;
	if (g->n == g->cap) {
		size_t cap = g->cap ? 2 * g->cap : 1024;
		int64_t *ids = realloc(g->id, cap * sizeof *ids);
		if (ids)
			g->id = ids;
		uint32_t *parent = realloc(g->parent, cap * sizeof *parent);
		if (parent)
			g->parent = parent;
		uint32_t *size = realloc(g->size, cap * sizeof *size);
		if (size)
			g->size = size;
		if (!ids || !parent || !size)
			return -1;
		g->cap = cap;
	}
	if (idset_put(&g->node_of, id, (int64_t)g->n) != 0)
		return -1;
	g->id[g->n] = id;
	g->parent[g->n] = (uint32_t)g->n;
	g->size[g->n] = 1;
	return (int64_t)g->n++;
}

static uint32_t root(vidx_groups *g, uint32_t x)
{
	while (g->parent[x] != x) {
		g->parent[x] = g->parent[g->parent[x]];
		x = g->parent[x];
	}
	return x;
}

static void join(vidx_groups *g, uint32_t a, uint32_t b)
{
	a = root(g, a);
	b = root(g, b);
	if (a == b)
		return;
	if (g->size[a] < g->size[b]) {
		uint32_t t = a;
		a = b;
		b = t;
	}
	g->parent[b] = a;
	g->size[a] += g->size[b];
}

int vidx_groups_join(vidx_groups *g, size_t nq, const int64_t *qids, int k, const float *scores,
                     const int64_t *ids, vidx_err *err)
{
	if (g->finished)
		return vidx_fail(err, VIDX_EINVAL, "the grouping is finished");
	if (k < 0 || (nq && (!qids || (k && (!scores || !ids)))))
		return vidx_fail(err, VIDX_EINVAL, "queries and results are required");
	for (size_t q = 0; q < nq; q++) {
		int64_t a = -2;
		for (int j = 0; j < k; j++) {
			int64_t id = ids[q * (size_t)k + (size_t)j];
			if (id < 0 || id == qids[q] || !(scores[q * (size_t)k + (size_t)j] >= g->threshold))
				continue;
			if (a == -2 && (a = node(g, qids[q])) < 0)
				return vidx_fail(err, VIDX_ENOMEM, "out of memory grouping");
			int64_t b = node(g, id);
			if (b < 0)
				return vidx_fail(err, VIDX_ENOMEM, "out of memory grouping");
			join(g, (uint32_t)a, (uint32_t)b);
		}
	}
	return VIDX_OK;
}

int vidx_groups_search(vidx_groups *g, vidx *v, size_t n, const float *x, const int64_t *ids,
                       int k, vidx_err *err)
{
	int kk = k + 1; /* each vector finds itself too */
	if (k <= 0 || k >= 100000)
		return vidx_fail(err, VIDX_EINVAL, "k must be between 1 and 99999");
	size_t batch = n < SEARCH_BATCH ? n : SEARCH_BATCH;
	float *s = malloc(batch * (size_t)kk * sizeof *s);
	int64_t *l = malloc(batch * (size_t)kk * sizeof *l);
	int rc = VIDX_OK;
	if (n && (!s || !l)) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n && rc == VIDX_OK; i += batch) {
		size_t m = n - i < batch ? n - i : batch;
		rc = vidx_search(v, m, x + i * (size_t)vidx_dim(v), kk, s, l, err);
		if (rc == VIDX_OK)
			rc = vidx_groups_join(g, m, ids + i, kk, s, l, err);
	}
out:
	free(s);
	free(l);
	return rc;
}

int vidx_groups_index(size_t n, int dim, vidx **out, vidx_err *err)
{
	char factory[32];
	size_t lists = n / VECTORS_PER_LIST;
	*out = NULL;
	if (n <= EXACT_MAX)
		return vidx_create("Flat", dim, "groups", out, err);
	snprintf(factory, sizeof factory, "IVF%zu,Flat", lists < MAX_LISTS ? lists : MAX_LISTS);
	int rc = vidx_create(factory, dim, "groups", out, err);
	if (rc == VIDX_OK && (rc = vidx_set_param(*out, "nprobe", NPROBE, err)) != VIDX_OK) {
		vidx_close(*out);
		*out = NULL;
	}
	return rc;
}

static int cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* A group while sorting: where its members are, its size, its first id. */
struct span {
	size_t at, n;
	int64_t first;
};

static int cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	if (x->n != y->n)
		return x->n < y->n ? 1 : -1;
	return (x->first > y->first) - (x->first < y->first);
}

int vidx_groups_finish(vidx_groups *g, vidx_err *err)
{
	int rc = VIDX_OK;
	size_t *at = NULL;           /* [n] root -> next free place in members */
	int64_t *sorted = NULL;
	struct span *spans = NULL;
	if (g->finished)
		return VIDX_OK;
	/* Every node is in a group of two or more: nodes exist only for the
	 * ends of an edge. Lay the members out by root, in root order. */
	at = malloc((g->n + 1) * sizeof *at);
	sorted = malloc((g->n + 1) * sizeof *sorted);
	spans = malloc((g->n + 1) * sizeof *spans);
	g->members = malloc((g->n + 1) * sizeof *g->members);
	if (!at || !sorted || !spans || !g->members) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory grouping");
		goto out;
	}
	size_t ns = 0, pos = 0;
	for (size_t i = 0; i < g->n; i++)
		if (g->parent[i] == i) {
			at[i] = pos;
			spans[ns++] = (struct span){pos, g->size[i], 0};
			pos += g->size[i];
		}
	for (size_t i = 0; i < g->n; i++)
		sorted[at[root(g, (uint32_t)i)]++] = g->id[i];
	for (size_t s = 0; s < ns; s++) {
		qsort(sorted + spans[s].at, spans[s].n, sizeof *sorted, cmp_id);
		spans[s].first = sorted[spans[s].at];
	}
	qsort(spans, ns, sizeof *spans, cmp_span);
	if (!(g->start = malloc((ns + 1) * sizeof *g->start))) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory grouping");
		goto out;
	}
	pos = 0;
	for (size_t s = 0; s < ns; s++) {
		g->start[s] = pos;
		memcpy(g->members + pos, sorted + spans[s].at, spans[s].n * sizeof *sorted);
		for (size_t j = 0; j < spans[s].n; j++)
			if (idset_put(&g->group_of, sorted[spans[s].at + j], (int64_t)s) != 0) {
				rc = vidx_fail(err, VIDX_ENOMEM, "out of memory grouping");
				goto out;
			}
		pos += spans[s].n;
	}
	g->start[ns] = pos;
	g->ngroups = ns;
	g->finished = 1;
	/* The joining state is no longer needed. */
	idset_free(&g->node_of);
	free(g->id);
	free(g->parent);
	free(g->size);
	g->id = NULL;
	g->parent = g->size = NULL;
out:
	free(at);
	free(sorted);
	free(spans);
	return rc;
}

size_t vidx_groups_count(const vidx_groups *g)
{
	return g->finished ? g->ngroups : 0;
}

size_t vidx_groups_grouped(const vidx_groups *g)
{
	return g->finished ? g->start[g->ngroups] : 0;
}

size_t vidx_groups_members(const vidx_groups *g, size_t i, const int64_t **ids)
{
	if (!g->finished || i >= g->ngroups) {
		*ids = NULL;
		return 0;
	}
	*ids = g->members + g->start[i];
	return g->start[i + 1] - g->start[i];
}

int64_t vidx_groups_find(const vidx_groups *g, int64_t id)
{
	int64_t v;
	if (!g->finished || id < 0 || !idset_get(&g->group_of, id, &v))
		return -1;
	return v;
}
