/*
 * store: the SQLite store, the project's source of truth.
 *
 * It holds the images and texts the server knows, their embeddings (float32
 * BLOBs), the ingestion queue (jobs and their items), the files of the
 * watched directories and a key-value table that records which model the
 * data was built with. Migrations in
 * schema/NNN_*.sql are compiled into the binary and applied in order at open;
 * PRAGMA user_version records how far a database has come.
 *
 * Every embedding write and every embedding removal takes the next value of
 * one store-wide sequence, so a vector index snapshot that records the
 * highest sequence it contains can be brought up to date with
 * store_changes_after().
 *
 * Ownership: strings and buffers returned in structs belong to the caller and
 * are released with the matching *_clear() function. A NULL out-pointer is
 * never dereferenced.
 *
 * Errors: every function returns a store_code (STORE_OK is 0) and, when err
 * is non-NULL, fills err with the same code and one message written where
 * the error was detected. Messages never contain SQL text.
 *
 * Thread-safety: a store handle may be used from any number of threads at
 * once. See the DESIGN comment in store.c for the connections and the lock.
 */
#ifndef CLIPD_STORE_H
#define CLIPD_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef enum store_code {
	STORE_OK = 0,
	STORE_ENOTFOUND,  /* no such row */
	STORE_EEXISTS,    /* unique constraint: e.g. same content hash */
	STORE_EINVAL,     /* bad argument from the caller */
	STORE_ECORRUPT,   /* not a database, or a damaged one */
	STORE_ETOONEW,    /* database written by a newer version */
	STORE_EIO,        /* file system or disk */
	STORE_EBUSY,      /* locked by another process past the busy timeout */
	STORE_ENOMEM,
	STORE_EINTERNAL,  /* anything else from SQLite */
	STORE_ESTALE,     /* an embedding of a model the data directory no longer
	                   * uses (a switch of models committed meanwhile) */
} store_code;

typedef struct store_err {
	store_code code;
	char msg[256];
} store_err;

typedef struct store store;

/* Which collection an item belongs to. Ids are per collection. */
typedef enum store_kind {
	STORE_IMAGE = 0,
	STORE_TEXT = 1,
} store_kind;

enum {
	STORE_OPEN_CHECK = 1 << 0, /* run PRAGMA quick_check at open (reads the whole file) */
	STORE_OPEN_READONLY = 1 << 1,
};

/* Opens (creating if needed) the database at path and applies pending
 * migrations. flags: STORE_OPEN_*. On failure *out is NULL; a database from a
 * newer schema gives STORE_ETOONEW, garbage gives STORE_ECORRUPT. */
int store_open(const char *path, int flags, store **out, store_err *err);

/* Closes every connection. Accepts NULL. */
void store_close(store *s);

/* The schema version this build writes (the number of migrations). */
int store_schema_version(void);

/* ---- images -------------------------------------------------------------- */

typedef enum store_status {
	STORE_PENDING = 0,
	STORE_READY = 1,
	STORE_FAILED = 2,
} store_status;

/* What an image file says about itself (EXIF, migration 005). Strings are
 * NULL where unknown; has_taken and has_gps say whether taken_ms and the
 * coordinates are set. Limits the store checks: |gps_lat| <= 90,
 * |gps_lon| <= 180, orientation 0 (unknown) or 1..8. */
typedef struct store_exif {
	char *taken;          /* "2021-07-04T18:30:00" or "2021-07-04T18:30:00+02:00" */
	int has_taken;
	int64_t taken_ms;     /* the same instant; a time without offset read as UTC */
	int has_gps;
	double gps_lat, gps_lon; /* signed decimal degrees */
	char *camera_make, *camera_model, *lens;
	int orientation;      /* 1..8, 0 unknown */
} store_exif;

/* Releases the strings of e (not e itself) and zeroes it. */
void store_exif_clear(store_exif *e);

typedef struct store_image {
	int64_t id;
	char sha256[65];      /* lower-case hex of the content */
	char *filename;       /* original name or server path; may be NULL */
	char *mime;
	int width, height;    /* 0 until known */
	int64_t bytes;
	char *meta;           /* user metadata, a JSON object as text */
	store_status status;
	char *error;          /* why it failed; NULL unless STORE_FAILED */
	int64_t created_ms, updated_ms;
	int pinned;           /* 1: added by a source other than the directory
	                       * watcher, which then never deletes it (see
	                       * store_watch_set); 0: the watcher's own */
	store_exif exif;      /* read from the file; all unknown until exif_read */
	int exif_read;        /* 1 once the file's metadata was read */
} store_image;

