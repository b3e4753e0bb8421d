/*
 * bench/soak: load and soak of the real daemon. Many connections of
 * mixed traffic for a fixed time, while the daemon's memory, descriptors
 * and threads are sampled every second; then a report and a verdict.
 *
 *   build/bench/soak --model DIR [--seconds 600] [--warmup 60]
 *       [--connections 64] [--precision auto|f32|bf16|int8] [--clipd PATH]
 *       [--max-body-mb 4] [--bulk 4] [--every 10] [--timeout 60]
 *       [--drain 300] [--max-connections N] [--tmp DIR] [--keep] [--json]
 *   build/bench/soak --attach PORT [--pid PID] [--api-key-file FILE]
 *       [--max-body-mb 64] ...
 *
 * The daemon is build/clipd started on a fresh data directory under
 * --tmp with --listen 127.0.0.1:0 (its --max-body-mb is the soak's, so
 * a body over the limit is cheap to send; its --max-connections is
 * --connections + 16 unless given, see MAX_CONNS_SLACK), or with --attach one already
 * running on 127.0.0.1:PORT (never any other address; its pid is found
 * from the listening socket unless --pid is given). The phases:
 * 1. Priming: one request of each kind, in order, on one connection;
 *    then the daemon is let go idle (no connections, ingest queue empty)
 *    and its descriptors and threads are counted: "idle before".
 * 2. Load: --connections client threads (bench/soak_mix.c) send requests
 *    back to back for --seconds, each drawn by weight: text searches (POST
 *    and GET), image searches (image_b64 and multipart), uploads
 *    (multipart and raw), bulk ingests (multipart of --bulk PNGs), uploads
 *    that fail in the worker, deletes of images this run uploaded, GET
 *    /v1/stats, and hostile requests (malformed JSON, a multipart that is
 *    not, a body declared or sent over the limit, truncated images) that
 *    must be answered 4xx. Every second, VmRSS, the entries of
 *    /proc/PID/fd and the threads of the daemon are sampled.
 * 3. Drain: the connections are closed, the queue is let empty (at most
 *    --drain seconds), and the idle count is taken again: "idle after".
 * 4. Our own daemon gets SIGTERM and must exit 0.
 * Counts are of the whole run (priming included); latencies of requests
 * sent after the warm-up. The verdict fails on: any 5xx but a 503 with
 * Retry-After (deliberate: the queue is full), any other answer a kind
 * does not expect (a hostile request not answered 4xx, a malformed error
 * JSON, a request without an answer), RSS more than 10% higher at the end
 * than at the end of the warm-up, more descriptors or threads idle after
 * than idle before, the daemon gone, or a stop that is not clean.
 *
 * Bounded in time: every send and receive gives up after --timeout
 * seconds; clients that are still busy --timeout + 15 s after the end
 * are abandoned (the daemon is killed, exit status 1).
 *
 * Output: the report on stdout, progress on stderr; with --json also one
 * JSON object per line (each kind, each sample, the summary). Exit status
 * 0 when the verdict passes, 1 when it fails or the run could not be
 * done, 2 on a usage error.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server_int.h"
#include "soak_int.h"
#include "timing.h"

#define START_TIMEOUT_S 600
#define STOP_TIMEOUT_S 120
#define RSS_GROWTH_MAX 0.10
#define MAX_PROBLEMS 16
/* Our daemon's --max-connections and --max-connections-per-ip over
 * --connections (all of them come from 127.0.0.1): libmicrohttpd counts a
 * connection it closed (after a 413 sent early, say) until its thread
 * ends, and a client that reconnects at once would be refused at an exact
 * limit. Without the per-address one, 64 connections met clipd's default
 * of 64 per address and 42 of 33,400 requests were refused at accept. */
#define MAX_CONNS_SLACK 16

struct opts {
	const char *model, *clipd, *precision, *tmp, *key_file;
	int connections, max_conns, attach_port, pid, bulk, every, keep, json;
	double seconds, warmup, timeout, drain;
	long max_body_mb;
};

struct sample {
	double t;                /* seconds since the load began */
	soak_proc p;
	long done, unexpected;   /* requests answered so far, unexpected so far */
	/* From GET /v1/stats every --every seconds (-1 between): what the
	 * daemon holds, to tell data from a leak. */
	long images, queue, vectors, dead;
};

struct run {
	bs_daemon d;             /* ours; pid -1 when attached */
	pid_t pid;
	int port;
	char *auth;              /* "Bearer KEY" or NULL */
	char *tmp;
	soak_mix mix;
	soak_stats total;
	struct sample *samples;
	size_t nsamples, cap;
	double died_at;          /* -1: alive */
	soak_proc idle_before, idle_after;
	int drained_before, drained_after;
	int stopped_clean;       /* 1: exit 0, 0: not, -1: not ours */
	char stop_msg[512];
	char precision[16], model_id[128];
	int dim;
	int abandoned;
	int every;               /* --every: the sampler's stats period */
};

