/*
 * app: what the daemon holds while it runs, shared by the HTTP threads and
 * the workers. Built by main in start-up order and torn down in reverse;
 * every handle in it is thread-safe on its own (see each header), and the
 * fields themselves are written only by main before threads start.
 */
#ifndef CLIPD_APP_H
#define CLIPD_APP_H

#include <stdatomic.h>

#include "blobs.h"
#include "clip.h"
#include "collections.h"
#include "config.h"
#include "encode_pool.h"
#include "slots.h"
#include "store.h"

typedef struct worker_pool worker_pool;

typedef struct app {
	const config *cfg;
	store *st;
	clip_model *model;
	char model_id[32];        /* fingerprint, the store's and index's model name */
	int dim;
	collections *coll;
	blobs *blobs;
	encode_pool *enc;
	worker_pool *workers;
	clip_image_limits limits;
	slots decodes;            /* cfg->max_decodes request-time decodes */
	int *root_fds;            /* [cfg->n_allow_roots] the --allow-root directories,
	                           * opened once (ingest_roots_open): every server
	                           * file is opened beneath one (safepath.h) */
	atomic_int stopping;      /* set at SIGTERM: /readyz turns 503 */
	int64_t started_ms;       /* clock_ms() at start (monotonic): uptime_ms, "ready in" */
} app;

#endif
