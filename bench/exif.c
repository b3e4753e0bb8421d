/*
 * bench/exif: the EXIF backfill's rate (images/s): the code the daemon's
 * backfill thread runs (exif_backfill_run: list 256 unread images, read
 * each blob's EXIF, commit the batch), over --images JPEGs stored unread as
 * a clipd before migration 005 left them.
 *
 *   build/bench/exif [--images 2000] [--photo-size 1024x768] [--tmp DIR] [--keep]
 *
 * 1. One photo-like JPEG (libvips: a noise field, quality 90) of
 *    --photo-size, tagged once by exiftool with a capture time and offset,
 *    GPS, make, model, lens and orientation (what a camera writes, about
 *    1 KB of EXIF). Each image is that file with its number appended after
 *    the end of the JPEG data, so every content (and hash) differs.
 * 2. A data directory: the files in the blob store (DATA/blobs/ab/<sha>),
 *    their rows in the store with exif_read = 0.
 * 3. Timed: exif_read_file over every blob alone (the reading), then
 *    exif_backfill_run (reading and committing, with the job's counts).
 *    The page cache is warm (the files were just written): this is the
 *    CPU and SQLite side, not a cold disk's seeks.
 *
 * Prints the figures; exit 0, or 1 with a message on stderr.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vips/vips.h>

#include "app.h"
#include "exif.h"
#include "exif_backfill.h"
#include "log.h"

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int die(const char *msg)
{
	fprintf(stderr, "bench/exif: %s\n", msg);
	return 1;
}

/* The tagged template: *out (g_free), *len. */
static int template_jpeg(const char *dir, int w, int h, char **out, gsize *len)
{
	VipsImage *im = NULL, *u = NULL;
	char *path = g_build_filename(dir, "template.jpg", NULL);
	int rc = -1;
	if (vips_gaussnoise(&im, w, h, "mean", 128.0, "sigma", 40.0, NULL) ||
	    vips_cast_uchar(im, &u, NULL) || vips_jpegsave(u, path, "Q", 90, "strip", TRUE, NULL))
		goto out;
	const char *argv[] = {"exiftool", "-q", "-q", "-overwrite_original",
	                      "-DateTimeOriginal=2021:07:04 18:30:00", "-OffsetTimeOriginal=+02:00",
	                      "-CreateDate=2021:07:04 18:30:00", "-GPSLatitude=48.8584",
	                      "-GPSLatitudeRef=N", "-GPSLongitude=2.2945", "-GPSLongitudeRef=E",
	                      "-Make=Canon", "-Model=Canon EOS 5D Mark IV",
	                      "-LensModel=EF24-70mm f/2.8L II USM", "-Orientation#=1",
	                      "-ExposureTime=1/250", "-FNumber=8", "-ISO=100", path, NULL};
	int status;
	if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
	                  &status, NULL) ||
	    !g_spawn_check_wait_status(status, NULL))
		goto out;
	if (g_file_get_contents(path, out, len, NULL))
		rc = 0;
out:
	if (im)
		g_object_unref(im);
	if (u)
		g_object_unref(u);
	g_free(path);
	return rc;
}

