/*
 * test_sniff: server/sniff.c's sniff_image on headers built byte by byte:
 * each accepted format's magic (JPEG, PNG, GIF, WebP in its three forms,
 * TIFF in both byte orders, HEIF and AVIF brands), the sizes read from
 * PNG, GIF, JPEG and WebP headers, the largest sizes each field can hold,
 * JPEG marker walks (fill bytes, markers without a length, tables before
 * the frame, a scan before any frame), and every prefix of every header:
 * each is sniffed from a buffer of exactly its length, so a read past the
 * end is an ASan report in the sanitized run, and a size is only given
 * once the bytes that hold it are there.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sniff.h"
#include "tap.h"

typedef struct buf {
	uint8_t b[256];
	size_t n;
} buf;

static void put(buf *x, const void *p, size_t n)
{
	memcpy(x->b + x->n, p, n);
	x->n += n;
}

static void put8(buf *x, unsigned v)
{
	x->b[x->n++] = (uint8_t)v;
}

static void be16(buf *x, unsigned v)
{
	put8(x, v >> 8);
	put8(x, v & 0xff);
}

static void be32(buf *x, uint32_t v)
{
	be16(x, v >> 16);
	be16(x, v & 0xffff);
}

static void le16(buf *x, unsigned v)
{
	put8(x, v & 0xff);
	put8(x, v >> 8);
}

static void le24(buf *x, uint32_t v)
{
	le16(x, v & 0xffff);
	put8(x, v >> 16);
}

static void le32(buf *x, uint32_t v)
{
	le16(x, v & 0xffff);
	le16(x, v >> 16);
}

/* sniff_image on a heap copy of exactly len bytes. */
static int sniff_exact(const uint8_t *b, size_t len, sniff_info *info)
{
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		abort();
	memcpy(copy, b, len);
	memset(info, 0x55, sizeof *info); /* sniff_image must fill all of it */
	int rc = sniff_image(copy, len, info);
	free(copy);
	return rc;
}

static int same_mime(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

/* The whole header sniffs as mime with w x h; a prefix shorter than
 * size_at bytes gives the mime from mime_at bytes on but no size, and no
 * mime before that. */
static void expect(const buf *x, const char *mime, int w, int h, size_t mime_at, size_t size_at,
                   const char *what)
{
	sniff_info info;
	int rc = sniff_exact(x->b, x->n, &info);
	CHECKF(rc == (mime != NULL) && same_mime(info.mime, mime) && info.width == w &&
	       info.height == h, "%s: %d %s %dx%d, expected %s %dx%d", what, rc,
	       info.mime ? info.mime : "(none)", info.width, info.height, mime ? mime : "(none)", w, h);
	for (size_t len = 0; len < x->n; len++) {
		rc = sniff_exact(x->b, len, &info);
		const char *m = len >= mime_at ? mime : NULL;
		int sized = len >= size_at;
		CHECKF(rc == (m != NULL) && same_mime(info.mime, m) &&
		       info.width == (sized ? w : 0) && info.height == (sized ? h : 0),
		       "%s cut to %zu bytes: %d %s %dx%d", what, len, rc,
		       info.mime ? info.mime : "(none)", info.width, info.height);
	}
}

static void png(buf *x, uint32_t w, uint32_t h)
{
	x->n = 0;
	put(x, "\x89PNG\r\n\x1a\n", 8);
	be32(x, 13);
	put(x, "IHDR", 4);
	be32(x, w);
	be32(x, h);
	put(x, "\x08\x02\x00\x00\x00", 5);
	be32(x, 0x12345678); /* CRC: not checked */
}

static void t_png(void)
{
	buf x;
	png(&x, 640, 480);
	expect(&x, "image/png", 640, 480, 8, 24, "PNG 640x480");
	png(&x, 1, 1);
	expect(&x, "image/png", 1, 1, 8, 24, "PNG 1x1");
	png(&x, 0x7fffffff, 0x7fffffff);
	expect(&x, "image/png", 0x7fffffff, 0x7fffffff, 8, 24, "PNG at the format's limit");
	/* Over PNG's limit: clamped, never a negative int. */
	png(&x, 0x80000000u, 0xffffffffu);
	expect(&x, "image/png", 0x7fffffff, 0x7fffffff, 8, 24, "PNG over the limit");
	png(&x, 0, 0);
	expect(&x, "image/png", 0, 0, 8, 24, "PNG of 0x0");
	/* The first chunk is not IHDR: a PNG of unknown size. */
	png(&x, 10, 20);
	memcpy(x.b + 12, "IDAT", 4);
	expect(&x, "image/png", 0, 0, 8, 24, "PNG without IHDR first");
	/* One byte of the signature wrong: not a PNG. */
	static const size_t at[] = {0, 1, 3, 4, 7};
	for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
		png(&x, 10, 20);
		x.b[at[i]] ^= 0x20;
		expect(&x, NULL, 0, 0, 0, 0, "PNG signature damaged");
	}
}

