/* idset.c: the id hash map of the index module (see index_int.h). */
#include <stdlib.h>

#include "index_int.h"

static size_t hash(int64_t key, uint64_t seed, size_t mask)
{
	/* splitmix64's finaliser: ids are often sequential. */
	uint64_t x = (uint64_t)key ^ seed;
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (size_t)x & mask;
}

/* A new seed for each table and each growth (see index_int.h): a counter
 * shared by all tables, through splitmix64. */
static uint64_t next_seed(void)
{
	static uint64_t counter;
	uint64_t x = __atomic_add_fetch(&counter, 0x9e3779b97f4a7c15ULL, __ATOMIC_RELAXED);
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

void idset_free(idset *s)
{
	free(s->keys);
	free(s->vals);
	s->keys = s->vals = NULL;
	s->cap = s->n = 0;
}

/* Rehashes into cap slots (a power of two above n) with a new seed. */
static int rehash(idset *s, size_t cap)
{
	int64_t *keys = malloc(cap * sizeof *keys);
	int64_t *vals = malloc(cap * sizeof *vals);
	uint64_t seed = next_seed();
	if (!keys || !vals) {
		free(keys);
		free(vals);
		return -1;
	}
	for (size_t i = 0; i < cap; i++)
		keys[i] = -1;
	for (size_t i = 0; i < s->cap; i++) {
		if (s->keys[i] < 0)
			continue;
		size_t j = hash(s->keys[i], seed, cap - 1);
		while (keys[j] >= 0)
			j = (j + 1) & (cap - 1);
		keys[j] = s->keys[i];
		vals[j] = s->vals[i];
	}
	free(s->keys);
	free(s->vals);
	s->keys = keys;
	s->vals = vals;
	s->cap = cap;
	s->seed = seed;
	return 0;
}

static int grow(idset *s)
{
	return rehash(s, s->cap ? 2 * s->cap : 1024);
}

int idset_reserve(idset *s, size_t n)
{
	size_t cap = s->cap ? s->cap : 1024;
	while (n * 4 > cap * 3)
		cap *= 2;
	return cap == s->cap ? 0 : rehash(s, cap);
}

int idset_put(idset *s, int64_t key, int64_t val)
{
	if ((s->n + 1) * 4 > s->cap * 3 && grow(s) != 0)
		return -1;
	size_t mask = s->cap - 1, i = hash(key, s->seed, mask);
	while (s->keys[i] >= 0 && s->keys[i] != key)
		i = (i + 1) & mask;
	if (s->keys[i] < 0)
		s->n++;
	s->keys[i] = key;
	s->vals[i] = val;
	return 0;
}

int idset_get(const idset *s, int64_t key, int64_t *val)
{
	if (!s->cap || key < 0)
		return 0;
	size_t mask = s->cap - 1, i = hash(key, s->seed, mask);
	while (s->keys[i] >= 0) {
		if (s->keys[i] == key) {
			if (val)
				*val = s->vals[i];
			return 1;
		}
		i = (i + 1) & mask;
	}
	return 0;
}

int idset_del(idset *s, int64_t key)
{
	if (!s->cap || key < 0)
		return 0;
	size_t mask = s->cap - 1, i = hash(key, s->seed, mask);
	while (s->keys[i] != key) {
		if (s->keys[i] < 0)
			return 0;
		i = (i + 1) & mask;
	}
	/* Backward shift: move later members of the probe run into the hole
	 * when their home slot does not lie between the hole and them. */
	size_t hole = i, j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (s->keys[j] < 0)
			break;
		size_t home = hash(s->keys[j], s->seed, mask);
		int between = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
		if (between)
			continue;
		s->keys[hole] = s->keys[j];
		s->vals[hole] = s->vals[j];
		hole = j;
	}
	s->keys[hole] = -1;
	s->n--;
	return 1;
}
