/*
 * test_groups.c: unit tests of the near-duplicate groups (index/groups.c).
 *
 * Joining given results (the threshold, self and missing results, chains,
 * the order of groups and members), then real FAISS searches over planted
 * groups of near-copies among random unit vectors, on the exact and the
 * HNSW index: every planted group found whole and nothing else, a group
 * larger than k held together by chains, the index vidx_groups_index
 * picks (exact, then IVF), and refused arguments. Fixed
 * seeds: every run sees the same numbers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"
#include "tap.h"

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double rng_gauss(uint64_t *s)
{
	double u = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
	double v = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
	return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static void normalise(float *x, int dim)
{
	double n = 0;
	for (int i = 0; i < dim; i++)
		n += (double)x[i] * x[i];
	for (int i = 0; i < dim; i++)
		x[i] = (float)(x[i] / sqrt(n));
}

static void rand_unit(uint64_t *s, float *x, int dim)
{
	for (int i = 0; i < dim; i++)
		x[i] = (float)rng_gauss(s);
	normalise(x, dim);
}

/* base + noise * g / sqrt(dim), normalised: cosine to base about
 * 1 / sqrt(1 + noise^2). */
static void near_copy(uint64_t *s, const float *base, float *x, int dim, double noise)
{
	for (int i = 0; i < dim; i++)
		x[i] = base[i] + (float)(noise * rng_gauss(s) / sqrt(dim));
	normalise(x, dim);
}

static void t_join_rules(void)
{
	vidx_groups *g;
	REQUIRE(vidx_groups_new(0.9f, &g, NULL) == VIDX_OK);
	/* Query 10 finds itself, 11 (0.95) and 12 (0.5, below); query 11
	 * finds 13 (0.9, at the threshold); query 20 finds 21; query 30 only
	 * itself and missing results. */
	int64_t q[4] = {10, 11, 20, 30};
	int64_t ids[4][3] = {{10, 11, 12}, {11, 13, -1}, {21, 20, -1}, {30, -1, -1}};
	float sc[4][3] = {{1, 0.95f, 0.5f}, {1, 0.9f, -INFINITY}, {0.99f, 1, -INFINITY},
	                  {1, -INFINITY, -INFINITY}};
	CHECK(vidx_groups_count(g) == 0);
	REQUIRE(vidx_groups_join(g, 4, q, 3, &sc[0][0], &ids[0][0], NULL) == VIDX_OK);
	REQUIRE(vidx_groups_finish(g, NULL) == VIDX_OK);
	CHECK(vidx_groups_finish(g, NULL) == VIDX_OK);
	CHECK(vidx_groups_count(g) == 2);
	CHECK(vidx_groups_grouped(g) == 5);
	const int64_t *m;
	size_t n = vidx_groups_members(g, 0, &m);
	CHECKF(n == 3 && m[0] == 10 && m[1] == 11 && m[2] == 13, "group 0: %zu ids", n);
	n = vidx_groups_members(g, 1, &m);
	CHECKF(n == 2 && m[0] == 20 && m[1] == 21, "group 1: %zu ids", n);
	CHECK(vidx_groups_members(g, 2, &m) == 0 && m == NULL);
	CHECK(vidx_groups_find(g, 13) == 0);
	CHECK(vidx_groups_find(g, 21) == 1);
	CHECK(vidx_groups_find(g, 12) == -1);
	CHECK(vidx_groups_find(g, 30) == -1);
	vidx_err e;
	CHECK(vidx_groups_join(g, 1, q, 3, &sc[0][0], &ids[0][0], &e) == VIDX_EINVAL);
	vidx_groups_free(g);
}

