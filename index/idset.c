/* idset.c: the id hash map of the index module (see index_int.h). */
#include <stdlib.h>

#include "index_int.h"

static size_t hash(int64_t key, size_t mask)
{
	/* splitmix64's finaliser: ids are often sequential. */
	uint64_t x = (uint64_t)key;
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (size_t)x & mask;
}

void idset_free(idset *s)
{
	free(s->keys);
	free(s->vals);
	s->keys = s->vals = NULL;
	s->cap = s->n = 0;
}

static int grow(idset *s)
{
	size_t cap = s->cap ? 2 * s->cap : 1024;
	int64_t *keys = malloc(cap * sizeof *keys);
	int64_t *vals = malloc(cap * sizeof *vals);
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
		size_t j = hash(s->keys[i], cap - 1);
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
	return 0;
}

int idset_put(idset *s, int64_t key, int64_t val)
{
	if ((s->n + 1) * 4 > s->cap * 3 && grow(s) != 0)
		return -1;
	size_t mask = s->cap - 1, i = hash(key, mask);
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
	size_t mask = s->cap - 1, i = hash(key, mask);
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
	size_t mask = s->cap - 1, i = hash(key, mask);
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
		size_t home = hash(s->keys[j], mask);
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
