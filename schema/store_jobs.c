/*
 * store_jobs.c: the ingestion queue.
 *
 * A job groups the items of one request (an upload, a bulk batch, a folder,
 * texts) or of one round of the directory watcher. Each job item moves
 * queued -> claimed -> done | failed; a file refused before it was stored is
 * born failed (item_id 0). A job is done when it is sealed and every item is
 * done or failed: a job filled over time is created open and sealed by its
 * filler once the last item is queued, so it never looks done half-way; a
 * job left open by a crash is sealed at start-up. A claim lives only
 * as long as the process that took it: at start-up store_work_requeue_claimed
 * returns claims to the queue, except for items that were already claimed
 * STORE_MAX_ATTEMPTS times (an input that kills the process would otherwise
 * kill it on every start); those fail with a reason.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#define STORE_MAX_ATTEMPTS 3

enum { ITEM_QUEUED = 0, ITEM_CLAIMED = 1, ITEM_DONE = 2, ITEM_FAILED = 3 };

/* ?3 state, ?4 sealed: a sealed job starts done (it is empty). */
static const char SQL_JOB_CREATE[] =
	"INSERT INTO jobs (kind, state, sealed, created_ms, updated_ms) VALUES (?1, ?3, ?4, ?2, ?2)";
static const char SQL_ITEM_ADD[] =
	"INSERT INTO job_items (job_id, kind, item_id, state, name, updated_ms) "
	"VALUES (?1, ?2, ?3, 0, ?5, ?4)";
static const char SQL_ITEM_ADD_FAILED[] =
	"INSERT INTO job_items (job_id, kind, item_id, state, name, error, updated_ms) "
	"VALUES (?1, 0, 0, 3, ?2, ?3, ?4)";
/* ?3 more items, ?4 of them already failed. A done job is no longer done. */
static const char SQL_JOB_GROW[] =
	"UPDATE jobs SET total = total + ?3, failed = failed + ?4, updated_ms = ?2, "
	"state = CASE WHEN sealed AND done + failed + ?4 >= total + ?3 THEN 2 "
	"WHEN state = 2 OR ?4 > 0 THEN (CASE WHEN done + failed + ?4 > 0 THEN 1 ELSE 0 END) "
	"ELSE state END WHERE id = ?1";
static const char SQL_JOB_SEAL[] =
	"UPDATE jobs SET sealed = 1, updated_ms = ?2, "
	"state = CASE WHEN done + failed >= total THEN 2 ELSE state END WHERE id = ?1";
static const char SQL_JOB_SEAL_ALL[] =
	"UPDATE jobs SET sealed = 1, updated_ms = ?1, "
	"state = CASE WHEN done + failed >= total THEN 2 ELSE state END WHERE sealed = 0";
static const char SQL_JOB_GET[] =
	"SELECT id, kind, state, total, done, failed, created_ms, updated_ms, sealed FROM jobs "
	"WHERE id = ?1";
static const char SQL_JOB_LIST[] =
	"SELECT id, kind, state, total, done, failed, created_ms, updated_ms, sealed FROM jobs "
	"ORDER BY id DESC LIMIT ?1";
static const char SQL_JOB_ERRORS[] =
	"SELECT ji.item_id, ji.kind, coalesce(ji.name, i.filename, substr(t.text, 1, 80)), ji.error "
	"FROM job_items AS ji "
	"LEFT JOIN images AS i ON ji.kind = 0 AND i.id = ji.item_id "
	"LEFT JOIN texts AS t ON ji.kind = 1 AND t.id = ji.item_id "
	"WHERE ji.job_id = ?1 AND ji.state = 3 ORDER BY ji.id LIMIT ?2";
static const char SQL_CLAIM[] =
	"UPDATE job_items SET state = 1, attempts = attempts + 1, updated_ms = ?3 "
	"WHERE id IN (SELECT id FROM job_items WHERE state = 0 AND kind = ?1 ORDER BY id LIMIT ?2) "
	"RETURNING id, job_id, kind, item_id, attempts";
