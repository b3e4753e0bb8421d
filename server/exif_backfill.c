/*
 * exif_backfill.c: the EXIF backfill thread (see exif_backfill.h).
 *
 * DESIGN: one thread, the store as its state.
 * - The loop lists up to EXIF_BF_BATCH images with exif_read = 0 past its
 *   cursor (id order, a partial index keeps the listing cheap once most are
 *   read), reads each blob's EXIF (exif.h: the header only, bounded), and
 *   records them with store_images_set_exif: one transaction that writes
 *   each image's fields and its mark, skipping an image deleted or read
 *   meanwhile. Then the job's counts: done and failed so far, total =
 *   done + failed + the images still unread.
 * - A blob that cannot be read (gone, unreadable) is marked read with
 *   nothing known and counted failed, with the reason logged: the backfill
 *   always ends. Damaged EXIF is not a failure: its fields are unknown and
 *   the reasons logged (exif_log_notes).
 * - When a listing from the start finds nothing, the job is finished and
 *   its kv key deleted. A crash between a batch's commit and its counts
 *   loses nothing: the next start counts what is left.
 * - Locks: mu guards stop (a leaf). The thread holds no lock of ours while
 *   it reads files or waits for the store.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "exif.h"
#include "exif_backfill.h"
#include "log.h"

#define RETRY_MS 1000
#define JOB_KEY "exif_backfill.job"

struct exif_backfill {
	app *a;
	int64_t job_id;
	int64_t done, failed;
	pthread_t th;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	/* the thread's own */
	int64_t ids[EXIF_BF_BATCH];
	char shas[EXIF_BF_BATCH][65];
	store_exif exif[EXIF_BF_BATCH];
	store_exif_item items[EXIF_BF_BATCH];
	int unreadable[EXIF_BF_BATCH];
};

static int stopping(exif_backfill *b)
{
	pthread_mutex_lock(&b->mu);
	int s = b->stop;
	pthread_mutex_unlock(&b->mu);
	return s;
}

static void pause_ms(exif_backfill *b, int ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += ms / 1000;
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&b->mu);
	while (!b->stop)
		if (pthread_cond_timedwait(&b->cv, &b->mu, &dl) != 0)
			break;
	pthread_mutex_unlock(&b->mu);
}

static void set_counts(exif_backfill *b, int finished)
{
	store_err se;
	int64_t left = 0;
	if (!finished && store_images_exif_unread_count(b->a->st, &left, &se) != STORE_OK) {
		log_warn("EXIF backfill progress: %s", se.msg);
		return;
	}
	if (store_job_set_counts(b->a->st, b->job_id, b->done + b->failed + left, b->done, b->failed,
	                         finished, &se) != STORE_OK)
		log_warn("EXIF backfill job %lld: %s", (long long)b->job_id, se.msg);
}

/* Reads and records ids[0..n). 0, or -1 after a store error (retried). */
static int read_batch(exif_backfill *b, size_t n)
{
	app *a = b->a;
	store_err se;
	for (size_t i = 0; i < n; i++) {
		char path[4096], what[64];
		exif_notes notes;
		blobs_path(a->blobs, b->shas[i], path, sizeof path);
		b->unreadable[i] = exif_read_file(path, &b->exif[i], &notes) != 0;
		snprintf(what, sizeof what, "image %lld", (long long)b->ids[i]);
		if (b->unreadable[i])
			log_warn("EXIF backfill: %s: its file cannot be read (%s); marked read, nothing "
			         "known", what, strerror(errno));
		else if (notes.n)
			exif_log_notes(what, &notes);
		b->items[i] = (store_exif_item){.id = b->ids[i],
		                                .exif = b->unreadable[i] ? NULL : &b->exif[i]};
	}
	int rc = store_images_set_exif(a->st, b->items, n, &se);
	for (size_t i = 0; i < n; i++) {
		if (rc == STORE_OK && b->items[i].stored) {
			if (b->unreadable[i])
				b->failed++;
			else
				b->done++;
		}
		store_exif_clear(&b->exif[i]);
	}
	if (rc != STORE_OK) {
		log_error("EXIF backfill: recording a batch (retried): %s", se.msg);
		return -1;
	}
	return 0;
}

