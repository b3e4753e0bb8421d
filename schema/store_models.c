/*
 * store_models.c: switching a data directory from one model to another
 * (server/migrate.c drives it): the items a migration still has to embed,
 * its progress, the switch transaction, and the counted job that shows it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* Ready items of a collection without an embedding for ?2 (the primary
 * key of embeddings answers the NOT EXISTS). */
static const char SQL_MISSING_IMAGES[] =
	"SELECT id FROM images AS i WHERE i.status = 1 AND i.id > ?1 AND NOT EXISTS "
	"(SELECT 1 FROM embeddings AS e WHERE e.kind = 0 AND e.item_id = i.id AND e.model = ?2) "
	"ORDER BY i.id LIMIT ?3";
static const char SQL_MISSING_TEXTS[] =
	"SELECT id FROM texts AS t WHERE t.status = 1 AND t.id > ?1 AND NOT EXISTS "
	"(SELECT 1 FROM embeddings AS e WHERE e.kind = 1 AND e.item_id = t.id AND e.model = ?2) "
	"ORDER BY t.id LIMIT ?3";
static const char SQL_COVERAGE[] =
	"SELECT (SELECT count(*) FROM images WHERE status = 1) + "
	"(SELECT count(*) FROM texts WHERE status = 1), "
	"(SELECT count(*) FROM embeddings AS e JOIN images AS i ON i.id = e.item_id "
	"WHERE e.kind = 0 AND e.model = ?1 AND i.status = 1) + "
	"(SELECT count(*) FROM embeddings AS e JOIN texts AS t ON t.id = e.item_id "
	"WHERE e.kind = 1 AND e.model = ?1 AND t.status = 1)";
static const char SQL_COUNT_MISSING[] =
	"SELECT (SELECT count(*) FROM images AS i WHERE i.status = 1 AND NOT EXISTS "
	"(SELECT 1 FROM embeddings AS e WHERE e.kind = 0 AND e.item_id = i.id AND e.model = ?1)) + "
	"(SELECT count(*) FROM texts AS t WHERE t.status = 1 AND NOT EXISTS "
	"(SELECT 1 FROM embeddings AS e WHERE e.kind = 1 AND e.item_id = t.id AND e.model = ?1))";
static const char SQL_IMAGE_FAILED[] =
	"UPDATE images SET status = 2, error = ?2, updated_ms = ?3 WHERE id = ?1";
static const char SQL_TEXT_FAILED[] = "UPDATE texts SET status = 2, error = ?2 WHERE id = ?1";
static const char SQL_KV_PUT[] =
	"INSERT INTO kv (key, value) VALUES (?1, ?2) "
	"ON CONFLICT (key) DO UPDATE SET value = excluded.value";
static const char SQL_KV_DROP_MIGRATION[] = "DELETE FROM kv WHERE key LIKE 'migration.%'";
static const char SQL_KV_DELETE[] = "DELETE FROM kv WHERE key = ?1";
static const char SQL_MODEL_ID[] = "SELECT value FROM kv WHERE key = 'model.id'";
static const char SQL_PRUNE_NEXT[] =
	"SELECT substr(key, 7) FROM kv WHERE key LIKE 'prune.%' ORDER BY key LIMIT 1";
/* Through embeddings_by_seq (kind, model, seq): a batch costs its own rows,
 * not a scan past the kept model's. */
static const char SQL_PRUNE_BATCH[] =
	"DELETE FROM embeddings WHERE (kind, item_id, model) IN "
	"(SELECT kind, item_id, model FROM embeddings WHERE kind IN (0, 1) AND model = ?1 AND "
	"model NOT IN (SELECT value FROM kv WHERE key IN ('model.id', 'migration.model.id')) "
	"LIMIT ?2)";
static const char SQL_JOB_COUNTED[] =
	"INSERT INTO jobs (kind, state, sealed, created_ms, updated_ms) VALUES (?1, 1, 1, ?2, ?2)";
static const char SQL_JOB_COUNTS[] =
	"UPDATE jobs SET total = ?2, done = ?3, failed = ?4, updated_ms = ?6, "
	"state = CASE WHEN ?5 THEN 2 ELSE 1 END WHERE id = ?1";

static int check_args(store_kind kind, const char *model, store_err *err)
{
	if (kind != STORE_IMAGE && kind != STORE_TEXT)
		return store_fail(err, STORE_EINVAL, "unknown collection %d", (int)kind);
	if (!model || !*model)
		return store_fail(err, STORE_EINVAL, "a model is required");
	return STORE_OK;
}

/* A text column 0 into *(char **)ctx (NULL on entry). */
static int strdup_col0(sqlite3_stmt *st, void *ctx, store_err *err)
{
	int oom = 0;
	*(char **)ctx = store_col_strdup(st, 0, &oom);
	return oom ? store_fail(err, STORE_ENOMEM, "out of memory") : 0;
}

