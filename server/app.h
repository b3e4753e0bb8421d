/*
 * app: what the daemon holds while it runs, shared by the HTTP threads and
 * the workers. Built by main in start-up order and torn down in reverse;
 * every handle in it is thread-safe on its own (see each header), and the
 * fields themselves are written only by main before threads start, except
 * sp, which a switch of models replaces under space_mu (space.h).
 */
#ifndef CLIPD_APP_H
#define CLIPD_APP_H

#include <pthread.h>
#include <stdatomic.h>

#include "blobs.h"
#include "clip.h"
#include "collections.h"
#include "config.h"
#include "encode_pool.h"
#include "slots.h"
#include "store.h"

typedef struct worker_pool worker_pool;
typedef struct migration migration;

/* A model and what serving it takes (space.h): the served one is app.sp;
 * a switch of models (migrate.h) builds a second one and swaps it in. */
typedef struct space {
	clip_model *model;
	char model_id[32];        /* fingerprint, the store's and index's model name */
	char *model_dir;
	int dim;
	collections *coll;        /* its indexes, DATA/index/<model_id>/ */
	encode_pool *enc;         /* request-time encoders; NULL for a migration's
	                           * target until its switch */
	int refs;                 /* holders (space_hold); under app.space_mu */
} space;

typedef struct app {
	const config *cfg;
	store *st;
	space *sp;                /* the served model: read it with space_hold
	                           * (space.h); under space_mu */
	pthread_mutex_t space_mu; /* guards sp and every space's refs */
	pthread_cond_t space_cv;  /* a space's refs fell to 0 */
	migration *mig;           /* the switch of models under way, or NULL;
	                           * set by main before threads start */
	blobs *blobs;
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