static void usage(FILE *f)
{
	fputs("usage: bench/soak --model DIR [--seconds 600] [--warmup 60] [--connections 64]\n"
	      "       [--precision auto|f32|bf16|int8] [--clipd PATH] [--max-body-mb 4] [--bulk 4]\n"
	      "       [--every 10] [--timeout 60] [--drain 300] [--max-connections N]\n"
	      "       [--tmp DIR] [--keep] [--json]\n"
	      "   or: bench/soak --attach PORT [--pid PID] [--api-key-file FILE] [--max-body-mb 64] ...\n"
	      "Drives clipd on 127.0.0.1 with mixed traffic (searches, uploads, bulk ingests,\n"
	      "deletes, stats, hostile requests) and samples its RSS, descriptors and threads\n"
	      "every second; prints requests by kind and status, latencies, the curve and a\n"
	      "verdict. Make a ViT-B/32-shaped model with:\n"
	      "  build/clip-mkmodel --preset vit-b-32 --out /tmp/vitb32\n",
	      f);
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static char clipd[PATH_MAX + 16];
	const char *t = getenv("TMPDIR");
	*o = (struct opts){.connections = 64, .seconds = 600, .warmup = 60, .timeout = 60,
	                   .drain = 300, .bulk = 4, .every = 10, .max_body_mb = -1,
	                   .precision = "auto", .tmp = t && *t ? t : "/tmp"};
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
		}
		if (!v) {
			fprintf(stderr, "bench/soak: %s needs a value\n", a);
			return -1;
		}
		i++;
		if (!strcmp(a, "--model"))
			o->model = v;
		else if (!strcmp(a, "--clipd"))
			o->clipd = v;
		else if (!strcmp(a, "--precision"))
			o->precision = v;
		else if (!strcmp(a, "--tmp"))
			o->tmp = v;
		else if (!strcmp(a, "--api-key-file"))
			o->key_file = v;
		else if (!strcmp(a, "--connections"))
			o->connections = atoi(v);
		else if (!strcmp(a, "--max-connections"))
			o->max_conns = atoi(v);
		else if (!strcmp(a, "--attach"))
			o->attach_port = atoi(v);
		else if (!strcmp(a, "--pid"))
			o->pid = atoi(v);
		else if (!strcmp(a, "--bulk"))
			o->bulk = atoi(v);
		else if (!strcmp(a, "--every"))
			o->every = atoi(v);
		else if (!strcmp(a, "--seconds"))
			o->seconds = atof(v);
		else if (!strcmp(a, "--warmup"))
			o->warmup = atof(v);
		else if (!strcmp(a, "--timeout"))
			o->timeout = atof(v);
		else if (!strcmp(a, "--drain"))
			o->drain = atof(v);
		else if (!strcmp(a, "--max-body-mb"))
			o->max_body_mb = atol(v);
		else {
			fprintf(stderr, "bench/soak: unknown option %s\n", a);
			usage(stderr);
			return -1;
		}
	}
	if (!o->model && !o->attach_port) {
		fprintf(stderr, "bench/soak: give --model DIR (or --attach PORT)\n");
		usage(stderr);
		return -1;
	}
	if (o->connections < 1 || o->connections > 1024 || o->seconds <= 0 || o->warmup < 0 ||
	    o->warmup >= o->seconds || o->timeout <= 0 || o->drain < 0 || o->bulk < 1 ||
	    o->bulk > 64 || o->every < 1 || o->attach_port < 0 || o->attach_port > 65535) {
		fprintf(stderr, "bench/soak: --connections 1..1024, --seconds > --warmup >= 0, "
		                "--timeout > 0, --bulk 1..64, --every >= 1, --attach 1..65535\n");
		return -1;
	}
	if (o->max_conns <= 0)
		o->max_conns = o->connections + MAX_CONNS_SLACK;
	if (o->max_body_mb < 0)
		o->max_body_mb = o->attach_port ? 64 : 4; /* clipd's default; ours small */
	if (o->max_body_mb < 1 || o->max_body_mb > 1024) {
		fprintf(stderr, "bench/soak: --max-body-mb 1..1024\n");
		return -1;
	}
	if (!o->clipd) {
		char bdir[PATH_MAX];
		bs_build_dir(bdir, sizeof bdir);
		snprintf(clipd, sizeof clipd, "%s/clipd", bdir);
		o->clipd = clipd;
	}
	return 0;
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

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

/* GET path on a fresh connection; *out is the parsed JSON (NULL unless
 * 200). */
