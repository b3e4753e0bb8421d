/*
 * metrics.c: the series and their exposition.
 *
 * DESIGN: one mutex, `mu`, guards every series below: the table of routes
 * with their per-(method, code) counters and latency histograms, and the
 * encode histograms and counters. It is a leaf lock: held for a lookup and
 * a few additions, or while the exposition is written into memory; nothing
 * that takes another lock (store, log, libvips) runs under it. A mutex
 * rather than atomics because series are created on first use (which codes
 * a route answers is not known in advance), and a scrape must see each
 * histogram's buckets, sum and count agree with each other. A request pays
 * one short, mostly uncontended lock when it ends.
 *
 * The series live for the whole process and are never freed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* Upper bounds of the histogram buckets, in seconds; +Inf comes after. */
static const double bucket_le[] = {.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
#define NLE (sizeof bucket_le / sizeof bucket_le[0])

/* The method label: a fixed list, anything else is "OTHER". */
static const char *const method_names[] = {"GET", "HEAD", "POST", "PUT", "PATCH",
                                           "DELETE", "OPTIONS", "OTHER"};
#define NMETHODS (sizeof method_names / sizeof method_names[0])

static const char *const tower_names[] = {"image", "text"};

struct hist {
	uint64_t bucket[NLE + 1];   /* per bucket, not cumulative; [NLE] is +Inf */
	double sum;
	uint64_t count;
};

struct code_count {
	int method;                 /* index into method_names */
	int code;
	uint64_t n;
};

struct route_series {
	const char *route;          /* not owned: the router's pattern or "unmatched" */
	struct hist latency;
	struct code_count *codes;   /* [ncodes] */
	size_t ncodes, cap;
};

/* Everything below is guarded by mu: see DESIGN. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct route_series *routes;   /* [nroutes] */
static size_t nroutes, routes_cap;
static struct hist encode_hist[2];    /* [metrics_tower] */
static uint64_t encoded_items[2];     /* [metrics_tower] */

static void hist_add(struct hist *h, double v)
{
	size_t i = 0;
	while (i < NLE && v > bucket_le[i])
		i++;
	h->bucket[i]++;
	h->sum += v;
	h->count++;
}

static int method_index(const char *m)
{
	for (size_t i = 0; i + 1 < NMETHODS; i++)
		if (m && !strcmp(m, method_names[i]))
			return (int)i;
	return (int)NMETHODS - 1;
}

/* The series of route, created when new; NULL when out of memory. */
static struct route_series *route_find(const char *route)
{
	for (size_t i = 0; i < nroutes; i++)
		if (routes[i].route == route || !strcmp(routes[i].route, route))
			return &routes[i];
	if (nroutes == routes_cap) {
		size_t nc = routes_cap ? routes_cap * 2 : 32;
		struct route_series *p = realloc(routes, nc * sizeof *p);
		if (!p)
			return NULL;
		routes = p;
		routes_cap = nc;
	}
	struct route_series *s = &routes[nroutes++];
	memset(s, 0, sizeof *s);
	s->route = route;
	return s;
}

static struct code_count *code_find(struct route_series *s, int method, int code)
{
	for (size_t i = 0; i < s->ncodes; i++)
		if (s->codes[i].method == method && s->codes[i].code == code)
			return &s->codes[i];
	if (s->ncodes == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 4;
		struct code_count *p = realloc(s->codes, nc * sizeof *p);
		if (!p)
			return NULL;
		s->codes = p;
		s->cap = nc;
	}
	struct code_count *c = &s->codes[s->ncodes++];
	c->method = method;
	c->code = code;
	c->n = 0;
	return c;
}

void metrics_http_done(const char *route, const char *method, int status, double seconds)
{
	int mi = method_index(method);
	if (status < 0 || status > 599)
		status = 0;
	if (seconds < 0)
		seconds = 0;
	pthread_mutex_lock(&mu);
	struct route_series *s = route_find(route ? route : "unmatched");
	if (s) {
		struct code_count *c = code_find(s, mi, status);
		if (c)
			c->n++;
		hist_add(&s->latency, seconds);
	}
	pthread_mutex_unlock(&mu);
}

void metrics_encode_done(metrics_tower tower, int n, double seconds)
{
	if ((int)tower < 0 || (int)tower > 1 || n <= 0)
		return;
	pthread_mutex_lock(&mu);
	hist_add(&encode_hist[tower], seconds < 0 ? 0 : seconds);
	encoded_items[tower] += (uint64_t)n;
	pthread_mutex_unlock(&mu);
}

/* ---- exposition ----------------------------------------------------------- */

/* A label value with \ " and newline escaped, as the format requires. */
static void put_label(FILE *f, const char *v)
{
	for (; v && *v; v++) {
		if (*v == '\\' || *v == '"')
			fprintf(f, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

static void header(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's series; labels is "key=\"value\"" (already escaped). */
static void put_hist(FILE *f, const char *name, const char *labels, const struct hist *h)
{
	uint64_t cum = 0;
	for (size_t i = 0; i <= NLE; i++) {
		cum += h->bucket[i];
		if (i < NLE)
			fprintf(f, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, bucket_le[i],
			        (unsigned long long)cum);
		else
			fprintf(f, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
	}
	fprintf(f, "%s_sum{%s} %.9g\n", name, labels, h->sum);
	fprintf(f, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
}

static int by_route(const void *a, const void *b)
{
	return strcmp(((const struct route_series *)a)->route, ((const struct route_series *)b)->route);
}

static int by_method_code(const void *a, const void *b)
{
	const struct code_count *x = a, *y = b;
	if (x->method != y->method)
		return x->method - y->method;
	return x->code - y->code;
}

static void put_gauges(FILE *f, const metrics_gauges *g)
{
	header(f, "clipd_build_info", "gauge", "The running clipd: its version and model fingerprint.");
	fputs("clipd_build_info{version=\"", f);
	put_label(f, g->version ? g->version : "");
	fputs("\",model=\"", f);
	put_label(f, g->model_id ? g->model_id : "");
	fputs("\"} 1\n", f);
	header(f, "clipd_migration_active", "gauge",
	       "1 while the data directory switches to another model (label: the target).");
	fputs("clipd_migration_active{model=\"", f);
	put_label(f, g->migration_model ? g->migration_model : "");
	fprintf(f, "\"} %d\n", g->migrating ? 1 : 0);
	if (g->migration_model && *g->migration_model) {
		header(f, "clipd_migration_items", "gauge",
		       "A switch of models: ready items, those with the target's embedding, and those "
		       "the target could not embed.");
		fprintf(f, "clipd_migration_items{state=\"total\"} %lld\n", (long long)g->migration_total);
		fprintf(f, "clipd_migration_items{state=\"done\"} %lld\n", (long long)g->migration_done);
		fprintf(f, "clipd_migration_items{state=\"failed\"} %lld\n",
		        (long long)g->migration_failed);
		header(f, "clipd_migration_embedded_total", "counter",
		       "Items embedded with the target model by this process.");
		fprintf(f, "clipd_migration_embedded_total %llu\n",
		        (unsigned long long)g->migration_embedded);
	}
	if (!g->have_store)
		return;
	header(f, "clipd_queue_depth", "gauge", "Items queued for indexing or being indexed.");
	fprintf(f, "clipd_queue_depth %lld\n", (long long)g->queue_depth);
	header(f, "clipd_items", "gauge", "Items stored, by collection (every status).");
	fprintf(f, "clipd_items{collection=\"images\"} %lld\n", (long long)g->images_total);
	fprintf(f, "clipd_items{collection=\"texts\"} %lld\n", (long long)g->texts_total);
	header(f, "clipd_items_ready", "gauge",
	       "Items stored and indexed, by collection (the rest are pending or failed).");
	fprintf(f, "clipd_items_ready{collection=\"images\"} %lld\n", (long long)g->images_ready);
	header(f, "clipd_index_vectors", "gauge", "Live vectors in the search index, by collection.");
	fprintf(f, "clipd_index_vectors{collection=\"images\"} %lld\n", (long long)g->index_vectors[0]);
	fprintf(f, "clipd_index_vectors{collection=\"texts\"} %lld\n", (long long)g->index_vectors[1]);
	static const char *const coll[2] = {"images", "texts"};
	if (!g->index_kind[0])
		return;
	header(f, "clipd_index_info", "gauge", "The kind and FAISS factory string of each index.");
	for (int k = 0; k < 2; k++)
		fprintf(f, "clipd_index_info{collection=\"%s\",kind=\"%s\",factory=\"%s\"} 1\n",
		        coll[k], g->index_kind[k], g->index_factory[k]);
	header(f, "clipd_index_maintenance_running", "gauge",
	       "1 while an index is rebuilt on a copy (task: train, compact, upgrade, retrain).");
	for (int k = 0; k < 2; k++)
		fprintf(f, "clipd_index_maintenance_running{collection=\"%s\",task=\"%s\"} %d\n",
		        coll[k], g->index_maint_running[k] ? g->index_maint_running[k] : "none",
		        g->index_maint_running[k] != NULL);
	header(f, "clipd_index_maintenances_total", "counter", "Index maintenances finished.");
	for (int k = 0; k < 2; k++)
		fprintf(f, "clipd_index_maintenances_total{collection=\"%s\"} %llu\n", coll[k],
		        (unsigned long long)g->index_maintenances[k]);
	header(f, "clipd_index_maintenance_exclusive_seconds", "gauge",
	       "How long the last maintenance held searches back (its exchange).");
	for (int k = 0; k < 2; k++)
		fprintf(f, "clipd_index_maintenance_exclusive_seconds{collection=\"%s\"} %.6f\n",
		        coll[k], g->index_maint_exclusive_ms[k] / 1000.0);
}

char *metrics_render(const metrics_gauges *g, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	char labels[256];
	FILE *f = open_memstream(&buf, &n);
	*len = 0;
	if (!f)
		return NULL;
	put_gauges(f, g);

	pthread_mutex_lock(&mu);
	if (nroutes)
		qsort(routes, nroutes, sizeof *routes, by_route);
	header(f, "clipd_http_requests_total", "counter",
	       "HTTP requests by route pattern, method and status code (0: no reply was sent).");
	for (size_t i = 0; i < nroutes; i++) {
		struct route_series *s = &routes[i];
		if (s->ncodes)
			qsort(s->codes, s->ncodes, sizeof *s->codes, by_method_code);
		for (size_t j = 0; j < s->ncodes; j++) {
			fputs("clipd_http_requests_total{route=\"", f);
			put_label(f, s->route);
			fprintf(f, "\",method=\"%s\",code=\"%d\"} %llu\n", method_names[s->codes[j].method],
			        s->codes[j].code, (unsigned long long)s->codes[j].n);
		}
	}
	header(f, "clipd_http_request_duration_seconds", "histogram",
	       "Time from a request's headers to the end of its reply, by route pattern.");
	for (size_t i = 0; i < nroutes; i++) {
		/* Patterns hold no quote or backslash: no escaping needed here. */
		snprintf(labels, sizeof labels, "route=\"%s\"", routes[i].route);
		put_hist(f, "clipd_http_request_duration_seconds", labels, &routes[i].latency);
	}
	header(f, "clipd_encode_seconds", "histogram",
	       "Time of one encoder forward pass (a worker's batch or a request's query), by tower.");
	for (int t = 0; t < 2; t++) {
		snprintf(labels, sizeof labels, "tower=\"%s\"", tower_names[t]);
		put_hist(f, "clipd_encode_seconds", labels, &encode_hist[t]);
	}
	header(f, "clipd_encoded_items_total", "counter", "Items encoded, by tower.");
	for (int t = 0; t < 2; t++)
		fprintf(f, "clipd_encoded_items_total{tower=\"%s\"} %llu\n", tower_names[t],
		        (unsigned long long)encoded_items[t]);
	pthread_mutex_unlock(&mu);

	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}