/* Releases the strings of an image filled by the store. */
void store_image_clear(store_image *img);

/* 1 when h is a content hash as the store keeps them: 64 lower-case hex
 * digits. */
int store_sha256_valid(const char *h);

/* Inserts an image row (status pending). Fields read: sha256, filename, mime,
 * width, height, bytes, meta (NULL means {}), pinned, and exif when
 * exif_read is 1 (in the same transaction, as store_image_set_exif). On success *id is the new id.
 * When an image with the same sha256 exists, returns STORE_EEXISTS and sets
 * *id to the existing image's id. */
int store_image_insert(store *s, const store_image *img, int64_t *id, store_err *err);

/* One image of store_images_insert_many. */
typedef struct store_image_batch_item {
	const store_image *img;   /* fields as store_image_insert reads them */
	int64_t id;               /* out: the new image, or the existing one */
	int existed;              /* out: 1 when the same content was there (nothing written) */
} store_image_batch_item;

/* Inserts n images in one transaction (one fsync: for bulk work, where a
 * transaction per image costs an fsync each). An image whose content is
 * already stored is not an error: existed = 1 and id the stored one. Any
 * other failure (STORE_EINVAL for a bad field of items[i], ...) writes
 * nothing and zeroes every id. */
int store_images_insert_many(store *s, store_image_batch_item *items, size_t n, store_err *err);

/* Fills *out with image id. STORE_ENOTFOUND when absent. */
int store_image_get(store *s, int64_t id, store_image *out, store_err *err);

/* Looks up an image by content hash (hex). STORE_ENOTFOUND when absent. */
int store_image_find_sha(store *s, const char *sha256, store_image *out, store_err *err);

/* Replaces the user metadata (a JSON object as text). */
int store_image_set_meta(store *s, int64_t id, const char *meta_json, store_err *err);

/* Pins image id: a source other than the directory watcher (an upload or
 * ingest of the same content) holds it now, so the watcher will never
 * delete it. Pinning twice is harmless. STORE_ENOTFOUND when absent. */
int store_image_pin(store *s, int64_t id, store_err *err);

/* Records width and height once decoded. */
int store_image_set_size(store *s, int64_t id, int width, int height, store_err *err);

/* Records what image id's file says about itself and marks it read
 * (exif_read = 1). STORE_EINVAL when a value is out of its range (see
 * store_exif), STORE_ENOTFOUND when there is no such image. */
int store_image_set_exif(store *s, int64_t id, const store_exif *e, store_err *err);

/* One image of store_images_set_exif. */
typedef struct store_exif_item {
	int64_t id;
	const store_exif *exif;  /* NULL: nothing could be read; only marked read */
	int stored;              /* out: 1 written, 0 the image no longer exists
	                          * (or was read meanwhile) */
} store_exif_item;

/* The backfill's commit: records n images' metadata, each marked read, in
 * one transaction (all or, on error, nothing). An image already read or
 * deleted meanwhile is skipped (stored = 0). STORE_EINVAL as
 * store_image_set_exif, and nothing is written. */
int store_images_set_exif(store *s, store_exif_item *items, size_t n, store_err *err);

/* Up to max images whose metadata was never read (exif_read = 0) with an id
 * above after, in id order: ids[0..*n) and their content hashes
 * shas[0..*n) (65 bytes each). The backfill's work; it needs no state of
 * its own. */
int store_images_exif_unread(store *s, int64_t after, size_t max, int64_t *ids,
                             char (*shas)[65], size_t *n, store_err *err);

/* Number of images whose metadata was never read. */
int store_images_exif_unread_count(store *s, int64_t *n, store_err *err);

/* Marks an image failed with a reason. */
int store_image_set_failed(store *s, int64_t id, const char *why, store_err *err);

/* Deletes the image, its embedding (leaving a removal in the change log) and
 * any of its queued job items. STORE_ENOTFOUND when absent. */
int store_image_delete(store *s, int64_t id, store_err *err);

/* Number of images, and of those ready. */
int store_image_count(store *s, int64_t *total, int64_t *ready, store_err *err);

