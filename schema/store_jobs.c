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

struct job_create {
	const char *kind;
	int sealed;
	int64_t *job_id;
};

static int job_create_tx(store *s, void *ctx, store_err *err)
{
	struct job_create *a = ctx;
	int rc = store_run(&s->writer, &(store_query){
		.sql = SQL_JOB_CREATE, .what = "creating a job",
		.args = {BIND_TEXT(a->kind), BIND_NOW,
		         BIND_INT(a->sealed ? STORE_JOB_DONE : STORE_JOB_QUEUED), BIND_INT(a->sealed)},
	}, err);
	if (rc == STORE_OK)
		*a->job_id = sqlite3_last_insert_rowid(s->writer.db);
	return rc;
}

static int job_create(store *s, const char *kind, int sealed, int64_t *job_id, store_err *err)
{
	if (!kind || !*kind)
		return store_fail(err, STORE_EINVAL, "a job needs a kind");
	struct job_create a = {kind, sealed, job_id};
	return store_write(s, job_create_tx, &a, err);
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

static int job_seal_tx(store *s, void *ctx, store_err *err)
{
	int64_t job_id = *(const int64_t *)ctx;
	int rc = store_run(&s->writer, &(store_query){
		.sql = SQL_JOB_SEAL, .what = "sealing a job", .args = {BIND_INT(job_id), BIND_NOW},
	}, err);
	if (rc == STORE_OK && sqlite3_changes(s->writer.db) == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no job %lld", (long long)job_id);
	return rc;
}

int store_job_seal(store *s, int64_t job_id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return store_write(s, job_seal_tx, &job_id, err);
}

/* Inside a write transaction: counts nmore new items, nfailed of them
 * failed already, in a job. */
static int job_grow_locked(store *s, int64_t job_id, int64_t nmore, int64_t nfailed, int64_t now,
                           store_err *err)
{
	return store_run(&s->writer, &(store_query){
		.sql = SQL_JOB_GROW, .what = "updating a job",
		.args = {BIND_INT(job_id), BIND_INT(now), BIND_INT(nmore), BIND_INT(nfailed)},
	}, err);
}

/* Inside a write transaction: inserts one job item row, without counting
 * it in its job. */
static int item_insert_locked(store *s, int64_t job_id, store_kind kind, int64_t item_id,
                              const char *name, int64_t now, store_err *err)
{
	store_query q = {
		.sql = SQL_ITEM_ADD, .what = "queueing an item",
		.args = {BIND_INT(job_id), BIND_INT(kind), BIND_INT(item_id), BIND_INT(now),
		         BIND_TEXT(name)},
	};
	int rc = store_run(&s->writer, &q, err);
	if (q.step_rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		return store_fail(err, STORE_ENOTFOUND, "no job %lld", (long long)job_id);
	return rc;
}

static int add_item_locked(store *s, int64_t job_id, store_kind kind, int64_t item_id,
                           const char *name, store_err *err)
{
	int64_t now = store_now_ms();
	int rc = item_insert_locked(s, job_id, kind, item_id, name, now, err);
	return rc == STORE_OK ? job_grow_locked(s, job_id, 1, 0, now, err) : rc;
}

struct add_item {
	int64_t job_id;
	store_kind kind;
	int64_t item_id;
};

static int add_item_tx(store *s, void *ctx, store_err *err)
{
	struct add_item *a = ctx;
	return add_item_locked(s, a->job_id, a->kind, a->item_id, NULL, err);
}

int store_job_add_item(store *s, int64_t job_id, store_kind kind, int64_t item_id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (kind != STORE_IMAGE && kind != STORE_TEXT)
		return store_fail(err, STORE_EINVAL, "unknown collection %d", (int)kind);
	struct add_item a = {job_id, kind, item_id};
	return store_write(s, add_item_tx, &a, err);
}

struct add_failed {
	int64_t job_id;
	const char *name, *why;
};

static int add_failed_tx(store *s, void *ctx, store_err *err)
{
	struct add_failed *a = ctx;
	int64_t now = store_now_ms();
	store_query q = {
		.sql = SQL_ITEM_ADD_FAILED, .what = "recording a refused file",
		.args = {BIND_INT(a->job_id), BIND_TEXT(a->name), BIND_TEXT(a->why), BIND_INT(now)},
	};
	int rc = store_run(&s->writer, &q, err);
	if (q.step_rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		return store_fail(err, STORE_ENOTFOUND, "no job %lld", (long long)a->job_id);
	return rc == STORE_OK ? job_grow_locked(s, a->job_id, 1, 1, now, err) : rc;
}

int store_job_add_failed(store *s, int64_t job_id, const char *name, const char *why,
                         store_err *err)
{
	STORE_ERR_DEFAULT(err);
	struct add_failed a = {job_id, name, why && *why ? why : "failed"};
	return store_write(s, add_failed_tx, &a, err);
}

struct image_queued {
	const store_image *img;
	int64_t job_id, *id;
};

static int image_queued_tx(store *s, void *ctx, store_err *err)
{
	struct image_queued *a = ctx;
	int rc = store_image_insert_locked(s, a->img, a->id, err);
	return rc == STORE_OK ? add_item_locked(s, a->job_id, STORE_IMAGE, *a->id, a->img->filename, err)
	                      : rc;
}

int store_image_insert_queued(store *s, const store_image *img, int64_t job_id, int64_t *id,
                              store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t tmp;
	/* On STORE_EEXISTS nothing was written: the rollback keeps the message
	 * and the existing image's id. */
	struct image_queued a = {img, job_id, id ? id : &tmp};
	return store_write(s, image_queued_tx, &a, err);
}

struct texts_queued {
	size_t n;
	const char *const *texts, *const *metas;
	int64_t job_id, *ids;
};

static int texts_queued_tx(store *s, void *ctx, store_err *err)
{
	struct texts_queued *a = ctx;
	int64_t now = store_now_ms();
	int rc = STORE_OK;
	for (size_t i = 0; i < a->n && rc == STORE_OK; i++) {
		int64_t id;
		rc = store_text_insert_locked(s, a->texts[i], a->metas ? a->metas[i] : NULL, &id, err);
		if (rc == STORE_EINVAL && a->n > 1) {
			store_err keep = *err;
			rc = store_fail(err, STORE_EINVAL, "text %zu: %s", i, keep.msg);
		}
		if (rc == STORE_OK)
			rc = item_insert_locked(s, a->job_id, STORE_TEXT, id, NULL, now, err);
		if (rc == STORE_OK && a->ids)
			a->ids[i] = id;
	}
	return rc == STORE_OK ? job_grow_locked(s, a->job_id, (int64_t)a->n, 0, now, err) : rc;
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
	struct texts_queued a = {n, texts, metas, job_id, ids};
	return store_write(s, texts_queued_tx, &a, err);
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

static int job_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	int oom = 0;
	read_job_row(st, ctx, &oom);
	if (!oom)
		return 0;
	store_job_clear(ctx);
	return store_fail(err, STORE_ENOMEM, "out of memory");
}

int store_job_get(store *s, int64_t job_id, store_job *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	memset(out, 0, sizeof *out);
	store_query q = {
		.sql = SQL_JOB_GET, .what = "reading a job", .args = {BIND_INT(job_id)},
		.row = job_row, .ctx = out,
	};
	int rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no job %lld", (long long)job_id);
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

/* Rows into out[0..max): the LIMIT of the queries already keeps them to max.
 * Running out of memory is noted and the rows read on, so that a failing
 * step is still the error reported. */
struct job_rows {
	void *out;
	size_t max, k;
	int oom;
};

static int job_error_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct job_rows *r = ctx;
	(void)err;
	if (r->k == r->max)
		return 0;
	store_job_error *e = (store_job_error *)r->out + r->k++;
	e->item_id = sqlite3_column_int64(st, 0);
	e->kind = (store_kind)sqlite3_column_int(st, 1);
	e->name = store_col_strdup(st, 2, &r->oom);
	e->error = store_col_strdup(st, 3, &r->oom);
	return 0;
}

int store_job_errors(store *s, int64_t job_id, size_t max, store_job_error *out, size_t *n,
                     store_err *err)
{
	STORE_ERR_DEFAULT(err);
	*n = 0;
	if (max == 0)
		return STORE_OK;
	struct job_rows r = {.out = out, .max = max};
	int rc = store_read(s, &(store_query){
		.sql = SQL_JOB_ERRORS, .what = "reading the errors of a job",
		.args = {BIND_INT(job_id), BIND_INT(max)}, .row = job_error_row, .ctx = &r,
	}, err);
	if (rc == STORE_OK && r.oom)
		rc = store_fail(err, STORE_ENOMEM, "out of memory");
	if (rc != STORE_OK)
		store_job_errors_clear(out, r.k);
	else
		*n = r.k;
	return rc;
}

static int job_list_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct job_rows *r = ctx;
	(void)err;
	if (r->k < r->max)
		read_job_row(st, (store_job *)r->out + r->k++, &r->oom);
	return 0;
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
	struct job_rows r = {.out = out, .max = (size_t)max};
	int rc = store_read(s, &(store_query){
		.sql = SQL_JOB_LIST, .what = "listing jobs", .args = {BIND_INT(max)},
		.row = job_list_row, .ctx = &r,
	}, err);
	if (rc == STORE_OK && r.oom)
		rc = store_fail(err, STORE_ENOMEM, "out of memory");
	if (rc != STORE_OK) {
		store_jobs_free(out, r.k);
		return rc;
	}
	*jobs = out;
	*n = r.k;
	return STORE_OK;
}

static int cmp_work(const void *a, const void *b)
{
	const store_work *x = a, *y = b;
	return (x->work_id > y->work_id) - (x->work_id < y->work_id);
}

struct claim {
	store_kind kind;
	store_work *out;
	size_t max, k;
};

static int claim_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct claim *c = ctx;
	(void)err;
	if (c->k == c->max) /* the LIMIT already keeps the rows to max */
		return 0;
	store_work *w = &c->out[c->k++];
	w->work_id = sqlite3_column_int64(st, 0);
	w->job_id = sqlite3_column_int64(st, 1);
	w->kind = (store_kind)sqlite3_column_int(st, 2);
	w->item_id = sqlite3_column_int64(st, 3);
	w->attempts = sqlite3_column_int(st, 4);
	return 0;
}

static int claim_tx(store *s, void *ctx, store_err *err)
{
	struct claim *c = ctx;
	int64_t now = store_now_ms();
	int rc = store_run(&s->writer, &(store_query){
		.sql = SQL_CLAIM, .what = "claiming work",
		.args = {BIND_INT(c->kind), BIND_INT(c->max), BIND_INT(now)}, .row = claim_row, .ctx = c,
	}, err);
	/* RETURNING gives no order; hand work out oldest first. */
	if (rc == STORE_OK)
		qsort(c->out, c->k, sizeof *c->out, cmp_work);
	for (size_t i = 0; i < c->k && rc == STORE_OK; i++) {
		if (i > 0 && c->out[i].job_id == c->out[i - 1].job_id)
			continue;
		rc = store_run(&s->writer, &(store_query){
			.sql = SQL_JOB_RUNNING, .what = "updating a job",
			.args = {BIND_INT(c->out[i].job_id), BIND_INT(now)},
		}, err);
	}
	return rc;
}

int store_work_claim(store *s, store_kind kind, store_work *out, size_t max, size_t *n,
                     store_err *err)
{
	STORE_ERR_DEFAULT(err);
	*n = 0;
	if (max == 0)
		return STORE_OK;
	struct claim c = {kind, out, max, 0};
	int rc = store_write(s, claim_tx, &c, err);
	if (rc == STORE_OK)
		*n = c.k;
	return rc;
}

/* Inside a write transaction: counts a finished item in its job and, for a
 * failure, marks the image or text failed. */
static int count_finished_locked(store *s, int64_t job_id, store_kind kind, int64_t item_id,
                                 const char *why, int64_t now, store_err *err)
{
	store_conn *w = &s->writer;
	int rc = store_run(w, &(store_query){
		.sql = why ? SQL_JOB_COUNT_FAIL : SQL_JOB_COUNT_DONE, .what = "updating a job",
		.args = {BIND_INT(job_id), BIND_INT(now)},
	}, err);
	if (rc != STORE_OK || !why)
		return rc;
	return store_run(w, &(store_query){
		.sql = kind == STORE_IMAGE ? SQL_IMAGE_FAIL : SQL_TEXT_FAIL,
		.what = "marking an item failed",
		.args = {BIND_INT(item_id), BIND_TEXT(why), kind == STORE_IMAGE ? BIND_INT(now) : BIND_NONE},
	}, err);
}

/* The one row of SQL_ITEM_FINISH. */
struct finished {
	int64_t job_id, item_id;
	store_kind kind;
};

static int finished_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct finished *f = ctx;
	(void)err;
	f->job_id = sqlite3_column_int64(st, 0);
	f->kind = (store_kind)sqlite3_column_int(st, 1);
	f->item_id = sqlite3_column_int64(st, 2);
	return 0;
}

int store_work_finish_locked(store *s, int64_t work_id, const char *why, int64_t now, int *found,
                             store_err *err)
{
	struct finished f = {0, 0, STORE_IMAGE};
	store_query q = {
		.sql = SQL_ITEM_FINISH, .what = "finishing work",
		.args = {BIND_INT(work_id), BIND_INT(why ? ITEM_FAILED : ITEM_DONE), BIND_TEXT(why),
		         BIND_INT(now)},
		.row = finished_row, .ctx = &f,
	};
	*found = 0;
	int rc = store_run(&s->writer, &q, err);
	if (rc != STORE_OK || q.rows == 0)
		return rc;
	*found = 1;
	return count_finished_locked(s, f.job_id, f.kind, f.item_id, why, now, err);
}

struct finish {
	int64_t work_id;
	const char *why;
};

static int finish_tx(store *s, void *ctx, store_err *err)
{
	struct finish *a = ctx;
	int found, rc = store_work_finish_locked(s, a->work_id, a->why, store_now_ms(), &found, err);
	if (rc == STORE_OK && !found)
		rc = store_fail(err, STORE_ENOTFOUND, "work item %lld is not claimed",
		                (long long)a->work_id);
	return rc;
}

static int finish(store *s, int64_t work_id, const char *why, store_err *err)
{
	struct finish a = {work_id, why};
	return store_write(s, finish_tx, &a, err);
}

int store_work_complete(store *s, int64_t work_id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return finish(s, work_id, NULL, err);
}

struct complete_many {
	const int64_t *work_ids;
	size_t n, k;
};

static int complete_many_tx(store *s, void *ctx, store_err *err)
{
	struct complete_many *a = ctx;
	int64_t now = store_now_ms();
	int rc = STORE_OK;
	for (size_t i = 0; i < a->n && rc == STORE_OK; i++) {
		int found;
		rc = store_work_finish_locked(s, a->work_ids[i], NULL, now, &found, err);
		a->k += found;
	}
	return rc;
}

int store_work_complete_many(store *s, const int64_t *work_ids, size_t n, size_t *completed,
                             store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (completed)
		*completed = 0;
	if (n == 0)
		return STORE_OK;
	struct complete_many a = {work_ids, n, 0};
	int rc = store_write(s, complete_many_tx, &a, err);
	if (rc == STORE_OK && completed)
		*completed = a.k;
	return rc;
}

int store_work_fail(store *s, int64_t work_id, const char *why, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return finish(s, work_id, why && *why ? why : "failed", err);
}

/* The items SQL_GIVE_UP failed, to count in their jobs once its rows are
 * read to the end. */
struct given_up {
	struct {
		int64_t job_id, item_id;
		store_kind kind;
	} *v;
	size_t n, cap;
};

static int given_up_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct given_up *g = ctx;
	if (g->n == g->cap) {
		size_t nc = g->cap ? 2 * g->cap : 16;
		void *p = realloc(g->v, nc * sizeof *g->v);
		if (!p)
			return store_fail(err, STORE_ENOMEM, "out of memory");
		g->v = p;
		g->cap = nc;
	}
	g->v[g->n].job_id = sqlite3_column_int64(st, 1);
	g->v[g->n].kind = (store_kind)sqlite3_column_int(st, 2);
	g->v[g->n].item_id = sqlite3_column_int64(st, 3);
	g->n++;
	return 0;
}