static void t_order(void)
{
	/* Pairs 5-6 and 1-2, triple 7-8-9 given in that order: the triple
	 * first, then equal sizes by their smallest id. */
	vidx_groups *g;
	REQUIRE(vidx_groups_new(0.5f, &g, NULL) == VIDX_OK);
	int64_t q[4] = {6, 2, 9, 8};
	int64_t ids[4] = {5, 1, 8, 7};
	float sc[4] = {0.6f, 0.6f, 0.6f, 0.6f};
	REQUIRE(vidx_groups_join(g, 4, q, 1, sc, ids, NULL) == VIDX_OK);
	REQUIRE(vidx_groups_finish(g, NULL) == VIDX_OK);
	REQUIRE(vidx_groups_count(g) == 3);
	const int64_t *m;
	CHECK(vidx_groups_members(g, 0, &m) == 3 && m[0] == 7 && m[2] == 9);
	CHECK(vidx_groups_members(g, 1, &m) == 2 && m[0] == 1 && m[1] == 2);
	CHECK(vidx_groups_members(g, 2, &m) == 2 && m[0] == 5 && m[1] == 6);
	vidx_groups_free(g);
}

static void t_refused(void)
{
	vidx_groups *g = (vidx_groups *)1;
	vidx_err e;
	CHECK(vidx_groups_new(1.5f, &g, &e) == VIDX_EINVAL && g == NULL);
	CHECK(vidx_groups_new(NAN, &g, &e) == VIDX_EINVAL && g == NULL);
	vidx_groups_free(NULL);
}

/* N random vectors with planted groups: group j (j < NG) has 2 + j % 5
 * members, near copies of one base; ids are 1000 + row. */
#define DIM 32
#define N 3000
#define NG 40

static int64_t planted(float *x, int64_t *ids, int64_t *group_of)
{
	uint64_t s = 42;
	size_t row = 0;
	for (int j = 0; j < NG; j++) {
		float base[DIM];
		rand_unit(&s, base, DIM);
		for (int c = 0; c < 2 + j % 5; c++, row++) {
			near_copy(&s, base, x + row * DIM, DIM, 0.1);
			group_of[row] = j;
		}
	}
	int64_t grouped = (int64_t)row;
	for (; row < N; row++) {
		rand_unit(&s, x + row * DIM, DIM);
		group_of[row] = -1;
	}
	for (size_t i = 0; i < N; i++)
		ids[i] = 1000 + (int64_t)i;
	return grouped;
}

static void check_planted(const char *factory)
{
	static float x[N * DIM];
	int64_t ids[N], group_of[N];
	int64_t grouped = planted(x, ids, group_of);
	vidx *v;
	vidx_groups *g;
	vidx_err e;
	REQUIRE(vidx_create(factory, DIM, "m", &v, &e) == VIDX_OK);
	REQUIRE(vidx_add(v, N, x, ids, &e) == VIDX_OK);
	REQUIRE(vidx_groups_new(0.95f, &g, &e) == VIDX_OK);
	CHECKF(vidx_groups_search(g, v, N, x, ids, 8, &e) == VIDX_OK, "%s", e.msg);
	REQUIRE(vidx_groups_finish(g, &e) == VIDX_OK);
	CHECKF(vidx_groups_count(g) == NG, "%s: %zu groups", factory, vidx_groups_count(g));
	CHECKF((int64_t)vidx_groups_grouped(g) == grouped, "%s: %zu grouped", factory,
	       vidx_groups_grouped(g));
	/* Every planted group is one group: same group number for its rows,
	 * and sizes match. */
	int bad = 0;
	for (size_t i = 0; i < N; i++) {
		int64_t gi = vidx_groups_find(g, ids[i]);
		if ((group_of[i] < 0) != (gi < 0))
			bad++;
		else if (gi >= 0) {
			const int64_t *m;
			size_t n = vidx_groups_members(g, (size_t)gi, &m);
			if ((int64_t)n != 2 + group_of[i] % 5)
				bad++;
			for (size_t k = 0; k < n; k++)
				if (group_of[m[k] - 1000] != group_of[i])
					bad++;
		}
	}
	CHECKF(bad == 0, "%s: %d rows in the wrong group", factory, bad);
	const int64_t *m;
	CHECK(vidx_groups_members(g, 0, &m) == 6);
	vidx_groups_free(g);
	vidx_close(v);
}

static void t_planted_exact(void)
{
	check_planted("Flat");
}

static void t_planted_hnsw(void)
{
	check_planted("HNSW32,Flat");
}

/* 60 near copies of one vector with k = 8: no search sees more than 8 of
 * them, the chains join them all. */
