/*
 * test_image_formats: the model's one list of accepted formats
 * (clip_image_format_accepted, clip_image_formats_text in model/clip.h)
 * and the upload sniffer (server/sniff.c) that checks against it; the
 * other formats' headers byte by byte are test_sniff's.
 *
 * JPEG XL by its two signatures, from hand-built bytes (the bare
 * codestream FF 0A, the container's signature box) and from a file libvips'
 * own jxlsave writes when this libvips has one; near misses of both are
 * not JPEG XL. Whether a recognised JPEG XL is accepted is the list's
 * answer: libvips 8.14.1 flags jxlload untrusted and the model blocks such
 * loaders, so there it is recognised (info.format) and refused. The list:
 * the loaders of accepted formats pass, document and matrix loaders do
 * not, and the message text names exactly the accepted formats.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <vips/vips.h>

#include "clip.h"
#include "sniff.h"
#include "tap.h"

static int jxl_ok; /* whether this libvips decodes JPEG XL for the model */

/* A JPEG XL sniff: recognised, and accepted exactly when the list says. */
static int sniffed_jxl(const sniff_info *si, int rc)
{
	if (!si->format || strcmp(si->format, "jxl") != 0)
		return 0;
	if (jxl_ok)
		return rc == 1 && si->mime && !strcmp(si->mime, "image/jxl");
	return rc == 0 && si->mime == NULL;
}

static const uint8_t jxl_box[12] = {0x00, 0x00, 0x00, 0x0C, 'J', 'X', 'L', ' ',
                                    0x0D, 0x0A, 0x87, 0x0A};

static void t_jxl_codestream(void)
{
	/* FF 0A and the first bytes of a SizeHeader: what libvips wrote for a
	 * 64x48 image here. */
	const uint8_t cs[] = {0xFF, 0x0A, 0xCB, 0x40, 0x24, 0x08};
	sniff_info si;
	int rc = sniff_image(cs, sizeof cs, &si);
	CHECK(sniffed_jxl(&si, rc));
	/* The size is not parsed: left to the decoder's header check. */
	CHECK(si.width == 0 && si.height == 0);
	rc = sniff_image(cs, 2, &si);
	CHECK(sniffed_jxl(&si, rc));
	CHECK(sniff_image(cs, 1, &si) == 0 && si.mime == NULL && si.format == NULL);
	const uint8_t miss[] = {0xFF, 0x0B, 0xCB, 0x40};
	CHECK(sniff_image(miss, sizeof miss, &si) == 0 && si.format == NULL);
}

static void t_jxl_container(void)
{
	uint8_t buf[40] = {0};
	sniff_info si;
	memcpy(buf, jxl_box, sizeof jxl_box);
	/* an ftyp box of brand "jxl " follows */
	memcpy(buf + 12, "\0\0\0\x14" "ftypjxl \0\0\0\0jxl ", 20);
	int rc = sniff_image(buf, sizeof buf, &si);
	CHECK(sniffed_jxl(&si, rc));
	CHECK(si.width == 0 && si.height == 0);
	rc = sniff_image(buf, 12, &si);
	CHECK(sniffed_jxl(&si, rc));
	CHECK(sniff_image(buf, 11, &si) == 0 && si.format == NULL); /* the box cut short */
	for (size_t i = 0; i < sizeof jxl_box; i++) {
		uint8_t bad[sizeof buf];
		memcpy(bad, buf, sizeof buf);
		bad[i] ^= 0x20;
		CHECKF(sniff_image(bad, sizeof bad, &si) == 0 && si.format == NULL,
		       "the signature box with byte %zu changed still sniffs as %s", i,
		       si.format ? si.format : "(none)");
	}
}

/* Files libvips' own savers write, made before anything starts the model:
 * the model blocks untrusted operations, which in libvips 8.14.1 includes
 * jxlsave. */
static const char *const savers[][2] = {
    {"jpegsave_buffer", "image/jpeg"}, {"pngsave_buffer", "image/png"},
    {"webpsave_buffer", "image/webp"}, {"gifsave_buffer", "image/gif"},
    {"tiffsave_buffer", "image/tiff"}, {"jxlsave_buffer", "image/jxl"},
};
#define NSAVERS (sizeof savers / sizeof *savers)
static VipsBlob *samples[NSAVERS]; /* NULL: no such saver here */

static int make_samples(void)
{
	VipsImage *img = NULL;
	if (vips_black(&img, 32, 24, "bands", 3, NULL) != 0)
		return -1;
	for (size_t i = 0; i < NSAVERS; i++) {
		if (vips_type_find("VipsOperation", savers[i][0]) == 0)
			continue;
		if (vips_call(savers[i][0], img, &samples[i], NULL) != 0) {
			printf("# %s failed: %s\n", savers[i][0], vips_error_buffer());
			vips_error_clear();
		}
	}
	g_object_unref(img);
	return 0;
}

/* A real JPEG XL from libvips' encoder sniffs as one. */
static void t_jxl_from_libvips(void)
{
	size_t len;
	sniff_info si;
	REQUIRE(samples[NSAVERS - 1]);
	const void *data = vips_blob_get(samples[NSAVERS - 1], &len);
	int rc = sniff_image(data, len, &si);
	CHECK(sniffed_jxl(&si, rc));
}

