/*
 * test_preprocess: image decoding and preprocessing against the reference
 * (open_clip v2.20 on PIL, pixels in $CLIPD_REFERENCE/tiny-clip-a/pixels),
 * within 0.5/255 mean absolute difference per image; then the inputs that
 * must be refused (non-images, truncated files, decompression bombs), odd
 * shapes and formats (1x1, 50000x1, 16-bit, RGBA, grey, GIF, EXIF
 * orientation) generated with libvips in a temporary directory, JPEG
 * shrink-on-load against the exact path, the resampler's own properties,
 * threads, and leaks of descriptors and libvips objects; the decode-work
 * limits (JPEG scans, the deadline) and the memory of an EXIF-turned
 * decode.
 */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vips/vips.h>

#include "jpeg_scans.h"
#include "preprocess_int.h"
#include "tap.h"

#define S 224
#define PLANE (S * S)
#define NT (3 * PLANE)

static const img_opts OPTS = {
	.size = S,
	.mean = {0.48145466f, 0.4578275f, 0.40821073f},
	.std = {0.26862954f, 0.26130258f, 0.27577711f},
	.max_pixels = 0,
};

static const char *refdir;
static char dir[256];
static float *ta, *tb; /* two output tensors [3][S][S] */

static const char *const ref_images[] = {
	"000000039769.png", "astronaut.png", "chelsea.png", "coffee.png",
	"horse.png",        "page.png",      "rocket.jpg",
};

static void tmp_path(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", dir, name);
}

static void ref_path(char *buf, size_t n, const char *sub, const char *name)
{
	snprintf(buf, n, "%s/%s/%s", refdir, sub, name);
}

/* Reads a whole file into a malloc'd buffer; NULL on failure. */
static void *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	void *buf = NULL;
	long n;
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc(n ? (size_t)n : 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*len = (size_t)n;
	}
	fclose(f);
	return buf;
}

static int spit(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	int ok;
	if (!f)
		return -1;
	ok = fwrite(data, 1, len, f) == len;
	return fclose(f) == 0 && ok ? 0 : -1;
}

/* Back to the 0..255 scale: x * std + mean, times 255. */
static double unnorm(const float *t, size_t i)
{
	int c = (int)(i / PLANE);
	return ((double)t[i] * OPTS.std[c] + OPTS.mean[c]) * 255.0;
}

static void diff255(const float *a, const float *b, double *mean, double *max)
{
	double sum = 0, mx = 0;
	for (size_t i = 0; i < NT; i++) {
		double d = fabs(unnorm(a, i) - unnorm(b, i));
		sum += d;
		if (d > mx)
			mx = d;
	}
	*mean = sum / NT;
	*max = mx;
}

/* Writes w x h x bands pixels of the given format to a file in dir; the
 * saver follows the name's suffix. 0 on success. */
static int save_pixels(const char *name, const void *px, int w, int h, int bands,
                       VipsBandFormat fmt, VipsInterpretation interp)
{
	char p[512];
	size_t size = (size_t)w * h * bands * vips_format_sizeof(fmt);
	VipsImage *im = vips_image_new_from_memory(px, size, w, h, bands, fmt);
	int rc;
	if (!im)
		return -1;
	im->Type = interp;
	tmp_path(p, sizeof p, name);
	rc = vips_image_write_to_file(im, p, NULL);
	g_object_unref(im);
	if (rc)
		vips_error_clear();
	return rc;
}

/* A deterministic textured pattern: gradients plus hashed noise. */
static uint8_t pattern(int x, int y, int c)
{
	uint32_t hsh = (uint32_t)x * 2654435761u ^ (uint32_t)y * 2246822519u ^ (uint32_t)c * 3266489917u;
	hsh ^= hsh >> 15;
	return (uint8_t)((x * 3 + y * 5 + c * 70) / 2 + (hsh & 63));
}

static uint8_t *make_pattern(int w, int h, int bands)
{
	uint8_t *px = malloc((size_t)w * h * bands);
	if (!px)
		return NULL;
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			for (int c = 0; c < bands; c++)
				px[((size_t)y * w + x) * bands + c] = pattern(x, y, c);
	return px;
}

static int pre_file(const char *name, const img_opts *o, float *out, int *w, int *h, clip_err *err)
{
	char p[512];
	tmp_path(p, sizeof p, name);
	return img_preprocess_file(p, o, out, w, h, err);
}

/* A message is ours: one line, no libvips stack ("VipsForeignLoad: ...",
 * "vips_image_...: ..."). */
static int clean_msg(const clip_err *e)
{
	return e->msg[0] && !strchr(e->msg, '\n') && !strstr(e->msg, "Vips") &&
	       !strstr(e->msg, "vips_");
}

/* ---- the reference ---- */

static void t_reference_images(void)
{
	double worst = 0;
	for (size_t i = 0; i < sizeof ref_images / sizeof ref_images[0]; i++) {
		const char *name = ref_images[i];
		char p[512], stem[64];
		clip_err err = {0};
		size_t len = 0;
		float *ref;
		double mean, max;
		int w = 0, h = 0, rc;

		ref_path(p, sizeof p, "images", name);
		rc = img_preprocess_file(p, &OPTS, ta, &w, &h, &err);
		CHECKF(rc == CLIP_OK, "%s: %s", name, err.msg);
		if (rc != CLIP_OK)
			continue;
		snprintf(stem, sizeof stem, "%.*s.f32", (int)(strrchr(name, '.') - name), name);
		ref_path(p, sizeof p, "tiny-clip-a/pixels", stem);
		ref = slurp(p, &len);
		CHECKF(ref && len == NT * sizeof(float), "%s: cannot read %s", name, stem);
		if (!ref || len != NT * sizeof(float)) {
			free(ref);
			continue;
		}
		diff255(ta, ref, &mean, &max);
		printf("# %-17s %4dx%-4d mean abs diff %.4f/255, max %.2f/255\n", name, w, h, mean,
		       max);
		CHECKF(mean <= 0.5, "%s: mean abs diff %.4f/255 over 0.5/255", name, mean);
		if (mean > worst)
			worst = mean;
		free(ref);
	}
	printf("# worst mean abs diff %.4f/255\n", worst);
}

