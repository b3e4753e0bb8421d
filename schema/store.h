/*
 * store: the SQLite store, the project's source of truth.
 *
 * It holds the images and texts the server knows, their embeddings (float32
 * BLOBs), the ingestion queue (jobs and their items) and a key-value table
 * that records which model the data was built with. Migrations in
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
} store_image;

/* Releases the strings of an image filled by the store. */
void store_image_clear(store_image *img);

/* Inserts an image row (status pending). Fields read: sha256, filename, mime,
 * width, height, bytes, meta (NULL means {}). On success *id is the new id.
 * When an image with the same sha256 exists, returns STORE_EEXISTS and sets
 * *id to the existing image's id. */
int store_image_insert(store *s, const store_image *img, int64_t *id, store_err *err);

/* Fills *out with image id. STORE_ENOTFOUND when absent. */
int store_image_get(store *s, int64_t id, store_image *out, store_err *err);

/* Looks up an image by content hash (hex). STORE_ENOTFOUND when absent. */
int store_image_find_sha(store *s, const char *sha256, store_image *out, store_err *err);

/* Replaces the user metadata (a JSON object as text). */
int store_image_set_meta(store *s, int64_t id, const char *meta_json, store_err *err);

/* Records width and height once decoded. */
int store_image_set_size(store *s, int64_t id, int width, int height, store_err *err);

/* Marks an image failed with a reason. */
int store_image_set_failed(store *s, int64_t id, const char *why, store_err *err);

/* Deletes the image, its embedding (leaving a removal in the change log) and
 * any of its queued job items. STORE_ENOTFOUND when absent. */
int store_image_delete(store *s, int64_t id, store_err *err);

/* Number of images, and of those ready. */
int store_image_count(store *s, int64_t *total, int64_t *ready, store_err *err);

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

/* ---- embeddings ---------------------------------------------------------- */

/* Stores the embedding of an item for a model, replacing any earlier one,
 * and marks the item ready, in one transaction. Takes the next sequence
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

/* The highest sequence number handed out so far (0 for none). */
int store_last_seq(store *s, uint64_t *seq, store_err *err);

/* ---- the ingestion queue ------------------------------------------------- */

typedef enum store_job_state {
	STORE_JOB_QUEUED = 0,
	STORE_JOB_RUNNING = 1,
	STORE_JOB_DONE = 2,     /* every item done or failed */
} store_job_state;

typedef struct store_job {
	int64_t id;
	char *kind;              /* "upload", "batch", "folder", "texts" */
	store_job_state state;
	int64_t total, done, failed;
	int64_t created_ms, updated_ms;
} store_job;

void store_job_clear(store_job *j);

/* Creates an empty job. Items are added with store_job_add_item. */
int store_job_create(store *s, const char *kind, int64_t *job_id, store_err *err);

/* Queues one item of a job. */
int store_job_add_item(store *s, int64_t job_id, store_kind kind, int64_t item_id, store_err *err);

/* Inserts an image and queues it in one transaction (the upload path): an
 * acknowledged upload is either fully stored and queued, or not at all.
 * Duplicate content: STORE_EEXISTS with *id the existing image. */
int store_image_insert_queued(store *s, const store_image *img, int64_t job_id,
                              int64_t *id, store_err *err);

int store_job_get(store *s, int64_t job_id, store_job *out, store_err *err);

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

/* Finishes a claimed item as failed with a reason (its image or text is
 * marked failed too), counted in its job. */
int store_work_fail(store *s, int64_t work_id, const char *why, store_err *err);

/* Returns claimed items to the queue: for start-up after a crash, when no
 * worker can hold a claim. *n (optional) counts them. */
int store_work_requeue_claimed(store *s, int64_t *n, store_err *err);

/* Number of items queued or claimed. */
int store_work_depth(store *s, int64_t *n, store_err *err);

/* ---- key-value ----------------------------------------------------------- */

/* Sets key to value (replacing). */
int store_kv_set(store *s, const char *key, const char *value, store_err *err);

/* *value is malloc'ed; STORE_ENOTFOUND when absent. */
int store_kv_get(store *s, const char *key, char **value, store_err *err);

#endif