static int get_json(const struct run *r, const char *path, json_t **out)
{
	char msg[256], req[512];
	int status = 0;
	const char *body;
	size_t len;
	*out = NULL;
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s%s\r\n", path,
	                 r->port, r->auth ? "Authorization: " : "", r->auth ? r->auth : "",
	                 r->auth ? "\r\n" : "");
	bs_conn *c = bs_conn_open(r->port, msg, sizeof msg);
	if (!c)
		return -1;
	bs_conn_set_timeout(c, 30);
	if (!bs_request_raw(c, req, (size_t)n, &status, &body, &len, msg, sizeof msg) &&
	    status == 200)
		*out = json_loadb(body, len, 0, NULL);
	bs_conn_close(c);
	return *out ? 0 : -1;
}

/* Waits until the ingest queue is empty (at most `seconds`), then for the
 * daemon's connection threads to end, and counts its descriptors and
 * threads (the least of a few samples). 1 when the queue emptied. */
static int settle(struct run *r, double seconds, soak_proc *out)
{
	double end = bs_now() + seconds;
	int drained = 0;
	while (!bs_interrupted) {
		json_t *j;
		if (!get_json(r, "/v1/stats", &j)) {
			drained = json_integer_value(json_object_get(j, "queue_depth")) == 0;
			json_decref(j);
		}
		if (drained || bs_now() > end)
			break;
		sleep_s(0.5);
	}
	/* libmicrohttpd ends a connection's thread soon after it closes. */
	sleep_s(2);
	*out = (soak_proc){-1, -1, -1, -1};
	for (int i = 0; i < 4; i++) {
		soak_proc p;
		if (soak_proc_read(r->pid, &p))
			break;
		if (out->fds < 0 || p.fds < out->fds)
			out->fds = p.fds;
		if (out->threads < 0 || p.threads < out->threads)
			out->threads = p.threads;
		out->rss_kb = p.rss_kb;
		out->anon_kb = p.anon_kb;
		sleep_s(0.5);
	}
	return drained;
}

static void model_info(struct run *r)
{
	json_t *j;
	snprintf(r->precision, sizeof r->precision, "?");
	snprintf(r->model_id, sizeof r->model_id, "?");
	if (get_json(r, "/v1/stats", &j))
		return;
	json_t *m = json_object_get(j, "model");
	const char *p = json_string_value(json_object_get(m, "precision"));
	const char *id = json_string_value(json_object_get(m, "id"));
	if (p)
		snprintf(r->precision, sizeof r->precision, "%s", p);
	if (id)
		snprintf(r->model_id, sizeof r->model_id, "%s", id);
	r->dim = (int)json_integer_value(json_object_get(m, "dim"));
	json_decref(j);
}

static int read_key(const char *file, char **auth, char *msg, size_t msg_size)
{
	char line[1024];
	FILE *f = fopen(file, "r");
	if (!f)
		return bs_fail(msg, msg_size, "cannot read %s: %s", file, strerror(errno));
	if (!fgets(line, sizeof line, f))
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	if (!line[0])
		return bs_fail(msg, msg_size, "%s is empty", file);
	if (asprintf(auth, "Bearer %s", line) < 0)
		return bs_fail(msg, msg_size, "out of memory");
	return 0;
}

/* ---- the load -------------------------------------------------------------- */

struct sampler {
	pthread_t th;
	struct run *r;
};

/* Every second until the end of the load: the daemon's figures. Sets
 * mix.stop when the daemon is gone. */
static void *sampler_main(void *arg)
{
	struct run *r = ((struct sampler *)arg)->r;
	soak_mix *m = &r->mix;
	for (long i = 0; !bs_interrupted; i++) {
		double due = m->t0 + (double)i;
		double now = bs_now();
		if (due > m->t_end + 0.5)
			break;
		if (due > now)
			sleep_s(due - now);
		struct sample s = {.t = bs_now() - m->t0, .images = -1, .queue = -1, .vectors = -1,
		                   .dead = -1};
		int gone = soak_proc_read(r->pid, &s.p) != 0;
		json_t *j;
		if (!gone && i % r->every == 0 && !get_json(r, "/v1/stats", &j)) {
			json_t *ix = json_object_get(json_object_get(j, "index"), "images");
			s.images = (long)json_integer_value(json_object_get(json_object_get(j, "images"), "total"));
			s.queue = (long)json_integer_value(json_object_get(j, "queue_depth"));
			s.vectors = (long)json_integer_value(json_object_get(ix, "count"));
			s.dead = (long)json_integer_value(json_object_get(ix, "dead"));
			json_decref(j);
		}
		s.done = atomic_load(&m->done);
		s.unexpected = atomic_load(&m->unexpected);
		if (gone) {
			r->died_at = s.t;
			atomic_store(&m->stop, 1);
			break;
		}
		if (r->nsamples == r->cap) {
			size_t nc = r->cap ? r->cap * 2 : 1024;
			struct sample *p = realloc(r->samples, nc * sizeof *p);
			if (!p)
				break;
			r->samples = p;
			r->cap = nc;
		}
		r->samples[r->nsamples++] = s;
	}
	return NULL;
}