static void t_buffer_equals_file(void)
{
	for (size_t i = 0; i < sizeof ref_images / sizeof ref_images[0]; i++) {
		char p[512];
		clip_err err = {0};
		size_t len = 0;
		void *data;
		int w1 = 0, h1 = 0, w2 = 0, h2 = 0;

		ref_path(p, sizeof p, "images", ref_images[i]);
		data = slurp(p, &len);
		REQUIRE(data);
		CHECK(img_preprocess_file(p, &OPTS, ta, &w1, &h1, &err) == CLIP_OK);
		CHECKF(img_preprocess_buffer(data, len, &OPTS, tb, &w2, &h2, &err) == CLIP_OK, "%s",
		       err.msg);
		CHECKF(memcmp(ta, tb, NT * sizeof(float)) == 0, "%s: buffer and file differ",
		       ref_images[i]);
		CHECK(w1 == w2 && h1 == h2);
		free(data);
	}
}

/* ---- refusals ---- */

static void t_not_an_image(void)
{
	char p[512];
	const char *text = "this is a text file, not a PNG\n";
	clip_err err = {0};

	tmp_path(p, sizeof p, "text.png");
	REQUIRE(spit(p, text, strlen(text)) == 0);
	CHECK(img_preprocess_file(p, &OPTS, ta, NULL, NULL, &err) == CLIP_EIMAGE);
	CHECK(err.code == CLIP_EIMAGE);
	CHECKF(strstr(err.msg, "not an image") && clean_msg(&err), "message: %s", err.msg);
	printf("# text named .png: %s\n", err.msg);

	memset(&err, 0, sizeof err);
	CHECK(img_preprocess_buffer(text, strlen(text), &OPTS, ta, NULL, NULL, &err) ==
	      CLIP_EIMAGE);
	CHECK(clean_msg(&err));

	/* libvips would read this as a 2x2 matrix image. */
	tmp_path(p, sizeof p, "matrix.jpg");
	REQUIRE(spit(p, "2 2\n1 2\n3 4\n", 12) == 0);
	CHECK(img_preprocess_file(p, &OPTS, ta, NULL, NULL, &err) == CLIP_EIMAGE);
	CHECKF(strstr(err.msg, "unsupported image format") && clean_msg(&err), "message: %s",
	       err.msg);

	tmp_path(p, sizeof p, "empty.jpg");
	REQUIRE(spit(p, "", 0) == 0);
	CHECK(img_preprocess_file(p, &OPTS, ta, NULL, NULL, &err) == CLIP_EIMAGE);
	CHECK(img_preprocess_buffer("", 0, &OPTS, ta, NULL, NULL, &err) == CLIP_EIMAGE);
	CHECK(clean_msg(&err));
}

static void t_truncated(void)
{
	static const char *const names[] = {"rocket.jpg", "astronaut.png"};
	for (int i = 0; i < 2; i++) {
		char p[512], q[512];
		clip_err err = {0};
		size_t len = 0;
		void *data;

		ref_path(p, sizeof p, "images", names[i]);
		data = slurp(p, &len);
		REQUIRE(data);
		snprintf(q, sizeof q, "%s/truncated-%s", dir, names[i]);
		REQUIRE(spit(q, data, len * 6 / 10) == 0);
		CHECKF(img_preprocess_file(q, &OPTS, ta, NULL, NULL, &err) == CLIP_EIMAGE,
		       "%s: code %d (%s)", names[i], err.code, err.msg);
		CHECKF(clean_msg(&err), "message: %s", err.msg);
		printf("# truncated %s: %s\n", names[i], err.msg);
		memset(&err, 0, sizeof err);
		CHECK(img_preprocess_buffer(data, len * 6 / 10, &OPTS, ta, NULL, NULL, &err) ==
		      CLIP_EIMAGE);
		/* Only the header survives. */
		CHECK(img_preprocess_buffer(data, 200, &OPTS, ta, NULL, NULL, &err) == CLIP_EIMAGE);
		CHECK(clean_msg(&err));
		free(data);
	}
}

static void t_io_errors(void)
{
	char p[512];
	clip_err err = {0};

	tmp_path(p, sizeof p, "does-not-exist.jpg");
	CHECK(img_preprocess_file(p, &OPTS, ta, NULL, NULL, &err) == CLIP_EIO);
	CHECKF(clean_msg(&err) && !strstr(err.msg, dir), "message: %s", err.msg);
	printf("# missing file: %s\n", err.msg);
	CHECK(img_preprocess_file(dir, &OPTS, ta, NULL, NULL, &err) == CLIP_EIO);
	CHECK(clean_msg(&err));
}

static void t_bad_arguments(void)
{
	clip_err err = {0};
	img_opts o = OPTS;
	char p[512];

	ref_path(p, sizeof p, "images", "rocket.jpg");
	CHECK(img_preprocess_file(NULL, &OPTS, ta, NULL, NULL, &err) == CLIP_EINVAL);
	CHECK(img_preprocess_file(p, NULL, ta, NULL, NULL, &err) == CLIP_EINVAL);
	CHECK(img_preprocess_file(p, &OPTS, NULL, NULL, NULL, &err) == CLIP_EINVAL);
	CHECK(img_preprocess_buffer(NULL, 10, &OPTS, ta, NULL, NULL, &err) == CLIP_EINVAL);
	o.size = 0;
	CHECK(img_preprocess_file(p, &o, ta, NULL, NULL, &err) == CLIP_EINVAL);
	o = OPTS;
	o.std[1] = 0;
	CHECK(img_preprocess_file(p, &o, ta, NULL, NULL, &err) == CLIP_EINVAL);
	/* err may be NULL */
	CHECK(img_preprocess_file(NULL, &OPTS, ta, NULL, NULL, NULL) == CLIP_EINVAL);
}

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
	}
	return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* A PNG whose header claims w x h 8-bit grey, with a token IDAT: decoding
 * its pixels would need w * h bytes. */
static size_t bomb_png(uint8_t *b, uint32_t w, uint32_t h)
{
	static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	static const uint8_t idat[] = {0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01};
	size_t n = 0;

	memcpy(b, sig, 8);
	n = 8;
	put32(b + n, 13);
	memcpy(b + n + 4, "IHDR", 4);
	put32(b + n + 8, w);
	put32(b + n + 12, h);
	b[n + 16] = 8; /* bit depth */
	b[n + 17] = 0; /* grey */
	b[n + 18] = b[n + 19] = b[n + 20] = 0;
	put32(b + n + 21, crc32_png(b + n + 4, 17));
	n += 25;
	put32(b + n, sizeof idat);
	memcpy(b + n + 4, "IDAT", 4);
	memcpy(b + n + 8, idat, sizeof idat);
	put32(b + n + 8 + sizeof idat, crc32_png(b + n + 4, 4 + sizeof idat));
	n += 12 + sizeof idat;
	put32(b + n, 0);
	memcpy(b + n + 4, "IEND", 4);
	put32(b + n + 8, crc32_png(b + n + 4, 4));
	return n + 12;
}

