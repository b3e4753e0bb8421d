/*
 * bench/server: what the daemon delivers over HTTP, next to what its
 * encoder can do bare, measured in the same run on the same checkpoint.
 *
 *   build/bench/server [--model DIR] [--items 100000] [--images 200]
 *       [--clients 1,8,32] [--seconds 10] [--batch 16] [--workers N]
 *       [--index exact] [--mode vector|keyword|hybrid] [--precision auto|f32|bf16|int8]
 *       [--photo-size 640x480]
 *       [--fast-decode] [--tmp DIR] [--sources DIR] [--keep] [--json]
 *
 * 1. Search. A data directory with --items images is built without
 *    encoding any: clipd is started once on an empty directory so that it
 *    records its model id (kv "model.id"), then bench/prebuild.c writes
 *    image rows and random unit embeddings for that id through the store's
 *    calls, and clipd is started again on it (it catches its index up
 *    from the store: the "ready in" figure). Rows and embeddings go 1000
 *    to a transaction (store_images_insert_many, store_embeddings_put_many).
 *    Clients (bench/load.c: one keep-alive connection per thread,
 *    closed loop) send POST /v1/search {"text": ..., "k": 20, "mode": --mode} with eight
 *    query texts in rotation for --seconds per level of --clients. Printed:
 *    QPS, p50/p90/p99, and the text encoder's share: the bare encode time of
 *    the same queries (measured in this process just before, with the
 *    daemon's thread count) and, from GET /metrics, the daemon's own mean
 *    encode time per query, over the mean request latency.
 * 2. Ingest. --images distinct JPEGs of --photo-size (640x480) are written
 *    (bench/photos.c; clipd gets --fast-decode when given),
 *    a fresh clipd gets POST /v1/ingest {"dir": ...} (the directory under
 *    --allow-root), and the time from the request until GET /v1/jobs/{id}
 *    says "done" gives images/s. The bare encoder's images/s at the
 *    daemon's batch size, with its workers x BLAS threads, is measured in
 *    this process just before; the ratio is the pipeline's efficiency
 *    (target >= 85%). The two are measured seconds apart, so other work
 *    on the machine skews the ratio either way; the daemon's own image
 *    encode seconds (GET /metrics) over the time until done, "encoder
 *    busy", is measured in the same window and says the same thing
 *    without that skew: how much of the time the encoder was working.
 *
 *    With --filters 0.5,0.1,0.01,0.001: one client, --seconds / 2 each,
 *    the same text queries and then searches by a stored image
 *    ({"image_id"}: no text encode, so the filter's own cost shows), first
 *    unfiltered, then with a capture-time range keeping each share of the
 *    images (bench/prebuild.c spreads their times uniformly over ten
 *    years; the count the filter kept is the response's "filtered").
 *
 *    Then GET /v1/duplicates?threshold=0.95 twice: the time to compute the
 *    near-duplicate groups of every image, and to answer from the cache.
 *
 * 3. With --import, after the ingest: the same photos embedded by
 *    clip-embed --shard 0/1 (one process, as one task of a cluster's job
 *    array) and imported by a fresh clipd with POST /v1/import; printed:
 *    clip-embed's images/s and the import's, next to the daemon's ingest.
 *
 * --precision (default auto) is passed to clipd as its --precision and
 * opens this process's model with clip_model_open_opts the same way, so
 * the bare figures and the daemon's are of the same number format; the
 * header prints the precision auto resolved to. Threads per product are
 * set with clip_set_threads, as clipd's main.c does (OpenBLAS's pool and
 * oneDNN's OpenMP team).
 *
 * Without --model a ViT-B/32-shaped checkpoint with random weights is
 * written by clip-mkmodel (605 MB, speed does not depend on the values).
 * Everything goes into a directory of our own under --tmp ($TMPDIR or
 * /tmp), removed at the end unless --keep.
 *
 * The environment reaches both this process and clipd: OMP_WAIT_POLICY
 * in particular (printed in the header) changes short text encodes
 * several-fold when other processes busy the cores.
 *
 * Output: a plain table on stdout, progress on stderr; with --json also one
 * JSON object per line for each figure. No figure is checked: this is not a
 * test.
 */
#include <dirent.h>
#include <errno.h>
#include <glib.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vips/vips.h>

#include "clip.h"
#include "server_int.h"
#include "store.h"

#define MAX_LEVELS 16
#define PREBUILD_BATCH 1000
#define START_TIMEOUT_S 900
#define STOP_TIMEOUT_S 120
#define JOB_TIMEOUT_S 3600

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
	const char *model, *tmp, *sources, *clipd, *mkmodel, *index, *mode;
	int import;              /* --import: the ingest's photos through clip-embed --shard */
	clip_precision precision;
	long items;
	int images, batch, workers, keep, json;
	int photo_w, photo_h, fast_decode;
	int clients[MAX_LEVELS], nlevels;
	double filters[MAX_LEVELS];  /* --filters: shares of the images a date range keeps */
	int nfilters;
	double seconds;
	uint64_t seed;
};

/* Figures of one run, printed at the end. */
struct figures {
	int cores, workers, blas, dim;
	const char *precision;  /* what the model runs in ("bf16" for auto here) */
	double mkmodel_s;
	/* search */
	double prebuild_s, insert_s, embed_s;
	long search_ready_ms;
	double maint_wait_s;     /* index maintenance after ready, before the searches */
	char index_factory[64];  /* the image index the searches ran on */
	double text7_ms, textq_ms;      /* bare, in-process */
	int q_tokens_min, q_tokens_max;
	bs_load_result load[MAX_LEVELS];
	double d_encode_ms[MAX_LEVELS]; /* the daemon's mean text encode per query, -1: unknown */
	int nlevels_done;
	/* --filters: [text, image][0 unfiltered, 1.. each share] */
	bs_load_result filt[2][MAX_LEVELS + 1];
	long filt_kept[MAX_LEVELS + 1];
	int filt_done;
	double dups_s[2];               /* GET /v1/duplicates: computed, then cached; -1: failed */
	long dups_groups, dups_grouped;
	/* ingest */
	int64_t photo_bytes;
	double bare_ips;
	long ingest_ready_ms;
	double ack_s, done_s;
	double ingest_encode_s;         /* the daemon's image encode seconds, -1: unknown */
	long ingested, ingest_failed;
	int search_done, ingest_done, import_done;
	double shard_embed_s, import_s; /* --import: clip-embed's run, POST /v1/import */
	long imported;
};

