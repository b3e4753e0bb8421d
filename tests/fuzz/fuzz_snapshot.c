/*
 * fuzz_snapshot: the index snapshot loader (index/snapshot.c, vidx_load)
 * on any bytes as a snapshot file, in two modes chosen by bit 0 of the
 * header's reserved field (bytes 20..23, which the loader never reads).
 *
 * Bit clear: the input is the file, byte for byte. The loader believes
 * nothing before the file's CRC-32 matches, so this mode exercises the
 * header checks and the CRC.
 *
 * Bit set: the input is a header followed by a recipe for the payload,
 * and the harness builds a file whose CRC and payload length are right, as
 * a writer would have stored them, to reach what the loader does after the
 * CRC: the header's kind and dimension against the indexes, the HNSW slot
 * table, the id map. The recipe is byte 0: the main index, byte 1: the
 * pending one (each one of the valid FAISS indexes below, none, or a
 * malformed presence byte), then bytes appended as they are (the slot
 * table). FAISS's own reader gets only indexes it wrote: it is not built
 * to parse hostile bytes (a 160-byte file can ask it for gigabytes), and
 * a snapshot is written by clipd into its own data directory.
 *
 * The model id and dimension asked for are the ones the header names; a
 * loaded index is searched once.
 */
#include <stdint.h>
#include <zlib.h>

#include <faiss/c_api/index_io_c.h>

#include "fuzz_util.h"
#include "index_int.h"

#define FIXED 48
#define NBLOBS 6

/* The FAISS indexes a recipe picks from, serialised once at start. */
static struct blob {
	char *data;
	size_t len;
} blobs[NBLOBS];

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void serialise(struct blob *b, FaissIndex *idx)
{
	FILE *f = open_memstream(&b->data, &b->len);
	FUZZ_CHECK(f != NULL);
	FUZZ_CHECK(faiss_write_index(idx, f) == 0);
	FUZZ_CHECK(fclose(f) == 0);
}

/* A vidx of factory with n vectors (ids 10, 11, ...; the first removed). */
static vidx *make(const char *factory, int dim, int n)
{
	vidx *v;
	vidx_err err;
	float x[96 * 8];
	int64_t ids[96];
	size_t removed;
	FUZZ_CHECK(n <= 96 && dim <= 8);
	FUZZ_CHECK(vidx_create(factory, dim, "fuzz-model", &v, &err) == VIDX_OK);
	for (int i = 0; i < n; i++) {
		ids[i] = 10 + i;
		for (int j = 0; j < dim; j++)
			x[i * dim + j] = (float)((i * 7 + j * 3) % 11) - 5.0f;
	}
	FUZZ_CHECK(vidx_add(v, (size_t)n, x, ids, &err) == VIDX_OK);
	FUZZ_CHECK(vidx_remove(v, 1, ids, &removed, &err) == VIDX_OK);
	return v;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	vidx *v[5] = {make("exact", 4, 5), make("HNSW8,Flat", 4, 6), make("IVF2,Flat", 4, 80),
	              make("IVF2,Flat", 4, 3), make("PCA2,Flat", 4, 4)};
	serialise(&blobs[0], v[0]->main);    /* IDMap,Flat */
	serialise(&blobs[1], v[1]->main);    /* HNSW8,Flat */
	serialise(&blobs[2], v[2]->main);    /* IVF2,Flat, trained */
	serialise(&blobs[3], v[3]->pending); /* IDMap,Flat beside an untrained IVF */
	serialise(&blobs[4], v[4]->main);    /* IDMap,PCA2,Flat */
	vidx *v8 = make("exact", 8, 3);
	serialise(&blobs[5], v8->main);      /* another dimension */
	for (int i = 0; i < 5; i++)
		vidx_close(v[i]);
	vidx_close(v8);
	return 0;
}

/* Appends one index part (presence byte and index) as choice c says. */
static void put_part(FILE *f, uint8_t c)
{
	c %= NBLOBS + 2;
	if (c == NBLOBS) {
		fputc(0, f);
	} else if (c == NBLOBS + 1) {
		fputc(2, f);
	} else {
		fputc(1, f);
		fwrite(blobs[c].data, 1, blobs[c].len, f);
	}
}

/* Builds the file of a recipe input (see the header) into *out. */
static void build(const uint8_t *in, size_t len, char **out, size_t *out_len)
{
	FILE *f = open_memstream(out, out_len);
	FUZZ_CHECK(f != NULL);
	size_t hlen = FIXED + 2;
	if (len >= hlen)
		hlen += (size_t)(in[FIXED] | in[FIXED + 1] << 8);
	if (len >= hlen + 2)
		hlen += 2 + (size_t)(in[hlen] | in[hlen + 1] << 8);
	if (hlen > len) {
		fwrite(in, 1, len, f);
		FUZZ_CHECK(fclose(f) == 0);
		return;
	}
	fwrite(in, 1, hlen, f);
	const uint8_t *r = in + hlen;
	size_t rlen = len - hlen;
	put_part(f, rlen > 0 ? r[0] : 0);
	put_part(f, rlen > 1 ? r[1] : NBLOBS);
	if (rlen > 2)
		fwrite(r + 2, 1, rlen - 2, f);
	FUZZ_CHECK(fclose(f) == 0);
	uint8_t *b = (uint8_t *)*out;
	uint64_t plen = *out_len - hlen;
	for (int i = 0; i < 8; i++)
		b[32 + i] = (uint8_t)(plen >> (8 * i));
	memset(b + 40, 0, 4);
	put_u32(b + 40, (uint32_t)crc32(crc32(0, NULL, 0), b, (uInt)*out_len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	char path[64];
	vidx *v = NULL;
	vidx_err err;
	char *file = NULL;
	size_t flen = 0;
	if (len >= FIXED && (data[20] & 1)) {
		build(data, len, &file, &flen);
	} else {
		file = malloc(len ? len : 1);
		FUZZ_CHECK(file != NULL);
		memcpy(file, data, len);
		flen = len;
	}
	int dim = flen >= 16 ? (int)(get_u32((const uint8_t *)file + 12) & 0x7fffffff) : 4;
	int fd = fuzz_memfile("index.snap", file, flen, path, sizeof path);
	int rc = vidx_load(path, NULL, dim, &v, &err);
	if (rc == VIDX_OK) {
		FUZZ_CHECK(v != NULL && vidx_dim(v) == dim);
		float q[8] = {1, 0.5f, -1, 2, 0, 0, 1, 1}, scores[3];
		int64_t ids[3];
		if (dim <= 8 && vidx_search(v, 1, q, 3, scores, ids, &err) == VIDX_OK)
			for (int i = 0; i < 3; i++)
				FUZZ_CHECK(ids[i] == -1 || vidx_contains(v, ids[i]));
		vidx_close(v);
	} else {
		FUZZ_CHECK(v == NULL && err.msg[0]);
	}
	close(fd);
	free(file);
	return 0;
}
