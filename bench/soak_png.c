/*
 * bench/soak_png.c: small distinct PNGs, made in memory with zlib. clipd
 * dedupes uploads by content hash, so every upload of a soak needs its
 * own; noise keeps them distinct and costs nothing to decode.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "server_int.h"
#include "soak_int.h"

static void be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Appends one chunk (length, type, data, CRC of type and data) at *o. */
static void chunk(unsigned char *buf, size_t *o, const char *type, const unsigned char *data,
                  size_t n)
{
	be32(buf + *o, (uint32_t)n);
	memcpy(buf + *o + 4, type, 4);
	if (n)
		memcpy(buf + *o + 8, data, n);
	uLong crc = crc32(0L, buf + *o + 4, (uInt)(n + 4));
	be32(buf + *o + 8 + n, (uint32_t)crc);
	*o += 12 + n;
}

int soak_png(int w, int h, uint64_t seed, unsigned char **out, size_t *len)
{
	size_t row = (size_t)w * 3 + 1, raw_len = row * (size_t)h;
	unsigned char *raw = malloc(raw_len);
	uLongf zlen = compressBound((uLong)raw_len);
	unsigned char *z = malloc(zlen);
	unsigned char *png = malloc(zlen + 64);
	unsigned char ihdr[13];
	uint64_t s = seed;
	int rc = -1;
	*out = NULL;
	*len = 0;
	if (!raw || !z || !png)
		goto out;
	int base[3];
	for (int c = 0; c < 3; c++)
		base[c] = (int)(bs_splitmix(&s) % 200);
	for (int y = 0; y < h; y++) {
		unsigned char *p = raw + (size_t)y * row;
		*p++ = 0; /* filter: none */
		for (int x = 0; x < w; x++)
			for (int c = 0; c < 3; c++)
				*p++ = (unsigned char)(base[c] + (x + y) * 40 / (w + h) +
				                       (int)(bs_splitmix(&s) % 16));
	}
	if (compress2(z, &zlen, raw, (uLong)raw_len, 1) != Z_OK)
		goto out;
	be32(ihdr, (uint32_t)w);
	be32(ihdr + 4, (uint32_t)h);
	ihdr[8] = 8;  /* bits per channel */
	ihdr[9] = 2;  /* RGB */
	ihdr[10] = ihdr[11] = ihdr[12] = 0;
	size_t o = 8;
	memcpy(png, "\x89PNG\r\n\x1a\n", 8);
	chunk(png, &o, "IHDR", ihdr, sizeof ihdr);
	chunk(png, &o, "IDAT", z, zlen);
	chunk(png, &o, "IEND", NULL, 0);
	*out = png;
	*len = o;
	png = NULL;
	rc = 0;
out:
	free(raw);
	free(z);
	free(png);
	return rc;
}