/* SOI, a JFIF APP0, a DQT stub and a frame header of marker sof. */
static size_t jpeg(buf *x, unsigned sof, unsigned w, unsigned h)
{
	x->n = 0;
	put(x, "\xff\xd8", 2);
	put(x, "\xff\xe0", 2);
	be16(x, 16);
	put(x, "JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00", 14);
	put(x, "\xff\xdb", 2);
	be16(x, 4);
	put(x, "\x00\x01", 2);
	size_t sof_at = x->n;
	put8(x, 0xff);
	put8(x, sof);
	be16(x, 17);
	put8(x, 8);
	be16(x, h);
	be16(x, w);
	put8(x, 3);
	put(x, "\x01\x22\x00\x02\x11\x01\x03\x11\x01", 9);
	put(x, "\xff\xda\x00\x0c", 4);
	return sof_at;
}

static void t_jpeg(void)
{
	buf x;
	/* Every start-of-frame marker: baseline, extended, progressive,
	 * lossless, the arithmetic ones. */
	static const unsigned sofs[] = {0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7,
	                                0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf};
	for (size_t i = 0; i < sizeof sofs / sizeof *sofs; i++) {
		size_t at = jpeg(&x, sofs[i], 400 + (unsigned)i, 300);
		expect(&x, "image/jpeg", 400 + (int)i, 300, 3, at + 9, "JPEG SOF");
	}
	size_t at = jpeg(&x, 0xc0, 65535, 65535);
	expect(&x, "image/jpeg", 65535, 65535, 3, at + 9, "JPEG 65535x65535");
	at = jpeg(&x, 0xc0, 1, 1);
	expect(&x, "image/jpeg", 1, 1, 3, at + 9, "JPEG 1x1");

	/* DHT (C4), JPG (C8) and DAC (CC) are not frames: walked over. */
	static const unsigned notsof[] = {0xc4, 0xc8, 0xcc};
	for (size_t i = 0; i < sizeof notsof / sizeof *notsof; i++) {
		buf y = {.n = 0};
		put(&y, "\xff\xd8\xff", 3);
		put8(&y, notsof[i]);
		be16(&y, 6);
		put(&y, "\x00\x00\x00\x00", 4);
		size_t sof_at = y.n;
		put(&y, "\xff\xc0\x00\x11\x08", 5);
		be16(&y, 77);
		be16(&y, 88);
		put8(&y, 1);
		expect(&y, "image/jpeg", 88, 77, 3, sof_at + 9, "JPEG table before the frame");
	}

	/* Fill bytes and markers without a length (TEM, RST0-7) before the
	 * frame. */
	buf y = {.n = 0};
	put(&y, "\xff\xd8\xff\xff\xff\x01\xff\xd0\xff\xd7\xff\xd8", 12);
	size_t sof_at = y.n;
	put(&y, "\xff\xc2\x00\x11\x08", 5);
	be16(&y, 1080);
	be16(&y, 1920);
	expect(&y, "image/jpeg", 1920, 1080, 3, sof_at + 9, "JPEG with fill bytes and RSTn");

	/* A scan or the end of image before any frame: no size. */
	y.n = 0;
	put(&y, "\xff\xd8\xff\xda\x00\x0c\xff\xc0\x00\x11\x08\x01\x00\x01\x00\x03", 16);
	expect(&y, "image/jpeg", 0, 0, 3, 0, "JPEG SOS before SOF");
	y.n = 0;
	put(&y, "\xff\xd8\xff\xd9\xff\xc0\x00\x11\x08\x01\x00\x01\x00\x03", 14);
	expect(&y, "image/jpeg", 0, 0, 3, 0, "JPEG EOI before SOF");
	/* A segment length under 2 would loop or step back: no size. */
	y.n = 0;
	put(&y, "\xff\xd8\xff\xe1\x00\x01\xff\xc0\x00\x11\x08\x01\x00\x01\x00\x03", 16);
	expect(&y, "image/jpeg", 0, 0, 3, 0, "JPEG segment length 1");
	y.n = 0;
	put(&y, "\xff\xd8\xff\xe1\x00\x00\xff\xc0\x00\x11\x08\x01\x00\x01\x00\x03", 16);
	expect(&y, "image/jpeg", 0, 0, 3, 0, "JPEG segment length 0");
	/* A byte other than FF where a marker belongs: no size. */
	y.n = 0;
	put(&y, "\xff\xd8\xff\xe0\x00\x04\x00\x00\x12\xff\xc0\x00\x11\x08\x01\x00\x01\x00\x03", 19);
	expect(&y, "image/jpeg", 0, 0, 3, 0, "JPEG garbage between segments");
	/* A segment whose length runs past the buffer. */
	y.n = 0;
	put(&y, "\xff\xd8\xff\xe0\xff\xf0\x00\x00", 8);
	expect(&y, "image/jpeg", 0, 0, 3, 0, "JPEG segment past the end");
	/* Not a JPEG: FF D8 without the third FF, or the reverse. */
	y.n = 0;
	put(&y, "\xff\xd8\x00\xe0\x00\x10", 6);
	expect(&y, NULL, 0, 0, 0, 0, "FF D8 00");
	y.n = 0;
	put(&y, "\xd8\xff\xff\xe0\x00\x10", 6);
	expect(&y, NULL, 0, 0, 0, 0, "D8 FF FF");
}

