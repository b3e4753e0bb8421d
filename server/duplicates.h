/*
 * duplicates: groups of near-duplicate images of the served model, for
 * GET /v1/duplicates and a search's "exclude_duplicates".
 *
 * A group is a connected set of two or more images joined by pairs whose
 * embeddings' cosine is >= the threshold, where each pair was found by a
 * k-nearest-neighbour search (k = DUPS_K) from one of its images; see
 * vidx_groups in index.h. Images with the same bytes are one image already
 * (the store keeps one row per content hash), so a group never lists a file
 * twice. The grouping is computed from the store's embeddings into an index
 * of its own (vidx_groups_index: exact up to 10,000 images, IVF beyond) and
 * cached per (model, image index sequence, threshold): a change to the
 * images (upload, delete) makes the next request compute it again.
 *
 * Bounds: one computation at a time in the process. A request for the
 * grouping being computed waits for it; a request for another grouping
 * while one is computed gets 503 queue_full (Retry-After). A computation
 * holds one store reader while it reads the embeddings (twice), and about
 * N * (4 * dim + 80) bytes for N images (the index's copy of the vectors
 * and the groups); DUPS_CACHE groupings are kept, each about 35 bytes per
 * grouped image.
 *
 * Ownership: dups_get's result is held until dups_release. Thread-safety:
 * every function may be called from any thread.
 */
#ifndef CLIPD_DUPLICATES_H
#define CLIPD_DUPLICATES_H

#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "errors.h"

#define DUPS_K 32
#define DUPS_CACHE 4
#define DUPS_MIN_THRESHOLD 0.5
#define DUPS_DEFAULT_THRESHOLD 0.95

typedef struct dup_groups dup_groups;

/* Checks a threshold: a finite number in [DUPS_MIN_THRESHOLD, 1]; the
 * message names the field. */
int dups_check_threshold(double t, const char *field, api_err *err);

/* The grouping of sp's images at threshold t, computed now or taken from
 * the cache; held: release it with dups_release. */
int dups_get(app *a, space *sp, double t, dup_groups **out, api_err *err);
void dups_release(dup_groups *d);   /* accepts NULL */

/* The groups (read-only while held), how many images were grouped over,
 * and how long computing took (0 for none). */
const vidx_groups *dups_groups(const dup_groups *d);
size_t dups_images(const dup_groups *d);
int64_t dups_compute_ms(const dup_groups *d);

/* Keeping one image per group among a search's results, best first:
 * dups_pick_keep says 1 for an image in no group or the first of its group
 * seen since dups_pick_reset, 0 for the others. */
typedef struct dup_pick dup_pick;
int dups_pick_open(app *a, space *sp, double t, dup_pick **out, api_err *err);
void dups_pick_reset(dup_pick *p);
int dups_pick_keep(dup_pick *p, int64_t id);
void dups_pick_close(dup_pick *p);  /* accepts NULL */

#endif