static void usage(FILE *f)
{
	fputs("usage: bench/server [--model DIR] [--items 100000] [--images 200] [--clients 1,8,32]\n"
	      "       [--seconds 10] [--batch 16] [--workers N] [--index exact] [--mode vector|keyword|hybrid]\n"
	      "       [--precision auto|f32|bf16|int8] [--photo-size 640x480] [--fast-decode]\n"
	      "       [--tmp DIR] [--sources DIR] [--clipd PATH] [--mkmodel PATH] [--seed N]\n"
	      "       [--import] [--keep] [--json]\n"
	      "Search QPS and latency over HTTP with --items stored images, and bulk ingest\n"
	      "images/s against the bare encoder. --items 0 or --images 0 skips a part.\n"
	      "Without --model, a ViT-B/32-shaped checkpoint is written with clip-mkmodel.\n",
	      f);
}

static int parse_list(const char *s, int *out, int max)
{
	int n = 0;
	while (*s) {
		char *end;
		long v = strtol(s, &end, 10);
		if (end == s || v < 1 || v > 1024 || n == max)
			return -1;
		out[n++] = (int)v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	return n;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static char clipd[PATH_MAX + 16], mkmodel[PATH_MAX + 16];
	char bdir[PATH_MAX];
	const char *t = getenv("TMPDIR");
	*o = (struct opts){.items = 100000, .images = 200, .batch = 16, .seconds = 10,
	                   .photo_w = 640, .photo_h = 480,
	                   .tmp = t && *t ? t : "/tmp", .index = "exact", .mode = "vector", .seed = 1};
	o->nlevels = parse_list("1,8,32", o->clients, MAX_LEVELS);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(a, "--json")) {
			o->json = 1;
			continue;
		} else if (!strcmp(a, "--keep")) {
			o->keep = 1;
			continue;
		} else if (!strcmp(a, "--fast-decode")) {
			o->fast_decode = 1;
			continue;
		} else if (!strcmp(a, "--import")) {
			o->import = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "bench/server: %s needs a value\n", a);
			return -1;
		}
		i++;
		if (!strcmp(a, "--model"))
			o->model = v;
		else if (!strcmp(a, "--items"))
			o->items = atol(v);
		else if (!strcmp(a, "--images"))
			o->images = atoi(v);

		else if (!strcmp(a, "--clients")) {
			if ((o->nlevels = parse_list(v, o->clients, MAX_LEVELS)) < 0) {
				fprintf(stderr, "bench/server: --clients takes numbers 1..1024 like 1,8,32\n");
				return -1;
			}
		} else if (!strcmp(a, "--seconds"))
			o->seconds = atof(v);
		else if (!strcmp(a, "--batch"))
			o->batch = atoi(v);
		else if (!strcmp(a, "--workers"))
			o->workers = atoi(v);
		else if (!strcmp(a, "--index"))
			o->index = v;
		else if (!strcmp(a, "--mode")) {
			if (strcmp(v, "vector") && strcmp(v, "keyword") && strcmp(v, "hybrid")) {
				fprintf(stderr, "bench/server: --mode is vector, keyword or hybrid\n");
				return -1;
			}
			o->mode = v;
		}
		else if (!strcmp(a, "--photo-size")) {
			if (sscanf(v, "%dx%d", &o->photo_w, &o->photo_h) != 2 || o->photo_w < 16 ||
			    o->photo_h < 16 || o->photo_w > 10000 || o->photo_h > 10000) {
				fprintf(stderr, "bench/server: --photo-size takes WxH, 16..10000 each\n");
				return -1;
			}
		}
		else if (!strcmp(a, "--precision")) {
			if (clip_precision_parse(v, &o->precision)) {
				fprintf(stderr, "bench/server: --precision takes auto, f32, bf16 or int8\n");
				return -1;
			}
		}
		else if (!strcmp(a, "--tmp"))
			o->tmp = v;
		else if (!strcmp(a, "--sources"))
			o->sources = v;
		else if (!strcmp(a, "--clipd"))
			o->clipd = v;
		else if (!strcmp(a, "--mkmodel"))
			o->mkmodel = v;
		else if (!strcmp(a, "--filters")) {
			char *end;
			const char *p = v;
			o->nfilters = 0;
			while (p && *p && o->nfilters < MAX_LEVELS) {
				double f = strtod(p, &end);
				if (end == p || !(f > 0 && f <= 1)) {
					fprintf(stderr, "bench/server: --filters takes shares in (0, 1], "
					                "e.g. 0.5,0.1,0.01\n");
					return -1;
				}
				o->filters[o->nfilters++] = f;
				p = *end == ',' ? end + 1 : end;
				if (*end && *end != ',')
					break;
			}
		}
		else if (!strcmp(a, "--seed"))
			o->seed = strtoull(v, NULL, 10);
		else {
			fprintf(stderr, "bench/server: unknown option %s\n", a);
			usage(stderr);
			return -1;
		}
	}
	if (o->items < 0 || o->images < 0 || o->seconds <= 0 || o->batch < 1 || o->batch > 256 ||
	    o->workers < 0) {
		fprintf(stderr, "bench/server: --items/--images >= 0, --seconds > 0, --batch 1..256\n");
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

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

/* The first three fields of /proc/loadavg: others' work skews every figure. */
static const char *load_average(void)
{
	static char buf[64];
	FILE *f = fopen("/proc/loadavg", "r");
	snprintf(buf, sizeof buf, "?");
	if (f) {
		double a, b, c;
		if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
			snprintf(buf, sizeof buf, "%.2f %.2f %.2f", a, b, c);
		fclose(f);
	}
	return buf;
}

/* ---- the bare encoder ---------------------------------------------------- */

/* Median latency of single-text encodes, cycling through rows ids[n][C],
 * for about `seconds`. */
static double text_latency(clip_ctx *c, const int32_t *ids, int n, int C, int dim,
                           double seconds)
{
	double runs[4096];
	int k = 0;
	float *out = malloc((size_t)dim * sizeof *out);
	if (!out)
		return -1;
	for (int i = 0; i < n; i++)
		clip_encode_texts(c, 1, ids + (size_t)i * C, out, NULL); /* warm-up */
	double start = bs_now();
	while (k < 4096 && (k < 3 * n || bs_now() - start < seconds) && !bs_interrupted) {
		double s = bs_now();
		clip_encode_texts(c, 1, ids + (size_t)(k % n) * C, out, NULL);
		runs[k++] = bs_now() - s;
	}
	free(out);
	qsort(runs, (size_t)k, sizeof runs[0], cmp_double);
	return runs[k / 2] * 1e3;
}

static int measure_texts(const clip_model *m, double seconds, struct figures *fg, char *msg,
                         size_t msg_size)
{
	int C = clip_model_context(m), D = clip_model_dim(m);
	int32_t *ids = calloc((size_t)(NQUERIES + 1) * C, sizeof *ids);
	clip_ctx *c = NULL;
	clip_err ce;
	int rc = 0;
	if (!ids)
		return bs_fail(msg, msg_size, "out of memory");
	if (clip_ctx_new(m, 1, &c, &ce) != CLIP_OK) {
		rc = bs_fail(msg, msg_size, "clip_ctx_new: %s", ce.msg);
		goto out;
	}
	/* As bench/model: <|startoftext|>, 5 tokens, <|endoftext|>. */
	ids[0] = 49406;
	for (int i = 1; i < 6; i++)
		ids[i] = 320 + i;
	ids[6] = 49407;
	fg->text7_ms = text_latency(c, ids, 1, C, D, seconds / 2);
	fg->q_tokens_min = INT_MAX;
	fg->q_tokens_max = 0;
	for (int q = 0; q < NQUERIES; q++) {
		int len;
		if (clip_tokenize(m, queries[q], ids + (size_t)(q + 1) * C, &len, &ce) != CLIP_OK) {
			rc = bs_fail(msg, msg_size, "clip_tokenize: %s", ce.msg);
			goto out;
		}
		fg->q_tokens_min = len < fg->q_tokens_min ? len : fg->q_tokens_min;
		fg->q_tokens_max = len > fg->q_tokens_max ? len : fg->q_tokens_max;
	}
	fg->textq_ms = text_latency(c, ids + C, NQUERIES, C, D, seconds);
out:
	clip_ctx_free(c);
	free(ids);
	return rc;
}

struct enc_thread {
	pthread_t th;
	clip_ctx *ctx;
	const float *pix;
	float *out;
	int batch;
	double start, until;
	long images;
	double last;
};

static void *enc_main(void *p)
{
	struct enc_thread *t = p;
	t->last = t->start;
	while (!bs_interrupted) {
		clip_encode_images(t->ctx, t->batch, t->pix, t->out, NULL);
		t->last = bs_now();
		t->images += t->batch;
		if (t->last >= t->until)
			break;
	}
	return NULL;
}

/* Images/s of `workers` threads each encoding batches of `batch` with its
 * own context, as clipd's workers do, for about `seconds` after a warm-up
 * batch each. */
static int measure_images(const clip_model *m, int workers, int batch, double seconds,
                          double *ips, char *msg, size_t msg_size)
{
	int S = clip_model_image_size(m), D = clip_model_dim(m);
	size_t plane = (size_t)3 * S * S;
	struct enc_thread *t = calloc((size_t)workers, sizeof *t);
	float *pix = malloc((size_t)batch * plane * sizeof *pix);
	int rc = 0, started = 0;
	if (!t || !pix) {
		rc = bs_fail(msg, msg_size, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < (size_t)batch * plane; i++)
		pix[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
	for (int w = 0; w < workers; w++) {
		clip_err ce;
		t[w].pix = pix;
		t[w].batch = batch;
		if (clip_ctx_new(m, batch, &t[w].ctx, &ce) != CLIP_OK) {
			rc = bs_fail(msg, msg_size, "encoder context: %s", ce.msg);
			goto out;
		}
		if (!(t[w].out = malloc((size_t)batch * D * sizeof(float)))) {
			rc = bs_fail(msg, msg_size, "out of memory");
			goto out;
		}
		clip_encode_images(t[w].ctx, batch, pix, t[w].out, NULL); /* warm-up */
	}
	double start = bs_now();
	for (int w = 0; w < workers; w++) {
		t[w].start = start;
		t[w].until = start + seconds;
		if (pthread_create(&t[w].th, NULL, enc_main, &t[w]) != 0) {
			rc = bs_fail(msg, msg_size, "cannot start an encoder thread");
			break;
		}
		started++;
	}
	long images = 0;
	double end = start;
	for (int w = 0; w < started; w++) {
		pthread_join(t[w].th, NULL);
		images += t[w].images;
		end = t[w].last > end ? t[w].last : end;
	}
	*ips = end > start ? (double)images / (end - start) : 0;
out:
	for (int w = 0; t && w < workers; w++) {
		clip_ctx_free(t[w].ctx);
		free(t[w].out);
	}
	free(t);
	free(pix);
	return rc;
}

/* ---- the daemon over HTTP ------------------------------------------------- */

/* One request on a fresh connection; the body is copied into *out
 * (malloc'ed). */
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

/* Waits until GET /v1/stats shows no maintenance of the image index
 * running or due, and records how long that took and the factory. */
static int wait_maintenance(int port, struct figures *fg, char *msg, size_t msg_size)
{
	double t0 = bs_now(), last = t0;
	for (;;) {
		int status;
		char *body;
		if (http_once(port, "GET", "/v1/stats", NULL, &status, &body, msg, msg_size))
			return -1;
		json_error_t je;
		json_t *j = json_loads(body, 0, &je);
		free(body);
		json_t *ix = json_object_get(json_object_get(j, "index"), "images");
		json_t *mt = json_object_get(ix, "maintenance");
		const char *f = json_string_value(json_object_get(ix, "factory"));
		snprintf(fg->index_factory, sizeof fg->index_factory, "%s", f ? f : "?");
		int busy = !json_is_null(json_object_get(mt, "running")) ||
		           !json_is_null(json_object_get(mt, "due"));
		json_decref(j);
		if (status != 200 || !mt)
			return bs_fail(msg, msg_size, "GET /v1/stats: %d, no index maintenance state", status);
		double now = bs_now();
		if (!busy) {
			fg->maint_wait_s = now - t0;
			return 0;
		}
		if (now - last > 30) {
			fprintf(stderr, "# search: index maintenance still running after %.0f s\n", now - t0);
			last = now;
		}
		if (bs_interrupted)
			return bs_fail(msg, msg_size, "interrupted");
		sleep_s(1);
	}
}

/* From GET /metrics: a tower's ("text" or "image") encode seconds and
 * passes and the items encoded. 0 when all three series were found. */
static int encode_metrics(int port, const char *tower, double *sum, double *passes,
                          double *items)
{
	char msg[256], *body, k_sum[96], k_count[96], k_items[96];
	int status, found = 0;
	if (http_once(port, "GET", "/metrics", NULL, &status, &body, msg, sizeof msg))
		return -1;
	snprintf(k_sum, sizeof k_sum, "clipd_encode_seconds_sum{tower=\"%s\"} ", tower);
	snprintf(k_count, sizeof k_count, "clipd_encode_seconds_count{tower=\"%s\"} ", tower);
	snprintf(k_items, sizeof k_items, "clipd_encoded_items_total{tower=\"%s\"} ", tower);
	char *save = NULL;
	for (char *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, k_sum, strlen(k_sum)) && sscanf(line + strlen(k_sum), "%lf", sum) == 1)
			found |= 1;
		else if (!strncmp(line, k_count, strlen(k_count)) &&
		         sscanf(line + strlen(k_count), "%lf", passes) == 1)
			found |= 2;
		else if (!strncmp(line, k_items, strlen(k_items)) &&
		         sscanf(line + strlen(k_items), "%lf", items) == 1)
			found |= 4;
	}
	free(body);
	return status == 200 && found == 7 ? 0 : -1;
}

/* Starts clipd on data_dir with the benchmark's settings. */
static int start_clipd(const struct opts *o, const char *data_dir, const char *allow_root,
                       const char *log_path, bs_daemon *d, char *msg, size_t msg_size)
{
	char batch[16], workers[16];
	char *argv[24];
	int n = 0;
	snprintf(batch, sizeof batch, "%d", o->batch);
	snprintf(workers, sizeof workers, "%d", o->workers);
	argv[n++] = (char *)o->clipd;
	argv[n++] = "--model";
	argv[n++] = (char *)o->model;
	argv[n++] = "--data";
	argv[n++] = (char *)data_dir;
	argv[n++] = "--batch";
	argv[n++] = batch;
	argv[n++] = "--index";
	argv[n++] = (char *)o->index;
	argv[n++] = "--precision";
	argv[n++] = (char *)clip_precision_name(o->precision);
	if (o->workers) {
		argv[n++] = "--workers";
		argv[n++] = workers;
	}
	if (o->fast_decode)
		argv[n++] = "--fast-decode";
	if (allow_root) {
		argv[n++] = "--allow-root";
		argv[n++] = (char *)allow_root;
	}
	argv[n] = NULL;
	int rc = bs_daemon_start(argv, log_path, START_TIMEOUT_S, d, msg, msg_size);
	if (rc)
		bs_daemon_log_tail(d, 15);
	return rc;
}

static int stop_clipd(bs_daemon *d, char *msg, size_t msg_size)
{
	int rc = bs_daemon_stop(d, STOP_TIMEOUT_S, msg, msg_size);
	if (rc)
		bs_daemon_log_tail(d, 15);
	return rc;
}

/* Stops the daemon; a failure to stop is the error unless there was one
 * already (then it is only printed). */
static int stop_after(bs_daemon *d, int rc, char *msg, size_t msg_size)
{
	char m2[512];
	if (!stop_clipd(d, rc ? m2 : msg, rc ? sizeof m2 : msg_size))
		return rc;
	if (rc)
		fprintf(stderr, "bench/server: %s\n", m2);
	return -1;
}

/* ---- 1. search ------------------------------------------------------------ */

/* Filtered searches (--filters): text and image queries, unfiltered and
 * with a capture-time range keeping each share. */
static int run_filters(const struct opts *o, int port, struct figures *fg, char *msg,
                       size_t msg_size)
{
	char *bodies[NQUERIES] = {NULL};
	int rc = 0;
	for (int kind = 0; kind < 2 && !rc && !bs_interrupted; kind++) {
		for (int f = 0; f <= o->nfilters && !rc && !bs_interrupted; f++) {
			char before[32];
			if (f) {
				time_t t = (time_t)(PREBUILD_EPOCH +
				                    (int64_t)(o->filters[f - 1] * PREBUILD_DAYS * 86400.0));
				struct tm tm;
				gmtime_r(&t, &tm);
				strftime(before, sizeof before, "%Y-%m-%dT%H:%M:%S", &tm);
			}
			for (int q = 0; q < NQUERIES; q++) {
				json_t *j = kind ? json_pack("{s:I,s:i}", "image_id",
				                             (json_int_t)(1 + q * (o->items / NQUERIES)), "k", 20)
				                 : json_pack("{s:s,s:i}", "text", queries[q], "k", 20);
				if (f) {
					json_object_set_new(j, "taken_after", json_string("2015-01-01"));
					json_object_set_new(j, "taken_before", json_string(before));
				}
				free(bodies[q]);
				bodies[q] = json_dumps(j, JSON_COMPACT);
				json_decref(j);
			}
			int status = 0;
			char *out = NULL;
			if ((rc = http_once(port, "POST", "/v1/search", bodies[0], &status, &out, msg,
			                    msg_size)))
				break;
			json_t *j = json_loads(out ? out : "", 0, NULL);
			if (status != 200)
				rc = bs_fail(msg, msg_size, "filtered search: HTTP %d %s", status, out);
			fg->filt_kept[f] = f ? (long)json_integer_value(json_object_get(j, "filtered"))
			                     : o->items;
			json_decref(j);
			free(out);
			if (rc)
				break;
			fprintf(stderr, "# search: %s queries, %s%s\n", kind ? "image" : "text",
			        f ? "taken before " : "unfiltered", f ? before : "");
			rc = bs_load_run(port, "/v1/search", 1, o->seconds / 2,
			                 (const char *const *)bodies, NQUERIES, &fg->filt[kind][f], msg,
			                 msg_size);
		}
	}
	if (!rc)
		fg->filt_done = 1;
	for (int q = 0; q < NQUERIES; q++)
		free(bodies[q]);
	return rc;
}

static int run_search(const struct opts *o, const clip_model *m, const char *dir,
                      struct figures *fg, char *msg, size_t msg_size)
{
	char data[PATH_MAX], db[PATH_MAX + 16], log[PATH_MAX + 16];
	char *bodies[NQUERIES] = {NULL};
	char *model_id = NULL, *dim_s = NULL;
	bs_daemon d = {.pid = -1};
	store *st = NULL;
	store_err se;
	int rc = 0;
	snprintf(data, sizeof data, "%s/data", dir);
	snprintf(db, sizeof db, "%s/clipd.db", data);
	snprintf(log, sizeof log, "%s/clipd-search.log", dir);

	/* The model id is whatever clipd records in a new data directory. */
	fprintf(stderr, "# search: starting clipd on an empty data directory for its model id\n");
	if ((rc = start_clipd(o, data, NULL, log, &d, msg, msg_size)) ||
	    (rc = stop_clipd(&d, msg, msg_size)))
		goto out;
	if (store_open(db, 0, &st, &se) != STORE_OK ||
	    store_kv_get(st, "model.id", &model_id, &se) != STORE_OK ||
	    store_kv_get(st, "model.dim", &dim_s, &se) != STORE_OK) {
		rc = bs_fail(msg, msg_size, "reading the model of %s: %s", db, se.msg);
		goto out;
	}
	store_close(st);
	st = NULL;
	if (atoi(dim_s) != fg->dim) {
		rc = bs_fail(msg, msg_size, "clipd recorded dimension %s, the model has %d", dim_s,
		             fg->dim);
		goto out;
	}

	fprintf(stderr, "# search: writing %ld images with embeddings for %s into %s\n", o->items,
	        model_id, data);
	double t0 = bs_now();
	if ((rc = bs_prebuild(db, o->items, PREBUILD_BATCH, model_id, fg->dim, o->seed, NULL,
	                      &fg->insert_s, &fg->embed_s, msg, msg_size)))
		goto out;
	fg->prebuild_s = bs_now() - t0;

	fprintf(stderr, "# search: bare text encoder\n");
	if ((rc = measure_texts(m, o->seconds / 4 > 0.5 ? o->seconds / 4 : 0.5, fg, msg, msg_size)))
		goto out;

	fprintf(stderr, "# search: starting clipd with %ld images\n", o->items);
	if ((rc = start_clipd(o, data, NULL, log, &d, msg, msg_size)))
		goto out;
	fg->search_ready_ms = d.ready_ms;
	/* An auto or compressed index may still be training or moving in the
	 * background: searches are measured on the index it ends with. */
	if ((rc = wait_maintenance(d.port, fg, msg, msg_size)))
		goto out;
	for (int q = 0; q < NQUERIES; q++) {
		json_t *j = json_pack("{s:s,s:i,s:s}", "text", queries[q], "k", 20, "mode", o->mode);
		bodies[q] = json_dumps(j, JSON_COMPACT);
		json_decref(j);
		if (!bodies[q]) {
			rc = bs_fail(msg, msg_size, "out of memory");
			goto out;
		}
	}
	/* Warm-up: about a second of one client (pages in the weights). */
	bs_load_result warm;
	if ((rc = bs_load_run(d.port, "/v1/search", 1, 0.5 + NQUERIES * 0.05,
	                      (const char *const *)bodies, NQUERIES, &warm, msg, msg_size)))
		goto out;
	if (warm.errors) {
		rc = bs_fail(msg, msg_size, "search fails: %s", warm.first_error);
		goto out;
	}
	for (int l = 0; l < o->nlevels && !bs_interrupted; l++) {
		double s0 = 0, p0 = 0, i0 = 0, s1 = 0, p1 = 0, i1 = 0;
		int have = !encode_metrics(d.port, "text", &s0, &p0, &i0);
		bs_load_result *r = &fg->load[l];
		fprintf(stderr, "# search: %d clients for %g s\n", o->clients[l], o->seconds);
		if ((rc = bs_load_run(d.port, "/v1/search", o->clients[l], o->seconds,
		                      (const char *const *)bodies, NQUERIES, r, msg, msg_size)))
			goto out;
		have = have && !encode_metrics(d.port, "text", &s1, &p1, &i1) && i1 > i0;
		/* Per pass, which is what each query waits for: a pass that
		 * encodes several queries together is one wait for each. */
		fg->d_encode_ms[l] = have ? (s1 - s0) / (p1 - p0) * 1e3 : -1;
		fg->nlevels_done = l + 1;
		if (r->errors)
			fprintf(stderr, "# search: %ld errors, first: %s\n", r->errors, r->first_error);
	}
	if (o->nfilters && !bs_interrupted &&
	    (rc = run_filters(o, d.port, fg, msg, msg_size)))
		goto out;
	/* Near-duplicate groups of every image (server/duplicates.c): the
	 * first request computes them, the second finds them cached. */
	for (int i = 0; i < 2 && !bs_interrupted; i++) {
		int status = 0;
		char *out = NULL;
		fprintf(stderr, "# search: GET /v1/duplicates (%s)\n", i ? "cached" : "computed");
		double t = bs_now();
		fg->dups_s[i] = -1;
		if (http_once(d.port, "GET", "/v1/duplicates?threshold=0.95", NULL, &status, &out, msg,
		              msg_size) == 0 && status == 200) {
			fg->dups_s[i] = bs_now() - t;
			json_t *j = json_loads(out, 0, NULL);
			fg->dups_groups = (long)json_integer_value(json_object_get(j, "total_groups"));
			fg->dups_grouped = (long)json_integer_value(json_object_get(j, "grouped_images"));
			json_decref(j);
		} else {
			fprintf(stderr, "# search: GET /v1/duplicates: HTTP %d %s\n", status, out ? out : msg);
		}
		free(out);
	}
	fg->search_done = 1;
out:
	rc = stop_after(&d, rc, msg, msg_size);
	store_close(st);
	free(model_id);
	free(dim_s);
	for (int q = 0; q < NQUERIES; q++)
		free(bodies[q]);
	return rc;
}

/* ---- 2. ingest ------------------------------------------------------------ */

static int run_ingest(const struct opts *o, const clip_model *m, const char *dir,
                      struct figures *fg, char *msg, size_t msg_size)
{
	char photos[PATH_MAX], data[PATH_MAX], log[PATH_MAX + 16], path[64];
	bs_daemon d = {.pid = -1};
	char *body = NULL, *resp = NULL;
	json_t *j = NULL;
	int rc = 0, status;
	snprintf(photos, sizeof photos, "%s/photos", dir);
	snprintf(data, sizeof data, "%s/ingest-data", dir);
	snprintf(log, sizeof log, "%s/clipd-ingest.log", dir);

	fprintf(stderr, "# ingest: writing %d JPEGs %dx%d\n", o->images, o->photo_w, o->photo_h);
	if (mkdir(photos, 0755) != 0)
		return bs_fail(msg, msg_size, "mkdir %s: %s", photos, strerror(errno));
	if ((rc = bs_make_photos(photos, o->images, o->photo_w, o->photo_h, o->sources, o->seed,
	                         &fg->photo_bytes, msg, msg_size)))
		return rc;

	fprintf(stderr, "# ingest: bare image encoder, batch %d, %d x %d threads\n", o->batch,
	        fg->workers, fg->blas);
	if ((rc = measure_images(m, fg->workers, o->batch, o->seconds, &fg->bare_ips, msg,
	                         msg_size)))
		return rc;

	fprintf(stderr, "# ingest: starting clipd on an empty data directory\n");
	if ((rc = start_clipd(o, data, photos, log, &d, msg, msg_size)))
		goto out;
	fg->ingest_ready_ms = d.ready_ms;
	j = json_pack("{s:s}", "dir", photos);
	body = json_dumps(j, JSON_COMPACT);
	double t0 = bs_now();
	if ((rc = http_once(d.port, "POST", "/v1/ingest", body, &status, &resp, msg, msg_size)))
		goto out;
	fg->ack_s = bs_now() - t0;
	json_decref(j);
	j = json_loads(resp, 0, NULL);
	json_int_t job = json_integer_value(json_object_get(j, "job_id"));
	json_int_t accepted = json_integer_value(json_object_get(j, "accepted"));
	if (status != 202 || job <= 0) {
		rc = bs_fail(msg, msg_size, "POST /v1/ingest answered %d: %.300s", status, resp);
		goto out;
	}
	if (accepted != o->images)
		fprintf(stderr, "# ingest: only %lld of %d accepted: %.300s\n", (long long)accepted,
		        o->images, resp);
	snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
	for (;;) {
		free(resp);
		resp = NULL;
		if ((rc = http_once(d.port, "GET", path, NULL, &status, &resp, msg, msg_size)))
			goto out;
		double t = bs_now() - t0;
		json_decref(j);
		j = json_loads(resp, 0, NULL);
		const char *state = json_string_value(json_object_get(j, "state"));
		if (status != 200 || !state) {
			rc = bs_fail(msg, msg_size, "GET %s answered %d: %.300s", path, status, resp);
			goto out;
		}
		if (!strcmp(state, "done")) {
			fg->done_s = t;
			fg->ingested = (long)json_integer_value(json_object_get(j, "done"));
			fg->ingest_failed = (long)json_integer_value(json_object_get(j, "failed"));
			break;
		}
		if (t > JOB_TIMEOUT_S || bs_interrupted) {
			rc = bs_fail(msg, msg_size, "job %lld not done after %.0f s: %.300s", (long long)job,
			             t, resp);
			goto out;
		}
		sleep_s(0.05);
	}
	if (fg->ingest_failed)
		fprintf(stderr, "# ingest: %ld items failed: %.500s\n", fg->ingest_failed, resp);
	double passes, items;
	if (encode_metrics(d.port, "image", &fg->ingest_encode_s, &passes, &items))
		fg->ingest_encode_s = -1;
	fg->ingest_done = 1;
out:
	rc = stop_after(&d, rc, msg, msg_size);
	json_decref(j);
	free(body);
	free(resp);
	return rc;
}

/* ---- 3. import (--import) -------------------------------------------------- */

/* The ingest's photos embedded by clip-embed --shard 0/1 (one process, as
 * one task of a cluster array would run it), then imported by a fresh
 * clipd with POST /v1/import: the daemon's side of bulk embedding on a
 * cluster, against its own ingest of the same files. */
static int run_import(const struct opts *o, const char *dir, struct figures *fg, char *msg,
                      size_t msg_size)
{
	char photos[PATH_MAX], list[PATH_MAX + 16], shards[PATH_MAX + 16], data[PATH_MAX + 16];
	char log[PATH_MAX + 24], embed[PATH_MAX + 16], batch[16], bdir[PATH_MAX];
	bs_daemon d = {.pid = -1};
	char *resp = NULL, *body = NULL;
	int rc = 0, status;
	snprintf(photos, sizeof photos, "%s/photos", dir);
	snprintf(list, sizeof list, "%s/photos.txt", dir);
	snprintf(shards, sizeof shards, "%s/shards", dir);
	snprintf(data, sizeof data, "%s/import-data", dir);
	snprintf(log, sizeof log, "%s/clipd-import.log", dir);
	bs_build_dir(bdir, sizeof bdir);
	snprintf(embed, sizeof embed, "%s/clip-embed", bdir);
	snprintf(batch, sizeof batch, "%d", o->batch);

	FILE *f = fopen(list, "w");
	DIR *dp = opendir(photos);
	struct dirent *e;
	if (!f || !dp) {
		if (f)
			fclose(f);
		if (dp)
			closedir(dp);
		return bs_fail(msg, msg_size, "cannot list %s into %s", photos, list);
	}
	while ((e = readdir(dp)))
		if (e->d_name[0] != '.')
			fprintf(f, "%s/%s\n", photos, e->d_name);
	closedir(dp);
	if (fclose(f) != 0)
		return bs_fail(msg, msg_size, "writing %s: %s", list, strerror(errno));

	fprintf(stderr, "# import: clip-embed --shard 0/1 over the %d photos\n", o->images);
	const char *argv[] = {embed, "--model", o->model, "--list", list, "--shard", "0/1", "--out",
	                      shards, "--batch", batch, "--precision",
	                      clip_precision_name(o->precision), NULL};
	int wstatus;
	GError *ge = NULL;
	double t0 = bs_now();
	if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
	                  NULL, &wstatus, &ge) ||
	    !g_spawn_check_wait_status(wstatus, NULL)) {
		rc = bs_fail(msg, msg_size, "%s failed%s%s", embed, ge ? ": " : "", ge ? ge->message : "");
		g_clear_error(&ge);
		return rc;
	}
	fg->shard_embed_s = bs_now() - t0;

	fprintf(stderr, "# import: a fresh clipd imports the shard\n");
	if ((rc = start_clipd(o, data, dir, log, &d, msg, msg_size)))
		goto out;
	json_t *j = json_pack("{s:s}", "dir", shards);
	body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	t0 = bs_now();
	if ((rc = http_once(d.port, "POST", "/v1/import", body, &status, &resp, msg, msg_size)))
		goto out;
	fg->import_s = bs_now() - t0;
	j = json_loads(resp, 0, NULL);
	fg->imported = (long)json_integer_value(json_object_get(j, "imported"));
	json_decref(j);
	if (status != 200) {
		rc = bs_fail(msg, msg_size, "POST /v1/import: %d %.300s", status, resp);
		goto out;
	}
	fg->import_done = 1;
