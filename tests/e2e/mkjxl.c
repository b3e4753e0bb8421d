/*
 * mkjxl: writes an image as JPEG XL for the format tests (Python's
 * standard library cannot write one; libvips' jxlsave can).
 *
 *   mkjxl SRC OUT [WIDTH HEIGHT]
 *
 * SRC is any image libvips reads; with WIDTH and HEIGHT it is first
 * resized to exactly that size. Saved lossless, so the file decodes back
 * to the same pixels. Exit status 0, or 1 with a message on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <vips/vips.h>

int main(int argc, char **argv)
{
	VipsImage *in = NULL, *out = NULL;
	int rc = 1;

	if (argc != 3 && argc != 5) {
		fprintf(stderr, "usage: mkjxl SRC OUT [WIDTH HEIGHT]\n");
		return 2;
	}
	if (VIPS_INIT(argv[0]))
		goto out;
	if (!(in = vips_image_new_from_file(argv[1], "access", VIPS_ACCESS_RANDOM, NULL)))
		goto out;
	if (argc == 5) {
		double sx = atof(argv[3]) / in->Xsize, sy = atof(argv[4]) / in->Ysize;
		if (sx <= 0 || sy <= 0) {
			fprintf(stderr, "mkjxl: bad size %s x %s\n", argv[3], argv[4]);
			goto out;
		}
		if (vips_resize(in, &out, sx, "vscale", sy, NULL))
			goto out;
	} else {
		out = in;
		g_object_ref(out);
	}
	if (vips_jxlsave(out, argv[2], "lossless", TRUE, NULL))
		goto out;
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "mkjxl: %s\n", vips_error_buffer());
	if (in)
		g_object_unref(in);
	if (out)
		g_object_unref(out);
	return rc;
}