/* Reads the images ids[0..n) with one query: out[i] is image ids[i], or
 * all zero (out[i].id == 0) when there is no such image. Release each with
 * store_image_clear (also the zeroed ones). On failure every out[i] is
 * zeroed. */
int store_images_get_many(store *s, const int64_t *ids, size_t n, store_image *out,
                          store_err *err);

/* ---- texts --------------------------------------------------------------- */

typedef struct store_text {
	int64_t id;
	char *text;
	char *meta;           /* JSON object as text */
	store_status status;
	int64_t created_ms;
} store_text;

void store_text_clear(store_text *t);

/* Inserts a text (status pending); meta may be NULL. */
int store_text_insert(store *s, const char *text, const char *meta_json, int64_t *id, store_err *err);
int store_text_get(store *s, int64_t id, store_text *out, store_err *err);
int store_text_delete(store *s, int64_t id, store_err *err);
int store_text_count(store *s, int64_t *total, store_err *err);

/* Keyword search (the FTS5 index of migration 004) over ready items of one
 * kind: images by file name, path and metadata values, texts by their words
 * and metadata values. query is FTS5's query syntax (words, "phrases",
 * prefix*, AND/OR/NOT, NEAR, column:word with the columns name, path, meta
 * or text, meta); a run of Chinese, Japanese or Korean characters matches
 * where it occurs. Fills up to limit ids, best first, with their scores
 * (the negated bm25: higher is better) and sets *n. A query FTS5 refuses is
 * STORE_EINVAL with FTS5's message. */
int store_keyword_search(store *s, store_kind kind, const char *query, int limit, int64_t *ids,
                         double *scores, int *n, store_err *err);

/* The texts ids[0..n) with one query, as store_images_get_many: out[i].id
 * is 0 where there is no such text. */
int store_texts_get_many(store *s, const int64_t *ids, size_t n, store_text *out,
                         store_err *err);

/* Inserts a text and queues it in job job_id in one transaction: once this
 * returns STORE_OK the text is stored and will be embedded, even after a
 * crash. meta may be NULL. */
int store_text_insert_queued(store *s, const char *text, const char *meta_json, int64_t job_id,
                             int64_t *id, store_err *err);

/* The same for n texts in one transaction: all are stored and queued, or
 * (on any error, e.g. STORE_EINVAL for metas[i] that is not a JSON object)
 * none. metas may be NULL, and so may any metas[i]. ids (optional) receives
 * the n new ids in order. */
int store_texts_insert_queued(store *s, size_t n, const char *const *texts,
                              const char *const *metas, int64_t job_id, int64_t *ids,
                              store_err *err);

/* ---- embeddings ---------------------------------------------------------- */

/* Stores the embedding of an item for a model, replacing any earlier one,
 * and marks the item ready, in one transaction. When the key-value table
 * names a model (model.id, and migration.model.id during a switch of
 * models), model must be one of them, else STORE_ESTALE and nothing is
 * written; the same holds for store_embeddings_put_many. Takes the next sequence
 * number, returned in *seq when seq is non-NULL. STORE_ENOTFOUND when the
 * item does not exist (it may have been deleted meanwhile). */
int store_embedding_put(store *s, store_kind kind, int64_t item_id, const char *model,
                        const float *vec, int dim, uint64_t *seq, store_err *err);

/* Copies the embedding into vec (dim floats). STORE_ENOTFOUND when absent,
 * STORE_EINVAL when it has another dimension. */
int store_embedding_get(store *s, store_kind kind, int64_t item_id, const char *model,
                        float *vec, int dim, store_err *err);

/* One entry of the change log: an embedding written (vec non-NULL) or an
 * item's embedding removed (vec NULL). vec is valid only during the call. */
typedef struct store_change {
	uint64_t seq;
	int64_t item_id;
	const float *vec;     /* [dim], or NULL for a removal */
	int dim;
} store_change;

/* Calls fn for every change of one collection and model with sequence >
 * after, in sequence order. A non-zero return from fn stops the walk and is
 * returned. Reads one consistent snapshot of the database. */
int store_changes_after(store *s, store_kind kind, const char *model, uint64_t after,
                        int (*fn)(void *ctx, const store_change *c), void *ctx,
                        store_err *err);

