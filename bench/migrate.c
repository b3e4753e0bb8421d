/*
 * bench/migrate: switching a data directory between two ViT-B/32-shaped
 * models (clipd --model B on data built with A): how long the migration
 * of --images images takes, what searches see meanwhile, and the memory
 * of both models loaded at once.
 *
 *   build/bench/migrate [--images 10000] [--photo-size 320x240]
 *       [--think-ms 50] [--after-seconds 10] [--precision auto|f32|bf16|int8]
 *       [--batch 16] [--workers N] [--model-a DIR --model-b DIR]
 *       [--tmp DIR] [--clipd PATH] [--mkmodel PATH] [--seed N] [--keep]
 *
 * 1. Checkpoints: without --model-a/--model-b, clip-mkmodel writes two
 *    ViT-B/32-shaped ones with random weights: A (quick_gelu) and B (gelu,
 *    another seed), whose config.json differ, so their fingerprints do.
 * 2. A's data directory, without encoding anything with A: clipd started
 *    once on an empty directory records A's id; then --images distinct
 *    JPEGs (bench/photos.c) go into the blob store (DATA/blobs/ab/<sha>)
 *    and the store, each with a random unit embedding for A, ready. The
 *    migration reads the blobs, so it does the real work.
 * 3. clipd with model A on it: the same searches as below for
 *    --after-seconds, the baseline (one model, nothing in the background),
 *    and its VmRSS.
 * 4. clipd with --model B on it: the migration starts at once. One client
 *    sends POST /v1/search {"text": ..., "k": 20} (eight texts in
 *    rotation), waiting --think-ms between requests, until GET /v1/stats
 *    says B is the model; every latency is kept. The daemon's VmRSS is
 *    sampled from /proc meanwhile (both models loaded) and VmHWM read.
 * 5. The same client for --after-seconds after the switch (model B alone),
 *    and VmRSS then.
 *
 * Printed: the migration's seconds and items/s (from clipd's "ready" to
 * the switch), search p50/p95/max before (A), during and after (B: its
 * gelu makes a text encode a little dearer than A's quick_gelu), RSS with
 * A alone, both models, and B alone. The client's own searches compete with the migration for
 * the cores: that is what is measured. No figure is checked: this is not
 * a test. Everything goes into a directory under --tmp, removed at the end
 * unless --keep.
 */
#include <errno.h>
#include <glib.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server_int.h"
#include "store.h"

#define START_TIMEOUT_S 900
#define STOP_TIMEOUT_S 120
#define MIGRATE_TIMEOUT_S (6 * 3600)
#define EMBED_BATCH 1000

static const char *const queries[] = {
	"a dog on a beach",
	"a photo of a cat sleeping on a sofa",
	"a red car parked in the street",
	"two people riding bicycles in the rain",
	"a bowl of fruit on a wooden table",
	"snowy mountains at sunset",
	"an astronaut floating in space",
	"a cup of coffee",
};
#define NQUERIES ((int)(sizeof queries / sizeof queries[0]))

struct opts {
	const char *model_a, *model_b, *tmp, *clipd, *mkmodel, *precision;
	int images, batch, workers, keep, think_ms, photo_w, photo_h;
	double after_s;
	uint64_t seed;
};

/* Latencies of one window, in ms. */
struct lat {
	double *v;
	size_t n, cap;
	long errors;
};