static int run_load(const struct opts *o, struct run *r, char *msg, size_t msg_size)
{
	soak_client *cl = calloc((size_t)o->connections, sizeof *cl);
	struct sampler sm = {.r = r};
	int started = 0, rc = 0, sampling = 0;
	if (!cl)
		return bs_fail(msg, msg_size, "out of memory");
	soak_mix *m = &r->mix;
	m->t0 = bs_now();
	m->t_warm = m->t0 + o->warmup;
	m->t_end = m->t0 + o->seconds;
	if (pthread_create(&sm.th, NULL, sampler_main, &sm) == 0)
		sampling = 1;
	for (int i = 0; i < o->connections; i++) {
		cl[i].id = i;
		cl[i].mix = m;
		cl[i].only = -1;
		if (pthread_create(&cl[i].th, NULL, soak_client_main, &cl[i]) != 0) {
			rc = bs_fail(msg, msg_size, "cannot start client thread %d", i);
			atomic_store(&m->stop, 1);
			break;
		}
		started++;
	}
	fprintf(stderr, "# load: %d connections for %.0f s (warm-up %.0f s)\n", started, o->seconds,
	        o->warmup);
	/* A client is stuck only if the daemon stopped answering and the
	 * socket timeouts failed to end it: then we leave. */
	double deadline = m->t_end + o->timeout + 15;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(deadline - bs_now()) + 1;
	for (int i = 0; i < started; i++) {
		if (pthread_timedjoin_np(cl[i].th, NULL, &ts) != 0) {
			r->abandoned = 1;
			return bs_fail(msg, msg_size,
			               "client %d still busy %.0f s after the end: the daemon does not answer",
			               i, o->timeout + 15);
		}
		if (!rc && soak_stats_merge(&r->total, &cl[i].st))
			rc = bs_fail(msg, msg_size, "out of memory");
		soak_stats_free(&cl[i].st);
	}
	if (sampling)
		pthread_join(sm.th, NULL);
	free(cl);
	return rc;
}

static int prime(struct run *r)
{
	soak_client c = {.id = 0, .mix = &r->mix};
	int rc = 0;
	for (int k = 0; k < SK_NKINDS && !bs_interrupted; k++) {
		memset(&c.st, 0, sizeof c.st);
		c.only = k;
		soak_client_main(&c);
		if (soak_stats_merge(&r->total, &c.st))
			rc = -1;
		soak_stats_free(&c.st);
	}
	return rc;
}

/* ---- the report ------------------------------------------------------------ */

static double quantile(const double *x, size_t n, double q)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(q * (double)n + 0.5);
	if (i > 0)
		i--;
	return x[i < n ? i : n - 1];
}

/* The sample at or just after time t (the last one when none is). */
static const struct sample *sample_at(const struct run *r, double t)
{
	for (size_t i = 0; i < r->nsamples; i++)
		if (r->samples[i].t >= t - 0.25)
			return &r->samples[i];
	return r->nsamples ? &r->samples[r->nsamples - 1] : NULL;
}

struct verdict {
	char problems[MAX_PROBLEMS][256];
	int n;
	double rss_change;       /* from warm-up end to the end, fraction */
	int have_rss;
	long rss_min, rss_max, rss_warm, rss_end, anon_warm, anon_end;
	int fd_min, fd_max, fd_warm, fd_end, th_min, th_max;
	long requests, unexpected, deliberate, fivexx, none;
};

static void problem(struct verdict *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct verdict *v, const char *fmt, ...)
{
	if (v->n == MAX_PROBLEMS)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->problems[v->n++], sizeof v->problems[0], fmt, ap);
	va_end(ap);
}