out:
	rc = stop_after(&d, rc, msg, msg_size);
	free(body);
	free(resp);
	return rc;
}

/* ---- output --------------------------------------------------------------- */

static void print_figures(const struct opts *o, const struct figures *fg)
{
	if (fg->search_done || fg->nlevels_done) {
		printf("\nsearch: POST /v1/search {\"text\", \"k\": 20, \"mode\": \"%s\"}, %ld images, "
		       "index %s, %d queries (%d-%d tokens)\n",
		       o->mode, o->items, o->index, NQUERIES, fg->q_tokens_min, fg->q_tokens_max);
		printf("  prebuild %.1f s (%.2f s per 1000 items: image inserts %.2f, embeddings %.2f); "
		       "clipd ready in %ld ms\n",
		       fg->prebuild_s, fg->prebuild_s / (double)o->items * 1000,
		       fg->insert_s / (double)o->items * 1000, fg->embed_s / (double)o->items * 1000,
		       fg->search_ready_ms);
		printf("  image index %s; its background maintenance ended %.1f s after ready, before "
		       "the searches\n",
		       fg->index_factory, fg->maint_wait_s);
		printf("  %7s %8s %8s %8s %8s %8s %8s %7s %10s %8s\n", "clients", "QPS", "mean ms",
		       "p50 ms", "p90 ms", "p99 ms", "requests", "errors", "encode ms", "share");
		for (int l = 0; l < fg->nlevels_done; l++) {
			const bs_load_result *r = &fg->load[l];
			char enc[32] = "-", share[32] = "-";
			if (fg->d_encode_ms[l] >= 0 && r->mean_ms > 0) {
				snprintf(enc, sizeof enc, "%.2f", fg->d_encode_ms[l]);
				snprintf(share, sizeof share, "%.0f%%", 100 * fg->d_encode_ms[l] / r->mean_ms);
			}
			printf("  %7d %8.1f %8.2f %8.2f %8.2f %8.2f %8ld %7ld %10s %8s\n", r->clients, r->qps,
			       r->mean_ms, r->p50_ms, r->p90_ms, r->p99_ms, r->requests, r->errors, enc, share);
		}
		printf("  encode ms: clipd's mean text encode per query (GET /metrics), share: of the mean "
		       "latency.\n");
		printf("  bare text encoder (this process, %d BLAS threads, median): 7 tokens %.2f ms, "
		       "these queries %.2f ms",
		       fg->blas, fg->text7_ms, fg->textq_ms);
		if (fg->nlevels_done && fg->load[0].p50_ms > 0)
			printf(" = %.0f%% of the %d-client p50", 100 * fg->textq_ms / fg->load[0].p50_ms,
			       fg->load[0].clients);
		printf(";\n  one encode at a time caps search near %.0f QPS.\n",
		       fg->textq_ms > 0 ? 1e3 / fg->textq_ms : 0);
		if (fg->filt_done) {
			printf("  filtered (1 client; a capture-time range, applied inside the index):\n");
			printf("  %10s %9s | %8s %8s %8s %6s | %8s %8s %8s %6s\n", "keeps", "images",
			       "text p50", "p99", "QPS", "p99 x", "image p50", "p99", "QPS", "p99 x");
			for (int f = 0; f <= o->nfilters; f++) {
				const bs_load_result *t = &fg->filt[0][f], *im = &fg->filt[1][f];
				char share[16];
				if (f)
					snprintf(share, sizeof share, "%g%%", 100 * o->filters[f - 1]);
				else
					snprintf(share, sizeof share, "all");
				printf("  %10s %9ld | %8.2f %8.2f %8.1f %6.2f | %9.2f %8.2f %8.1f %6.2f\n", share,
				       fg->filt_kept[f], t->p50_ms, t->p99_ms, t->qps,
				       fg->filt[0][0].p99_ms > 0 ? t->p99_ms / fg->filt[0][0].p99_ms : 0,
				       im->p50_ms, im->p99_ms, im->qps,
				       fg->filt[1][0].p99_ms > 0 ? im->p99_ms / fg->filt[1][0].p99_ms : 0);
			}
		}
		printf("  GET /v1/duplicates?threshold=0.95 over the %ld images: computed in %.2f s, "
		       "cached %.3f s; %ld groups of %ld images\n",
		       o->items, fg->dups_s[0], fg->dups_s[1], fg->dups_groups, fg->dups_grouped);
	}
	if (fg->ingest_done) {
		double ips = fg->done_s > 0 ? (double)fg->ingested / fg->done_s : 0;
		printf("\ningest: POST /v1/ingest {\"dir\"}, %d JPEGs %dx%d (%.1f MB), batch %d, workers %d "
		       "x BLAS threads %d, precision %s%s\n",
		       o->images, o->photo_w, o->photo_h, (double)fg->photo_bytes / 1e6, o->batch, fg->workers,
		       fg->blas, fg->precision, o->fast_decode ? ", --fast-decode" : "");
		printf("  accepted (202) after %.2f s, job done after %.2f s: %ld done, %ld failed\n",
		       fg->ack_s, fg->done_s, fg->ingested, fg->ingest_failed);
		printf("  clipd ingest   %7.2f images/s\n", ips);
		printf("  bare encoder   %7.2f images/s (batch %d)\n", fg->bare_ips, o->batch);
		printf("  ratio          %7.1f%%  (target >= 85%%)\n",
		       fg->bare_ips > 0 ? 100 * ips / fg->bare_ips : 0);
		if (fg->ingest_encode_s >= 0 && fg->done_s > 0)
			printf("  encoder busy   %7.1f%%  of the time until done (GET /metrics: %.2f s "
			       "encoding, %.2f images/s while encoding)\n",
			       100 * fg->ingest_encode_s / fg->done_s, fg->ingest_encode_s,
			       fg->ingest_encode_s > 0 ? (double)fg->ingested / fg->ingest_encode_s : 0);
	}
	if (fg->import_done) {
		double ips = fg->done_s > 0 ? (double)fg->ingested / fg->done_s : 0;
		printf("\nimport: the same %d JPEGs, clip-embed --shard 0/1 (one process, batch %d), "
		       "then POST /v1/import into a fresh clipd\n",
		       o->images, o->batch);
		printf("  clip-embed     %7.2f images/s (%.2f s)\n", o->images / fg->shard_embed_s,
		       fg->shard_embed_s);
		printf("  import         %7.2f images/s (%.2f s, %ld imported: read, hashed, stored, "
		       "indexed)\n",
		       fg->import_s > 0 ? fg->imported / fg->import_s : 0, fg->import_s, fg->imported);
		printf("  clipd ingest   %7.2f images/s (above: decoding and encoding in the daemon)\n", ips);
	}
	if (!o->json)
		return;
	if (fg->search_done || fg->nlevels_done) {
		printf("{\"bench\":\"server\",\"figure\":\"prebuild\",\"items\":%ld,\"seconds\":%.2f,"
		       "\"s_per_1000\":%.3f,\"insert_s_per_1000\":%.3f,\"embed_s_per_1000\":%.3f,"
		       "\"clipd_ready_ms\":%ld}\n",
		       o->items, fg->prebuild_s, fg->prebuild_s / (double)o->items * 1000,
		       fg->insert_s / (double)o->items * 1000, fg->embed_s / (double)o->items * 1000,
		       fg->search_ready_ms);
		printf("{\"bench\":\"server\",\"figure\":\"text_encode_bare\",\"tokens\":7,\"ms\":%.3f}\n",
		       fg->text7_ms);
		printf("{\"bench\":\"server\",\"figure\":\"text_encode_bare\",\"tokens_min\":%d,"
		       "\"tokens_max\":%d,\"ms\":%.3f}\n",
		       fg->q_tokens_min, fg->q_tokens_max, fg->textq_ms);
		for (int l = 0; l < fg->nlevels_done; l++) {
			const bs_load_result *r = &fg->load[l];
			printf("{\"bench\":\"server\",\"figure\":\"search\",\"mode\":\"%s\",\"items\":%ld,\"index\":\"%s\","
			       "\"k\":20,\"clients\":%d,\"seconds\":%.2f,\"requests\":%ld,\"errors\":%ld,"
			       "\"qps\":%.2f,\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
			       "\"max_ms\":%.3f,\"encode_bare_ms\":%.3f",
			       o->mode, o->items, o->index, r->clients, r->seconds, r->requests, r->errors, r->qps,
			       fg->load[l].mean_ms, r->p50_ms, r->p90_ms, r->p99_ms, r->max_ms, fg->textq_ms);
			if (fg->d_encode_ms[l] >= 0)
				printf(",\"encode_clipd_ms\":%.3f", fg->d_encode_ms[l]);
			printf("}\n");
		}
	}
	if (fg->ingest_done) {
		double ips = fg->done_s > 0 ? (double)fg->ingested / fg->done_s : 0;
		printf("{\"bench\":\"server\",\"figure\":\"ingest\",\"images\":%d,\"width\":%d,\"height\":%d,"
		       "\"bytes\":%lld,\"batch\":%d,\"workers\":%d,\"blas_threads\":%d,"
		       "\"precision\":\"%s\",\"fast_decode\":%s,\"ack_s\":%.3f,"
		       "\"done_s\":%.3f,\"done\":%ld,\"failed\":%ld,\"images_per_s\":%.3f,"
		       "\"encoder_images_per_s\":%.3f,\"ratio\":%.4f,\"encode_s\":%.3f}\n",
		       o->images, o->photo_w, o->photo_h, (long long)fg->photo_bytes, o->batch, fg->workers,
		       fg->blas, fg->precision, o->fast_decode ? "true" : "false", fg->ack_s, fg->done_s, fg->ingested, fg->ingest_failed, ips, fg->bare_ips,
		       fg->bare_ips > 0 ? ips / fg->bare_ips : 0, fg->ingest_encode_s);
	}
}