static void t_pixel_limit(void)
{
	uint8_t b[128];
	char p[512];
	clip_err err = {0};
	img_opts o = OPTS;
	size_t n = bomb_png(b, 30000, 30000);

	tmp_path(p, sizeof p, "bomb.png");
	REQUIRE(spit(p, b, n) == 0);
	CHECKF(img_preprocess_file(p, &OPTS, ta, NULL, NULL, &err) == CLIP_ETOOBIG, "code %d: %s",
	       err.code, err.msg);
	CHECKF(strstr(err.msg, "30000x30000") && clean_msg(&err), "message: %s", err.msg);
	printf("# bomb: %s\n", err.msg);
	memset(&err, 0, sizeof err);
	CHECK(img_preprocess_buffer(b, n, &OPTS, ta, NULL, NULL, &err) == CLIP_ETOOBIG);

	/* A user-set limit. */
	ref_path(p, sizeof p, "images", "000000039769.png");
	o.max_pixels = 640 * 480 - 1;
	CHECK(img_preprocess_file(p, &o, ta, NULL, NULL, &err) == CLIP_ETOOBIG);
	CHECKF(strstr(err.msg, "640x480"), "message: %s", err.msg);
	o.max_pixels = 640 * 480;
	CHECK(img_preprocess_file(p, &o, ta, NULL, NULL, &err) == CLIP_OK);

	/* Width 0 cannot be written by libvips: forge it. */
	n = bomb_png(b, 0, 10);
	CHECK(img_preprocess_buffer(b, n, &OPTS, ta, NULL, NULL, &err) == CLIP_EIMAGE);
	CHECK(clean_msg(&err));
}

/* ---- shapes and formats ---- */

static void t_one_pixel(void)
{
	uint8_t px[3] = {10, 200, 77};
	clip_err err = {0};
	int w = 0, h = 0, ok = 1;

	REQUIRE(save_pixels("one.png", px, 1, 1, 3, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB) ==
	        0);
	REQUIRE(pre_file("one.png", &OPTS, ta, &w, &h, &err) == CLIP_OK);
	CHECK(w == 1 && h == 1);
	for (size_t i = 0; i < NT; i++)
		ok &= fabs(unnorm(ta, i) - px[i / PLANE]) < 1e-3;
	CHECK(ok);
}

static void t_elongated(void)
{
	static const int dims[][2] = {{10000, 20}, {20, 10000}, {50000, 1}, {1, 50000}};
	for (int i = 0; i < 4; i++) {
		int w = dims[i][0], h = dims[i][1], gw = 0, gh = 0;
		uint8_t *px = make_pattern(w, h, 3);
		char name[64];
		clip_err err = {0};
		int rc;

		REQUIRE(px);
		snprintf(name, sizeof name, "long-%dx%d.png", w, h);
		rc = save_pixels(name, px, w, h, 3, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB);
		free(px);
		REQUIRE(rc == 0);
		rc = pre_file(name, &OPTS, ta, &gw, &gh, &err);
		CHECKF(rc == CLIP_OK, "%s: %s", name, err.msg);
		CHECK(gw == w && gh == h);
	}
}

/* A 16-bit image decodes like the 8-bit image of its high bytes. */
static void t_sixteen_bit(void)
{
	int w = 300, h = 250;
	for (int bands = 1; bands <= 3; bands += 2) {
		uint8_t *p8 = make_pattern(w, h, bands);
		uint16_t *p16 = malloc(sizeof(uint16_t) * w * h * bands);
		clip_err err = {0};
		double mean, max;

		REQUIRE(p8 && p16);
		for (size_t i = 0; i < (size_t)w * h * bands; i++)
			p16[i] = (uint16_t)(p8[i] << 8 | (uint8_t)(i * 37));
		CHECK(save_pixels("p8.png", p8, w, h, bands, VIPS_FORMAT_UCHAR,
		                  bands == 1 ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB) ==
		      0);
		CHECK(save_pixels("p16.png", p16, w, h, bands, VIPS_FORMAT_USHORT,
		                  bands == 1 ? VIPS_INTERPRETATION_GREY16 : VIPS_INTERPRETATION_RGB16) ==
		      0);
		free(p8);
		free(p16);
		CHECKF(pre_file("p8.png", &OPTS, ta, NULL, NULL, &err) == CLIP_OK, "%s", err.msg);
		CHECKF(pre_file("p16.png", &OPTS, tb, NULL, NULL, &err) == CLIP_OK, "%s", err.msg);
		diff255(ta, tb, &mean, &max);
		printf("# 16-bit, %d band(s), against its high bytes: mean %.4f/255, max %.2f/255\n",
		       bands, mean, max);
		CHECK(max == 0);
	}
}

/* Grey is replicated: a grey image equals the RGB image with R = G = B,
 * and grey with opaque alpha equals grey. */
static void t_grey_replicated(void)
{
	int w = 230, h = 300;
	uint8_t *g = make_pattern(w, h, 1);
	uint8_t *rgb = malloc((size_t)w * h * 3);
	uint8_t *ga = malloc((size_t)w * h * 2);
	clip_err err = {0};

	REQUIRE(g && rgb && ga);
	for (size_t i = 0; i < (size_t)w * h; i++) {
		rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = g[i];
		ga[2 * i] = g[i];
		ga[2 * i + 1] = 255;
	}
	CHECK(save_pixels("g.png", g, w, h, 1, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_B_W) == 0);
	CHECK(save_pixels("g3.png", rgb, w, h, 3, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB) == 0);
	CHECK(save_pixels("ga.png", ga, w, h, 2, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_B_W) == 0);
	free(g);
	free(rgb);
	free(ga);
	CHECK(pre_file("g.png", &OPTS, ta, NULL, NULL, &err) == CLIP_OK);
	CHECK(pre_file("g3.png", &OPTS, tb, NULL, NULL, &err) == CLIP_OK);
	CHECK(memcmp(ta, tb, NT * sizeof(float)) == 0);
	CHECK(pre_file("ga.png", &OPTS, tb, NULL, NULL, &err) == CLIP_OK);
	CHECK(memcmp(ta, tb, NT * sizeof(float)) == 0);
}

/* Alpha is dropped, not composited: opaque RGBA equals RGB, and an image
 * that needs no resize keeps the colour of transparent pixels. */
