/*
 * bench/photos.c: distinct JPEG photos for the ingest measurement (clipd
 * dedupes by content hash, so no two may be equal). Decoding cost depends
 * on size and entropy, so they should look like photos: crops of real
 * pictures (--sources) or smooth synthetic scenes with a few shapes and
 * film grain. libvips must be initialised by the caller.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <vips/vips.h>

#include "server_int.h"

#define MAX_SOURCES 64

/* A smooth colour field (three sinusoids per channel), a few discs, and
 * grain, into rgb[h][w][3]. */
static void synthetic(unsigned char *rgb, int w, int h, uint64_t *s)
{
	enum { K = 3, DISCS = 6 };
	float *sx = malloc(sizeof(float) * 3 * K * (size_t)w);
	float *cy = malloc(sizeof(float) * 3 * K * (size_t)h);
	float amp[3][K], base[3];
	if (!sx || !cy) {
		memset(rgb, 128, (size_t)w * h * 3);
		goto out;
	}
	for (int c = 0; c < 3; c++) {
		base[c] = (float)(60 + 130 * bs_uniform(s));
		for (int k = 0; k < K; k++) {
			double fx = (0.5 + 6 * bs_uniform(s)) * 2 * M_PI / w, px = 2 * M_PI * bs_uniform(s);
			double fy = (0.5 + 6 * bs_uniform(s)) * 2 * M_PI / h, py = 2 * M_PI * bs_uniform(s);
			amp[c][k] = (float)(15 + 25 * bs_uniform(s));
			for (int x = 0; x < w; x++)
				sx[((size_t)c * K + k) * w + x] = (float)sin(fx * x + px);
			for (int y = 0; y < h; y++)
				cy[((size_t)c * K + k) * h + y] = (float)cos(fy * y + py);
		}
	}
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			for (int c = 0; c < 3; c++) {
				float v = base[c];
				for (int k = 0; k < K; k++)
					v += amp[c][k] * sx[((size_t)c * K + k) * w + x] *
					     cy[((size_t)c * K + k) * h + y];
				rgb[((size_t)y * w + x) * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
			}
	for (int d = 0; d < DISCS; d++) {
		int cx = (int)(w * bs_uniform(s)), cyy = (int)(h * bs_uniform(s));
		int r = (int)(h * (0.04 + 0.15 * bs_uniform(s)));
		unsigned char col[3];
		for (int c = 0; c < 3; c++)
			col[c] = (unsigned char)(255 * bs_uniform(s));
		for (int y = cyy - r < 0 ? 0 : cyy - r; y < h && y <= cyy + r; y++)
			for (int x = cx - r < 0 ? 0 : cx - r; x < w && x <= cx + r; x++)
				if ((x - cx) * (x - cx) + (y - cyy) * (y - cyy) <= r * r)
					memcpy(rgb + ((size_t)y * w + x) * 3, col, 3);
	}
	uint64_t g = bs_splitmix(s);
	for (size_t i = 0; i < (size_t)w * h * 3; i++) {
		g = g * 6364136223846793005ull + 1442695040888963407ull;
		int v = rgb[i] + (int)((g >> 60) & 15) - 8;
		rgb[i] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
	}
out:
	free(sx);
	free(cy);
}

/* Loads every image of dir, 3-band sRGB uchar, covering (w, h) with a
 * margin to crop from; in memory. Returns how many. */
static int load_sources(const char *dir, int w, int h, VipsImage **src, char *msg,
                        size_t msg_size)
{
	struct dirent **ents;
	int ne = scandir(dir, &ents, NULL, alphasort), n = 0;
	if (ne < 0)
		return bs_fail(msg, msg_size, "cannot read %s", dir);
	for (int i = 0; i < ne; i++) {
		char path[4096];
		VipsImage *t[4] = {NULL};
		snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
		if (n == MAX_SOURCES || ents[i]->d_name[0] == '.' || !vips_foreign_find_load(path))
			goto next;
		/* 15% larger than the photo, cropped to its aspect ratio. */
		if (vips_thumbnail(path, &t[0], (int)(w * 1.15), "height", (int)(h * 1.15), "crop",
		                   VIPS_INTERESTING_CENTRE, NULL) ||
		    vips_colourspace(t[0], &t[1], VIPS_INTERPRETATION_sRGB, NULL)) {
			vips_error_clear();
			goto next;
		}
		if (vips_image_hasalpha(t[1]) ? vips_flatten(t[1], &t[2], NULL)
		                              : vips_copy(t[1], &t[2], NULL))
			goto next;
		if (vips_extract_band(t[2], &t[3], 0, "n", 3, NULL) ||
		    !(src[n] = vips_image_copy_memory(t[3])))
			goto next;
		n++;
	next:
		vips_error_clear();
		for (int k = 0; k < 4; k++)
			if (t[k])
				g_object_unref(t[k]);
		free(ents[i]);
	}
	free(ents);
	if (n == 0)
		return bs_fail(msg, msg_size, "no images found in %s", dir);
	return n;
}

int bs_make_photos(const char *dir, int n, int width, int height, const char *sources_dir,
                   uint64_t seed, int64_t *bytes, char *msg, size_t msg_size)
{
	VipsImage *src[MAX_SOURCES] = {NULL};
	int nsrc = 0, rc = 0;
	unsigned char *rgb = NULL;
	uint64_t s = seed;
	*bytes = 0;
	if (sources_dir) {
		if ((nsrc = load_sources(sources_dir, width, height, src, msg, msg_size)) < 0)
			return -1;
	} else if (!(rgb = malloc((size_t)width * height * 3))) {
		return bs_fail(msg, msg_size, "out of memory");
	}
	for (int i = 0; i < n && !bs_interrupted; i++) {
		char path[4096];
		VipsImage *t[3] = {NULL};
		struct stat st;
		snprintf(path, sizeof path, "%s/photo-%06d.jpg", dir, i);
		if (nsrc) {
			VipsImage *im = src[i % nsrc];
			int dx = (int)((vips_image_get_width(im) - width) * bs_uniform(&s));
			int dy = (int)((vips_image_get_height(im) - height) * bs_uniform(&s));
			double a = 0.85 + 0.3 * bs_uniform(&s), b = 24 * bs_uniform(&s) - 12;
			if (vips_extract_area(im, &t[0], dx, dy, width, height, NULL) ||
			    vips_linear1(t[0], &t[1], a, b, NULL) ||
			    vips_cast(t[1], &t[2], VIPS_FORMAT_UCHAR, NULL) ||
			    vips_jpegsave(t[2], path, "Q", 90, NULL))
				rc = bs_fail(msg, msg_size, "writing %s: %s", path, vips_error_buffer());
		} else {
			synthetic(rgb, width, height, &s);
			if (!(t[0] = vips_image_new_from_memory(rgb, (size_t)width * height * 3, width, height,
			                                        3, VIPS_FORMAT_UCHAR)) ||
			    vips_jpegsave(t[0], path, "Q", 90, NULL))
				rc = bs_fail(msg, msg_size, "writing %s: %s", path, vips_error_buffer());
		}
		for (int k = 0; k < 3; k++)
			if (t[k])
				g_object_unref(t[k]);
		if (rc)
			break;
		if (stat(path, &st) == 0)
			*bytes += st.st_size;
	}
	if (!rc && bs_interrupted)
		rc = bs_fail(msg, msg_size, "interrupted");
	for (int k = 0; k < nsrc; k++)
		g_object_unref(src[k]);
	free(rgb);
	return rc;
}
