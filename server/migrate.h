/*
 * migrate: switching a data directory to another model without downtime
 * (`clipd --model NEW` on data built with OLD). While searches go on
 * against OLD's space, one background thread embeds every ready image
 * (from its blob) and text with NEW, writing NEW's embeddings beside OLD's
 * and keeping NEW's own indexes (DATA/index/<NEW id>/) in step; the work is
 * "ready items without an embedding for NEW", so a kill -9 resumes where it
 * was. Once nothing lacks one, one store transaction makes NEW the data
 * directory's model (store_model_switch; OLD's embeddings are then deleted
 * in the background, worker.c), the
 * served space is swapped (space.h), the workers move to NEW
 * (worker_pool_retarget), and OLD's space is freed when its last request
 * ends. Progress is a job of kind "model_migration" (GET /v1/jobs) and
 * migrate_get (for /v1/stats and /metrics).
 *
 * Priority: below request-time work and ordinary ingest. The thread runs
 * at nice 19, waits while the work queue has items, and encodes small
 * batches. See the DESIGN comment in migrate.c.
 *
 * Ownership: migrate_start takes target (the NEW space, with its index
 * open); it is the migration's until the switch hands it to app.sp, and
 * migrate_stop closes it when the switch did not happen. Thread-safety:
 * start and stop from main; migrate_get from any thread.
 */
#ifndef CLIPD_MIGRATE_H
#define CLIPD_MIGRATE_H

#include <stdint.h>

#include "app.h"
#include "errors.h"

/* Starts the migration to target, counted in job job_id. */
int migrate_start(app *a, space *target, int64_t job_id, migration **out, api_err *err);

/* Stops the thread after its batch in hand, saves the target's snapshots
 * when it has not switched, and frees the migration. Accepts NULL. */
void migrate_stop(migration *m);

typedef struct migrate_stats {
	int active;               /* 1 until the switch (or with no migration: 0) */
	int switched;             /* the switch happened in this process */
	char to_id[32];
	int to_dim;
	int64_t job_id;
	int64_t total, done, failed; /* ready items, those NEW has, failed with NEW */
	uint64_t embedded;        /* items embedded with NEW by this process */
} migrate_stats;

/* The migration's state; m may be NULL (no migration: all zero). */
void migrate_get(migration *m, migrate_stats *out);

#endif
