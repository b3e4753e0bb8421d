/*
 * store_queue.c: the work queue, the job items the workers claim and finish.
 *
 * A worker claims queued items of one collection (queued -> claimed) and
 * finishes each as done or failed, which counts it in its job. A claim lives
 * only as long as the process that took it: at start-up
 * store_work_requeue_claimed returns claims to the queue, except for items
 * that were already claimed STORE_MAX_ATTEMPTS times (an input that kills
 * the process would otherwise kill it on every start); those fail with a
 * reason. It also seals the jobs a crash left open.
 */
#include <stdlib.h>

#include "store_int.h"

#define STORE_MAX_ATTEMPTS 3

enum { ITEM_QUEUED = 0, ITEM_CLAIMED = 1, ITEM_DONE = 2, ITEM_FAILED = 3 };

static const char SQL_JOB_SEAL_ALL[] =
	"UPDATE jobs SET sealed = 1, updated_ms = ?1, "
	"state = CASE WHEN done + failed >= total THEN 2 ELSE state END WHERE sealed = 0";
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
static const char SQL_RELEASE[] =
	"UPDATE job_items SET state = 0, attempts = max(attempts - 1, 0), updated_ms = ?2 "
	"WHERE state = 1 AND id IN (SELECT value FROM json_each(?1))";
static const char SQL_DEPTH[] = "SELECT count(*) FROM job_items WHERE state IN (0, 1)";

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

static int release_tx(store *s, void *ctx, store_err *err)
{
	return store_run(&s->writer, &(store_query){
		.sql = SQL_RELEASE, .what = "returning items to the queue",
		.args = {BIND_TEXT((const char *)ctx), BIND_NOW},
	}, err);
}

int store_work_release(store *s, const int64_t *work_ids, size_t n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (n == 0)
		return STORE_OK;
	char *json = store_ids_json(work_ids, n);
	if (!json)
		return store_fail(err, STORE_ENOMEM, "out of memory");
	int rc = store_write(s, release_tx, json, err);
	free(json);
	return rc;
}