int main(int argc, char **argv)
{
	struct opts o;
	struct figures fg;
	char msg[1024] = "", model_dir[PATH_MAX];
	char *tmp = NULL;
	clip_model *m = NULL;
	clip_err ce;
	int rc = 0;

	if (parse_opts(argc, argv, &o))
		return 2;
	if (VIPS_INIT(argv[0]))
		return 1;
	bs_catch_signals();
	memset(&fg, 0, sizeof fg);
	fg.cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
	/* clipd's defaults (server/config.c, server/main.c). */
	fg.workers = o.workers ? o.workers : fg.cores / 2 > 0 ? fg.cores / 2 : 1;
	fg.blas = fg.cores > fg.workers ? fg.cores / fg.workers : 1;
	clip_set_threads(fg.blas);

	if (!(tmp = bs_mkdtemp(o.tmp, msg, sizeof msg))) {
		rc = -1;
		goto out;
	}
	fprintf(stderr, "# working in %s\n", tmp);
	if (!o.model) {
		char *mk[] = {(char *)o.mkmodel, "--preset", "vit-b-32", "--out", model_dir, NULL};
		char log[PATH_MAX + 16];
		snprintf(model_dir, sizeof model_dir, "%s/model", tmp);
		snprintf(log, sizeof log, "%s/mkmodel.log", tmp);
		fprintf(stderr, "# writing a ViT-B/32-shaped checkpoint with %s\n", o.mkmodel);
		double t0 = bs_now();
		if ((rc = bs_run(mk, log, msg, sizeof msg)))
			goto out;
		fg.mkmodel_s = bs_now() - t0;
		o.model = model_dir;
	}
	clip_options mo = {o.precision};
	if (clip_model_open_opts(o.model, &mo, &m, &ce) != CLIP_OK) {
		rc = bs_fail(msg, sizeof msg, "%s: %s", o.model, ce.msg);
		goto out;
	}
	fg.dim = clip_model_dim(m);
	fg.precision = clip_precision_name(clip_model_precision(m));
	printf("# bench/server: model %s (dim %d), precision %s (asked %s), %d cores; clipd %s: "
	       "workers %d x BLAS threads %d, batch %d, index %s\n",
	       o.model, fg.dim, clip_precision_name(clip_model_precision(m)),
	       clip_precision_name(o.precision), fg.cores, o.clipd, fg.workers, fg.blas, o.batch,
	       o.index);
	/* Both this process and clipd inherit these; on a busy machine the
	 * OpenMP wait policy alone changes short text encodes several-fold. */
	const char *env[] = {"OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
	                     "GOMP_SPINCOUNT"};
	printf("# environment:");
	for (size_t i = 0; i < sizeof env / sizeof env[0]; i++)
		printf(" %s=%s", env[i], getenv(env[i]) ? getenv(env[i]) : "(unset)");
	printf("; load average at start: %s\n", load_average());
	fflush(stdout);

	if (o.items > 0 && o.nlevels > 0) {
		if ((rc = run_search(&o, m, tmp, &fg, msg, sizeof msg)))
			goto out;
	}
	if (o.images > 0 && !bs_interrupted) {
		if ((rc = run_ingest(&o, m, tmp, &fg, msg, sizeof msg)))
			goto out;
		if (o.import && !bs_interrupted && (rc = run_import(&o, tmp, &fg, msg, sizeof msg)))
			goto out;
	}
out:
	print_figures(&o, &fg);
	if (rc)
		fprintf(stderr, "bench/server: %s\n", msg);
	clip_model_close(m);
	if (o.keep && tmp)
		fprintf(stderr, "# kept %s\n", tmp);
	else
		bs_rmtree(tmp);
	free(tmp);
	vips_shutdown();
	return rc ? 1 : 0;
}
