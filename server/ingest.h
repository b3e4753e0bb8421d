/*
 * ingest: the upload path shared by POST /v1/images and POST /v1/ingest.
 * A file arrives in a blob_writer (streamed from the request or copied from
 * a server path); ingest_blob validates it (non-empty, an image type by its
 * magic bytes, the pixel size its header states), commits it to the blob
 * store and, in one store transaction, inserts the image and queues it.
 * Only then may the client be told it was accepted. Thread-safe.
 */
#ifndef CLIPD_INGEST_H
#define CLIPD_INGEST_H

#include <stdint.h>

#include "app.h"
#include "blobs.h"
#include "errors.h"

/* One request's ingestion: its job is created on the first new image, so a
 * request of duplicates only creates none. */
typedef struct ingest_ctx {
	app *a;
	const char *job_kind;   /* "upload", "batch", "folder" */
	int64_t job_id;         /* 0 until created */
} ingest_ctx;

/* Validates and stores one finished file and queues it. Takes bw (freed
 * either way). filename and meta_json (a JSON object, or NULL) are stored
 * with it. On success *id is the image and *duplicate says whether the same
 * content was already there (then nothing new was queued). Errors: 400
 * empty, 413 over the pixel limit, 415 not an image, 5xx storage. */
int ingest_blob(ingest_ctx *ic, blob_writer *bw, const char *filename, const char *meta_json,
                int64_t *id, int *duplicate, const char **mime, api_err *err);

/* Copies the regular file at path (already checked) into a new blob writer. */
int ingest_read_file(app *a, const char *path, blob_writer **out, api_err *err);

/* Resolves path (realpath) and checks that it lies under an --allow-root:
 * 403 otherwise, 404 when it does not exist. *real is malloc'ed. */
int ingest_check_root(app *a, const char *path, char **real, api_err *err);

/* 503 (queue_full) when incoming more items would pass --max-queue. */
int ingest_queue_check(app *a, int64_t incoming, api_err *err);

#endif
