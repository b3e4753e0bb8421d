/*
 * exif_backfill: reads the EXIF of images stored before clipd did so
 * (migration 005 left them exif_read = 0), in the background, resumably:
 * the work is "images with exif_read = 0", computed from the store, so a
 * kill -9 resumes where the marks end. Progress is a counted job of kind
 * "exif_backfill" (GET /v1/jobs), kept across restarts in kv
 * exif_backfill.job until nothing is left. New images never need it: the
 * ingest reads their EXIF in the transaction that inserts them.
 *
 * Cost: one thread at nice 19; each batch reads EXIF_BF_BATCH blobs' headers
 * (exif.h bounds each) and commits their fields in one transaction of as
 * many one-row UPDATEs, so the store's writer is held for one short
 * transaction at a time (bench/exif measures the rate and the hold).
 *
 * Thread-safety: start and stop from main.
 */
#ifndef CLIPD_EXIF_BACKFILL_H
#define CLIPD_EXIF_BACKFILL_H

#include "app.h"
#include "errors.h"

#define EXIF_BF_BATCH 256

typedef struct exif_backfill exif_backfill;

/* Starts the backfill when some image was never read (*out NULL, 0
 * returned, when none is; a job of an earlier run is finished then).
 * Errors: the store's, or a thread that cannot start. */
int exif_backfill_start(app *a, exif_backfill **out, api_err *err);

/* Stops the thread after its batch in hand and frees it. Accepts NULL. */
void exif_backfill_stop(exif_backfill *b);

/* Runs the backfill to its end on the calling thread (bench/exif), with
 * progress in its job as exif_backfill_start would. *n (optional) counts
 * the images read. */
int exif_backfill_run(app *a, int64_t *n, api_err *err);

#endif
