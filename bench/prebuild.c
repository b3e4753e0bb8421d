/*
 * bench/prebuild.c: a data directory with many indexed images, without
 * encoding any. Rows go in through the store's public calls: per batch,
 * store_images_insert_many (one transaction for the batch's rows, as bulk
 * work writes them) and then store_embeddings_put_many (one transaction,
 * one sequence number per item), which marks the images ready. clipd
 * builds its index from these at start-up.
 *
 * Vectors are isotropic Gaussian, L2-normalised: exact search costs the
 * same whatever the values. Each image's metadata is a caption, "a photo of
 * a N1 on a N2 near the N3", three nouns drawn uniformly from NOUNS (the
 * nouns of bench/server's queries among them), so that keyword and hybrid
 * searches (the FTS5 index) match as a word query would: a noun in about
 * 3 images of 50, two given nouns together in about 1 of 400.
 *
 * Each image has a capture time (EXIF read, no offset) drawn uniformly
 * from the PREBUILD_DAYS days that begin at 2015-01-01T00:00:00, to the
 * second, independent of its id and vector: a date range of a share p of
 * that span keeps about p of the images (bench/server --filters).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_int.h"
#include "store.h"

/* Box-Muller: one standard normal value. */
static float gaussian(uint64_t *s)
{
	double u = bs_uniform(s), v = bs_uniform(s);
	return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(2.0 * M_PI * v));
}

static const char *const NOUNS[] = {
	"dog", "beach", "cat", "sofa", "car", "street", "people", "bicycles", "rain", "fruit",
	"table", "mountains", "sunset", "astronaut", "space", "cup", "coffee", "bowl", "tree", "river",
	"bridge", "house", "garden", "boat", "lake", "city", "forest", "road", "train", "window",
	"child", "horse", "bird", "flower", "snow", "desk", "book", "lamp", "chair", "door",
	"kitchen", "market", "field", "hill", "castle", "harbour", "park", "shop", "tower", "wall",
};
#define NNOUNS ((int)(sizeof NOUNS / sizeof NOUNS[0]))

int bs_prebuild(const char *db_path, long n, int batch, const char *model_id, int dim,
                uint64_t seed, float **vecs_out, double *insert_s, double *embed_s, char *msg,
                size_t msg_size)
{
	store *st = NULL;
	store_err se;
	float *vecs = NULL, *local = NULL;
	store_embedding_item *items = calloc((size_t)batch, sizeof *items);
	store_image *imgs = calloc((size_t)batch, sizeof *imgs);
	store_image_batch_item *rows = calloc((size_t)batch, sizeof *rows);
	/* Each row's strings live until its batch is written. */
	char (*filename)[64] = calloc((size_t)batch, 64), (*meta)[160] = calloc((size_t)batch, 160);
	char (*taken)[32] = calloc((size_t)batch, 32);
	int rc = 0;
	double t_ins = 0, t_emb = 0, t_report = bs_now();
	*insert_s = *embed_s = 0;
	if (vecs_out)
		*vecs_out = NULL;
	if (!items || !imgs || !rows || !filename || !meta || !taken) {
		rc = bs_fail(msg, msg_size, "out of memory");
		goto out;
	}
	if (vecs_out) {
		if (!(vecs = malloc((size_t)n * (size_t)dim * sizeof *vecs))) {
			rc = bs_fail(msg, msg_size, "out of memory for %ld vectors", n);
			goto out;
		}
	} else if (!(local = malloc((size_t)batch * (size_t)dim * sizeof *local))) {
		rc = bs_fail(msg, msg_size, "out of memory");
		goto out;
	}
	if (store_open(db_path, 0, &st, &se) != STORE_OK) {
		rc = bs_fail(msg, msg_size, "store_open %s: %s", db_path, se.msg);
		goto out;
	}
	for (long done = 0; done < n;) {
		int m = n - done < batch ? (int)(n - done) : batch;
		float *x = vecs ? vecs + (size_t)done * (size_t)dim : local;
		double t0 = bs_now();
		for (int j = 0; j < m; j++) {
			long i = done + j;
			uint64_t h = seed ^ ((uint64_t)i * 0x2545f4914f6cdd1dull);
			store_image img = {.mime = "image/jpeg", .width = 640, .height = 480,
			                   .filename = filename[j], .meta = meta[j], .exif_read = 1};
			snprintf(img.sha256, sizeof img.sha256, "%016llx%016llx%016llx%016llx",
			         (unsigned long long)bs_splitmix(&h), (unsigned long long)bs_splitmix(&h),
			         (unsigned long long)bs_splitmix(&h), (unsigned long long)bs_splitmix(&h));
			snprintf(filename[j], sizeof filename[j], "bench/photo-%07ld.jpg", i);
			img.bytes = 40000 + (int64_t)(bs_splitmix(&h) % 120000);
			snprintf(meta[j], sizeof meta[j], "{\"caption\":\"a photo of a %s on a %s near the %s\"}",
			         NOUNS[bs_splitmix(&h) % NNOUNS], NOUNS[bs_splitmix(&h) % NNOUNS],
			         NOUNS[bs_splitmix(&h) % NNOUNS]);
			int64_t sec = (int64_t)(bs_splitmix(&h) % ((uint64_t)PREBUILD_DAYS * 86400));
			time_t t = (time_t)(PREBUILD_EPOCH + sec);
			struct tm tm;
			gmtime_r(&t, &tm);
			strftime(taken[j], sizeof taken[j], "%Y-%m-%dT%H:%M:%S", &tm);
			img.exif = (store_exif){.taken = taken[j], .has_taken = 1,
			                        .taken_ms = (int64_t)t * 1000};
			imgs[j] = img;
			rows[j].img = &imgs[j];
			float *v = x + (size_t)j * (size_t)dim;
			double norm = 0;
			for (int d = 0; d < dim; d++) {
				v[d] = gaussian(&h);
				norm += (double)v[d] * v[d];
			}
			float inv = (float)(1.0 / sqrt(norm));
			for (int d = 0; d < dim; d++)
				v[d] *= inv;
			items[j].work_id = 0;
			items[j].width = items[j].height = 0;
			items[j].vec = v;
		}
		if (store_images_insert_many(st, rows, (size_t)m, &se) != STORE_OK) {
			rc = bs_fail(msg, msg_size, "store_images_insert_many: %s", se.msg);
			goto out;
		}
		for (int j = 0; j < m; j++)
			items[j].item_id = rows[j].id;
		double t1 = bs_now();
		if (store_embeddings_put_many(st, STORE_IMAGE, model_id, dim, items, (size_t)m, &se) !=
		    STORE_OK) {
			rc = bs_fail(msg, msg_size, "store_embeddings_put_many: %s", se.msg);
			goto out;
		}
		double t2 = bs_now();
		t_ins += t1 - t0;
		t_emb += t2 - t1;
		done += m;
		if (t2 - t_report > 5 || done == n) {
			fprintf(stderr, "# prebuild: %ld/%ld items, %.2f s per 1000 so far\n", done, n,
			        (t_ins + t_emb) / (double)done * 1000);
			t_report = t2;
		}
		if (bs_interrupted) {
			rc = bs_fail(msg, msg_size, "interrupted");
			goto out;
		}
	}
	*insert_s = t_ins;
	*embed_s = t_emb;
	if (vecs_out) {
		*vecs_out = vecs;
		vecs = NULL;
	}
out:
	store_close(st);
	free(items);
	free(imgs);
	free(rows);
	free(filename);
	free(meta);
	free(taken);
	free(vecs);
	free(local);
	return rc;
}