static void t_rgba(void)
{
	int w = 320, h = 240;
	uint8_t *rgb = make_pattern(w, h, 3);
	uint8_t *rgba = malloc((size_t)w * h * 4);
	uint8_t *sq = make_pattern(S, S, 4);
	clip_err err = {0};
	int ok = 1;

	REQUIRE(rgb && rgba && sq);
	for (size_t i = 0; i < (size_t)w * h; i++) {
		memcpy(rgba + 4 * i, rgb + 3 * i, 3);
		rgba[4 * i + 3] = 255;
	}
	CHECK(save_pixels("c.png", rgb, w, h, 3, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB) == 0);
	CHECK(save_pixels("c4.png", rgba, w, h, 4, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB) == 0);
	CHECK(pre_file("c.png", &OPTS, ta, NULL, NULL, &err) == CLIP_OK);
	CHECK(pre_file("c4.png", &OPTS, tb, NULL, NULL, &err) == CLIP_OK);
	CHECK(memcmp(ta, tb, NT * sizeof(float)) == 0);

	/* Varying alpha, including 0, on a image that needs resizing. */
	for (size_t i = 0; i < (size_t)w * h; i++)
		rgba[4 * i + 3] = (uint8_t)(i % 3 == 0 ? 0 : i * 7);
	CHECK(save_pixels("c4a.png", rgba, w, h, 4, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB) == 0);
	CHECK(pre_file("c4a.png", &OPTS, tb, NULL, NULL, &err) == CLIP_OK);

	for (size_t i = 0; i < (size_t)S * S; i++)
		sq[4 * i + 3] = (uint8_t)(i * 13);
	CHECK(save_pixels("sq.png", sq, S, S, 4, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB) == 0);
	CHECK(pre_file("sq.png", &OPTS, ta, NULL, NULL, &err) == CLIP_OK);
	for (size_t i = 0; i < NT; i++)
		ok &= fabs(unnorm(ta, i) - sq[(i % PLANE) * 4 + i / PLANE]) < 1e-3;
	CHECK(ok);
	free(rgb);
	free(rgba);
	free(sq);
}

/* EXIF orientation 6 (rotate 90 clockwise): width and height swap, and
 * the pixels equal those of the same decode rotated by libvips. */
static void t_exif_orientation(void)
{
	int w = 300, h = 200, gw = 0, gh = 0;
	uint8_t *px = make_pattern(w, h, 3);
	VipsImage *im, *dec = NULL, *rot = NULL;
	char p[512], q[512];
	clip_err err = {0};

	REQUIRE(px);
	im = vips_image_new_from_memory(px, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
	REQUIRE(im);
	vips_image_set_int(im, VIPS_META_ORIENTATION, 6);
	tmp_path(p, sizeof p, "orient6.jpg");
	CHECK(vips_image_write_to_file(im, p, NULL) == 0);
	g_object_unref(im);
	free(px);

	CHECKF(img_preprocess_file(p, &OPTS, ta, &gw, &gh, &err) == CLIP_OK, "%s", err.msg);
	CHECKF(gw == h && gh == w, "decoded %dx%d", gw, gh);

	/* The reference: the JPEG's pixels (no autorot) turned by hand. */
	dec = vips_image_new_from_file(p, NULL);
	REQUIRE(dec);
	CHECK(vips_image_get_orientation(dec) == 6);
	CHECK(vips_rot(dec, &rot, VIPS_ANGLE_D90, NULL) == 0);
	if (rot) {
		vips_image_remove(rot, VIPS_META_ORIENTATION);
		vips_image_remove(rot, VIPS_META_EXIF_NAME);
		tmp_path(q, sizeof q, "turned.png");
		CHECK(vips_image_write_to_file(rot, q, NULL) == 0);
		CHECK(img_preprocess_file(q, &OPTS, tb, &gw, &gh, &err) == CLIP_OK);
		CHECK(gw == h && gh == w);
		CHECK(memcmp(ta, tb, NT * sizeof(float)) == 0);
		g_object_unref(rot);
	}
	g_object_unref(dec);
}

/* Every EXIF orientation, against the same pixels turned by vips_autorot
 * and stored as PNG: equal bit for bit (the oriented file is a TIFF, which
 * keeps the pixels exact and carries the orientation tag). Shapes cover a resize in both
 * directions, none horizontally after the turn, and alpha (premultiplied
 * around the resize). */
static void t_exif_all_orientations(void)
{
	static const int shapes[][3] = {{300, 200, 3}, {S, 400, 3}, {400, S, 3}, {257, 311, 4}};
	clip_err err = {0};
	char p[512], q[512];
	int bad = 0;

	for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
		int w = shapes[k][0], h = shapes[k][1], nb = shapes[k][2];
		uint8_t *px = make_pattern(w, h, nb);
		REQUIRE(px);
		for (int o = 1; o <= 8; o++) {
			VipsImage *im, *dec = NULL, *rot = NULL;
			int gw = 0, gh = 0;
			im = vips_image_new_from_memory(px, (size_t)w * h * nb, w, h, nb, VIPS_FORMAT_UCHAR);
			REQUIRE(im);
			im->Type = VIPS_INTERPRETATION_sRGB;
			vips_image_set_int(im, VIPS_META_ORIENTATION, o);
			/* TIFF keeps the pixels exact and carries the orientation. */
			tmp_path(p, sizeof p, "orient.tif");
			CHECK(vips_image_write_to_file(im, p, NULL) == 0);
			g_object_unref(im);
			CHECKF(img_preprocess_file(p, &OPTS, ta, &gw, &gh, &err) == CLIP_OK, "%s", err.msg);
			CHECKF(gw == (o >= 5 ? h : w) && gh == (o >= 5 ? w : h), "orientation %d: %dx%d", o,
			       gw, gh);

			dec = vips_image_new_from_file(p, NULL);
			REQUIRE(dec);
			CHECK(vips_image_get_orientation(dec) == o);
			CHECK(vips_autorot(dec, &rot, NULL) == 0);
			if (rot) {
				vips_image_remove(rot, VIPS_META_ORIENTATION);
				vips_image_remove(rot, VIPS_META_EXIF_NAME);
				tmp_path(q, sizeof q, "turned.png");
				CHECK(vips_image_write_to_file(rot, q, NULL) == 0);
				CHECK(img_preprocess_file(q, &OPTS, tb, NULL, NULL, &err) == CLIP_OK);
				if (memcmp(ta, tb, NT * sizeof(float)) != 0) {
					printf("# %dx%dx%d orientation %d differs from vips_autorot\n", w, h, nb, o);
					bad++;
				}
				g_object_unref(rot);
			}
			g_object_unref(dec);
		}
		free(px);
	}
	CHECK(bad == 0);
}

/* The child's side of t_turned_decode_memory, in a fresh process
 * (test_preprocess --peak-rss WARM FILE): decodes WARM, then FILE, and
 * prints how much the peak RSS grew during the second decode, in KB. */