static void usage(FILE *f)
{
	fputs("usage: bench/migrate [--images 10000] [--photo-size 320x240] [--think-ms 50]\n"
	      "       [--after-seconds 10] [--precision auto|f32|bf16|int8] [--batch 16]\n"
	      "       [--workers N] [--model-a DIR --model-b DIR] [--tmp DIR] [--clipd PATH]\n"
	      "       [--mkmodel PATH] [--seed N] [--keep]\n"
	      "Time to migrate --images images from model A to model B (clipd --model B on\n"
	      "A's data), search latency during the migration and after, RSS of both models.\n",
	      f);
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static char clipd[PATH_MAX + 16], mkmodel[PATH_MAX + 16];
	char bdir[PATH_MAX];
	const char *t = getenv("TMPDIR");
	*o = (struct opts){.images = 10000, .batch = 16, .think_ms = 50, .after_s = 10,
	                   .photo_w = 320, .photo_h = 240, .precision = "auto",
	                   .tmp = t && *t ? t : "/tmp", .seed = 1};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(a, "--keep")) {
			o->keep = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "bench/migrate: %s needs a value\n", a);
			return -1;
		}
		i++;
		if (!strcmp(a, "--images"))
			o->images = atoi(v);
		else if (!strcmp(a, "--photo-size")) {
			if (sscanf(v, "%dx%d", &o->photo_w, &o->photo_h) != 2 || o->photo_w < 16 ||
			    o->photo_h < 16) {
				fprintf(stderr, "bench/migrate: --photo-size is WxH, 16 or more each\n");
				return -1;
			}
		} else if (!strcmp(a, "--think-ms"))
			o->think_ms = atoi(v);
		else if (!strcmp(a, "--after-seconds"))
			o->after_s = atof(v);
		else if (!strcmp(a, "--precision"))
			o->precision = v;
		else if (!strcmp(a, "--batch"))
			o->batch = atoi(v);
		else if (!strcmp(a, "--workers"))
			o->workers = atoi(v);
		else if (!strcmp(a, "--model-a"))
			o->model_a = v;
		else if (!strcmp(a, "--model-b"))
			o->model_b = v;
		else if (!strcmp(a, "--tmp"))
			o->tmp = v;
		else if (!strcmp(a, "--clipd"))
			o->clipd = v;
		else if (!strcmp(a, "--mkmodel"))
			o->mkmodel = v;
		else if (!strcmp(a, "--seed"))
			o->seed = strtoull(v, NULL, 10);
		else {
			fprintf(stderr, "bench/migrate: unknown option %s\n", a);
			usage(stderr);
			return -1;
		}
	}
	if (o->images < 1 || o->batch < 1 || o->think_ms < 0 || o->after_s < 0 ||
	    !o->model_a != !o->model_b) {
		fprintf(stderr, "bench/migrate: --images and --batch are at least 1; give both "
		                "--model-a and --model-b or neither\n");
		return -1;
	}
	bs_build_dir(bdir, sizeof bdir);
	if (!o->clipd) {
		snprintf(clipd, sizeof clipd, "%s/clipd", bdir);
		o->clipd = clipd;
	}
	if (!o->mkmodel) {
		snprintf(mkmodel, sizeof mkmodel, "%s/clip-mkmodel", bdir);
		o->mkmodel = mkmodel;
	}
	return 0;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !bs_interrupted)
		;
}

static int http_once(int port, const char *method, const char *path, const char *body,
                     int *status, char **out, char *msg, size_t msg_size)
{
	bs_conn *c = bs_conn_open(port, msg, msg_size);
	const char *resp;
	size_t len;
	int rc = -1;
	*out = NULL;
	if (c && !bs_request(c, method, path, "application/json", body, body ? strlen(body) : 0,
	                     status, &resp, &len, msg, msg_size)) {
		*out = strdup(resp);
		rc = *out ? 0 : bs_fail(msg, msg_size, "out of memory");
	}
	bs_conn_close(c);
	return rc;
}

/* A /proc/PID/status field in kB ("VmRSS", "VmHWM"); -1 when unreadable. */
static long proc_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	long kb = -1;
	size_t fl = strlen(field);
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, field, fl) && line[fl] == ':') {
			kb = atol(line + fl + 1);
			break;
		}
	fclose(f);
	return kb;
}