static const char SQL_JOB_RUNNING[] =
	"UPDATE jobs SET state = 1, updated_ms = ?2 WHERE id = ?1 AND state = 0";
static const char SQL_ITEM_FINISH[] =
	"UPDATE job_items SET state = ?2, error = ?3, updated_ms = ?4 WHERE id = ?1 AND state = 1 "
	"RETURNING job_id, kind, item_id";
static const char SQL_JOB_COUNT_DONE[] =
	"UPDATE jobs SET done = done + 1, updated_ms = ?2, "
	"state = CASE WHEN sealed AND done + 1 + failed >= total THEN 2 ELSE 1 END WHERE id = ?1";
static const char SQL_JOB_COUNT_FAIL[] =
	"UPDATE jobs SET failed = failed + 1, updated_ms = ?2, "
	"state = CASE WHEN sealed AND done + failed + 1 >= total THEN 2 ELSE 1 END WHERE id = ?1";
static const char SQL_IMAGE_FAIL[] =
	"UPDATE images SET status = 2, error = ?2, updated_ms = ?3 WHERE id = ?1";
static const char SQL_TEXT_FAIL[] = "UPDATE texts SET status = 2, error = ?2 WHERE id = ?1";
static const char SQL_GIVE_UP[] =
	"UPDATE job_items SET state = 3, updated_ms = ?2, "
	"error = 'the server stopped while processing this item, ' || attempts || ' times' "
	"WHERE state = 1 AND attempts >= ?1 RETURNING id, job_id, kind, item_id";
static const char SQL_REQUEUE[] =
	"UPDATE job_items SET state = 0, updated_ms = ?1 WHERE state = 1";
static const char SQL_DEPTH[] = "SELECT count(*) FROM job_items WHERE state IN (0, 1)";

void store_job_clear(store_job *j)
{
	if (!j)
		return;
	free(j->kind);
	memset(j, 0, sizeof *j);
}

void store_jobs_free(store_job *jobs, size_t n)
{
	for (size_t i = 0; jobs && i < n; i++)
		store_job_clear(&jobs[i]);
	free(jobs);
}

static int job_create(store *s, const char *kind, int sealed, int64_t *job_id, store_err *err)
{
	if (!kind || !*kind)
		return store_fail(err, STORE_EINVAL, "a job needs a kind");
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	sqlite3_stmt *st = store_stmt(w, SQL_JOB_CREATE, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, store_now_ms());
	sqlite3_bind_int(st, 3, sealed ? STORE_JOB_DONE : STORE_JOB_QUEUED);
	sqlite3_bind_int(st, 4, sealed);
	if ((rc = store_step_done(w, st, "creating a job", err)) == STORE_OK)
		*job_id = sqlite3_last_insert_rowid(w->db);
out:
	return store_write_end(s, rc, err);
}

int store_job_create(store *s, const char *kind, int64_t *job_id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return job_create(s, kind, 1, job_id, err);
}

int store_job_create_open(store *s, const char *kind, int64_t *job_id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return job_create(s, kind, 0, job_id, err);
}

int store_job_seal(store *s, int64_t job_id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	sqlite3_stmt *st = store_stmt(w, SQL_JOB_SEAL, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, store_now_ms());
	rc = store_step_done(w, st, "sealing a job", err);
	if (rc == STORE_OK && sqlite3_changes(w->db) == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no job %lld", (long long)job_id);
out:
	return store_write_end(s, rc, err);
}

/* Inside a write transaction: counts nmore new items, nfailed of them
 * failed already, in a job. */
static int job_grow_locked(store *s, int64_t job_id, int64_t nmore, int64_t nfailed, int64_t now,
                           store_err *err)
{
	sqlite3_stmt *st = store_stmt(&s->writer, SQL_JOB_GROW, err);
	if (!st)
		return err->code;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, now);
	sqlite3_bind_int64(st, 3, nmore);
	sqlite3_bind_int64(st, 4, nfailed);
	return store_step_done(&s->writer, st, "updating a job", err);
}