struct requeue {
	int64_t *n;
};

static int requeue_tx(store *s, void *ctx, store_err *err)
{
	struct requeue *a = ctx;
	store_conn *w = &s->writer;
	int64_t now = store_now_ms();
	struct given_up gu = {NULL, 0, 0};

	int rc = store_run(w, &(store_query){
		.sql = SQL_GIVE_UP, .what = "recovering the queue",
		.args = {BIND_INT(STORE_MAX_ATTEMPTS), BIND_INT(now)}, .row = given_up_row, .ctx = &gu,
	}, err);
	for (size_t i = 0; i < gu.n && rc == STORE_OK; i++)
		rc = count_finished_locked(s, gu.v[i].job_id, gu.v[i].kind, gu.v[i].item_id,
		                           "the server stopped while processing this item, repeatedly",
		                           now, err);
	free(gu.v);
	if (rc != STORE_OK)
		return rc;
	rc = store_run(w, &(store_query){
		.sql = SQL_REQUEUE, .what = "recovering the queue", .args = {BIND_INT(now)},
	}, err);
	if (rc != STORE_OK)
		return rc;
	if (a->n)
		*a->n = sqlite3_changes(w->db);
	return store_run(w, &(store_query){
		.sql = SQL_JOB_SEAL_ALL, .what = "sealing jobs", .args = {BIND_INT(now)},
	}, err);
}

int store_work_requeue_claimed(store *s, int64_t *n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	struct requeue a = {n};
	return store_write(s, requeue_tx, &a, err);
}

int store_work_depth(store *s, int64_t *n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	store_query q = {
		.sql = SQL_DEPTH, .what = "reading the queue depth", .row = store_int64_row, .ctx = n,
	};
	int rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_sqlite_fail(err, NULL, SQLITE_DONE, "reading the queue depth");
	return rc;
}