/* One item of store_embeddings_put_many. */
typedef struct store_embedding_item {
	int64_t item_id;
	int64_t work_id;      /* the claimed job item to complete with it; 0: none */
	int width, height;    /* images: the decoded size to record; 0: keep */
	const float *vec;     /* [dim] */
	int stored;           /* out: 1 written, 0 the item no longer exists */
} store_embedding_item;

/* Stores n embeddings of one collection and model in one transaction (one
 * fsync): each takes its own next sequence number, in order, and marks its
 * item ready (recording width and height when given); each work_id is
 * completed as by store_work_complete. An item deleted meanwhile is skipped
 * with stored = 0 (its job item was already failed by the delete). Either
 * everything is written or, on error, nothing. */
int store_embeddings_put_many(store *s, store_kind kind, const char *model, int dim,
                              store_embedding_item *items, size_t n, store_err *err);

/* Inserts an image that arrives with its embedding (POST /v1/import: a
 * shard embedded elsewhere), in one transaction: the image row as
 * store_image_insert, ready, the embedding of model with the next sequence
 * number, and an item of job job_id that is done already. It never enters
 * the work queue. STORE_EEXISTS (and *id the existing image, nothing
 * written) when the content is there; STORE_ESTALE as store_embedding_put
 * when the data directory does not take model's embeddings. */
int store_image_insert_embedded(store *s, const store_image *img, int64_t job_id,
                                const char *model, const float *vec, int dim, int64_t *id,
                                store_err *err);

/* The highest sequence number handed out so far (0 for none). */
int store_last_seq(store *s, uint64_t *seq, store_err *err);

/* ---- the ingestion queue ------------------------------------------------- */

/* A job is either sealed (no more items will come: it is done whenever
 * every item is done or failed, an empty one at once) or open (a request or
 * the directory watcher is still adding items: never done until
 * store_job_seal). */
typedef enum store_job_state {
	STORE_JOB_QUEUED = 0,
	STORE_JOB_RUNNING = 1,
	STORE_JOB_DONE = 2,     /* sealed, and every item done or failed */
} store_job_state;

typedef struct store_job {
	int64_t id;
	char *kind;              /* "upload", "batch", "folder", "texts", "watch",
	                          * "model_migration" */
	store_job_state state;
	int sealed;
	int64_t total, done, failed;
	int64_t created_ms, updated_ms;
} store_job;

void store_job_clear(store_job *j);

/* Creates a sealed job for items added right away, before anyone learns
 * its id (it is done while empty, and again once its items finish). */
int store_job_create(store *s, const char *kind, int64_t *job_id, store_err *err);

/* Creates an open job: it is not done, whatever its items, until
 * store_job_seal. For items that arrive over time (a bulk ingest). */
int store_job_create_open(store *s, const char *kind, int64_t *job_id, store_err *err);

/* Seals a job: no more items. It is done as soon as done + failed ==
 * total, at once when that holds already (an empty job). Sealing twice is
 * harmless. STORE_ENOTFOUND when there is no such job. */
int store_job_seal(store *s, int64_t job_id, store_err *err);

/* Queues one item of a job. */
int store_job_add_item(store *s, int64_t job_id, store_kind kind, int64_t item_id, store_err *err);

/* Records, as a failed item of a job, a file refused before anything was
 * stored (not an image, over a limit, unreadable): name says which file, why
 * the reason. It counts in total and failed and is listed by
 * store_job_errors with item id 0. */
int store_job_add_failed(store *s, int64_t job_id, const char *name, const char *why,
                         store_err *err);

/* Inserts an image and queues it in one transaction (the upload path): an
 * acknowledged upload is either fully stored and queued, or not at all.
 * Duplicate content: STORE_EEXISTS with *id the existing image. */
int store_image_insert_queued(store *s, const store_image *img, int64_t job_id,
                              int64_t *id, store_err *err);

int store_job_get(store *s, int64_t job_id, store_job *out, store_err *err);

/* A failed item of a job. */
typedef struct store_job_error {
	int64_t item_id;      /* the image or text; 0 for a file refused before it was stored */
	store_kind kind;
	char *name;           /* file name or path (for a text, its start); may be NULL */
	char *error;          /* why it failed */
} store_job_error;

/* Up to max failed items of a job, oldest first, into out[0..*n). Release
 * them with store_job_errors_clear. A job without failures (or no such job)
 * gives *n == 0. */
