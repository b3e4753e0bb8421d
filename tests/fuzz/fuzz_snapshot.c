/*
 * fuzz_snapshot: the index snapshot loader (index/snapshot.c, vidx_load)
 * on any bytes as a snapshot file.
 *
 * The loader believes nothing before the file's CRC-32 matches, so random
 * bytes stop at the header checks. To reach what comes after (FAISS's
 * reader, the slot table, the id map), an input whose reserved header
 * field (bytes 20..23, never read by the loader) has bit 0 set gets its
 * payload length and CRC recomputed by the harness first, as a writer
 * would have stored them. The model id and dimension asked for are the
 * ones the header names, so a loaded index is then searched once.
 */
#include <stdint.h>
#include <zlib.h>

#include "fuzz_util.h"
#include "index_int.h"

#define FIXED 48

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Stores the payload length and CRC a writer would have, when the header's
 * name fields fit in the input. */
static void fix_up(uint8_t *b, size_t len)
{
	if (len < FIXED + 2)
		return;
	size_t mlen = (size_t)(b[FIXED] | b[FIXED + 1] << 8);
	if (FIXED + 2 + mlen + 2 > len)
		return;
	size_t flen = (size_t)(b[FIXED + 2 + mlen] | b[FIXED + 3 + mlen] << 8);
	size_t hlen = FIXED + 2 + mlen + 2 + flen;
	if (hlen > len)
		return;
	uint64_t plen = len - hlen;
	for (int i = 0; i < 8; i++)
		b[32 + i] = (uint8_t)(plen >> (8 * i));
	memset(b + 40, 0, 4);
	uLong c = crc32(crc32(0, NULL, 0), b, (uInt)len);
	put_u32(b + 40, (uint32_t)c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	char path[64];
	vidx *v = NULL;
	vidx_err err;
	uint8_t *b = malloc(len ? len : 1);
	FUZZ_CHECK(b != NULL);
	memcpy(b, data, len);
	if (len >= FIXED && (b[20] & 1))
		fix_up(b, len);
	int dim = len >= 16 ? (int)(get_u32(b + 12) & 0x7fffffff) : 4;
	int fd = fuzz_memfile("index.snap", b, len, path, sizeof path);
	int rc = vidx_load(path, NULL, dim, &v, &err);
	if (rc == VIDX_OK) {
		FUZZ_CHECK(v != NULL && vidx_dim(v) == dim);
		size_t n = vidx_count(v);
		(void)n;
		if (dim <= 4096) {
			float *q = calloc((size_t)dim, sizeof *q), scores[3];
			int64_t ids[3];
			FUZZ_CHECK(q != NULL);
			q[0] = 1;
			vidx_search(v, 1, q, 3, scores, ids, &err);
			free(q);
		}
		vidx_close(v);
	} else {
		FUZZ_CHECK(v == NULL && err.msg[0]);
	}
	close(fd);
	free(b);
	return 0;
}