static int start_clipd(const struct opts *o, const char *model, const char *data,
                       const char *log, bs_daemon *d, char *msg, size_t msg_size)
{
	char batch[16], workers[16];
	char *argv[16];
	int n = 0;
	snprintf(batch, sizeof batch, "%d", o->batch);
	snprintf(workers, sizeof workers, "%d", o->workers);
	argv[n++] = (char *)o->clipd;
	argv[n++] = "--model";
	argv[n++] = (char *)model;
	argv[n++] = "--data";
	argv[n++] = (char *)data;
	argv[n++] = "--batch";
	argv[n++] = batch;
	argv[n++] = "--precision";
	argv[n++] = (char *)o->precision;
	if (o->workers) {
		argv[n++] = "--workers";
		argv[n++] = workers;
	}
	argv[n] = NULL;
	int rc = bs_daemon_start(argv, log, START_TIMEOUT_S, d, msg, msg_size);
	if (rc)
		bs_daemon_log_tail(d, 15);
	return rc;
}

/* ---- 2. A's data directory ------------------------------------------------ */

static int read_file(const char *path, unsigned char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	if (!f)
		return -1;
	if (fstat(fileno(f), &st) != 0 || !(*out = malloc((size_t)st.st_size + 1))) {
		fclose(f);
		return -1;
	}
	*len = fread(*out, 1, (size_t)st.st_size, f);
	fclose(f);
	return *len == (size_t)st.st_size ? 0 : -1;
}

/* The photos into DATA/blobs and the store, each ready with a random unit
 * embedding for model_id (dim). */
static int fill_store(const struct opts *o, const char *photos, const char *data,
                      const char *model_id, int dim, char *msg, size_t msg_size)
{
	char db[PATH_MAX + 16], path[PATH_MAX + 64], blob[PATH_MAX + 160];
	store *st = NULL;
	store_err se;
	int rc = 0;
	uint64_t rng = o->seed * 7919 + 1;
	float *vecs = malloc((size_t)EMBED_BATCH * (size_t)dim * sizeof *vecs);
	store_embedding_item *items = calloc(EMBED_BATCH, sizeof *items);
	size_t nb = 0;
	snprintf(db, sizeof db, "%s/clipd.db", data);
	if (!vecs || !items)
		return bs_fail(msg, msg_size, "out of memory");
	if (store_open(db, 0, &st, &se) != STORE_OK) {
		rc = bs_fail(msg, msg_size, "opening %s: %s", db, se.msg);
		goto out;
	}
	for (int i = 0; i < o->images && !bs_interrupted; i++) {
		unsigned char *bytes = NULL;
		size_t len = 0;
		snprintf(path, sizeof path, "%s/photo-%06d.jpg", photos, i);
		if (read_file(path, &bytes, &len)) {
			free(bytes);
			rc = bs_fail(msg, msg_size, "cannot read %s", path);
			goto out;
		}
		char *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, bytes, len);
		snprintf(blob, sizeof blob, "%s/blobs/%.2s", data, sha);
		g_mkdir_with_parents(blob, 0755);
		snprintf(blob, sizeof blob, "%s/blobs/%.2s/%s", data, sha, sha);
		int wrc = g_file_set_contents(blob, (const char *)bytes, (gssize)len, NULL) ? 0 : -1;
		free(bytes);
		store_image img = {.filename = path + strlen(photos) + 1, .mime = "image/jpeg",
		                   .width = o->photo_w, .height = o->photo_h, .bytes = (int64_t)len,
		                   .pinned = 1};
		snprintf(img.sha256, sizeof img.sha256, "%s", sha);
		g_free(sha);
		int64_t id;
		if (wrc || store_image_insert(st, &img, &id, &se) != STORE_OK) {
			rc = bs_fail(msg, msg_size, "storing %s: %s", path, wrc ? "blob not written" : se.msg);
			goto out;
		}
		float *v = vecs + nb * (size_t)dim;
		double norm = 0;
		for (int k = 0; k < dim; k++) {
			v[k] = (float)(bs_uniform(&rng) - 0.5);
			norm += (double)v[k] * v[k];
		}
		for (int k = 0; k < dim; k++)
			v[k] = (float)(v[k] / sqrt(norm));
		items[nb++] = (store_embedding_item){.item_id = id, .vec = v};
		if (nb == EMBED_BATCH || i == o->images - 1) {
			if (store_embeddings_put_many(st, STORE_IMAGE, model_id, dim, items, nb, &se) !=
			    STORE_OK) {
				rc = bs_fail(msg, msg_size, "storing embeddings: %s", se.msg);
				goto out;
			}
			nb = 0;
			fprintf(stderr, "# %d of %d images stored\n", i + 1, o->images);
		}
	}
