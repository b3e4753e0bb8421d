/*
 * bench/dups.c: how long near-duplicate detection (GET /v1/duplicates)
 * takes on N vectors: the steps the daemon runs (server/duplicates.c) but
 * reading the store: add every vector to the index vidx_groups_index makes
 * (an IVF index trains inside this step), vidx_groups_search every vector,
 * vidx_groups_finish.
 *
 * Data: N random unit vectors (isotropic Gaussian, fixed seed) of which
 * --planted groups of 2 to 6 near copies are planted: base + noise * g /
 * sqrt(dim), normalised, so two copies have a cosine of about
 * 1 / (1 + noise^2) (0.99 at the default 0.1, 0.96 at 0.2). The run checks
 * that each planted group is found whole ("whole") and prints how many
 * groups and grouped vectors it found beside the times.
 *
 * Run (FAISS threads follow OMP_NUM_THREADS; set OMP_WAIT_POLICY=passive as
 * the daemon does):
 *   ./build/bench/dups [--n 100000] [--dim 512] [--k 32] [--threshold 0.95]
 *       [--planted 1000] [--noise 0.1] [--kinds "groups;Flat;HNSW32,Flat"]
 *       [--nprobe P] [--ef-search E]
 * "groups" is the daemon's choice; other kinds are factory strings,
 * separated by semicolons, for comparison (the served index searched
 * instead; adding to HNSW takes the longest).
 */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static float rng_gauss(uint64_t *s)
{
	double u = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
	double v = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
	return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

static void normalise(float *x, int dim)
{
	double n = 0;
	for (int i = 0; i < dim; i++)
		n += (double)x[i] * x[i];
	for (int i = 0; i < dim; i++)
		x[i] = (float)(x[i] / sqrt(n));
}

static void die(const char *what, const vidx_err *e)
{
	fprintf(stderr, "bench/dups: %s: %s\n", what, e ? e->msg : "out of memory");
	exit(1);
}

int main(int argc, char **argv)
{
	size_t n = 100000, planted = 1000;
	int dim = 512, k = 32;
	double threshold = 0.95;
	const char *kinds = "groups";
	double nprobe = 0, ef = 0, noise = 0.1;
	static const struct option opts[] = {
		{"n", 1, 0, 'n'}, {"dim", 1, 0, 'd'}, {"kinds", 1, 0, 'K'}, {"k", 1, 0, 'k'},
		{"threshold", 1, 0, 't'}, {"planted", 1, 0, 'p'}, {"nprobe", 1, 0, 'P'},
		{"ef-search", 1, 0, 'e'}, {"noise", 1, 0, 'N'}, {0, 0, 0, 0},
	};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		switch (c) {
		case 'n': n = strtoull(optarg, NULL, 10); break;
		case 'd': dim = atoi(optarg); break;
		case 'K': kinds = optarg; break;
		case 'k': k = atoi(optarg); break;
		case 't': threshold = atof(optarg); break;
		case 'p': planted = strtoull(optarg, NULL, 10); break;
		case 'P': nprobe = atof(optarg); break;
		case 'e': ef = atof(optarg); break;
		case 'N': noise = atof(optarg); break;
		default:
			fprintf(stderr, "usage: dups [--n N] [--dim D] [--k K] [--threshold T] "
			                "[--planted G] [--noise S] [--kinds K1;K2] [--nprobe P] "
			                "[--ef-search E]\n");
			return 2;
		}
	}
	float *x = malloc(n * (size_t)dim * sizeof *x);
	int64_t *ids = malloc(n * sizeof *ids);
	float *base = malloc((size_t)dim * sizeof *base);
	if (!x || !ids || !base || dim <= 0 || n == 0)
		die("setting up", NULL);
	uint64_t seed = 1;
	size_t row = 0, want_grouped = 0;
	for (size_t g = 0; g < planted && row < n; g++) {
		for (int i = 0; i < dim; i++)
			base[i] = rng_gauss(&seed);
		normalise(base, dim);
		for (size_t c = 0; c < 2 + g % 5 && row < n; c++, row++, want_grouped++) {
			float *v = x + row * (size_t)dim;
			for (int i = 0; i < dim; i++)
				v[i] = base[i] + (float)noise * rng_gauss(&seed) / sqrtf((float)dim);
			normalise(v, dim);
		}
	}
	for (; row < n; row++) {
		float *v = x + row * (size_t)dim;
		for (int i = 0; i < dim; i++)
			v[i] = rng_gauss(&seed);
		normalise(v, dim);
	}
	for (size_t i = 0; i < n; i++)
		ids[i] = (int64_t)i + 1;
	printf("n %zu, dim %d, k %d, threshold %.3f, planted %zu groups (%zu vectors), noise %.2f\n",
	       n, dim, k, threshold, planted, want_grouped, noise);
	printf("%-14s %10s %10s %10s %8s %9s %6s\n", "kind", "add_s", "search_s", "finish_s", "groups",
	       "grouped", "whole");
	char *list = strdup(kinds);
	for (char *kind = strtok(list, ";"); kind; kind = strtok(NULL, ";")) {
		vidx *v;
		vidx_groups *g;
		vidx_err e;
		int rc = strcmp(kind, "groups") == 0 ? vidx_groups_index(n, dim, &v, &e)
		                                    : vidx_create(kind, dim, "bench", &v, &e);
		if (rc != VIDX_OK)
			die("creating the index", &e);
		double t0 = now_s();
		for (size_t i = 0; i < n; i += 10000) {
			size_t m = n - i < 10000 ? n - i : 10000;
			if (vidx_add(v, m, x + i * (size_t)dim, ids + i, &e) != VIDX_OK)
				die("adding", &e);
		}
		double t1 = now_s();
		if (nprobe > 0 && strstr(vidx_factory(v), "IVF") &&
		    vidx_set_param(v, "nprobe", nprobe, &e) != VIDX_OK)
			die("nprobe", &e);
		if (ef > 0 && strstr(vidx_factory(v), "HNSW") &&
		    vidx_set_param(v, "efSearch", ef, &e) != VIDX_OK)
			die("efSearch", &e);
		if (vidx_groups_new((float)threshold, &g, &e) != VIDX_OK ||
		    vidx_groups_search(g, v, n, x, ids, k, &e) != VIDX_OK)
			die("searching", &e);
		double t2 = now_s();
		if (vidx_groups_finish(g, &e) != VIDX_OK)
			die("finishing", &e);
		double t3 = now_s();
		/* Planted group j holds rows [start_j, start_j + 2 + j % 5). */
		size_t whole = 0;
		row = 0;
		for (size_t j = 0; j < planted && row < n; j++) {
			size_t size = 2 + j % 5;
			int64_t gi = vidx_groups_find(g, ids[row]);
			const int64_t *m;
			if (gi >= 0 && vidx_groups_members(g, (size_t)gi, &m) == size && m[0] == ids[row])
				whole++;
			row += size;
		}
		printf("%-14s %10.2f %10.2f %10.3f %8zu %9zu %6zu\n", vidx_factory(v), t1 - t0, t2 - t1, t3 - t2,
		       vidx_groups_count(g), vidx_groups_grouped(g), whole);
		fflush(stdout);
		vidx_groups_free(g);
		vidx_close(v);
	}
	free(list);
	free(x);
	free(ids);
	free(base);
	return 0;
}
