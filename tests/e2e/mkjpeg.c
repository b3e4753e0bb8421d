/*
 * mkjpeg: writes a camera-sized, photo-like JPEG for the --fast-decode
 * tests (Python's standard library cannot write JPEG).
 *
 *   mkjpeg SRC OUT WIDTH HEIGHT [ORIENTATION]
 *   mkjpeg --scans N OUT WIDTH HEIGHT
 *
 * The second form writes the decode-work bomb of issue 12 instead: a grey
 * progressive JPEG of N scans (tests/jpeg_scans.h), a few hundred KB that
 * take a decoder seconds of a core.
 *
 * SRC (any image libvips reads) is scaled to cover WIDTH x HEIGHT and
 * cropped to it, then Gaussian luminance noise is added at every octave
 * from 1 to 64 pixels (sigma 8 grey levels each), so that there is detail
 * at every scale as in a real photo (bench/decode uses the same recipe for
 * its measurements). Saved at quality 90, with EXIF ORIENTATION (1-8) when
 * given. Exit status 0, or 1 with a message on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "../jpeg_scans.h"

#define OCTAVES 7
#define SIGMA 8.0

/* in + luminance noise at scale s pixels; unrefs in. NULL on failure. */
static VipsImage *add_noise(VipsImage *in, int s, int seed)
{
	int w = in->Xsize, h = in->Ysize;
	VipsImage *n = NULL, *j = NULL, *u = NULL, *c = NULL, *out = NULL;
	if (!vips_gaussnoise(&n, (w + s - 1) / s, (h + s - 1) / s, "sigma", SIGMA, "mean", 0.0, "seed", seed,
	                     NULL)) {
		VipsImage *three[3] = {n, n, n};
		if (!vips_bandjoin(three, &j, 3, NULL) &&
		    !(s > 1 ? vips_resize(j, &u, s, "kernel", VIPS_KERNEL_CUBIC, NULL)
		            : vips_copy(j, &u, NULL)) &&
		    !vips_extract_area(u, &c, 0, 0, w, h, NULL))
			vips_add(in, c, &out, NULL);
	}
	VipsImage *t[] = {n, j, u, c, in};
	for (size_t k = 0; k < sizeof t / sizeof t[0]; k++)
		if (t[k])
			g_object_unref(t[k]);
	return out;
}

static int write_scans(int scans, const char *out, int w, int h)
{
	size_t len;
	uint8_t *jpg = jpeg_scans_write(w, h, scans, &len);
	FILE *f = jpg ? fopen(out, "wb") : NULL;
	int ok = f && fwrite(jpg, 1, len, f) == len;
	if (f && fclose(f) != 0)
		ok = 0;
	free(jpg);
	if (!ok)
		fprintf(stderr, "mkjpeg: cannot write %s\n", out);
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	VipsImage *t[5] = {NULL}, *im = NULL;
	int rc = 1;
	if (argc == 6 && strcmp(argv[1], "--scans") == 0)
		return write_scans(atoi(argv[2]), argv[3], atoi(argv[4]), atoi(argv[5]));
	if (argc < 5 || argc > 6) {
		fprintf(stderr, "usage: mkjpeg SRC OUT WIDTH HEIGHT [ORIENTATION]\n");
		return 2;
	}
	int w = atoi(argv[3]), h = atoi(argv[4]), orient = argc > 5 ? atoi(argv[5]) : 1;
	if (VIPS_INIT(argv[0]) || w < 1 || h < 1 || orient < 1 || orient > 8)
		goto out;
	if (vips_thumbnail(argv[1], &t[0], w, "height", h, "crop", VIPS_INTERESTING_CENTRE, "size",
	                   VIPS_SIZE_BOTH, NULL) ||
	    vips_colourspace(t[0], &t[1], VIPS_INTERPRETATION_sRGB, NULL) ||
	    (vips_image_hasalpha(t[1]) ? vips_flatten(t[1], &t[2], NULL) : vips_copy(t[1], &t[2], NULL)) ||
	    vips_extract_band(t[2], &t[3], 0, "n", 3, NULL) || vips_cast_float(t[3], &im, NULL))
		goto out;
	for (int k = 0; k < OCTAVES && im; k++)
		im = add_noise(im, 1 << k, k + 1);
	if (!im || vips_cast_uchar(im, &t[4], NULL))
		goto out;
	if (orient != 1)
		vips_image_set_int(t[4], VIPS_META_ORIENTATION, orient);
	if (vips_jpegsave(t[4], argv[2], "Q", 90, NULL))
		goto out;
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "mkjpeg: %s\n", vips_error_buffer());
	for (int k = 0; k < 5; k++)
		if (t[k])
			g_object_unref(t[k]);
	if (im)
		g_object_unref(im);
	return rc;
}