static void judge(const struct opts *o, const struct run *r, struct verdict *v)
{
	const soak_stats *st = &r->total;
	memset(v, 0, sizeof *v);
	for (int k = 0; k < SK_NKINDS; k++) {
		long fivexx = 0;
		for (int s = 0; s < SOAK_NSTATUS; s++) {
			v->requests += st->count[k][s];
			if (s >= 500)
				fivexx += st->count[k][s];
		}
		fivexx -= st->deliberate[k];
		v->fivexx += fivexx;
		v->none += st->count[k][0];
		v->deliberate += st->deliberate[k];
		v->unexpected += st->unexpected[k];
		if (fivexx)
			problem(v, "%s: %ld answers 5xx (not a 503 with Retry-After)", soak_kinds[k].name,
			        fivexx);
		if (st->unexpected[k] > fivexx)
			problem(v, "%s: %ld unexpected answers", soak_kinds[k].name,
			        st->unexpected[k] - fivexx);
	}
	if (r->died_at >= 0)
		problem(v, "the daemon was gone at %.0f s", r->died_at);
	if (r->abandoned)
		problem(v, "clients abandoned: the daemon stopped answering");
	/* The curve after the warm-up: the last sample under load against
	 * the one at the end of the warm-up. */
	const struct sample *w = sample_at(r, o->warmup), *e = r->nsamples ? &r->samples[r->nsamples - 1] : NULL;
	if (w && e && e->t > w->t) {
		v->have_rss = 1;
		v->rss_warm = w->p.rss_kb;
		v->rss_end = e->p.rss_kb;
		v->anon_warm = w->p.anon_kb;
		v->anon_end = e->p.anon_kb;
		v->fd_warm = w->p.fds;
		v->fd_end = e->p.fds;
		v->rss_min = v->rss_max = w->p.rss_kb;
		v->fd_min = v->fd_max = w->p.fds;
		v->th_min = v->th_max = w->p.threads;
		for (const struct sample *s = w; s <= e; s++) {
			v->rss_min = s->p.rss_kb < v->rss_min ? s->p.rss_kb : v->rss_min;
			v->rss_max = s->p.rss_kb > v->rss_max ? s->p.rss_kb : v->rss_max;
			v->fd_min = s->p.fds < v->fd_min ? s->p.fds : v->fd_min;
			v->fd_max = s->p.fds > v->fd_max ? s->p.fds : v->fd_max;
			v->th_min = s->p.threads < v->th_min ? s->p.threads : v->th_min;
			v->th_max = s->p.threads > v->th_max ? s->p.threads : v->th_max;
		}
		v->rss_change = v->rss_warm > 0 ? (double)(v->rss_end - v->rss_warm) / v->rss_warm : 0;
		if (v->rss_change > RSS_GROWTH_MAX)
			problem(v, "RSS grew %.1f%% after the warm-up (%.1f -> %.1f MB; limit %.0f%%)",
			        100 * v->rss_change, v->rss_warm / 1024.0, v->rss_end / 1024.0,
			        100 * RSS_GROWTH_MAX);
	} else if (r->died_at < 0 && !bs_interrupted) {
		problem(v, "no samples after the warm-up");
	}
	if (r->idle_before.fds >= 0 && r->idle_after.fds >= 0 &&
	    r->idle_after.fds > r->idle_before.fds)
		problem(v, "descriptors grew: %d idle before the load, %d idle after", r->idle_before.fds,
		        r->idle_after.fds);
	if (r->idle_before.threads >= 0 && r->idle_after.threads >= 0 &&
	    r->idle_after.threads > r->idle_before.threads)
		problem(v, "threads grew: %d idle before the load, %d idle after",
		        r->idle_before.threads, r->idle_after.threads);
	if (r->died_at < 0 && r->idle_after.fds < 0 && !bs_interrupted)
		problem(v, "the idle descriptors after the load could not be counted");
	if (!r->drained_after && r->died_at < 0 && !bs_interrupted)
		problem(v, "the ingest queue did not empty within %.0f s after the load", o->drain);
	if (r->stopped_clean == 0)
		problem(v, "stop: %s", r->stop_msg);
}

static void statuses(const soak_stats *st, int k, char *out, size_t size)
{
	size_t o = 0;
	out[0] = '\0';
	for (int s = 0; s < SOAK_NSTATUS && o + 48 < size; s++) {
		long n = st->count[k][s] - (s == 503 ? st->deliberate[k] : 0);
		if (n > 0 && s)
			o += (size_t)snprintf(out + o, size - o, "%s%d x%ld", o ? ", " : "", s, n);
		else if (n > 0)
			o += (size_t)snprintf(out + o, size - o, "%sno answer x%ld", o ? ", " : "", n);
		if (s == 503 && st->deliberate[k] > 0)
			o += (size_t)snprintf(out + o, size - o, "%s503+Retry-After x%ld", o ? ", " : "",
			                      st->deliberate[k]);
	}
}

