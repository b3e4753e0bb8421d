/*
 * worker: the background indexing threads, the consumer of the queue that
 * the producers (ingest.c, watch.c, the texts route) fill. Each worker
 * claims batches of queued items from the store (images first, then
 * texts), decodes and preprocesses them, encodes the batch, and in one
 * transaction stores each embedding, marks its item ready and completes
 * its job item; then it brings the index up to date (coll_sync) and wakes
 * the ?wait=true waiters. The next batch is decoded on a second thread
 * while one is encoded. An item that cannot be decoded or encoded fails
 * with its reason.
 *
 * Thread-safety: start and stop from main only, retarget from the one
 * thread that switches models; kick and wait_job from any thread.
 */
#ifndef CLIPD_WORKER_H
#define CLIPD_WORKER_H

#include <stdint.h>

#include "app.h"
#include "errors.h"

/* Starts n workers on space sp (its model, fingerprint and indexes), each
 * with its own clip_ctx for batches of batch. */
int worker_pool_start(app *a, space *sp, int n, int batch, worker_pool **out, api_err *err);

/* After a switch of models: stops the workers after the batches in hand
 * (whose commits the store now refuses, STORE_ESTALE: their items go back
 * to the queue), then starts them again on sp. The pool stays the same
 * handle, so kick and wait_job callers are not disturbed. From the one
 * thread that switches; non-zero when the workers cannot start again. */
int worker_pool_retarget(worker_pool *wp, space *sp, api_err *err);

/* Wakes idle workers: new work was queued. */
void worker_pool_kick(worker_pool *wp);

/* Waits until job_id is done (sealed, every item done or failed; its items
 * then searchable) or timeout_ms has passed. Returns 0 with *job filled
 * (release with store_job_clear) either way; *done says which. Non-zero on
 * a store error. */
int worker_pool_wait_job(worker_pool *wp, int64_t job_id, int timeout_ms, store_job *job,
                         int *done, api_err *err);

/* Stops the workers after the batches in hand (the one being encoded and
 * the one decoded meanwhile) and joins them. Accepts NULL. */
void worker_pool_stop(worker_pool *wp);

#endif