static int peak_rss_child(const char *warm, const char *file)
{
	struct rusage ru;
	clip_err e;
	long before;
	if (clip_images_init(&e) != CLIP_OK || img_preprocess_file(warm, &OPTS, ta, NULL, NULL, &e) != CLIP_OK)
		return 3;
	getrusage(RUSAGE_SELF, &ru);
	before = ru.ru_maxrss;
	if (img_preprocess_file(file, &OPTS, ta, NULL, NULL, &e) != CLIP_OK)
		return 3;
	getrusage(RUSAGE_SELF, &ru);
	printf("%ld\n", ru.ru_maxrss - before);
	return 0;
}

/* The peak memory of decoding an EXIF-turned 3000x2000 JPEG, in a fresh
 * process: the decoded image is held once (18 MB), not also as a turned
 * copy. Measured as the growth of the peak RSS over a warm-up decode of
 * the same pixels unturned, whose peak is one decoded image. */
static void t_turned_decode_memory(void)
{
	int w = 3000, h = 2000;
	size_t decoded = (size_t)w * h * 3;
	uint8_t *px = make_pattern(w, h, 3);
	char p1[512], p6[512], cmd[2048];
	long grew = -1;
	FILE *f;

	REQUIRE(px);
	tmp_path(p1, sizeof p1, "mem1.jpg");
	tmp_path(p6, sizeof p6, "mem6.jpg");
	for (int o = 1; o <= 6; o += 5) {
		VipsImage *im = vips_image_new_from_memory(px, decoded, w, h, 3, VIPS_FORMAT_UCHAR);
		REQUIRE(im);
		if (o != 1)
			vips_image_set_int(im, VIPS_META_ORIENTATION, o);
		CHECK(vips_jpegsave(im, o == 1 ? p1 : p6, "Q", 90, NULL) == 0);
		g_object_unref(im);
	}
	free(px);
	snprintf(cmd, sizeof cmd, "/proc/%d/exe --peak-rss '%s' '%s'", (int)getpid(), p1, p6);
	f = popen(cmd, "r");
	REQUIRE(f);
	CHECK(fscanf(f, "%ld", &grew) == 1);
	CHECK(pclose(f) == 0);
	printf("# peak RSS grew by %ld KB for a turned decode (decoded image %zu KB)\n", grew,
	       decoded / 1024);
	/* A turned copy would add the whole image again. */
	CHECK(grew >= 0 && grew < (long)(decoded / 2 / 1024));
}

/* Writes the many-scan JPEG of jpeg_scans.h into dir. */
static int save_scans(const char *name, int w, int h, int scans)
{
	char p[512];
	size_t len = 0;
	uint8_t *data = jpeg_scans_write(w, h, scans, &len);
	int rc;
	if (!data)
		return -1;
	tmp_path(p, sizeof p, name);
	rc = spit(p, data, len);
	free(data);
	return rc;
}

/* A progressive JPEG of more scans than the limit is refused before it is
 * decoded, with a message naming the limit; one at the limit decodes. */
static void t_scan_limit(void)
{
	img_opts few = OPTS;
	clip_err err = {0};
	size_t len = 0;
	char p[512];
	void *data;

	REQUIRE(save_scans("s500.jpg", 64, 64, CLIP_DEFAULT_MAX_SCANS) == 0);
	REQUIRE(save_scans("s501.jpg", 64, 64, CLIP_DEFAULT_MAX_SCANS + 1) == 0);
	CHECKF(pre_file("s500.jpg", &OPTS, ta, NULL, NULL, &err) == CLIP_OK, "%s", err.msg);
	/* Mid grey, as written. */
	CHECKF(fabs(unnorm(ta, PLANE / 2) - 128) < 1, "grey %f", unnorm(ta, PLANE / 2));
	memset(&err, 0, sizeof err);
	CHECK(pre_file("s501.jpg", &OPTS, ta, NULL, NULL, &err) == CLIP_ELIMIT);
	printf("# %s\n", err.msg);
	CHECKF(strstr(err.msg, "more than 500 scans") != NULL, "%s", err.msg);
	CHECK(clean_msg(&err));

	/* The buffer path counts the same way. */
	tmp_path(p, sizeof p, "s501.jpg");
	data = slurp(p, &len);
	REQUIRE(data);
	memset(&err, 0, sizeof err);
	CHECK(img_preprocess_buffer(data, len, &OPTS, ta, NULL, NULL, &err) == CLIP_ELIMIT);
	CHECKF(strstr(err.msg, "more than 500 scans") != NULL, "%s", err.msg);
	free(data);

	/* A lower limit of the caller's. */
	few.max_scans = 20;
	REQUIRE(save_scans("s21.jpg", 64, 64, 21) == 0);
	CHECK(pre_file("s21.jpg", &OPTS, ta, NULL, NULL, &err) == CLIP_OK);
	CHECK(pre_file("s21.jpg", &few, ta, NULL, NULL, &err) == CLIP_ELIMIT);
	CHECKF(strstr(err.msg, "more than 20 scans") != NULL, "%s", err.msg);
}

/* What looks like scans but is not: 600 SOS markers inside a comment, an
 * EXIF block and restart markers in the entropy-coded data of an
 * ordinary JPEG are not counted. */