static void print_report(const struct opts *o, struct run *r, const struct verdict *v)
{
	soak_stats *st = &r->total;
	printf("\nrequests by kind (whole run, priming included; latency of requests sent after the "
	       "%.0f s warm-up):\n", o->warmup);
	printf("  %-14s %6s %9s %6s %8s %8s %8s %8s  %s\n", "kind", "expect", "requests", "unexp",
	       "p50 ms", "p90 ms", "p99 ms", "max ms", "statuses");
	for (int k = 0; k < SK_NKINDS; k++) {
		long n = 0;
		for (int s = 0; s < SOAK_NSTATUS; s++)
			n += st->count[k][s];
		qsort(st->lat[k], st->nlat[k], sizeof *st->lat[k], bench_cmp_double);
		size_t nl = st->nlat[k];
		char exp[8], sts[512];
		snprintf(exp, sizeof exp, soak_kinds[k].hostile ? "4xx" : "%d", soak_kinds[k].expect);
		statuses(st, k, sts, sizeof sts);
		printf("  %-14s %6s %9ld %6ld %8.1f %8.1f %8.1f %8.1f  %s\n", soak_kinds[k].name, exp, n,
		       st->unexpected[k], quantile(st->lat[k], nl, 0.5) * 1e3,
		       quantile(st->lat[k], nl, 0.9) * 1e3, quantile(st->lat[k], nl, 0.99) * 1e3,
		       nl ? st->lat[k][nl - 1] * 1e3 : 0, sts[0] ? sts : "-");
	}
	printf("  %-14s %6s %9ld %6ld   (%ld deliberate 503s, %ld other 5xx, %ld without an answer)\n",
	       "all", "", v->requests, v->unexpected, v->deliberate, v->fivexx, v->none);
	int any = 0;
	for (int k = 0; k < SK_NKINDS; k++) {
		const soak_bad *b = &st->bad[k];
		if (!b->seen)
			continue;
		if (!any++)
			printf("\nfirst unexpected answer of each kind:\n");
		printf("  %s at %.1f s: %s\n    -> %s%d: %s\n", soak_kinds[k].name, b->t, b->request,
		       b->status ? "HTTP " : "no answer ", b->status, b->reply);
	}
	if (r->mix.pool_dropped)
		printf("\n%ld uploaded images were never deleted (the id pool was full)\n",
		       r->mix.pool_dropped);

	printf("\ndaemon (pid %d) sampled every 1 s; every %d s:\n", (int)r->pid, o->every);
	printf("  %6s %8s %8s %6s %8s %8s %10s %8s %7s %8s %6s\n", "t s", "RSS MB", "anon MB", "fds",
	       "threads", "req/s", "unexpected", "images", "queue", "vectors", "dead");
	const struct sample *prev = NULL;
	for (size_t i = 0; i < r->nsamples; i++) {
		const struct sample *s = &r->samples[i];
		/* A row every --every seconds, and the last sample; req/s is over
		 * the time since the row before. */
		if (prev && i + 1 < r->nsamples &&
		    (long)(s->t + 0.5) / o->every == (long)(prev->t + 0.5) / o->every)
			continue;
		char rate[32] = "-";
		if (prev && s->t > prev->t)
			snprintf(rate, sizeof rate, "%.1f", (double)(s->done - prev->done) / (s->t - prev->t));
		printf("  %6.0f %8.1f %8.1f %6d %8d %8s %10ld", s->t, s->p.rss_kb / 1024.0,
		       s->p.anon_kb / 1024.0, s->p.fds, s->p.threads, rate, s->unexpected);
		/* The stats of this row's period: the last sample that has them. */
		const struct sample *q = s;
		while (q > r->samples && q->images < 0)
			q--;
		if (q->images >= 0)
			printf(" %8ld %7ld %8ld %6ld\n", q->images, q->queue, q->vectors, q->dead);
		else
			printf("\n");
		prev = s;
	}
	if (v->have_rss) {
		printf("  after the warm-up (t >= %.0f s): RSS min %.1f max %.1f MB, %.1f at the warm-up "
		       "end -> %.1f at the end (%+.1f%%)\n",
		       o->warmup, v->rss_min / 1024.0, v->rss_max / 1024.0, v->rss_warm / 1024.0,
		       v->rss_end / 1024.0, 100 * v->rss_change);
		printf("  of which anonymous %.1f -> %.1f MB (%+.1f%%)\n", v->anon_warm / 1024.0,
		       v->anon_end / 1024.0,
		       v->anon_warm > 0 ? 100.0 * (double)(v->anon_end - v->anon_warm) / v->anon_warm : 0);
		printf("  descriptors min %d max %d (%d -> %d), threads min %d max %d\n", v->fd_min,
		       v->fd_max, v->fd_warm, v->fd_end, v->th_min, v->th_max);
	}
	printf("  idle (no connections%s): descriptors %d before the load, %d after; threads %d -> "
	       "%d; RSS %.1f -> %.1f MB\n",
	       r->drained_before && r->drained_after ? ", queue empty" : ", queue NOT empty",
	       r->idle_before.fds, r->idle_after.fds, r->idle_before.threads,
	       r->idle_after.threads, r->idle_before.rss_kb / 1024.0, r->idle_after.rss_kb / 1024.0);
	if (r->stopped_clean >= 0)
		printf("  stop (SIGTERM): %s\n", r->stopped_clean ? "exit 0" : r->stop_msg);

	if (v->n == 0)
		printf("\nverdict: PASS (no 5xx but deliberate 503s, every answer as expected, RSS %+.1f%% "
		       "after the warm-up, no descriptor or thread growth)\n",
		       100 * v->rss_change);
	else {
		printf("\nverdict: FAIL:");
		for (int i = 0; i < v->n; i++)
			printf("%s %s", i ? ";" : "", v->problems[i]);
		printf("\n");
	}
}

