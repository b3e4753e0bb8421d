/*
 * jpeg_scans.h: writes a grey progressive JPEG with a chosen number of
 * scans, the decode-work bomb of issue 12 (item 4), for the tests.
 *
 * The image is w x h (multiples of 8), one component. Scan 1 is the DC
 * scan: every block's DC difference is category 0, one bit per block.
 * Scans 2..n are the same full AC scan (Ss 1, Se 63) repeated: each is a
 * few end-of-band runs of 32,767 blocks (EOB14 with all 14 extra bits
 * set), about 4 bytes per 32,767 blocks, so the file stays small while
 * the decoder walks every block of the image once per scan. Repeating a
 * first AC scan is a "bogus progression" that libjpeg only warns about.
 * The pixels all decode to mid grey (128).
 *
 * Header-only and static: included by the tests that need the file.
 * jpeg_scans_write returns a malloc'd buffer of *len bytes, NULL when out
 * of memory or for bad arguments.
 */
#ifndef CLIPD_TESTS_JPEG_SCANS_H
#define CLIPD_TESTS_JPEG_SCANS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct jpeg_buf {
	uint8_t *p;
	size_t n, cap;
	int fail;
	uint32_t acc; /* pending entropy-coded bits, high first */
	int nacc;
} jpeg_buf;

static void jpeg_put(jpeg_buf *b, uint8_t v)
{
	if (b->fail)
		return;
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 4096;
		uint8_t *q = realloc(b->p, cap);
		if (!q) {
			b->fail = 1;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	b->p[b->n++] = v;
}

static void jpeg_put16(jpeg_buf *b, unsigned v)
{
	jpeg_put(b, (uint8_t)(v >> 8));
	jpeg_put(b, (uint8_t)v);
}

/* Entropy-coded bits, with a 0 stuffed after every 0xFF byte. */
static void jpeg_bits(jpeg_buf *b, uint32_t code, int len)
{
	for (int i = len - 1; i >= 0; i--) {
		b->acc = (b->acc << 1) | ((code >> i) & 1);
		if (++b->nacc == 8) {
			jpeg_put(b, (uint8_t)b->acc);
			if ((b->acc & 0xff) == 0xff)
				jpeg_put(b, 0);
			b->acc = 0;
			b->nacc = 0;
		}
	}
}

/* Pads the last byte of a scan with 1 bits. */
static void jpeg_flush(jpeg_buf *b)
{
	if (b->nacc)
		jpeg_bits(b, 0xff, 8 - b->nacc);
}

static void jpeg_sos(jpeg_buf *b, int ss, int se)
{
	jpeg_put16(b, 0xffda);
	jpeg_put16(b, 8);
	jpeg_put(b, 1);    /* one component */
	jpeg_put(b, 1);    /* component 1 */
	jpeg_put(b, 0x00); /* DC table 0, AC table 0 */
	jpeg_put(b, (uint8_t)ss);
	jpeg_put(b, (uint8_t)se);
	jpeg_put(b, 0x00); /* Ah 0, Al 0 */
}

static uint8_t *jpeg_scans_write(int w, int h, int scans, size_t *len)
{
	jpeg_buf b = {0};
	size_t blocks = (size_t)(w / 8) * (size_t)(h / 8);

	if (w <= 0 || h <= 0 || w % 8 || h % 8 || w > 65535 || h > 65535 || scans < 1)
		return NULL;
	jpeg_put16(&b, 0xffd8);
	/* Quantisation table 0: all ones. */
	jpeg_put16(&b, 0xffdb);
	jpeg_put16(&b, 67);
	jpeg_put(&b, 0);
	for (int i = 0; i < 64; i++)
		jpeg_put(&b, 1);
	/* SOF2: progressive, 8-bit, h x w, one component, 1x1 sampling. */
	jpeg_put16(&b, 0xffc2);
	jpeg_put16(&b, 11);
	jpeg_put(&b, 8);
	jpeg_put16(&b, (unsigned)h);
	jpeg_put16(&b, (unsigned)w);
	jpeg_put(&b, 1);
	jpeg_put(&b, 1);
	jpeg_put(&b, 0x11);
	jpeg_put(&b, 0);
	/* DC table 0: category 0 only, code "0". */
	jpeg_put16(&b, 0xffc4);
	jpeg_put16(&b, 2 + 1 + 16 + 1);
	jpeg_put(&b, 0x00);
	for (int i = 0; i < 16; i++)
		jpeg_put(&b, i == 0 ? 1 : 0);
	jpeg_put(&b, 0x00);
	/* AC table 0: EOB0..EOB14 (0x00, 0x10, ... 0xE0), 4-bit codes;
	 * 0xE0 is the 15th, code 1110. */
	jpeg_put16(&b, 0xffc4);
	jpeg_put16(&b, 2 + 1 + 16 + 15);
	jpeg_put(&b, 0x10);
	for (int i = 0; i < 16; i++)
		jpeg_put(&b, i == 3 ? 15 : 0);
	for (int r = 0; r < 15; r++)
		jpeg_put(&b, (uint8_t)(r << 4));

	jpeg_sos(&b, 0, 0);
	for (size_t i = 0; i < blocks; i++)
		jpeg_bits(&b, 0, 1);
	jpeg_flush(&b);
	for (int s = 1; s < scans; s++) {
		jpeg_sos(&b, 1, 63);
		/* Runs of 32,767 blocks until every block is covered; the
		 * decoder drops what is left of the last run at the next scan. */
		for (size_t done = 0; done < blocks; done += 32767) {
			jpeg_bits(&b, 14, 4);
			jpeg_bits(&b, 0x3fff, 14);
		}
		jpeg_flush(&b);
	}
	jpeg_put16(&b, 0xffd9);
	if (b.fail) {
		free(b.p);
		return NULL;
	}
	*len = b.n;
	return b.p;
}

#endif
