/*
 * space: one model and what serving it takes: the model, its fingerprint,
 * its two indexes (collections) and its request-time encoders. The daemon
 * serves one space (app.sp); while it switches models (migrate.h) the
 * target is a second space, loaded beside it, that becomes the served one
 * in one pointer swap.
 *
 * Holding: whoever reads app.sp takes a hold (space_hold) and keeps using
 * that space until space_release, so a request that began on the old model
 * finishes on it while new requests already get the new one. space_swap
 * installs a new space, space_wait_unheld waits until the old one has no
 * holder; only then may it be closed. An HTTP request holds through http_req_space (released
 * when the request ends).
 *
 * Ownership: space_load's result is the caller's until installed as app.sp
 * (main's, closed at exit) or swapped out (the swapper's). Thread-safety:
 * hold, release and sync from any thread; open_* and close by the space's
 * owner, while no one else holds it.
 */
#ifndef CLIPD_SPACE_H
#define CLIPD_SPACE_H

#include "app.h"
#include "errors.h"

/* Loads the model in dir with precision p and fingerprints it. On failure
 * *out is NULL and err says which step failed. */
int space_load(const char *dir, clip_precision p, space **out, api_err *err);

/* Opens the space's indexes: ROOT/<model id>/images.vidx and texts.vidx,
 * loaded or built from the store (coll_open). */
int space_open_index(space *sp, store *st, const char *root, const coll_index_opts *io,
                     api_err *err);

/* Creates the space's request-time encoders (encode_pool_open). */
int space_open_encoders(space *sp, int nctx, int batch, api_err *err);

/* Frees everything the space holds. Accepts NULL. */
void space_close(space *sp);

/* The index directory of a model: ROOT/<model id>. */
void space_index_dir(const char *root, const char *model_id, char *out, size_t size);

/* The served space, held: release it with space_release. */
space *space_hold(app *a);
void space_release(app *a, space *sp);

/* Installs next as the served space and returns the one it replaced:
 * requests from now on get next. */
space *space_swap(app *a, space *next);

/* Waits until nobody holds old (a space swapped out): then its owner may
 * close it. */
void space_wait_unheld(app *a, space *old);

/* coll_sync of the served space's index of kind, holding it meanwhile;
 * failures are logged (a periodic sync heals them). */
void space_sync(app *a, store_kind kind);

#endif