static void print_json(const struct opts *o, const struct run *r, const struct verdict *v)
{
	const soak_stats *st = &r->total;
	for (int k = 0; k < SK_NKINDS; k++) {
		json_t *sts = json_object();
		long n = 0;
		for (int s = 0; s < SOAK_NSTATUS; s++) {
			char key[8];
			n += st->count[k][s];
			if (!st->count[k][s])
				continue;
			snprintf(key, sizeof key, "%d", s);
			json_object_set_new(sts, key, json_integer(st->count[k][s]));
		}
		size_t nl = st->nlat[k];
		json_t *j = json_pack(
		    "{s:s,s:s,s:s,s:b,s:i,s:I,s:I,s:I,s:o,s:I,s:f,s:f,s:f,s:f}", "bench", "soak",
		    "figure", "kind", "kind", soak_kinds[k].name, "hostile", soak_kinds[k].hostile,
		    "expect", soak_kinds[k].expect, "requests", (json_int_t)n, "unexpected",
		    (json_int_t)st->unexpected[k], "deliberate_503", (json_int_t)st->deliberate[k],
		    "statuses", sts, "latencies", (json_int_t)nl, "p50_ms",
		    quantile(st->lat[k], nl, 0.5) * 1e3, "p90_ms", quantile(st->lat[k], nl, 0.9) * 1e3,
		    "p99_ms", quantile(st->lat[k], nl, 0.99) * 1e3, "max_ms",
		    nl ? st->lat[k][nl - 1] * 1e3 : 0.0);
		char *s = json_dumps(j, JSON_COMPACT);
		printf("%s\n", s ? s : "{}");
		free(s);
		json_decref(j);
	}
	for (size_t i = 0; i < r->nsamples; i++) {
		const struct sample *s = &r->samples[i];
		printf("{\"bench\":\"soak\",\"figure\":\"sample\",\"t\":%.2f,\"rss_kb\":%ld,"
		       "\"anon_kb\":%ld,\"fds\":%d,\"threads\":%d,\"requests\":%ld,\"unexpected\":%ld",
		       s->t, s->p.rss_kb, s->p.anon_kb, s->p.fds, s->p.threads, s->done, s->unexpected);
		if (s->images >= 0)
			printf(",\"images\":%ld,\"queue\":%ld,\"vectors\":%ld,\"dead\":%ld", s->images,
			       s->queue, s->vectors, s->dead);
		printf("}\n");
	}
	json_t *probs = json_array();
	for (int i = 0; i < v->n; i++)
		json_array_append_new(probs, json_string(v->problems[i]));
	json_t *j = json_pack(
	    "{s:s,s:s,s:s,s:i,s:f,s:f,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:i,s:i,s:i,s:i,s:i,s:i,"
	    "s:i,s:o}",
	    "bench", "soak", "figure", "summary", "verdict", v->n ? "fail" : "pass", "connections",
	    o->connections, "seconds", o->seconds, "warmup", o->warmup, "precision", r->precision,
	    "model_id", r->model_id, "requests", (json_int_t)v->requests, "unexpected",
	    (json_int_t)v->unexpected, "deliberate_503", (json_int_t)v->deliberate, "other_5xx",
	    (json_int_t)v->fivexx, "no_answer", (json_int_t)v->none, "rss_change", v->rss_change,
	    "rss_warm_kb", (json_int_t)v->rss_warm, "rss_end_kb", (json_int_t)v->rss_end,
	    "idle_fds_before", r->idle_before.fds, "idle_fds_after", r->idle_after.fds,
	    "idle_threads_before", r->idle_before.threads, "idle_threads_after",
	    r->idle_after.threads, "fds_min", v->fd_min, "fds_max", v->fd_max, "stopped_clean",
	    r->stopped_clean, "problems", probs);
	char *s = json_dumps(j, JSON_COMPACT);
	printf("%s\n", s ? s : "{}");
	free(s);
	json_decref(j);
}

/* ---- main ------------------------------------------------------------------ */