struct id_list {
	int64_t *ids;
	size_t max, n;
};

static int id_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct id_list *l = ctx;
	(void)err;
	if (l->n < l->max)
		l->ids[l->n++] = sqlite3_column_int64(st, 0);
	return 0;
}

int store_missing_embeddings(store *s, store_kind kind, const char *model, int64_t after,
                             int64_t *ids, size_t max, size_t *n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc;
	*n = 0;
	if ((rc = check_args(kind, model, err)) != STORE_OK)
		return rc;
	struct id_list l = {ids, max, 0};
	rc = store_read(s, &(store_query){
		.sql = kind == STORE_IMAGE ? SQL_MISSING_IMAGES : SQL_MISSING_TEXTS,
		.what = "listing items to embed", .args = {BIND_INT(after), BIND_TEXT(model), BIND_INT(max)},
		.row = id_row, .ctx = &l,
	}, err);
	if (rc == STORE_OK)
		*n = l.n;
	return rc;
}

struct two_ints {
	int64_t a, b;
};

static int two_ints_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct two_ints *t = ctx;
	(void)err;
	t->a = sqlite3_column_int64(st, 0);
	t->b = sqlite3_column_int64(st, 1);
	return 0;
}

int store_model_coverage(store *s, const char *model, int64_t *ready, int64_t *have,
                         store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc;
	if ((rc = check_args(STORE_IMAGE, model, err)) != STORE_OK)
		return rc;
	struct two_ints t = {0, 0};
	/* One statement: one consistent read of both counts. */
	rc = store_read(s, &(store_query){
		.sql = SQL_COVERAGE, .what = "counting embeddings", .args = {BIND_TEXT(model)},
		.row = two_ints_row, .ctx = &t,
	}, err);
	if (rc == STORE_OK) {
		*ready = t.a;
		*have = t.b;
	}
	return rc;
}

struct item_failed {
	store_kind kind;
	int64_t id;
	const char *why;
};

static int item_failed_tx(store *s, void *ctx, store_err *err)
{
	struct item_failed *a = ctx;
	return store_run(&s->writer, &(store_query){
		.sql = a->kind == STORE_IMAGE ? SQL_IMAGE_FAILED : SQL_TEXT_FAILED,
		.what = "marking an item failed",
		.args = {BIND_INT(a->id), BIND_TEXT(a->why), a->kind == STORE_IMAGE ? BIND_NOW : BIND_NONE},
	}, err);
}

int store_item_set_failed(store *s, store_kind kind, int64_t id, const char *why, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (kind != STORE_IMAGE && kind != STORE_TEXT)
		return store_fail(err, STORE_EINVAL, "unknown collection %d", (int)kind);
	struct item_failed a = {kind, id, why ? why : "failed"};
	return store_write(s, item_failed_tx, &a, err);
}

struct model_switch {
	const char *to, *dir;
	int dim;
	int64_t job_id;
	int64_t *missing;
};

static int put_kv(store *s, const char *key, const char *value, store_err *err)
{
	return store_run(&s->writer, &(store_query){
		.sql = SQL_KV_PUT, .what = "recording the model", .args = {BIND_TEXT(key), BIND_TEXT(value)},
	}, err);
}

static int switch_tx(store *s, void *ctx, store_err *err)
{
	struct model_switch *a = ctx;
	store_conn *w = &s->writer;
	int64_t missing = 0;
	char dim[16];
	int rc = store_run(w, &(store_query){
		.sql = SQL_COUNT_MISSING, .what = "counting items to embed", .args = {BIND_TEXT(a->to)},
		.row = store_int64_row, .ctx = &missing,
	}, err);
	if (rc != STORE_OK)
		return rc;
	*a->missing = missing;
	if (missing)
		return STORE_OK; /* nothing written: an empty transaction */
	snprintf(dim, sizeof dim, "%d", a->dim);
	char *was = NULL, key[96];
	rc = store_run(w, &(store_query){
		.sql = SQL_MODEL_ID, .what = "reading the model", .row = strdup_col0, .ctx = &was,
	}, err);
	if (rc == STORE_OK && was && strcmp(was, a->to) != 0) {
		snprintf(key, sizeof key, "prune.%s", was);
		rc = put_kv(s, key, "1", err);
	}
	free(was);
	if (rc != STORE_OK)
		return rc;
	if ((rc = put_kv(s, "model.id", a->to, err)) != STORE_OK ||
	    (rc = put_kv(s, "model.dir", a->dir, err)) != STORE_OK ||
	    (rc = put_kv(s, "model.dim", dim, err)) != STORE_OK)
		return rc;
	rc = store_run(w, &(store_query){
		.sql = SQL_KV_DROP_MIGRATION, .what = "ending the migration",
	}, err);
	if (rc != STORE_OK)
		return rc;
	if (!a->job_id)
		return STORE_OK;
	struct two_ints t = {0, 0};
	rc = store_run(w, &(store_query){
		.sql = SQL_COVERAGE, .what = "counting embeddings", .args = {BIND_TEXT(a->to)},
		.row = two_ints_row, .ctx = &t,
	}, err);
	if (rc != STORE_OK)
		return rc;
	return store_run(w, &(store_query){
		.sql = SQL_JOB_COUNTS, .what = "finishing the migration job",
		.args = {BIND_INT(a->job_id), BIND_INT(t.a), BIND_INT(t.b), BIND_INT(0), BIND_INT(1),
		         BIND_NOW},
	}, err);
}