static void t_scan_count_skips_segments(void)
{
	int w = 96, h = 64;
	uint8_t *px = make_pattern(w, h, 3);
	VipsImage *im;
	void *data, *fat;
	size_t len = 0, n = 0;
	clip_err err = {0};
	char p[512];

	REQUIRE(px);
	im = vips_image_new_from_memory(px, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
	REQUIRE(im);
	vips_image_set_int(im, VIPS_META_ORIENTATION, 3);
	tmp_path(p, sizeof p, "restart.jpg");
	CHECK(vips_jpegsave(im, p, "Q", 90, "restart_interval", 1, NULL) == 0);
	g_object_unref(im);
	free(px);
	CHECKF(pre_file("restart.jpg", &OPTS, ta, NULL, NULL, &err) == CLIP_OK, "%s", err.msg);

	/* A COM segment of FF DA pairs after SOI. */
	data = slurp(p, &len);
	REQUIRE(data);
	fat = malloc(len + 4 + 1200);
	REQUIRE(fat);
	memcpy(fat, data, 2);
	n = 2;
	((uint8_t *)fat)[n++] = 0xff;
	((uint8_t *)fat)[n++] = 0xfe;
	((uint8_t *)fat)[n++] = (uint8_t)((1200 + 2) >> 8);
	((uint8_t *)fat)[n++] = (uint8_t)((1200 + 2) & 0xff);
	for (int i = 0; i < 600; i++) {
		((uint8_t *)fat)[n++] = 0xff;
		((uint8_t *)fat)[n++] = 0xda;
	}
	memcpy((uint8_t *)fat + n, (uint8_t *)data + 2, len - 2);
	n += len - 2;
	CHECKF(img_preprocess_buffer(data, len, &OPTS, tb, NULL, NULL, &err) == CLIP_OK, "%s",
	       err.msg);
	CHECKF(img_preprocess_buffer(fat, n, &OPTS, ta, NULL, NULL, &err) == CLIP_OK, "%s", err.msg);
	CHECK(memcmp(ta, tb, NT * sizeof(float)) == 0);
	free(fat);
	free(data);
}

/* A decode still running at the deadline is cut off with CLIP_ELIMIT
 * naming the limit: a progressive JPEG under the scan limit (libjpeg
 * absorbs its scans in one call, stopped by the guard's reads) and a PNG
 * (loaded by libspng as it reads). With the default deadline both decode. */
static void t_decode_deadline(void)
{
	img_opts quick = OPTS;
	clip_err err = {0};
	uint8_t *px;
	size_t len = 0;
	char p[512];
	void *data;

	REQUIRE(save_scans("slow.jpg", 2048, 2048, 400) == 0);
	CHECKF(pre_file("slow.jpg", &OPTS, ta, NULL, NULL, &err) == CLIP_OK, "%s", err.msg);
	quick.timeout_ms = 20;
	memset(&err, 0, sizeof err);
	CHECK(pre_file("slow.jpg", &quick, ta, NULL, NULL, &err) == CLIP_ELIMIT);
	printf("# %s\n", err.msg);
	CHECKF(strstr(err.msg, "limit of 20 ms") != NULL, "%s", err.msg);
	CHECK(clean_msg(&err));
	tmp_path(p, sizeof p, "slow.jpg");
	data = slurp(p, &len);
	REQUIRE(data);
	memset(&err, 0, sizeof err);
	CHECK(img_preprocess_buffer(data, len, &quick, ta, NULL, NULL, &err) == CLIP_ELIMIT);
	free(data);

	px = make_pattern(3000, 2000, 3);
	REQUIRE(px);
	CHECK(save_pixels("slow.png", px, 3000, 2000, 3, VIPS_FORMAT_UCHAR,
	                  VIPS_INTERPRETATION_sRGB) == 0);
	free(px);
	CHECK(pre_file("slow.png", &OPTS, ta, NULL, NULL, &err) == CLIP_OK);
	quick.timeout_ms = 1;
	memset(&err, 0, sizeof err);
	CHECK(pre_file("slow.png", &quick, ta, NULL, NULL, &err) == CLIP_ELIMIT);
	CHECKF(strstr(err.msg, "limit of 1 ms") != NULL, "%s", err.msg);
}

/* ---- JPEG shrink-on-load (img_opts.shrink_min_side) ---- */

/* Mean absolute difference, in grey levels, allowed between the fast and
 * the exact path's tensors. bench/decode measured 0.31-0.45 on photo-like
 * JPEGs at the shipped margin; the image below has per-pixel colour grain,
 * the worst case for two different low-pass filters, and measured 0.78 at
 * 1/2 and 0.34 at 1/4. A lost rotation or a misplaced crop changes the
 * content itself, far above this. */
#define FAST_MAD 1.0

/* A photo-like JPEG w x h in dir: smooth colour, edges, and grain, so that
 * the shrink has detail to lose. orient: EXIF orientation (1: none). */
static int save_photo(const char *name, int w, int h, int orient)
{
	uint8_t *px = malloc((size_t)w * h * 3);
	uint64_t g = 88172645463325252ull;
	char p[512];
	int rc = -1;
	if (!px)
		return -1;
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			for (int c = 0; c < 3; c++) {
				g ^= g << 13, g ^= g >> 7, g ^= g << 17;
				double v = 128 + 60 * sin(x * (0.004 + 0.002 * c)) * cos(y * 0.006) +
				           ((x / 97 + y / 61) % 2 ? 30 : -30) + (double)(g % 17) - 8;
				px[((size_t)y * w + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
			}
	VipsImage *im = vips_image_new_from_memory(px, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
	if (im) {
		if (orient != 1)
			vips_image_set_int(im, VIPS_META_ORIENTATION, orient);
		tmp_path(p, sizeof p, name);
		rc = vips_jpegsave(im, p, "Q", 90, NULL);
		g_object_unref(im);
	}
	vips_error_clear();
	free(px);
	return rc;
}

/* With clipd's --fast-decode setting: a JPEG shrunk on load stays close
 * to the exact path, keeps reporting its full size, and everything that
 * would not be shrunk is decoded bit for bit as before. */
static void t_fast_decode(void)
{
	img_opts fast = OPTS;
	int gw = 0, gh = 0, min = IMG_FAST_DECODE_MARGIN * S;
	double mean, max;
	clip_err err = {0};
	char p[512];

	fast.shrink_min_side = min;
	/* 1/2 on load gives a short side of exactly min. */
	REQUIRE(save_photo("big.jpg", 2000, 2 * min - 1, 1) == 0);
	CHECKF(pre_file("big.jpg", &OPTS, ta, NULL, NULL, &err) == CLIP_OK, "%s", err.msg);
	CHECKF(pre_file("big.jpg", &fast, tb, &gw, &gh, &err) == CLIP_OK, "%s", err.msg);
	CHECKF(gw == 2000 && gh == 2 * min - 1, "reported %dx%d", gw, gh);
	diff255(ta, tb, &mean, &max);
	printf("# shrunk 1/2 on load vs exact: mean |diff| %.3f, max %.1f grey levels\n", mean, max);
	CHECKF(mean > 0 && mean < FAST_MAD, "mean |diff| %.3f", mean);

	/* The buffer path shrinks the same way. */
	size_t len = 0;
	tmp_path(p, sizeof p, "big.jpg");
	void *data = slurp(p, &len);
	REQUIRE(data);
	CHECK(img_preprocess_buffer(data, len, &fast, ta, NULL, NULL, &err) == CLIP_OK);
	CHECK(memcmp(ta, tb, NT * sizeof(float)) == 0);
	/* A truncated one is refused, as on the exact path. */
	memset(&err, 0, sizeof err);
	CHECK(img_preprocess_buffer(data, len * 6 / 10, &fast, ta, NULL, NULL, &err) == CLIP_EIMAGE);
	CHECKF(clean_msg(&err), "message: %s", err.msg);
	free(data);

	/* One pixel less: 1/2 would go below min, so no shrink. */
	REQUIRE(save_photo("edge.jpg", 2000, 2 * min - 2, 1) == 0);
	CHECK(pre_file("edge.jpg", &OPTS, ta, NULL, NULL, &err) == CLIP_OK);
	CHECK(pre_file("edge.jpg", &fast, tb, NULL, NULL, &err) == CLIP_OK);
	CHECK(memcmp(ta, tb, NT * sizeof(float)) == 0);

	/* Not a JPEG: never shrunk. */
	uint8_t *px = make_pattern(2000, 2 * min, 3);
	REQUIRE(px);
	CHECK(save_pixels("big.png", px, 2000, 2 * min, 3, VIPS_FORMAT_UCHAR,
	                  VIPS_INTERPRETATION_sRGB) == 0);
	free(px);
	CHECK(pre_file("big.png", &OPTS, ta, NULL, NULL, &err) == CLIP_OK);
	CHECK(pre_file("big.png", &fast, tb, NULL, NULL, &err) == CLIP_OK);
	CHECK(memcmp(ta, tb, NT * sizeof(float)) == 0);

	/* EXIF orientation 6 and 1/4 on load: turned as on the exact path,
	 * the full size reported turned. */
	REQUIRE(save_photo("turned.jpg", 4 * min + 100, 4 * min, 6) == 0);
	CHECK(pre_file("turned.jpg", &OPTS, ta, NULL, NULL, &err) == CLIP_OK);
	CHECKF(pre_file("turned.jpg", &fast, tb, &gw, &gh, &err) == CLIP_OK, "%s", err.msg);
	CHECKF(gw == 4 * min && gh == 4 * min + 100, "reported %dx%d", gw, gh);
	diff255(ta, tb, &mean, &max);
	printf("# shrunk 1/4 on load, EXIF-turned, vs exact: mean |diff| %.3f, max %.1f\n", mean,
	       max);
	CHECKF(mean > 0 && mean < FAST_MAD, "mean |diff| %.3f", mean);
}

/* GIF: the first frame only. */
static void t_gif_first_frame(void)
{
	int w = 64, ph = 48, gw = 0, gh = 0;
	uint8_t *px = malloc((size_t)w * ph * 2 * 3);
	VipsImage *im;
	char p[512];
	clip_err err = {0};

	REQUIRE(px);
	for (int y = 0; y < 2 * ph; y++)
		for (int x = 0; x < w; x++) {
			uint8_t *q = px + ((size_t)y * w + x) * 3;
			q[0] = y < ph ? 255 : 0; /* frame 1 red, frame 2 blue */
			q[1] = 0;
			q[2] = y < ph ? 0 : 255;
		}
	im = vips_image_new_from_memory(px, (size_t)w * ph * 2 * 3, w, 2 * ph, 3, VIPS_FORMAT_UCHAR);
	REQUIRE(im);
	vips_image_set_int(im, VIPS_META_PAGE_HEIGHT, ph);
	tmp_path(p, sizeof p, "two.gif");
	CHECK(vips_image_write_to_file(im, p, NULL) == 0);
	g_object_unref(im);
	free(px);

	CHECKF(img_preprocess_file(p, &OPTS, ta, &gw, &gh, &err) == CLIP_OK, "%s", err.msg);
	CHECKF(gw == w && gh == ph, "decoded %dx%d", gw, gh);
	CHECK(unnorm(ta, 0) > 250 && unnorm(ta, 2 * PLANE) < 5);
}

/* ---- the resampler ---- */

static void t_resampler_properties(void)
{
	int sw = 37, sh = 23;
	uint8_t *src = make_pattern(sw, sh, 4);
	uint8_t *dst = malloc(200 * 200 * 4);
	uint8_t flat[16 * 12 * 3];
	int ok = 1;

	REQUIRE(src && dst);
	/* Same size: identity. */
	CHECK(img_resample_u8(src, sw, sh, 4, dst, sw, sh) == CLIP_OK);
	CHECK(memcmp(src, dst, (size_t)sw * sh * 4) == 0);
	/* A flat image stays flat, up and down. */
	memset(flat, 173, sizeof flat);
	CHECK(img_resample_u8(flat, 16, 12, 3, dst, 200, 150) == CLIP_OK);
	for (int i = 0; i < 200 * 150 * 3; i++)
		ok &= dst[i] == 173;
	CHECK(img_resample_u8(flat, 16, 12, 3, dst, 5, 7) == CLIP_OK);
	for (int i = 0; i < 5 * 7 * 3; i++)
		ok &= dst[i] == 173;
	CHECK(ok);
	/* A single row or column stretches without touching other bands. */
	CHECK(img_resample_u8(src, sw, 1, 4, dst, 150, 3) == CLIP_OK);
	CHECK(img_resample_u8(src, 1, sh, 1, dst, 2, 100) == CLIP_OK);
	CHECK(img_resample_u8(src, 0, sh, 1, dst, 2, 100) == CLIP_EINVAL);
	CHECK(img_resample_u8(src, sw, sh, 5, dst, 2, 100) == CLIP_EINVAL);
	free(src);
	free(dst);
}

/* Preprocessing computes only the crop window: it must equal resizing the
 * whole image with img_resample_u8 and cropping it. */
static void t_window_equals_full_resize(void)
{
	static const int dims[][2] = {{300, 250}, {250, 300}, {100, 180}, {451, 300},
	                              {225, 224}, {227, 224}, {224, 227}};
	for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
		int w = dims[d][0], h = dims[d][1];
		int rw = w <= h ? S : (int)((double)S * w / h);
		int rh = w <= h ? (int)((double)S * h / w) : S;
		/* lrint rounds halves to even in the default rounding mode, as
		 * Python's round does: 0.5 -> 0, 1.5 -> 2. */
		int left = (int)lrint((rw - S) / 2.0), top = (int)lrint((rh - S) / 2.0);
		uint8_t *px = make_pattern(w, h, 3);
		uint8_t *full = malloc((size_t)rw * rh * 3);
		clip_err err = {0};
		int ok = 1;

		REQUIRE(px && full);
		CHECK(save_pixels("win.png", px, w, h, 3, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB) ==
		      0);
		CHECK(img_resample_u8(px, w, h, 3, full, rw, rh) == CLIP_OK);
		CHECK(pre_file("win.png", &OPTS, ta, NULL, NULL, &err) == CLIP_OK);
		for (int c = 0; c < 3; c++)
			for (int y = 0; y < S; y++)
				for (int x = 0; x < S; x++) {
					uint8_t v = full[((size_t)(y + top) * rw + x + left) * 3 + c];
					float t = ((float)v / 255.0f - OPTS.mean[c]) / OPTS.std[c];
					ok &= ta[(size_t)c * PLANE + (size_t)y * S + x] == t;
				}
		CHECKF(ok, "%dx%d: window differs from the cropped full resize", w, h);
		free(px);
		free(full);
	}
}

/* Several threads at once get the same tensors as one thread alone. */
#define NTHREADS 4
#define NREF (sizeof ref_images / sizeof ref_images[0])

static float *solo[NREF];

static void *thread_run(void *arg)
{
	float *t = malloc(NT * sizeof(float));
	intptr_t bad = 0;
	(void)arg;
	if (!t)
		return (void *)1;
	for (int round = 0; round < 3; round++)
		for (size_t i = 0; i < NREF; i++) {
			char p[512];
			clip_err err;
			ref_path(p, sizeof p, "images", ref_images[i]);
			if (img_preprocess_file(p, &OPTS, t, NULL, NULL, &err) != CLIP_OK ||
			    memcmp(t, solo[i], NT * sizeof(float)) != 0)
				bad++;
		}
	free(t);
	return (void *)bad;
}

static void t_threads(void)
{
	pthread_t th[NTHREADS];
	int started = 0;
	intptr_t bad = 0;

	for (size_t i = 0; i < NREF; i++) {
		char p[512];
		clip_err err;
		solo[i] = malloc(NT * sizeof(float));
		REQUIRE(solo[i]);
		ref_path(p, sizeof p, "images", ref_images[i]);
		REQUIRE(img_preprocess_file(p, &OPTS, solo[i], NULL, NULL, &err) == CLIP_OK);
	}
	for (; started < NTHREADS; started++)
		if (pthread_create(&th[started], NULL, thread_run, NULL))
			break;
	CHECK(started == NTHREADS);
	for (int i = 0; i < started; i++) {
		void *r;
		pthread_join(th[i], &r);
		bad += (intptr_t)r;
	}
	CHECKF(bad == 0, "%ld results differ from the single-threaded ones", (long)bad);
	for (size_t i = 0; i < NREF; i++)
		free(solo[i]);
}

/* Every call, failed or not, gives back its file descriptors and its
 * libvips objects (libvips keeps a list of the live ones). */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void *count_object(void *obj, void *a, void *b)
{
	(void)obj;
	(void)b;
	(*(int *)a)++;
	return NULL;
}

static int count_vips_objects(void)
{
	int n = 0;
	vips_object_map(count_object, &n, NULL);
	return n;
}

static void t_no_leaks(void)
{
	static const char *const tmp_names[] = {
		"text.png", "truncated-rocket.jpg", "bomb.png", "orient6.jpg", "c4a.png", "p16.png",
		"two.gif",  "long-50000x1.png",     "g.png",        "s501.jpg",    "orient.tif",
		"restart.jpg",
	};
	char p[512];
	clip_err err;
	img_opts small = OPTS, quick = OPTS;
	size_t len = 0;
	int fds = count_fds(), objs = count_vips_objects();

	small.max_pixels = 1000;
	quick.timeout_ms = 5;
	for (int i = 0; i < 5; i++) {
		ref_path(p, sizeof p, "images", "rocket.jpg");
		img_preprocess_file(p, &OPTS, ta, NULL, NULL, &err);
		img_preprocess_file(p, &small, ta, NULL, NULL, &err);
		/* Cut off by the deadline, from a file and from memory. */
		tmp_path(p, sizeof p, "slow.jpg");
		img_preprocess_file(p, &quick, ta, NULL, NULL, &err);
		void *data = slurp(p, &len);
		if (data)
			img_preprocess_buffer(data, len, &quick, ta, NULL, NULL, &err);
		free(data);
		for (size_t k = 0; k < sizeof tmp_names / sizeof tmp_names[0]; k++) {
			tmp_path(p, sizeof p, tmp_names[k]);
			img_preprocess_file(p, &OPTS, ta, NULL, NULL, &err);
		}
	}
	CHECKF(count_fds() == fds, "descriptors: %d before, %d after", fds, count_fds());
	CHECKF(count_vips_objects() == objs, "libvips objects: %d before, %d after", objs,
	       count_vips_objects());
}

static void rm_dir(const char *d)
{
	DIR *dd = opendir(d);
	struct dirent *e;
	char p[512];
	if (!dd)
		return;
	while ((e = readdir(dd))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof p, "%s/%s", d, e->d_name);
		unlink(p);
	}
	closedir(dd);
	rmdir(d);
}

int main(int argc, char **argv)
{
	const char *tmp = getenv("TMPDIR");
	clip_err err = {0};

	if (argc == 4 && strcmp(argv[1], "--peak-rss") == 0) {
		ta = malloc(NT * sizeof(float));
		return ta ? peak_rss_child(argv[2], argv[3]) : 3;
	}
	refdir = getenv("CLIPD_REFERENCE");
	if (!refdir || !*refdir)
		refdir = "../shared/reference";
	snprintf(dir, sizeof dir, "%s/test_preprocess.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	if (clip_images_init(&err) != CLIP_OK) {
		printf("Bail out! %s\n", err.msg);
		return 1;
	}
	ta = malloc(NT * sizeof(float));
	tb = malloc(NT * sizeof(float));
	if (!ta || !tb)
		return 1;

	TAP_RUN(t_reference_images);
	TAP_RUN(t_buffer_equals_file);
	TAP_RUN(t_not_an_image);
	TAP_RUN(t_truncated);
	TAP_RUN(t_io_errors);
	TAP_RUN(t_bad_arguments);
	TAP_RUN(t_pixel_limit);
	TAP_RUN(t_one_pixel);
	TAP_RUN(t_elongated);
	TAP_RUN(t_sixteen_bit);
	TAP_RUN(t_grey_replicated);
	TAP_RUN(t_rgba);
	TAP_RUN(t_exif_orientation);
	TAP_RUN(t_exif_all_orientations);
#if defined(__SANITIZE_ADDRESS__)
	/* ASan's shadow memory and quarantine make peak RSS say nothing about
	 * the decoder's copies: the release build runs this case. */
	TAP_SKIP(t_turned_decode_memory, "peak RSS is not the decoder's under AddressSanitizer");
#else
	TAP_RUN(t_turned_decode_memory);
#endif
	TAP_RUN(t_scan_limit);
	TAP_RUN(t_scan_count_skips_segments);
	TAP_RUN(t_decode_deadline);
	TAP_RUN(t_fast_decode);
	TAP_RUN(t_gif_first_frame);
	TAP_RUN(t_resampler_properties);
	TAP_RUN(t_window_equals_full_resize);
	TAP_RUN(t_threads);
	TAP_RUN(t_no_leaks);

	free(ta);
	free(tb);
	rm_dir(dir);
	return tap_done();
}