static int start_daemon(const struct opts *o, struct run *r, char *msg, size_t msg_size)
{
	char data[PATH_MAX], log[PATH_MAX], body[32], conns[32];
	if (!(r->tmp = bs_mkdtemp(o->tmp, msg, msg_size)))
		return -1;
	snprintf(data, sizeof data, "%s/data", r->tmp);
	snprintf(log, sizeof log, "%s/clipd.log", r->tmp);
	snprintf(body, sizeof body, "%ld", o->max_body_mb);
	snprintf(conns, sizeof conns, "%d", o->max_conns);
	char *argv[] = {(char *)o->clipd, "--model", (char *)o->model, "--data", data,
	                "--precision", (char *)o->precision, "--max-body-mb", body,
	                "--max-connections", conns, "--max-connections-per-ip", conns, NULL};
	fprintf(stderr, "# starting %s on %s (log %s)\n", o->clipd, data, log);
	if (bs_daemon_start(argv, log, START_TIMEOUT_S, &r->d, msg, msg_size)) {
		bs_daemon_log_tail(&r->d, 15);
		return -1;
	}
	r->pid = r->d.pid;
	r->port = r->d.port;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct run r = {.d = {.pid = -1}, .pid = -1, .died_at = -1, .stopped_clean = -1,
	                .idle_before = {-1, -1, -1, -1}, .idle_after = {-1, -1, -1, -1}};
	struct verdict v;
	char msg[1024] = "";
	int rc = 0, loaded = 0;

	if (parse_opts(argc, argv, &o))
		return 2;
	bs_catch_signals();
	if (o.key_file && read_key(o.key_file, &r.auth, msg, sizeof msg)) {
		fprintf(stderr, "bench/soak: %s\n", msg);
		return 1;
	}
	soak_mix_init(&r.mix, 0, r.auth, (int64_t)o.max_body_mb << 20, o.timeout,
	              (uint64_t)time(NULL) * 0x2545f4914f6cdd1dull ^ (uint64_t)getpid(), o.bulk);
	if (o.attach_port) {
		r.port = o.attach_port;
		r.pid = o.pid ? o.pid : soak_proc_listener(o.attach_port);
		if (r.pid <= 0) {
			fprintf(stderr, "bench/soak: no process of ours listens on 127.0.0.1:%d (give --pid)\n",
			        o.attach_port);
			return 1;
		}
	} else if ((rc = start_daemon(&o, &r, msg, sizeof msg))) {
		goto out;
	}
	r.mix.port = r.port;
	r.every = o.every;
	model_info(&r);
	char limit[96] = "";
	if (!o.attach_port)
		snprintf(limit, sizeof limit, ", clipd --max-connections %d --max-connections-per-ip %d",
		         o.max_conns, o.max_conns);
	printf("# bench/soak: clipd pid %d on 127.0.0.1:%d (%s), model %s (dim %d, precision %s); "
	       "%d connections, %.0f s with %.0f s of warm-up; max body %ld MiB, bulk %d%s; "
	       "load average at start %s\n",
	       (int)r.pid, r.port, o.attach_port ? "attached" : "started here", r.model_id, r.dim,
	       r.precision, o.connections, o.seconds, o.warmup, o.max_body_mb, o.bulk, limit,
	       load_average());
	fflush(stdout);

	fprintf(stderr, "# priming: one request of each kind\n");
	r.mix.t0 = bs_now();
	if (prime(&r)) {
		rc = bs_fail(msg, sizeof msg, "out of memory");
		goto out;
	}
	r.drained_before = settle(&r, o.drain, &r.idle_before);
	loaded = 1;
	if ((rc = run_load(&o, &r, msg, sizeof msg)))
		goto out;
	if (r.died_at < 0 && !bs_interrupted) {
		fprintf(stderr, "# load done; letting the daemon go idle\n");
		r.drained_after = settle(&r, o.drain, &r.idle_after);
	}
out:
	if (r.d.pid > 0) {
		char m2[512];
		if (r.abandoned)
			kill(r.d.pid, SIGKILL);
		r.stopped_clean = !bs_daemon_stop(&r.d, STOP_TIMEOUT_S, m2, sizeof m2);
		if (!r.stopped_clean) {
			snprintf(r.stop_msg, sizeof r.stop_msg, "%s", m2);
			bs_daemon_log_tail(&r.d, 20);
		}
	}
	if (rc)
		fprintf(stderr, "bench/soak: %s\n", msg);
	if (r.abandoned) {
		/* Client threads are still inside a request: no report from
		 * their half-written statistics. */
		fflush(stdout);
		_exit(1);
	}
	if (!loaded) {
		bs_rmtree(r.tmp);
		return 1;
	}
	judge(&o, &r, &v);
	print_report(&o, &r, &v);
	if (o.json)
		print_json(&o, &r, &v);
	if (r.tmp && (o.keep || v.n))
		fprintf(stderr, "# kept %s (the daemon's log is clipd.log)\n", r.tmp);
	else
		bs_rmtree(r.tmp);
	soak_stats_free(&r.total);
	soak_mix_destroy(&r.mix);
	free(r.samples);
	free(r.tmp);
	free(r.auth);
	return rc || v.n ? 1 : 0;
}