out:
	store_close(st);
	free(vecs);
	free(items);
	return rc;
}

/* ---- 3 and 4. searches ---------------------------------------------------- */

static void lat_add(struct lat *l, double ms)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		double *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = ms;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double pct(struct lat *l, double p)
{
	if (!l->n)
		return 0;
	size_t i = (size_t)(p * (double)(l->n - 1) + 0.5);
	return l->v[i];
}

/* The model id GET /v1/stats names, and whether a migration is listed. */
static int served_model(int port, char *id, size_t id_size, int *migrating)
{
	char msg[256], *body;
	int status, rc = -1;
	if (http_once(port, "GET", "/v1/stats", NULL, &status, &body, msg, sizeof msg))
		return -1;
	json_t *j = json_loads(body, 0, NULL);
	const char *s = json_string_value(json_object_get(json_object_get(j, "model"), "id"));
	if (status == 200 && s) {
		snprintf(id, id_size, "%s", s);
		*migrating = json_array_size(json_object_get(j, "models")) > 1;
		rc = 0;
	}
	json_decref(j);
	free(body);
	return rc;
}

/* Searches until want_model serves (want_model non-NULL) or for seconds;
 * samples VmRSS into *rss_max_kb. */
static int search_loop(const struct opts *o, bs_daemon *d, const char *want_model, double seconds,
                       struct lat *l, long *rss_max_kb, double *switched_at, char *msg,
                       size_t msg_size)
{
	char *bodies[NQUERIES];
	bs_conn *c = bs_conn_open(d->port, msg, msg_size);
	double t0 = bs_now(), next_poll = 0;
	int q = 0, rc = 0;
	if (!c)
		return -1;
	bs_conn_set_timeout(c, 120);
	for (int i = 0; i < NQUERIES; i++) {
		json_t *j = json_pack("{s:s,s:i}", "text", queries[i], "k", 20);
		bodies[i] = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	for (;;) {
		double now = bs_now();
		if (bs_interrupted) {
			rc = bs_fail(msg, msg_size, "interrupted");
			break;
		}
		if (!want_model && now - t0 >= seconds)
			break;
		if (want_model && now >= next_poll) {
			char id[64];
			int mig = 1;
			long kb = proc_kb(d->pid, "VmRSS");
			if (kb > *rss_max_kb)
				*rss_max_kb = kb;
			if (!served_model(d->port, id, sizeof id, &mig) && !strcmp(id, want_model) && !mig) {
				*switched_at = now;
				break;
			}
			if (now - t0 > MIGRATE_TIMEOUT_S) {
				rc = bs_fail(msg, msg_size, "no switch after %.0f s", now - t0);
				break;
			}
			next_poll = now + 0.25;
		}
		const char *resp;
		size_t len;
		int status;
		const char *b = bodies[q++ % NQUERIES];
		double s0 = bs_now();
		if (bs_request(c, "POST", "/v1/search", "application/json", b, strlen(b), &status,
		               &resp, &len, msg, msg_size) || status != 200)
			l->errors++;
		else
			lat_add(l, (bs_now() - s0) * 1000);
		if (o->think_ms)
			sleep_ms(o->think_ms);
	}
	for (int i = 0; i < NQUERIES; i++)
		free(bodies[i]);
	bs_conn_close(c);
	qsort(l->v, l->n, sizeof *l->v, cmp_double);
	return rc;
}

/* ---- main ---------------------------------------------------------------- */

static int make_model(const struct opts *o, const char *dir, int b, const char *log, char *msg,
                      size_t msg_size)
{
	char *mk_a[] = {(char *)o->mkmodel, "--preset", "vit-b-32", "--seed", "1", "--out",
	                (char *)dir, NULL};
	char *mk_b[] = {(char *)o->mkmodel, "--preset", "vit-b-32", "--act", "gelu", "--seed", "2",
	                "--out", (char *)dir, NULL};
	fprintf(stderr, "# writing ViT-B/32-shaped checkpoint %s\n", b ? "B (gelu)" : "A");
	return bs_run(b ? mk_b : mk_a, log, msg, msg_size);
}

int main(int argc, char **argv)
{
	struct opts o;
	char msg[1024], model_a[PATH_MAX], model_b[PATH_MAX], data[PATH_MAX], photos[PATH_MAX],
	    log[PATH_MAX + 32];
	char *tmp = NULL, *a_id = NULL, *dim_s = NULL, b_id[64] = "";
	bs_daemon d = {.pid = -1};
	struct lat before = {0}, during = {0}, after = {0};
	long rss_a = -1, rss_both = -1, rss_hwm = -1, rss_one = -1, unused_kb = -1;
	double t_ready = 0, t_switch = 0;
	int rc = 1;
	store *st = NULL;
	store_err se;

	if (parse_opts(argc, argv, &o))
		return 2;
	bs_catch_signals();
	if (!(tmp = bs_mkdtemp(o.tmp, msg, sizeof msg)))
		goto fail;
	snprintf(log, sizeof log, "%s/mkmodel.log", tmp);
	if (o.model_a) {
		snprintf(model_a, sizeof model_a, "%s", o.model_a);
		snprintf(model_b, sizeof model_b, "%s", o.model_b);
	} else {
		snprintf(model_a, sizeof model_a, "%s/model-a", tmp);
		snprintf(model_b, sizeof model_b, "%s/model-b", tmp);
		if (make_model(&o, model_a, 0, log, msg, sizeof msg) ||
		    make_model(&o, model_b, 1, log, msg, sizeof msg))
			goto fail;
	}
	snprintf(data, sizeof data, "%s/data", tmp);
	snprintf(photos, sizeof photos, "%s/photos", tmp);

	/* 2. A's id, then the store filled as if A had embedded everything. */
	snprintf(log, sizeof log, "%s/clipd-a.log", tmp);
	fprintf(stderr, "# starting clipd with model A on an empty data directory for its id\n");
	if (start_clipd(&o, model_a, data, log, &d, msg, sizeof msg) ||
	    bs_daemon_stop(&d, STOP_TIMEOUT_S, msg, sizeof msg))
		goto fail;
	snprintf(log, sizeof log, "%s/clipd.db", data);
	if (store_open(log, 0, &st, &se) != STORE_OK ||
	    store_kv_get(st, "model.id", &a_id, &se) != STORE_OK ||
	    store_kv_get(st, "model.dim", &dim_s, &se) != STORE_OK) {
		bs_fail(msg, sizeof msg, "reading the model of %s: %s", log, se.msg);
		goto fail;
	}
	store_close(st);
	st = NULL;
	int64_t bytes = 0;
	fprintf(stderr, "# writing %d photos of %dx%d\n", o.images, o.photo_w, o.photo_h);
	if (mkdir(photos, 0755) != 0) {
		bs_fail(msg, sizeof msg, "mkdir %s: %s", photos, strerror(errno));
		goto fail;
	}
	if (bs_make_photos(photos, o.images, o.photo_w, o.photo_h, NULL, o.seed, &bytes, msg,
	                   sizeof msg) ||
	    fill_store(&o, photos, data, a_id, atoi(dim_s), msg, sizeof msg))
		goto fail;

	/* 3. The baseline: A alone on its data. */
	snprintf(log, sizeof log, "%s/clipd-a2.log", tmp);
	fprintf(stderr, "# starting clipd with model A: the baseline\n");
	if (start_clipd(&o, model_a, data, log, &d, msg, sizeof msg) ||
	    search_loop(&o, &d, NULL, o.after_s, &before, &unused_kb, &t_switch, msg, sizeof msg))
		goto fail;
	rss_a = proc_kb(d.pid, "VmRSS");
	if (bs_daemon_stop(&d, STOP_TIMEOUT_S, msg, sizeof msg))
		goto fail;

	/* 4. B on A's data: the migration, with searches. */
	snprintf(log, sizeof log, "%s/clipd-b.log", tmp);
	fprintf(stderr, "# starting clipd with model B: the migration\n");
	double t_start = bs_now();
	if (start_clipd(&o, model_b, data, log, &d, msg, sizeof msg))
		goto fail;
	t_ready = bs_now();
	{
		int mig = 0;
		if (served_model(d.port, b_id, sizeof b_id, &mig) || strcmp(b_id, a_id) || !mig) {
			bs_fail(msg, sizeof msg, "clipd with model B is not migrating (serves %s)", b_id);
			goto fail;
		}
	}
	/* B's id is in the start-up line "... embedded again with model ID
	 * (DIR)"; the switch is when stats names it with no migration. */
	{
		static const char key[] = "embedded again with model ";
		char *text = NULL;
		g_file_get_contents(d.log_path, &text, NULL, NULL);
		const char *p = text ? strstr(text, key) : NULL;
		b_id[0] = 0;
		if (p)
			sscanf(p + strlen(key), "%63[^ ]", b_id);
		g_free(text);
		if (!b_id[0]) {
			bs_fail(msg, sizeof msg, "model B's id is not in %s", d.log_path);
			goto fail;
		}
	}
	if (search_loop(&o, &d, b_id, 0, &during, &rss_both, &t_switch, msg, sizeof msg))
		goto fail;
	rss_hwm = proc_kb(d.pid, "VmHWM");
	/* 5. After: B alone. */
	if (search_loop(&o, &d, NULL, o.after_s, &after, &unused_kb, &t_switch, msg, sizeof msg))
		goto fail;
	rss_one = proc_kb(d.pid, "VmRSS");
	if (bs_daemon_stop(&d, STOP_TIMEOUT_S, msg, sizeof msg))
		goto fail;

	double mig_s = t_switch - t_ready;
	printf("bench/migrate: %d images %dx%d (%.1f MB), ViT-B/32-shaped A -> B, precision %s, "
	       "batch %d, think %d ms\n",
	       o.images, o.photo_w, o.photo_h, (double)bytes / 1e6, o.precision, o.batch, o.think_ms);
	printf("  clipd start with B (both models, indexes):  %.1f s\n", t_ready - t_start);
	printf("  migration, ready to switch:                 %.1f s (%.1f images/s)\n", mig_s,
	       mig_s > 0 ? o.images / mig_s : 0);
	printf("  search before (A alone):  %zu ok, %ld errors, p50 %.1f ms, p95 %.1f ms, max %.1f ms\n",
	       before.n, before.errors, pct(&before, 0.5), pct(&before, 0.95),
	       before.n ? before.v[before.n - 1] : 0);
	printf("  search during migration: %zu ok, %ld errors, p50 %.1f ms, p95 %.1f ms, max %.1f ms\n",
	       during.n, during.errors, pct(&during, 0.5), pct(&during, 0.95),
	       during.n ? during.v[during.n - 1] : 0);
	printf("  search after the switch: %zu ok, %ld errors, p50 %.1f ms, p95 %.1f ms, max %.1f ms\n",
	       after.n, after.errors, pct(&after, 0.5), pct(&after, 0.95),
	       after.n ? after.v[after.n - 1] : 0);
	printf("  RSS: A alone %.0f MB; both models %.0f MB (max sampled), VmHWM %.0f MB; B alone "
	       "after the switch %.0f MB\n",
	       rss_a / 1024.0, rss_both / 1024.0, rss_hwm / 1024.0, rss_one / 1024.0);
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "bench/migrate: %s\n", msg);
	if (d.pid > 0) {
		bs_daemon_log_tail(&d, 20);
		bs_daemon_stop(&d, STOP_TIMEOUT_S, msg, sizeof msg);
	}
out:
	store_close(st);
	free(a_id);
	free(dim_s);
	free(before.v);
	free(during.v);
	free(after.v);
	if (tmp) {
		if (o.keep)
			fprintf(stderr, "# kept %s\n", tmp);
		else
			bs_rmtree(tmp);
	}
	free(tmp);
	return rc;
}