int store_job_errors(store *s, int64_t job_id, size_t max, store_job_error *out, size_t *n,
                     store_err *err);
void store_job_errors_clear(store_job_error *errors, size_t n);

/* Up to max most recent jobs, newest first. *jobs is malloc'ed; release with
 * store_jobs_free. */
int store_job_list(store *s, int max, store_job **jobs, size_t *n, store_err *err);
void store_jobs_free(store_job *jobs, size_t n);

/* An item handed to a worker. */
typedef struct store_work {
	int64_t work_id;         /* job item id */
	int64_t job_id;
	store_kind kind;
	int64_t item_id;
	int attempts;            /* claims so far, this one included */
} store_work;

/* Claims up to max queued items (oldest first) of one collection, marking
 * them claimed. *n is how many were written to out. */
int store_work_claim(store *s, store_kind kind, store_work *out, size_t max, size_t *n,
                     store_err *err);

/* Finishes a claimed item: done, counted in its job. */
int store_work_complete(store *s, int64_t work_id, store_err *err);

/* Completes n claimed items in one transaction. Items that are no longer
 * claimed (failed meanwhile by a delete) are skipped; *completed (optional)
 * counts the others. All or nothing on error. */
int store_work_complete_many(store *s, const int64_t *work_ids, size_t n, size_t *completed,
                             store_err *err);

/* Finishes a claimed item as failed with a reason (its image or text is
 * marked failed too), counted in its job. */
int store_work_fail(store *s, int64_t work_id, const char *why, store_err *err);

/* Start-up recovery, when no worker can hold a claim and no request can be
 * adding items: returns claimed items to the queue (*n, optional, counts
 * them), fails items that were claimed too often, and seals every job left
 * open by the process that stopped. */
int store_work_requeue_claimed(store *s, int64_t *n, store_err *err);

/* Number of items queued or claimed. */
int store_work_depth(store *s, int64_t *n, store_err *err);

/* ---- watched files (--watch) --------------------------------------------- */

/* A file under a watched directory, as last ingested. */
typedef struct store_watched {
	char *path;
	int64_t size;
	int64_t mtime_ns;
	int64_t image_id;     /* 0 when the file was refused (not an image, too big) */
} store_watched;

void store_watched_clear(store_watched *w);

/* Calls fn for every recorded file under directory dir (a path without a
 * trailing slash; "" for the root directory), in path order; w is valid only during the call. A
 * non-zero return from fn stops the walk and is returned. */
int store_watch_list(store *s, const char *dir, int (*fn)(void *ctx, const store_watched *w),
                     void *ctx, store_err *err);

/* The record of path; STORE_ENOTFOUND when there is none. */
int store_watch_get(store *s, const char *path, store_watched *out, store_err *err);

/* Records that the file path (size, mtime) is image image_id (0: refused),
 * replacing its record. When the record named another image that the
 * watcher created (not pinned) and that no other watched file names, that
 * image is deleted in the same transaction, as by store_image_delete, and
 * *dropped (optional) is its id, else 0: the caller removes its blob. A
 * pinned image is never deleted here: no file event removes what another
 * source added. */
int store_watch_set(store *s, const char *path, int64_t size, int64_t mtime_ns, int64_t image_id,
                    int64_t *dropped, store_err *err);

/* Forgets path (the file is gone) and deletes its image when it is the
 * watcher's own (not pinned) and no other watched file names it, as
 * store_watch_set. STORE_ENOTFOUND when path has no record. */
int store_watch_remove(store *s, const char *path, int64_t *dropped, store_err *err);

/* Returns n claimed items to the queue, as if never claimed (their attempt
 * is not counted): a worker that could not commit them for a reason that
 * is not theirs (STORE_ESTALE). Items no longer claimed are left alone. */
int store_work_release(store *s, const int64_t *work_ids, size_t n, store_err *err);

/* ---- switching models (store_models.c) ------------------------------------
 *
 * A data directory serves one model: kv model.id (with model.dir and
 * model.dim). While it migrates to another, kv migration.model.id (.dir,
 * .dim, .job) names the target; both models' embeddings live in the
 * embeddings table side by side, and the one transaction of
 * store_model_switch makes the target the model and drops the others. */

/* Up to max ready items of one collection with no embedding for model and
 * an id above after, in id order, into ids[0..*n): a migration's work. It
 * needs no state of its own, so a migration resumes where it was. */
