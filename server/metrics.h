/*
 * metrics: the daemon's Prometheus metrics. Counters and histograms are
 * recorded here from any thread (the HTTP layer when a request ends, the
 * request-time encoders, the background workers); metrics_render writes
 * them, together with the gauges its caller read from the store and the
 * indexes, in the Prometheus text exposition format 0.0.4.
 *
 * Label values are bounded by construction, so a client cannot grow the
 * series without limit: a route is a pattern of the router's table
 * ("/v1/images/{id}", never the raw URL) or "unmatched"; a method is one of
 * a fixed list or "OTHER"; a code is the HTTP status, or 0 when the
 * connection ended before a reply was sent (client gone, timeout).
 *
 * Thread-safe (one leaf mutex, see the DESIGN comment in metrics.c). Nothing
 * here fails in a way the caller must handle: a sample that cannot be
 * recorded (out of memory) is dropped.
 */
#ifndef CLIPD_METRICS_H
#define CLIPD_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum metrics_tower {
	METRICS_TOWER_IMAGE = 0,
	METRICS_TOWER_TEXT = 1,
} metrics_tower;

/* Durations below are seconds of clock_s() (clock.h). */

/* Counts one finished HTTP request. route is the matched pattern, a string
 * that lives as long as the process (the router's table), or NULL when no
 * route matched. */
void metrics_http_done(const char *route, const char *method, int status, double seconds);

/* Records one encoder forward pass over n items (a worker's batch, or a
 * request's query) that took seconds. */
void metrics_encode_done(metrics_tower tower, int n, double seconds);

/* Point-in-time values the caller reads from the store and the indexes.
 * have_store is 0 when those reads failed: the store gauges are left out. */
typedef struct metrics_gauges {
	int have_store;
	int64_t queue_depth;
	int64_t images_total, images_ready, texts_total;
	int64_t index_vectors[2];    /* [images, texts] */
	const char *index_kind[2], *index_factory[2];
	const char *index_maint_running[2];   /* "train", ...; NULL when idle */
	uint64_t index_maintenances[2];
	double index_maint_exclusive_ms[2];   /* the last one's exclusive hold */
	const char *version;
	const char *model_id;
	int migrating;               /* a switch of models is under way (migrate.h) */
	const char *migration_model; /* its target */
	int64_t migration_total, migration_done, migration_failed;
	uint64_t migration_embedded; /* counter: embedded with the target */
} metrics_gauges;

/* Writes every metric as exposition text. Returns a malloc'ed,
 * NUL-terminated string (*len bytes without the NUL), NULL when out of
 * memory. */
char *metrics_render(const metrics_gauges *g, size_t *len);

#endif