static void t_gif(void)
{
	static const char *const sig[] = {"GIF87a", "GIF89a"};
	for (int s = 0; s < 2; s++) {
		buf x = {.n = 0};
		put(&x, sig[s], 6);
		le16(&x, 320);
		le16(&x, 200);
		put(&x, "\xf7\x00\x00", 3);
		expect(&x, "image/gif", 320, 200, 10, 10, sig[s]);
		x.n = 0;
		put(&x, sig[s], 6);
		le16(&x, 65535);
		le16(&x, 65535);
		expect(&x, "image/gif", 65535, 65535, 10, 10, "GIF 65535x65535");
	}
	static const char *const not[] = {"GIF88a", "GIF89b", "gif89a", "GIF8 a"};
	for (size_t i = 0; i < sizeof not / sizeof *not; i++) {
		buf x = {.n = 0};
		put(&x, not[i], 6);
		le16(&x, 1);
		le16(&x, 1);
		expect(&x, NULL, 0, 0, 0, 0, not[i]);
	}
}

/* A RIFF/WEBP header with chunk fourcc and the 18 bytes after it. */
static void webp(buf *x, const char *fourcc)
{
	x->n = 0;
	put(x, "RIFF", 4);
	le32(x, 1000);
	put(x, "WEBP", 4);
	put(x, fourcc, 4);
	le32(x, 100);
}

static void t_webp(void)
{
	buf x;
	/* Lossy: a VP8 key frame, 14-bit sizes with 2 bits of scale above. */
	webp(&x, "VP8 ");
	put(&x, "\x9d\x01\x2a\x00\x00\x00", 6); /* frame tag, start code at 23 */
	x.n = 26;
	le16(&x, 0xc000 | 1024);
	le16(&x, 0x4000 | 768);
	expect(&x, "image/webp", 1024, 768, 12, 30, "WebP VP8");
	webp(&x, "VP8 ");
	x.n = 26;
	le16(&x, 0x3fff);
	le16(&x, 0x3fff);
	expect(&x, "image/webp", 16383, 16383, 12, 30, "WebP VP8 16383x16383");

	/* Lossless: signature 0x2f, then 14-bit width-1 and height-1. */
	for (int k = 0; k < 3; k++) {
		static const uint32_t ws[] = {1, 500, 16384}, hs[] = {1, 333, 16384};
		uint32_t w = ws[k] - 1, h = hs[k] - 1;
		webp(&x, "VP8L");
		put8(&x, 0x2f);
		uint32_t bits = w | h << 14;
		le32(&x, bits);
		while (x.n < 30)
			put8(&x, 0);
		expect(&x, "image/webp", (int)ws[k], (int)hs[k], 12, 30, "WebP VP8L");
	}
	/* VP8L without its signature byte: a WebP of unknown size. */
	webp(&x, "VP8L");
	put8(&x, 0x2e);
	le32(&x, 99 | 99 << 14);
	while (x.n < 30)
		put8(&x, 0);
	expect(&x, "image/webp", 0, 0, 12, 30, "WebP VP8L without 0x2f");

	/* Extended: 24-bit width-1 and height-1 at 24 and 27. */
	webp(&x, "VP8X");
	put(&x, "\x10\x00\x00\x00", 4);
	le24(&x, 4095);
	le24(&x, 2047);
	expect(&x, "image/webp", 4096, 2048, 12, 30, "WebP VP8X");
	webp(&x, "VP8X");
	put(&x, "\x10\x00\x00\x00", 4);
	le24(&x, 0xffffff);
	le24(&x, 0xffffff);
	expect(&x, "image/webp", 16777216, 16777216, 12, 30, "WebP VP8X at its limit");

	/* An unknown first chunk: WebP, no size. */
	webp(&x, "ALPH");
	while (x.n < 30)
		put8(&x, 0x7f);
	expect(&x, "image/webp", 0, 0, 12, 30, "WebP ALPH first");
	/* RIFF of another kind is not an image. */
	x.n = 0;
	put(&x, "RIFF\x10\x00\x00\x00WAVEfmt ", 16);
	expect(&x, NULL, 0, 0, 0, 0, "RIFF WAVE");
}

