/*
 * blobs: the content-addressed store of original files,
 * DATA/blobs/ab/abcdef... named by the SHA-256 of the content.
 *
 * A file arrives through a blob_writer: written to DATA/blobs/tmp while its
 * hash is computed, fsynced, then renamed into place and the directory
 * fsynced (blob_writer_commit), so a committed blob survives power loss.
 * Leftovers in tmp/ from a crash are removed by blobs_open.
 *
 * Names are per content, and one image row per content: writers of the same
 * content and the removal of that content serialise on a per-hash lock
 * (blobs_lock), held across "commit + insert row" and "delete row + remove".
 *
 * Thread-safety: a blobs handle is shared by all threads; a blob_writer
 * belongs to one thread at a time.
 */
#ifndef CLIPD_BLOBS_H
#define CLIPD_BLOBS_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"

typedef struct blobs blobs;
typedef struct blob_writer blob_writer;

/* Opens (creating) the blob directory dir. *out is NULL on failure. */
int blobs_open(const char *dir, blobs **out, api_err *err);
void blobs_close(blobs *b);

/* The path of the blob with hex hash sha (64 characters). */
void blobs_path(const blobs *b, const char *sha, char *buf, size_t size);

/* Removes a blob; a missing one is not an error. */
int blobs_remove(blobs *b, const char *sha, api_err *err);

/* The lock of one content hash. */
void blobs_lock(blobs *b, const char *sha);
void blobs_unlock(blobs *b, const char *sha);

/* Starts a new temporary file. */
int blob_writer_new(blobs *b, blob_writer **out, api_err *err);

/* Appends data. */
int blob_writer_write(blob_writer *w, const void *data, size_t len, api_err *err);

/* Ends writing: fsyncs the file, computes the hash and closes the file's
 * descriptor (nothing more can be written). */
int blob_writer_finish(blob_writer *w, api_err *err);

/* After finish: size, hex hash, and the content (memory-mapped, valid until
 * commit or free; *data is NULL for an empty file). */
int64_t blob_writer_size(const blob_writer *w);
const char *blob_writer_sha(const blob_writer *w);
int blob_writer_data(blob_writer *w, const uint8_t **data, size_t *len, api_err *err);

/* Moves the finished file to its content-addressed place (replacing an
 * identical one) and fsyncs the directory. The caller holds
 * blobs_lock(sha). */
int blob_writer_commit(blob_writer *w, api_err *err);

/* Frees the writer, removing its temporary file unless it was committed.
 * Accepts NULL. */
void blob_writer_free(blob_writer *w);

#endif