/* Inside a write transaction: inserts one job item row, without counting
 * it in its job. */
static int item_insert_locked(store *s, int64_t job_id, store_kind kind, int64_t item_id,
                              const char *name, int64_t now, store_err *err)
{
	store_conn *w = &s->writer;
	sqlite3_stmt *st = store_stmt(w, SQL_ITEM_ADD, err);
	if (!st)
		return err->code;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int(st, 2, kind);
	sqlite3_bind_int64(st, 3, item_id);
	sqlite3_bind_int64(st, 4, now);
	sqlite3_bind_text(st, 5, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		return store_fail(err, STORE_ENOTFOUND, "no job %lld", (long long)job_id);
	if (rc != SQLITE_DONE)
		return store_sqlite_fail(err, w->db, rc, "queueing an item");
	return STORE_OK;
}

static int add_item_locked(store *s, int64_t job_id, store_kind kind, int64_t item_id,
                           const char *name, store_err *err)
{
	int64_t now = store_now_ms();
	int rc = item_insert_locked(s, job_id, kind, item_id, name, now, err);
	return rc == STORE_OK ? job_grow_locked(s, job_id, 1, 0, now, err) : rc;
}

int store_job_add_item(store *s, int64_t job_id, store_kind kind, int64_t item_id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (kind != STORE_IMAGE && kind != STORE_TEXT)
		return store_fail(err, STORE_EINVAL, "unknown collection %d", (int)kind);
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	rc = add_item_locked(s, job_id, kind, item_id, NULL, err);
	return store_write_end(s, rc, err);
}

int store_job_add_failed(store *s, int64_t job_id, const char *name, const char *why,
                         store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	int64_t now = store_now_ms();
	sqlite3_stmt *st = store_stmt(w, SQL_ITEM_ADD_FAILED, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, why && *why ? why : "failed", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, now);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		rc = store_fail(err, STORE_ENOTFOUND, "no job %lld", (long long)job_id);
	else if (rc != SQLITE_DONE)
		rc = store_sqlite_fail(err, w->db, rc, "recording a refused file");
	else
		rc = job_grow_locked(s, job_id, 1, 1, now, err);
out:
	return store_write_end(s, rc, err);
}

int store_image_insert_queued(store *s, const store_image *img, int64_t job_id, int64_t *id,
                              store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t tmp;
	if (!id)
		id = &tmp;
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	rc = store_image_insert_locked(s, img, id, err);
	if (rc == STORE_OK)
		rc = add_item_locked(s, job_id, STORE_IMAGE, *id, img->filename, err);
	if (rc == STORE_EEXISTS) {
		/* Nothing was written; keep the message and the existing id. */
		store_err keep = *err;
		store_write_end(s, rc, err);
		*err = keep;
		return rc;
	}
	return store_write_end(s, rc, err);
}

int store_texts_insert_queued(store *s, size_t n, const char *const *texts,
                              const char *const *metas, int64_t job_id, int64_t *ids,
                              store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (n == 0)
		return STORE_OK;
	if (!texts)
		return store_fail(err, STORE_EINVAL, "texts are required");
	for (size_t i = 0; i < n; i++)
		if (!texts[i])
			return store_fail(err, STORE_EINVAL, "text %zu is missing", i);
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	int64_t now = store_now_ms();
	for (size_t i = 0; i < n && rc == STORE_OK; i++) {
		int64_t id;
		rc = store_text_insert_locked(s, texts[i], metas ? metas[i] : NULL, &id, err);
		if (rc == STORE_EINVAL && n > 1) {
			store_err keep = *err;
			rc = store_fail(err, STORE_EINVAL, "text %zu: %s", i, keep.msg);
		}
		if (rc == STORE_OK)
			rc = item_insert_locked(s, job_id, STORE_TEXT, id, NULL, now, err);
		if (rc == STORE_OK && ids)
			ids[i] = id;
	}
	if (rc == STORE_OK)
		rc = job_grow_locked(s, job_id, (int64_t)n, 0, now, err);
	return store_write_end(s, rc, err);
}

int store_text_insert_queued(store *s, const char *text, const char *meta_json, int64_t job_id,
                             int64_t *id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return store_texts_insert_queued(s, 1, &text, &meta_json, job_id, id, err);
}

static void read_job_row(sqlite3_stmt *st, store_job *j, int *oom)
{
	j->id = sqlite3_column_int64(st, 0);
	j->kind = store_col_strdup(st, 1, oom);
	j->state = (store_job_state)sqlite3_column_int(st, 2);
	j->total = sqlite3_column_int64(st, 3);
	j->done = sqlite3_column_int64(st, 4);
	j->failed = sqlite3_column_int64(st, 5);
	j->created_ms = sqlite3_column_int64(st, 6);
	j->updated_ms = sqlite3_column_int64(st, 7);
	j->sealed = sqlite3_column_int(st, 8);
}

int store_job_get(store *s, int64_t job_id, store_job *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	memset(out, 0, sizeof *out);
	store_conn *c = store_reader_get(s);
	int rc, oom = 0;
	sqlite3_stmt *st = store_stmt(c, SQL_JOB_GET, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int64(st, 1, job_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		read_job_row(st, out, &oom);
		rc = STORE_OK;
		if (oom) {
			store_job_clear(out);
			rc = store_fail(err, STORE_ENOMEM, "out of memory");
		}
	} else if (rc == SQLITE_DONE) {
		rc = store_fail(err, STORE_ENOTFOUND, "no job %lld", (long long)job_id);
	} else {
		rc = store_sqlite_fail(err, c->db, rc, "reading a job");
	}
	sqlite3_reset(st);
out:
	store_reader_put(c);
	return rc;
}

void store_job_errors_clear(store_job_error *errors, size_t n)
{
	for (size_t i = 0; errors && i < n; i++) {
		free(errors[i].name);
		free(errors[i].error);
		memset(&errors[i], 0, sizeof errors[i]);
	}
}

int store_job_errors(store *s, int64_t job_id, size_t max, store_job_error *out, size_t *n,
                     store_err *err)
{
	STORE_ERR_DEFAULT(err);
	*n = 0;
	if (max == 0)
		return STORE_OK;
	store_conn *c = store_reader_get(s);
	int rc, oom = 0;
	size_t k = 0;
	sqlite3_stmt *st = store_stmt(c, SQL_JOB_ERRORS, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, (int64_t)max);
	while (k < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_job_error *e = &out[k++];
		e->item_id = sqlite3_column_int64(st, 0);
		e->kind = (store_kind)sqlite3_column_int(st, 1);
		e->name = store_col_strdup(st, 2, &oom);
		e->error = store_col_strdup(st, 3, &oom);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		rc = store_sqlite_fail(err, c->db, rc, "reading the errors of a job");
	else if (oom)
		rc = store_fail(err, STORE_ENOMEM, "out of memory");
	else
		rc = STORE_OK;
out:
	store_reader_put(c);
	if (rc != STORE_OK)
		store_job_errors_clear(out, k);
	else
		*n = k;
	return rc;
}

int store_job_list(store *s, int max, store_job **jobs, size_t *n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	*jobs = NULL;
	*n = 0;
	if (max <= 0)
		return STORE_OK;
	store_job *out = calloc((size_t)max, sizeof *out);
	if (!out)
		return store_fail(err, STORE_ENOMEM, "out of memory");
	store_conn *c = store_reader_get(s);
	int rc, oom = 0;
	size_t k = 0;
	sqlite3_stmt *st = store_stmt(c, SQL_JOB_LIST, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int(st, 1, max);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && k < (size_t)max)
		read_job_row(st, &out[k++], &oom);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		rc = store_sqlite_fail(err, c->db, rc, "listing jobs");
	else if (oom)
		rc = store_fail(err, STORE_ENOMEM, "out of memory");
	else
		rc = STORE_OK;
out:
	store_reader_put(c);
	if (rc != STORE_OK) {
		store_jobs_free(out, k);
		return rc;
	}
	*jobs = out;
	*n = k;
	return STORE_OK;
}

static int cmp_work(const void *a, const void *b)
{
	const store_work *x = a, *y = b;
	return (x->work_id > y->work_id) - (x->work_id < y->work_id);
}

int store_work_claim(store *s, store_kind kind, store_work *out, size_t max, size_t *n,
                     store_err *err)
{
	STORE_ERR_DEFAULT(err);
	*n = 0;
	if (max == 0)
		return STORE_OK;
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	int64_t now = store_now_ms();
	size_t k = 0;
	sqlite3_stmt *st = store_stmt(w, SQL_CLAIM, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_int64(st, 2, (int64_t)max);
	sqlite3_bind_int64(st, 3, now);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && k < max) {
		out[k].work_id = sqlite3_column_int64(st, 0);
		out[k].job_id = sqlite3_column_int64(st, 1);
		out[k].kind = (store_kind)sqlite3_column_int(st, 2);
		out[k].item_id = sqlite3_column_int64(st, 3);
		out[k].attempts = sqlite3_column_int(st, 4);
		k++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		rc = store_sqlite_fail(err, w->db, rc, "claiming work");
		goto out;
	}
	rc = STORE_OK;
	/* RETURNING gives no order; hand work out oldest first. */
	qsort(out, k, sizeof *out, cmp_work);
	for (size_t i = 0; i < k && rc == STORE_OK; i++) {
		if (i > 0 && out[i].job_id == out[i - 1].job_id)
			continue;
		if (!(st = store_stmt(w, SQL_JOB_RUNNING, err))) {
			rc = err->code;
			break;
		}
		sqlite3_bind_int64(st, 1, out[i].job_id);
		sqlite3_bind_int64(st, 2, now);
		rc = store_step_done(w, st, "updating a job", err);
	}
out:
	rc = store_write_end(s, rc, err);
	if (rc == STORE_OK)
		*n = k;
	return rc;
}

/* Inside a write transaction: counts a finished item in its job and, for a
 * failure, marks the image or text failed. */
static int count_finished_locked(store *s, int64_t job_id, store_kind kind, int64_t item_id,
                                 const char *why, int64_t now, store_err *err)
{
	store_conn *w = &s->writer;
	sqlite3_stmt *st = store_stmt(w, why ? SQL_JOB_COUNT_FAIL : SQL_JOB_COUNT_DONE, err);
	if (!st)
		return err->code;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, now);
	int rc = store_step_done(w, st, "updating a job", err);
	if (rc != STORE_OK || !why)
		return rc;
	if (!(st = store_stmt(w, kind == STORE_IMAGE ? SQL_IMAGE_FAIL : SQL_TEXT_FAIL, err)))
		return err->code;
	sqlite3_bind_int64(st, 1, item_id);
	sqlite3_bind_text(st, 2, why, -1, SQLITE_STATIC);
	if (kind == STORE_IMAGE)
		sqlite3_bind_int64(st, 3, now);
	return store_step_done(w, st, "marking an item failed", err);
}

int store_work_finish_locked(store *s, int64_t work_id, const char *why, int64_t now, int *found,
                             store_err *err)
{
	store_conn *w = &s->writer;
	*found = 0;
	sqlite3_stmt *st = store_stmt(w, SQL_ITEM_FINISH, err);
	if (!st)
		return err->code;
	sqlite3_bind_int64(st, 1, work_id);
	sqlite3_bind_int(st, 2, why ? ITEM_FAILED : ITEM_DONE);
	sqlite3_bind_text(st, 3, why, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, now);
	int rc = sqlite3_step(st);
	int64_t job_id = 0, item_id = 0;
	store_kind kind = STORE_IMAGE;
	if (rc == SQLITE_ROW) {
		*found = 1;
		job_id = sqlite3_column_int64(st, 0);
		kind = (store_kind)sqlite3_column_int(st, 1);
		item_id = sqlite3_column_int64(st, 2);
		rc = sqlite3_step(st);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		*found = 0;
		return store_sqlite_fail(err, w->db, rc, "finishing work");
	}
	if (!*found)
		return STORE_OK;
	return count_finished_locked(s, job_id, kind, item_id, why, now, err);
}

static int finish(store *s, int64_t work_id, const char *why, store_err *err)
{
	int found, rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	rc = store_work_finish_locked(s, work_id, why, store_now_ms(), &found, err);
	if (rc == STORE_OK && !found)
		rc = store_fail(err, STORE_ENOTFOUND, "work item %lld is not claimed", (long long)work_id);
	return store_write_end(s, rc, err);
}

int store_work_complete(store *s, int64_t work_id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return finish(s, work_id, NULL, err);
}

int store_work_complete_many(store *s, const int64_t *work_ids, size_t n, size_t *completed,
                             store_err *err)
{
	STORE_ERR_DEFAULT(err);
	size_t k = 0;
	if (completed)
		*completed = 0;
	if (n == 0)
		return STORE_OK;
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	int64_t now = store_now_ms();
	for (size_t i = 0; i < n && rc == STORE_OK; i++) {
		int found;
		rc = store_work_finish_locked(s, work_ids[i], NULL, now, &found, err);
		k += found;
	}
	rc = store_write_end(s, rc, err);
	if (rc == STORE_OK && completed)
		*completed = k;
	return rc;
}

int store_work_fail(store *s, int64_t work_id, const char *why, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return finish(s, work_id, why && *why ? why : "failed", err);
}

int store_work_requeue_claimed(store *s, int64_t *n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	int64_t now = store_now_ms();
	struct given_up {
		int64_t job_id, item_id;
		store_kind kind;
	} *gu = NULL;
	size_t ngu = 0, cap = 0;

	sqlite3_stmt *st = store_stmt(w, SQL_GIVE_UP, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int(st, 1, STORE_MAX_ATTEMPTS);
	sqlite3_bind_int64(st, 2, now);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (ngu == cap) {
			size_t nc = cap ? 2 * cap : 16;
			void *p = realloc(gu, nc * sizeof *gu);
			if (!p) {
				sqlite3_reset(st);
				rc = store_fail(err, STORE_ENOMEM, "out of memory");
				goto out;
			}
			gu = p;
			cap = nc;
		}
		gu[ngu].job_id = sqlite3_column_int64(st, 1);
		gu[ngu].kind = (store_kind)sqlite3_column_int(st, 2);
		gu[ngu].item_id = sqlite3_column_int64(st, 3);
		ngu++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		rc = store_sqlite_fail(err, w->db, rc, "recovering the queue");
		goto out;
	}
	rc = STORE_OK;
	for (size_t i = 0; i < ngu && rc == STORE_OK; i++)
		rc = count_finished_locked(s, gu[i].job_id, gu[i].kind, gu[i].item_id,
		                           "the server stopped while processing this item, repeatedly",
		                           now, err);
	if (rc != STORE_OK)
		goto out;
	if (!(st = store_stmt(w, SQL_REQUEUE, err))) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int64(st, 1, now);
	if ((rc = store_step_done(w, st, "recovering the queue", err)) != STORE_OK)
		goto out;
	if (n)
		*n = sqlite3_changes(w->db);
	if (!(st = store_stmt(w, SQL_JOB_SEAL_ALL, err))) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int64(st, 1, now);
	rc = store_step_done(w, st, "sealing jobs", err);
out:
	free(gu);
	return store_write_end(s, rc, err);
}

int store_work_depth(store *s, int64_t *n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	store_conn *c = store_reader_get(s);
	int rc;
	sqlite3_stmt *st = store_stmt(c, SQL_DEPTH, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*n = sqlite3_column_int64(st, 0);
		rc = STORE_OK;
	} else {
		rc = store_sqlite_fail(err, c->db, rc, "reading the queue depth");
	}
	sqlite3_reset(st);
out:
	store_reader_put(c);
	return rc;
}