/* One pass to the end: 1 when finished, 0 when stopped. */
static int run(exif_backfill *b, int64_t *count)
{
	store_err se;
	int64_t cursor = 0;
	while (!stopping(b)) {
		size_t n = 0;
		if (store_images_exif_unread(b->a->st, cursor, EXIF_BF_BATCH, b->ids, b->shas, &n,
		                             &se) != STORE_OK) {
			log_error("EXIF backfill: listing images (retried): %s", se.msg);
			pause_ms(b, RETRY_MS);
			continue;
		}
		if (n == 0) {
			if (cursor) {
				/* An image below the cursor whose batch failed. */
				cursor = 0;
				continue;
			}
			return 1;
		}
		if (read_batch(b, n)) {
			pause_ms(b, RETRY_MS);
			continue;
		}
		cursor = b->ids[n - 1];
		if (count)
			*count += (int64_t)n;
		set_counts(b, 0);
	}
	return 0;
}

static void finish(exif_backfill *b)
{
	store_err se;
	set_counts(b, 1);
	if (store_kv_delete(b->a->st, JOB_KEY, &se) != STORE_OK)
		log_warn("EXIF backfill: %s", se.msg);
	log_info("EXIF backfill done: %lld images read, %lld unreadable (job %lld)",
	         (long long)b->done, (long long)b->failed, (long long)b->job_id);
}

static void *bf_main(void *arg)
{
	exif_backfill *b = arg;
	pid_t tid = (pid_t)syscall(SYS_gettid);
	if (setpriority(PRIO_PROCESS, (id_t)tid, 19) != 0)
		log_warn("EXIF backfill: cannot lower the thread's priority");
	if (run(b, NULL))
		finish(b);
	return NULL;
}

static void bf_free(exif_backfill *b)
{
	if (!b)
		return;
	pthread_mutex_destroy(&b->mu);
	pthread_cond_destroy(&b->cv);
	free(b);
}

/* The job and its state: *out NULL when nothing is unread. */
static int bf_new(app *a, exif_backfill **out, api_err *err)
{
	store_err se;
	int64_t left = 0, job_id = 0;
	char *job = NULL;
	*out = NULL;
	if (store_images_exif_unread_count(a->st, &left, &se) != STORE_OK)
		return api_from_store(err, &se);
	if (store_kv_get(a->st, JOB_KEY, &job, NULL) == STORE_OK)
		job_id = atoll(job);
	free(job);
	store_job j = {0};
	if (job_id && store_job_get(a->st, job_id, &j, NULL) != STORE_OK)
		job_id = 0;
	if (left == 0) {
		if (job_id) /* finished by a run that stopped before its last step */
			store_job_set_counts(a->st, job_id, j.total, j.done, j.failed, 1, NULL);
		store_job_clear(&j);
		store_kv_delete(a->st, JOB_KEY, NULL);
		return 0;
	}
	exif_backfill *b = calloc(1, sizeof *b);
	if (!b) {
		store_job_clear(&j);
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	b->a = a;
	b->done = j.done;
	b->failed = j.failed;
	store_job_clear(&j);
	pthread_mutex_init(&b->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!job_id) {
		char num[32];
		if (store_job_create_counted(a->st, "exif_backfill", &job_id, &se) != STORE_OK)
			goto store_fail;
		snprintf(num, sizeof num, "%lld", (long long)job_id);
		if (store_kv_set(a->st, JOB_KEY, num, &se) != STORE_OK)
			goto store_fail;
	}
	b->job_id = job_id;
	set_counts(b, 0);
	log_info("EXIF backfill: %lld images stored before clipd read EXIF are read in the "
	         "background (job %lld)", (long long)left, (long long)job_id);
	*out = b;
	return 0;
store_fail:
	bf_free(b);
	return api_from_store(err, &se);
}

int exif_backfill_start(app *a, exif_backfill **out, api_err *err)
{
	exif_backfill *b;
	int rc = bf_new(a, &b, err);
	*out = NULL;
	if (rc || !b)
		return rc;
	if (pthread_create(&b->th, NULL, bf_main, b) != 0) {
		bf_free(b);
		return api_fail(err, API_EINTERNAL, "cannot start the EXIF backfill thread");
	}
	b->started = 1;
	*out = b;
	return 0;
}

void exif_backfill_stop(exif_backfill *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->mu);
	b->stop = 1;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	if (b->started)
		pthread_join(b->th, NULL);
	bf_free(b);
}

int exif_backfill_run(app *a, int64_t *n, api_err *err)
{
	exif_backfill *b;
	if (n)
		*n = 0;
	int rc = bf_new(a, &b, err);
	if (rc || !b)
		return rc;
	if (run(b, n))
		finish(b);
	bf_free(b);
	return 0;
}