int store_model_switch(store *s, const char *to, const char *to_dir, int to_dim, int64_t job_id,
                       int64_t *missing, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc;
	if ((rc = check_args(STORE_IMAGE, to, err)) != STORE_OK)
		return rc;
	if (!to_dir || to_dim <= 0)
		return store_fail(err, STORE_EINVAL, "the model needs a directory and a dimension");
	struct model_switch a = {to, to_dir, to_dim, job_id, missing};
	return store_write(s, switch_tx, &a, err);
}

struct prune {
	int64_t max, n;
	int done;
};

static int prune_tx(store *s, void *ctx, store_err *err)
{
	struct prune *a = ctx;
	store_conn *w = &s->writer;
	char *model = NULL, key[96];
	int rc = store_run(w, &(store_query){
		.sql = SQL_PRUNE_NEXT, .what = "reading what to prune", .row = strdup_col0, .ctx = &model,
	}, err);
	if (rc != STORE_OK || !model) {
		a->done = rc == STORE_OK;
		free(model);
		return rc;
	}
	rc = store_run(w, &(store_query){
		.sql = SQL_PRUNE_BATCH, .what = "deleting unused embeddings",
		.args = {BIND_TEXT(model), BIND_INT(a->max)},
	}, err);
	if (rc == STORE_OK && (a->n = sqlite3_changes(w->db)) == 0) {
		/* That model is gone: unmark it (the next call looks further). */
		snprintf(key, sizeof key, "prune.%s", model);
		rc = store_run(w, &(store_query){
			.sql = SQL_KV_DELETE, .what = "deleting a key", .args = {BIND_TEXT(key)},
		}, err);
	}
	free(model);
	return rc;
}

int store_embeddings_prune(store *s, int64_t max, int64_t *n, int *done, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (max <= 0)
		return store_fail(err, STORE_EINVAL, "max must be positive");
	struct prune a = {max, 0, 0};
	int rc = store_write(s, prune_tx, &a, err);
	if (n)
		*n = rc == STORE_OK ? a.n : 0;
	if (done)
		*done = rc == STORE_OK && a.done;
	return rc;
}

struct job_counted {
	const char *kind;
	int64_t *job_id;
};

static int job_counted_tx(store *s, void *ctx, store_err *err)
{
	struct job_counted *a = ctx;
	int rc = store_run(&s->writer, &(store_query){
		.sql = SQL_JOB_COUNTED, .what = "creating a job", .args = {BIND_TEXT(a->kind), BIND_NOW},
	}, err);
	if (rc == STORE_OK)
		*a->job_id = sqlite3_last_insert_rowid(s->writer.db);
	return rc;
}

int store_job_create_counted(store *s, const char *kind, int64_t *job_id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!kind || !*kind)
		return store_fail(err, STORE_EINVAL, "a job needs a kind");
	struct job_counted a = {kind, job_id};
	return store_write(s, job_counted_tx, &a, err);
}

struct job_counts {
	int64_t id, total, done, failed;
	int finished;
};

static int job_counts_tx(store *s, void *ctx, store_err *err)
{
	struct job_counts *a = ctx;
	int rc = store_run(&s->writer, &(store_query){
		.sql = SQL_JOB_COUNTS, .what = "counting a job",
		.args = {BIND_INT(a->id), BIND_INT(a->total), BIND_INT(a->done), BIND_INT(a->failed),
		         BIND_INT(a->finished), BIND_NOW},
	}, err);
	if (rc == STORE_OK && sqlite3_changes(s->writer.db) == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no job %lld", (long long)a->id);
	return rc;
}

int store_job_set_counts(store *s, int64_t job_id, int64_t total, int64_t done, int64_t failed,
                         int finished, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	struct job_counts a = {job_id, total, done, failed, finished};
	return store_write(s, job_counts_tx, &a, err);
}

static int kv_delete_tx(store *s, void *ctx, store_err *err)
{
	return store_run(&s->writer, &(store_query){
		.sql = SQL_KV_DELETE, .what = "deleting a key", .args = {BIND_TEXT((const char *)ctx)},
	}, err);
}

int store_kv_delete(store *s, const char *key, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!key)
		return store_fail(err, STORE_EINVAL, "a key is required");
	return store_write(s, kv_delete_tx, (void *)key, err);
}
