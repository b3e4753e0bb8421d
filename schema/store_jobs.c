/*
 * store_jobs.c: jobs, the records through which a client follows an
 * ingestion, and the calls that fill them.
 *
 * A job groups the items of one request (an upload, a bulk batch, a folder,
 * texts) or of one round of the directory watcher. Each job item moves
 * queued -> claimed -> done | failed (store_queue.c moves it); a file refused
 * before it was stored is born failed (item_id 0). A job is done when it is
 * sealed and every item is done or failed: a job filled over time is created
 * open and sealed by its filler once the last item is queued, so it never
 * looks done half-way; a job left open by a crash is sealed at start-up.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* ?3 state, ?4 sealed: a sealed job starts done (it is empty). */
static const char SQL_JOB_CREATE[] =
	"INSERT INTO jobs (kind, state, sealed, created_ms, updated_ms) VALUES (?1, ?3, ?4, ?2, ?2)";
/* ?6 the state: 0 queued, or 2 for an item that arrives done (an import
 * with its embedding). */
static const char SQL_ITEM_ADD[] =
	"INSERT INTO job_items (job_id, kind, item_id, state, name, updated_ms) "
	"VALUES (?1, ?2, ?3, ?6, ?5, ?4)";
static const char SQL_ITEM_ADD_FAILED[] =
	"INSERT INTO job_items (job_id, kind, item_id, state, name, error, updated_ms) "
	"VALUES (?1, 0, 0, 3, ?2, ?3, ?4)";
static const char SQL_JOB_GROW_DONE[] =
	"UPDATE jobs SET total = total + 1, done = done + 1, updated_ms = ?2, "
	"state = CASE WHEN sealed AND done + 1 + failed >= total + 1 THEN 2 ELSE 1 END WHERE id = ?1";
/* ?3 more items, ?4 of them already failed. A done job is no longer done. */
static const char SQL_JOB_GROW[] =
	"UPDATE jobs SET total = total + ?3, failed = failed + ?4, updated_ms = ?2, "
	"state = CASE WHEN sealed AND done + failed + ?4 >= total + ?3 THEN 2 "
	"WHEN state = 2 OR ?4 > 0 THEN (CASE WHEN done + failed + ?4 > 0 THEN 1 ELSE 0 END) "
	"ELSE state END WHERE id = ?1";
static const char SQL_JOB_SEAL[] =
	"UPDATE jobs SET sealed = 1, updated_ms = ?2, "
	"state = CASE WHEN done + failed >= total THEN 2 ELSE state END WHERE id = ?1";
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

/* Inside a write transaction: inserts one job item row (queued, or done
 * when done is set), without counting it in its job. */
static int item_insert_locked(store *s, int64_t job_id, store_kind kind, int64_t item_id,
                              const char *name, int64_t now, int done, store_err *err)
{
	store_query q = {
		.sql = SQL_ITEM_ADD, .what = done ? "recording an item done" : "queueing an item",
		.args = {BIND_INT(job_id), BIND_INT(kind), BIND_INT(item_id), BIND_INT(now),
		         BIND_TEXT(name), BIND_INT(done ? 2 : 0)},
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
	int rc = item_insert_locked(s, job_id, kind, item_id, name, now, 0, err);
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

int store_job_add_done_locked(store *s, int64_t job_id, store_kind kind, int64_t item_id,
                              const char *name, int64_t now, store_err *err)
{
	int rc = item_insert_locked(s, job_id, kind, item_id, name, now, 1, err);
	if (rc != STORE_OK)
		return rc;
	return store_run(&s->writer, &(store_query){
		.sql = SQL_JOB_GROW_DONE, .what = "updating a job",
		.args = {BIND_INT(job_id), BIND_INT(now)},
	}, err);
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
			rc = item_insert_locked(s, a->job_id, STORE_TEXT, id, NULL, now, 0, err);
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