static void t_tiff_heif_avif(void)
{
	buf x = {.n = 0};
	put(&x, "II*\0\x08\x00\x00\x00", 8);
	expect(&x, "image/tiff", 0, 0, 4, 99, "TIFF little-endian");
	x.n = 0;
	put(&x, "MM\0*\x00\x00\x00\x08", 8);
	expect(&x, "image/tiff", 0, 0, 4, 99, "TIFF big-endian");
	x.n = 0;
	put(&x, "II\0*\x00\x00\x00\x08", 8);
	expect(&x, NULL, 0, 0, 0, 0, "TIFF with the other order's magic");

	static const char *const heif[] = {"heic", "heix", "heim", "heis", "hevc", "hevx",
	                                   "mif1", "msf1"};
	for (size_t i = 0; i < sizeof heif / sizeof *heif; i++) {
		x.n = 0;
		put(&x, "\x00\x00\x00\x18" "ftyp", 8);
		put(&x, heif[i], 4);
		put(&x, "\x00\x00\x00\x00mif1heic", 12);
		expect(&x, "image/heif", 0, 0, 12, 99, heif[i]);
	}
	static const char *const avif[] = {"avif", "avis"};
	for (size_t i = 0; i < 2; i++) {
		x.n = 0;
		put(&x, "\x00\x00\x00\x1c" "ftyp", 8);
		put(&x, avif[i], 4);
		put(&x, "\x00\x00\x00\x00", 4);
		expect(&x, "image/avif", 0, 0, 12, 99, avif[i]);
	}
	/* Other ISO media: MP4, QuickTime, JPEG 2000. */
	static const char *const other[] = {"isom", "mp42", "qt  ", "jp2 ", "HEIC", "avi1"};
	for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
		x.n = 0;
		put(&x, "\x00\x00\x00\x18" "ftyp", 8);
		put(&x, other[i], 4);
		expect(&x, NULL, 0, 0, 0, 0, other[i]);
	}
}

/* What is not an image: none of the accepted formats, whatever its size. */
static void t_not_images(void)
{
	static const struct {
		const char *b;
		size_t n;
	} cases[] = {
		{"", 0}, {"\xff", 1}, {"\xff\xd8", 2}, {"BM\x36\x00\x0c\x00\x00\x00\x00\x00", 10},
		{"hello, this is text\n", 20}, {"{\"a\": 1}", 8}, {"%PDF-1.7\n", 9},
		{"\x00\x00\x01\x00\x01\x00", 6}, /* ICO */
		{"<svg xmlns=\"http://www.w3.org/2000/svg\"/>", 41},
		{"\x1f\x8b\x08\x00\x00\x00\x00\x00", 8}, {"PK\x03\x04", 4},
		{"\x89PNG\r\n\x1a", 7}, {"GIF89a\x01\x00\x01", 9}, {"RIFF\x00\x00\x00\x00WEB", 11},
		{"II*", 3}, {"\x00\x00\x00\x18" "ftypheic", 11},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		sniff_info info;
		int rc = sniff_exact((const uint8_t *)cases[i].b, cases[i].n, &info);
		CHECKF(rc == 0 && info.mime == NULL && info.width == 0 && info.height == 0,
		       "case %zu (%zu bytes): %d %s", i, cases[i].n, rc, info.mime ? info.mime : "");
	}
	/* Random bytes are never an image unless they start like one. */
	uint32_t s = 12345;
	for (int round = 0; round < 2000; round++) {
		uint8_t b[64];
		for (size_t i = 0; i < sizeof b; i++) {
			s = s * 1103515245u + 12345u;
			b[i] = (uint8_t)(s >> 16);
		}
		if (b[0] == 0xff || b[0] == 0x89 || b[0] == 'G' || b[0] == 'R' || b[0] == 'I' ||
		    b[0] == 'M' || !memcmp(b + 4, "ftyp", 4))
			continue;
		sniff_info info;
		CHECK(sniff_exact(b, sizeof b, &info) == 0 && info.mime == NULL);
	}
}

int main(void)
{
	TAP_RUN(t_png);
	TAP_RUN(t_jpeg);
	TAP_RUN(t_gif);
	TAP_RUN(t_webp);
	TAP_RUN(t_tiff_heif_avif);
	TAP_RUN(t_not_images);
	return tap_done();
}
