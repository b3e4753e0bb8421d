/*
 * mksnap: writes the seed snapshots of fuzz_snapshot into DIR, one per
 * index kind (exact, HNSW with a removed vector, IVF with vectors still
 * pending and IVF trained, "other"), 4-dimensional and small, through
 * vidx_save itself. (The harness's recipe seeds, which reach past the
 * CRC, are written by mkcorpus.py.)
 * Usage: mksnap DIR (tests/fuzz/mkcorpus.py runs it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"

#define DIM 4

static int save(vidx *v, const char *dir, const char *name)
{
	char path[4096];
	vidx_err err;
	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (vidx_save(v, path, &err) != VIDX_OK) {
		fprintf(stderr, "mksnap: %s: %s\n", name, err.msg);
		return -1;
	}
	return 0;
}

static int make(const char *dir, const char *name, const char *factory, int n, int remove_one)
{
	vidx *v;
	vidx_err err;
	float x[96 * DIM];
	int64_t ids[96];
	if (vidx_create(factory, DIM, "fuzz-model", &v, &err) != VIDX_OK) {
		fprintf(stderr, "mksnap: %s: %s\n", factory, err.msg);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		ids[i] = 10 + i;
		for (int j = 0; j < DIM; j++)
			x[i * DIM + j] = (float)((i * 7 + j * 3) % 11) - 5.0f;
	}
	int rc = n ? vidx_add(v, (size_t)n, x, ids, &err) : VIDX_OK;
	if (rc == VIDX_OK && remove_one) {
		size_t removed;
		rc = vidx_remove(v, 1, ids, &removed, &err);
	}
	vidx_set_seq(v, 42);
	if (rc != VIDX_OK)
		fprintf(stderr, "mksnap: %s: %s\n", factory, err.msg);
	else
		rc = save(v, dir, name);
	vidx_close(v);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: mksnap DIR\n");
		return 2;
	}
	const char *dir = argv[1];
	int bad = 0;
	bad |= make(dir, "exact-empty.snap", "exact", 0, 0);
	bad |= make(dir, "exact.snap", "exact", 5, 1);
	bad |= make(dir, "hnsw.snap", "HNSW8,Flat", 6, 1);
	bad |= make(dir, "ivf-pending.snap", "IVF2,Flat", 3, 0);
	bad |= make(dir, "ivf.snap", "IVF2,Flat", 80, 1);
	bad |= make(dir, "other.snap", "PCA2,Flat", 4, 0);
	return bad ? 1 : 0;
}