int store_missing_embeddings(store *s, store_kind kind, const char *model, int64_t after,
                             int64_t *ids, size_t max, size_t *n, store_err *err);

/* Ready items (images and texts) and, of them, those with an embedding for
 * model, read together. */
int store_model_coverage(store *s, const char *model, int64_t *ready, int64_t *have,
                         store_err *err);

/* Marks an item failed with a reason (a migration could not embed it). */
int store_item_set_failed(store *s, store_kind kind, int64_t id, const char *why, store_err *err);

/* The switch, in one transaction: when every ready item has an embedding
 * for model to, records to as the model (model.id, model.dir, model.dim),
 * forgets the migration keys, marks the model it replaces for pruning (kv
 * prune.<id>: its embeddings are unused from then on, and
 * store_embeddings_prune deletes them) and marks job job_id (0: none) done
 * with the coverage as its counts; *missing is 0. Otherwise nothing
 * changes and *missing counts the items that still lack an embedding for
 * to. */
int store_model_switch(store *s, const char *to, const char *to_dir, int to_dim, int64_t job_id,
                       int64_t *missing, store_err *err);

/* Deletes up to max embeddings of a model marked for pruning (kv
 * prune.<id>, set by store_model_switch, or by whoever gives a migration
 * up), in one transaction and without
 * removal entries (its indexes are gone): the old model's embeddings,
 * removed a batch at a time in the background. Never touches the model or
 * the migration's target. *n (optional) counts the rows deleted; *done is
 * 1 when nothing is left to prune. */
int store_embeddings_prune(store *s, int64_t max, int64_t *n, int *done, store_err *err);

/* A job whose counts its owner sets (store_job_set_counts) rather than
 * items of the queue: created running, sealed. */
int store_job_create_counted(store *s, const char *kind, int64_t *job_id, store_err *err);

/* Sets a counted job's total, done and failed; finished marks it done. */
int store_job_set_counts(store *s, int64_t job_id, int64_t total, int64_t done, int64_t failed,
                         int finished, store_err *err);

/* ---- key-value ----------------------------------------------------------- */

/* Sets key to value (replacing). */
int store_kv_set(store *s, const char *key, const char *value, store_err *err);

/* Deletes key; absent is not an error. */
int store_kv_delete(store *s, const char *key, store_err *err);

/* *value is malloc'ed; STORE_ENOTFOUND when absent. */
int store_kv_get(store *s, const char *key, char **value, store_err *err);


/* ---- search filters (store_filter.c) ---------------------------------- */

/* What a filtered search keeps. Absent conditions are 0 / NULL. */
typedef struct store_filter {
	int has_after, has_before;
	int64_t after_ms, before_ms;  /* capture time in [after, before), ms: */
	int after_zoned, before_zoned; /* 1: a Unix time, compared with the instant
	                               * (taken_ms); 0: a wall-clock time read as
	                               * UTC, compared with the camera's clock
	                               * (taken_local_ms, migration 006) */
	int has_near;
	double lat, lon, km;          /* within km (great circle) of lat, lon */
	const char *camera;           /* a substring of the make, the model or
	                               * "make model", ASCII case-insensitive */
	const char *meta_json;        /* a JSON object: each key's value (or one of
	                               * an array of values) equals the item's
	                               * metadata value of that key, type and
	                               * value ("mime" is an image's column) */
} store_filter;

/* The ids of kind that pass every condition of f, ascending, in *ids (the
 * caller frees). Images without a capture time fail a time condition, and
 * without GPS a place condition. STORE_EINVAL for image conditions on
 * texts and out-of-range coordinates. One consistent snapshot. */
int store_filter_ids(store *s, store_kind kind, const store_filter *f, int64_t **ids, size_t *n,
                     store_err *err);

/* Great-circle distance in km (haversine, mean Earth radius 6371.0088 km). */
double store_km_between(double lat1, double lon1, double lat2, double lon2);

/* The capture time of each image ids[i] as its camera's clock showed it
 * (taken_local_ms: the wall clock read as UTC): taken_ms[i] and has[i] = 1,
 * or has[i] = 0 when it has none or is gone. */
int store_images_taken(store *s, const int64_t *ids, size_t n, int64_t *taken_ms, int *has,
                       store_err *err);

#endif