int main(int argc, char **argv)
{
	int n = 2000, w = 1024, h = 768, keep = 0;
	const char *tmpdir = g_get_tmp_dir();
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--images") && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--photo-size") && i + 1 < argc)
			sscanf(argv[++i], "%dx%d", &w, &h);
		else if (!strcmp(argv[i], "--tmp") && i + 1 < argc)
			tmpdir = argv[++i];
		else if (!strcmp(argv[i], "--keep"))
			keep = 1;
		else {
			fprintf(stderr, "usage: %s [--images N] [--photo-size WxH] [--tmp DIR] [--keep]\n",
			        argv[0]);
			return 2;
		}
	}
	if (n <= 0 || w <= 0 || h <= 0)
		return die("--images and --photo-size must be positive");
	if (VIPS_INIT(argv[0]))
		return die("cannot start libvips");
	log_set_level(LOG_LVL_WARN);
	char *dir = g_build_filename(tmpdir, "clipd-bench-exif-XXXXXX", NULL);
	if (!g_mkdtemp(dir))
		return die("cannot create the temporary directory");

	char *tpl = NULL;
	gsize tlen = 0;
	if (template_jpeg(dir, w, h, &tpl, &tlen))
		return die("cannot write the template JPEG (libvips and exiftool)");

	store *st = NULL;
	blobs *bl = NULL;
	store_err se;
	api_err ae;
	char *db = g_build_filename(dir, "clipd.db", NULL), *bdir = g_build_filename(dir, "blobs", NULL);
	if (store_open(db, 0, &st, &se) != STORE_OK || blobs_open(bdir, &bl, &ae))
		return die("cannot open the store or the blob directory");

	char *buf = g_malloc(tlen + 16);
	memcpy(buf, tpl, tlen);
	double t0 = now_s();
	for (int i = 0; i < n; i++) {
		int k = snprintf(buf + tlen, 16, "%08d", i);
		gsize len = tlen + (gsize)k;
		char *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)buf, len);
		char path[4096];
		blobs_path(bl, sha, path, sizeof path);
		char *parent = g_path_get_dirname(path);
		g_mkdir_with_parents(parent, 0755);
		g_free(parent);
		store_image img = {.mime = "image/jpeg", .width = w, .height = h, .bytes = (int64_t)len};
		snprintf(img.sha256, sizeof img.sha256, "%s", sha);
		int64_t id;
		if (!g_file_set_contents(path, buf, (gssize)len, NULL) ||
		    store_image_insert(st, &img, &id, &se) != STORE_OK)
			return die("cannot store an image");
		g_free(sha);
	}
	printf("data: %d JPEGs of %dx%d, %zu bytes each, stored unread in %.1f s\n", n, w, h,
	       (size_t)tlen + 8, now_s() - t0);

	/* Reading alone. */
	int64_t *ids = g_new(int64_t, EXIF_BF_BATCH);
	char (*shas)[65] = g_malloc(EXIF_BF_BATCH * 65);
	int64_t after = 0, seen = 0, with_time = 0;
	t0 = now_s();
	for (;;) {
		size_t k = 0;
		if (store_images_exif_unread(st, after, EXIF_BF_BATCH, ids, shas, &k, &se) != STORE_OK)
			return die(se.msg);
		if (k == 0)
			break;
		for (size_t i = 0; i < k; i++) {
			char path[4096];
			store_exif e;
			blobs_path(bl, shas[i], path, sizeof path);
			if (exif_read_file(path, &e, NULL) == 0 && e.has_taken && e.has_gps &&
			    e.camera_make && e.lens)
				with_time++;
			store_exif_clear(&e);
		}
		seen += (int64_t)k;
		after = ids[k - 1];
	}
	double read_s = now_s() - t0;
	if (with_time != n)
		return die("an image's EXIF was not read in full");
	printf("reading only (list + exif_read_file): %lld images in %.3f s: %.0f images/s\n",
	       (long long)seen, read_s, seen / read_s);

	app a = {.st = st, .blobs = bl};
	int64_t done = 0;
	t0 = now_s();
	if (exif_backfill_run(&a, &done, &ae))
		return die(ae.msg);
	double run_s = now_s() - t0;
	int64_t left = -1;
	store_images_exif_unread_count(st, &left, &se);
	if (done != n || left != 0)
		return die("the backfill did not read every image");
	int batches = (n + EXIF_BF_BATCH - 1) / EXIF_BF_BATCH;
	printf("backfill (exif_backfill_run: list, read, commit %d per transaction, job counts): "
	       "%lld images in %.3f s: %.0f images/s; %.1f ms per batch of %d, of which %.1f ms "
	       "beyond the reading (the commit and the counts, the writer's hold)\n",
	       EXIF_BF_BATCH, (long long)done, run_s, done / run_s, run_s * 1000 / batches,
	       EXIF_BF_BATCH, (run_s - read_s) * 1000 / batches);

	store_close(st);
	blobs_close(bl);
	if (!keep) {
		char *cmd[] = {"rm", "-rf", dir, NULL};
		g_spawn_sync(NULL, cmd, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
	} else {
		printf("kept %s\n", dir);
	}
	g_free(buf);
	g_free(tpl);
	g_free(db);
	g_free(bdir);
	g_free(ids);
	g_free(shas);
	g_free(dir);
	return 0;
}