static void t_larger_than_k(void)
{
	enum { M = 60, R = 500 };
	static float x[(M + R) * DIM];
	int64_t ids[M + R];
	uint64_t s = 7;
	float base[DIM];
	rand_unit(&s, base, DIM);
	for (int i = 0; i < M; i++)
		near_copy(&s, base, x + i * DIM, DIM, 0.1);
	for (int i = M; i < M + R; i++)
		rand_unit(&s, x + i * DIM, DIM);
	for (int i = 0; i < M + R; i++)
		ids[i] = i + 1;
	vidx *v;
	vidx_groups *g;
	vidx_err e;
	REQUIRE(vidx_create("Flat", DIM, "m", &v, &e) == VIDX_OK);
	REQUIRE(vidx_add(v, M + R, x, ids, &e) == VIDX_OK);
	REQUIRE(vidx_groups_new(0.95f, &g, &e) == VIDX_OK);
	REQUIRE(vidx_groups_search(g, v, M + R, x, ids, 8, &e) == VIDX_OK);
	REQUIRE(vidx_groups_finish(g, &e) == VIDX_OK);
	const int64_t *m;
	CHECKF(vidx_groups_count(g) == 1, "%zu groups", vidx_groups_count(g));
	CHECK(vidx_groups_members(g, 0, &m) == M && m[0] == 1 && m[M - 1] == M);
	CHECK(vidx_groups_search(g, v, 1, x, ids, 0, &e) == VIDX_EINVAL);
	vidx_groups_free(g);
	vidx_close(v);
}

/* vidx_groups_index: exact for small n, IVF past 10,000; 12,000 vectors
 * with groups planted (the first N rows of planted()'s pattern repeated)
 * are grouped the same way through IVF. */
static void t_groups_index(void)
{
	enum { BIG = 12000 };
	vidx *v;
	vidx_err e;
	REQUIRE(vidx_groups_index(100, DIM, &v, &e) == VIDX_OK);
	CHECKF(!strcmp(vidx_factory(v), "Flat"), "%s", vidx_factory(v));
	vidx_close(v);
	static float x[BIG * DIM];
	static int64_t ids[BIG], group_of[BIG];
	int64_t grouped = planted(x, ids, group_of);
	uint64_t s = 99;
	for (size_t i = N; i < BIG; i++) {
		rand_unit(&s, x + i * DIM, DIM);
		ids[i] = 1000 + (int64_t)i;
		group_of[i] = -1;
	}
	REQUIRE(vidx_groups_index(BIG, DIM, &v, &e) == VIDX_OK);
	CHECKF(!strcmp(vidx_factory(v), "IVF120,Flat"), "%s", vidx_factory(v));
	REQUIRE(vidx_add(v, BIG, x, ids, &e) == VIDX_OK);
	vidx_groups *g;
	REQUIRE(vidx_groups_new(0.95f, &g, &e) == VIDX_OK);
	REQUIRE(vidx_groups_search(g, v, BIG, x, ids, 8, &e) == VIDX_OK);
	REQUIRE(vidx_groups_finish(g, &e) == VIDX_OK);
	CHECKF(vidx_groups_count(g) == NG && (int64_t)vidx_groups_grouped(g) == grouped,
	       "%zu groups of %zu", vidx_groups_count(g), vidx_groups_grouped(g));
	int bad = 0;
	for (size_t i = 0; i < BIG; i++) {
		int64_t gi = vidx_groups_find(g, ids[i]);
		const int64_t *m;
		if ((group_of[i] < 0) != (gi < 0) ||
		    (gi >= 0 && (int64_t)vidx_groups_members(g, (size_t)gi, &m) != 2 + group_of[i] % 5))
			bad++;
	}
	CHECKF(bad == 0, "%d rows in the wrong group", bad);
	vidx_groups_free(g);
	vidx_close(v);
}

int main(void)
{
	TAP_RUN(t_join_rules);
	TAP_RUN(t_order);
	TAP_RUN(t_refused);
	TAP_RUN(t_planted_exact);
	TAP_RUN(t_planted_hnsw);
	TAP_RUN(t_larger_than_k);
	TAP_RUN(t_groups_index);
	return tap_done();
}