static void t_other_formats_unchanged(void)
{
	sniff_info si;
	const uint8_t png[24] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
	                         'I', 'H', 'D', 'R', 0, 0, 1, 0, 0, 0, 0, 200};
	CHECK(sniff_image(png, sizeof png, &si) == 1 && !strcmp(si.mime, "image/png") &&
	      si.width == 256 && si.height == 200);
	const uint8_t jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0};
	CHECK(sniff_image(jpeg, sizeof jpeg, &si) == 1 && !strcmp(si.mime, "image/jpeg"));
	CHECK(sniff_image((const uint8_t *)"GIF89a\x10\0\x08\0", 10, &si) == 1 &&
	      !strcmp(si.mime, "image/gif") && si.width == 16 && si.height == 8);
	CHECK(sniff_image((const uint8_t *)"II*\0", 4, &si) == 1 && !strcmp(si.mime, "image/tiff"));
	CHECK(sniff_image((const uint8_t *)"\0\0\0\x18" "ftypavif", 12, &si) == 1 &&
	      !strcmp(si.mime, "image/avif"));
	CHECK(sniff_image((const uint8_t *)"\0\0\0\x18" "ftypheic", 12, &si) == 1 &&
	      !strcmp(si.mime, "image/heif"));
	CHECK(sniff_image((const uint8_t *)"\0\0\0\x18" "ftypmp42", 12, &si) == 0);
	CHECK(sniff_image((const uint8_t *)"2 2\n1 2\n3 4\n", 12, &si) == 0 && si.mime == NULL);
}

static void t_format_list(void)
{
	const char *yes[] = {"jpegload", "jpegload_source", "pngload_source", "webpload_buffer",
	                     "gifload", "tiffload_source", "heifload_source", "jpeg", "png"};
	const char *no[] = {"matrixload", "matrixload_source", "csvload", "pdfload_source",
	                    "svgload_source", "fitsload", "radload_source", "vipsload_source",
	                    "magickload_source", "jp", "jpe", "jpegx", "", NULL};
	for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
		CHECKF(clip_image_format_accepted(yes[i]), "%s refused", yes[i]);
	for (size_t i = 0; i < sizeof no / sizeof *no; i++)
		CHECKF(!clip_image_format_accepted(no[i]), "%s accepted", no[i] ? no[i] : "NULL");
	CHECK(clip_image_format_accepted("jxlload_source") == jxl_ok);
	CHECK(clip_image_format_accepted("jxl") == jxl_ok);
}

static void t_format_text(void)
{
	char buf[128], small[10];
	size_t n = clip_image_formats_text(buf, sizeof buf);
	const char *want = jxl_ok ? "JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF or JPEG XL"
	                          : "JPEG, PNG, WebP, GIF, TIFF or HEIF/AVIF";
	CHECKF(strcmp(buf, want) == 0, "got '%s', want '%s'", buf, want);
	CHECK(n == strlen(buf));
	/* Cut short but terminated, and the whole length still returned. */
	CHECK(clip_image_formats_text(small, sizeof small) == n);
	CHECK(strlen(small) == sizeof small - 1 && !strncmp(small, buf, sizeof small - 1));
	CHECK(clip_image_formats_text(NULL, 0) == n);
}

/* Every format the sniffer recognises is one the decoder and the
 * thumbnailer take, and the other way round: for a real file of each, the
 * sniffer and the loader libvips picks get the same answer from the list
 * (only JPEG XL may be refused, where its loader is blocked). */
static void t_sniffed_formats_decode(void)
{
	for (size_t i = 0; i < NSAVERS; i++) {
		if (!samples[i]) {
			printf("# %s: not in this libvips\n", savers[i][0]);
			continue;
		}
		size_t len;
		const void *data = vips_blob_get(samples[i], &len);
		sniff_info si;
		int rc = sniff_image(data, len, &si);
		const char *loader = vips_foreign_find_load_buffer(data, len);
		const char *nick = loader ? vips_nickname_find(g_type_from_name(loader)) : NULL;
		vips_error_clear();
		/* The sniffer and the loader's check give the same answer. */
		CHECKF(rc == clip_image_format_accepted(nick), "%s: sniffed %d, loader %s %s",
		       savers[i][0], rc, nick ? nick : "(none)",
		       clip_image_format_accepted(nick) ? "accepted" : "refused");
		CHECKF(si.format != NULL, "%s: not recognised", savers[i][0]);
		if (rc)
			CHECKF(!strcmp(si.mime, savers[i][1]), "%s: sniffed as %s", savers[i][0],
			       si.mime);
		else
			CHECKF(!strcmp(savers[i][1], "image/jxl") && !jxl_ok, "%s refused",
			       savers[i][0]);
	}
}

int main(int argc, char **argv)
{
	(void)argc;
	if (VIPS_INIT(argv[0]) || make_samples() != 0) {
		printf("Bail out! libvips could not be initialised\n");
		return 1;
	}
	/* Known apart from the list: the loader exists and libvips does not
	 * flag it untrusted (the model blocks those). */
	GType jxl = vips_type_find("VipsOperation", "jxlload_source");
	if (jxl) {
		VipsOperationClass *c = g_type_class_ref(jxl);
		jxl_ok = !(c->flags & VIPS_OPERATION_UNTRUSTED);
		g_type_class_unref(c);
	}
	printf("# JPEG XL %s by this build's libvips\n", jxl_ok ? "decoded" : "not decoded");
	TAP_RUN(t_jxl_codestream);
	TAP_RUN(t_jxl_container);
	if (samples[NSAVERS - 1])
		TAP_RUN(t_jxl_from_libvips);
	else
		TAP_SKIP(t_jxl_from_libvips, "this libvips has no jxlsave");
	TAP_RUN(t_other_formats_unchanged);
	TAP_RUN(t_format_list);
	TAP_RUN(t_format_text);
	TAP_RUN(t_sniffed_formats_decode);
	for (size_t i = 0; i < NSAVERS; i++)
		if (samples[i])
			vips_area_unref(VIPS_AREA(samples[i]));
	return tap_done();
}
