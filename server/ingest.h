/*
 * ingest: the producer side of the work queue (worker.h is the consumer):
 * the upload path shared by POST /v1/images and POST /v1/ingest.
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

/* One request's ingestion (or one round of the directory watcher). Its job
 * is created on the first new image or refused file, or by ingest_begin.
 * A context that is not open makes a sealed job, right for one image (an
 * upload): done once that image is. An open one (a bulk request, whose
 * items arrive over time) makes a job that cannot be done before
 * ingest_end, however fast the workers are. */
typedef struct ingest_ctx {
	app *a;
	const char *job_kind;   /* "upload", "batch", "folder", "watch" */
	int64_t job_id;         /* 0 until created */
	int open;               /* see above; set before the first call */
	int watcher;            /* the directory watcher: the images it creates are
	                         * its own (deleted with their last watched file);
	                         * any other source pins what it adds or sends again */
	int ended;              /* set by ingest_end */
} ingest_ctx;

/* Creates the context's job now, if it has none, so that the request has a
 * job to report even when every file is a duplicate or refused (the job is
 * then done at ingest_end, with nothing or only failures in it). */
int ingest_begin(ingest_ctx *ic, api_err *err);

/* Records a file refused before it was stored (name as the client gave it,
 * why the reason) as a failed item of the context's job (created if need
 * be), so that GET /v1/jobs/{id} lists it among the job's errors. */
int ingest_reject(ingest_ctx *ic, const char *name, const char *why, api_err *err);

/* Ends the context: seals its job (no more items), if it has one. Call it
 * once the last file of the request is queued, on success and failure
 * alike; a second call does nothing. A job left open by a crash is sealed
 * at the next start-up. */
int ingest_end(ingest_ctx *ic, api_err *err);

/* Validates and stores one finished file and queues it. Takes bw (freed
 * either way). filename and meta_json (a JSON object, or NULL) are stored
 * with it. On success *id is the image and *duplicate says whether the same
 * content was already there (then nothing new was queued; unless the
 * context is the watcher's, that image is pinned). The blob is in the blob
 * store only together with its row: when the row cannot be written, the
 * blob committed for it is removed again (no other row can use it: the
 * content's lock is held and no row had that content). Errors: 400 empty,
 * 413 over the pixel limit, 415 not an image, 4xx/5xx from the store. */
int ingest_blob(ingest_ctx *ic, blob_writer *bw, const char *filename, const char *meta_json,
                int64_t *id, int *duplicate, const char **mime, api_err *err);

/* An embedding made elsewhere (an imported shard, docs/SHARDS.md) of the
 * content with hash sha256, by model. */
typedef struct ingest_embedding {
	const char *sha256;   /* lower-case hex */
	const char *model;
	const float *vec;     /* [dim], unit length */
	int dim;
} ingest_embedding;

/* ingest_blob for a file that comes with its embedding: when the file's
 * content still has given->sha256, it is stored ready with that embedding
 * (store_image_insert_embedded: never queued, the index follows at the
 * next sync); when it changed since, *changed is set and it is queued as
 * ingest_blob does. Errors as ingest_blob, and 409 when the data directory
 * does not take given->model's embeddings. */
int ingest_blob_embedded(ingest_ctx *ic, blob_writer *bw, const char *filename,
                         const ingest_embedding *given, int64_t *id, int *duplicate, int *changed,
                         api_err *err);

/* Opens the --allow-root directories as descriptors into a->root_fds
 * (main, at start, before any request). Errors name the directory. */
int ingest_roots_open(app *a, api_err *err);
/* Closes them; accepts an app whose roots were never opened. */
void ingest_roots_close(app *a);

/* Maps path (as a client gave it) lexically onto an --allow-root, by its
 * real path or its path as given: *root its index, rel (size bytes) the
 * path below it (safepath.h sp_map). The file system is not asked, so a
 * path outside every root gets the same 403 whether it exists or not.
 * what names the path in the message ("'dir'", "paths[3]"). Errors: 403
 * outside (or no --allow-root at all), 400 not absolute, too long. */
int ingest_map_root(app *a, const char *path, const char *what, int *root, char *rel,
                    size_t size, api_err *err);

/* Opens rel beneath the directory dirfd (an --allow-root or --watch
 * descriptor, or a directory under one) through safepath: never through a
 * symbolic link, only a regular file, never blocking. Then copies it into
 * a new blob writer, reading at most --max-body bytes whatever the file
 * does meanwhile. *out is NULL on failure. Errors: as sp_open (404, 403,
 * 400), 413 when the file has or grows to more than --max-body bytes,
 * 5xx storage. */
int ingest_read_at(app *a, int dirfd, const char *rel, blob_writer **out, api_err *err);

/* 503 (queue_full) when incoming more items would pass --max-queue. */
int ingest_queue_check(app *a, int64_t incoming, api_err *err);

#endif
