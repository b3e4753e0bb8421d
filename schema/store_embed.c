/* store_embed.c: embeddings and the change log the vector index follows. */
#include <string.h>

#include "store_int.h"

static const char SQL_ITEM_READY_IMAGE[] =
	"UPDATE images SET status = 1, error = NULL, updated_ms = ?2 WHERE id = ?1";
static const char SQL_ITEM_READY_TEXT[] =
	"UPDATE texts SET status = 1, error = NULL WHERE id = ?1";
static const char SQL_ITEM_READY_IMAGE_SIZED[] =
	"UPDATE images SET status = 1, error = NULL, updated_ms = ?2, "
	"width = CASE WHEN ?3 > 0 THEN ?3 ELSE width END, "
	"height = CASE WHEN ?4 > 0 THEN ?4 ELSE height END WHERE id = ?1";
static const char SQL_EMB_PUT[] =
	"INSERT INTO embeddings (kind, item_id, model, dim, vec, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
	"ON CONFLICT (kind, item_id, model) DO UPDATE SET dim = excluded.dim, vec = excluded.vec, "
	"seq = excluded.seq";
static const char SQL_EMB_GET[] =
	"SELECT dim, vec FROM embeddings WHERE kind = ?1 AND item_id = ?2 AND model = ?3";
/* Embeddings written and removals logged after a sequence number, merged in
 * sequence order. A removal row only exists for items that are gone, so an
 * item appears at most once. */
static const char SQL_CHANGES[] =
	"SELECT seq, item_id, dim, vec FROM embeddings WHERE kind = ?1 AND model = ?2 AND seq > ?3 "
	"UNION ALL "
	"SELECT seq, item_id, 0, NULL FROM removals WHERE kind = ?1 AND seq > ?3 "
	"ORDER BY 1";
static const char SQL_LAST_SEQ[] = "SELECT last FROM seq WHERE id = 1";
/* 1 when the data directory takes embeddings of model ?1: it names no
 * model yet (a bare store), or ?1 is its model or its migration's target. */
static const char SQL_MODEL_CURRENT[] =
	"SELECT NOT EXISTS (SELECT 1 FROM kv WHERE key = 'model.id') OR "
	"EXISTS (SELECT 1 FROM kv WHERE key IN ('model.id', 'migration.model.id') AND value = ?1)";

/* Inside a write transaction: STORE_ESTALE when model is not (or no
 * longer) one the data directory uses; read in the transaction that
 * writes, so a switch of models cannot come between. */
static int check_model_locked(store *s, const char *model, store_err *err)
{
	int64_t current = 0;
	int rc = store_run(&s->writer, &(store_query){
		.sql = SQL_MODEL_CURRENT, .what = "reading the model", .args = {BIND_TEXT(model)},
		.row = store_int64_row, .ctx = &current,
	}, err);
	if (rc == STORE_OK && !current)
		rc = store_fail(err, STORE_ESTALE, "model %s is no longer the data directory's", model);
	return rc;
}

static int check_kind(store_kind kind, store_err *err)
{
	if (kind != STORE_IMAGE && kind != STORE_TEXT)
		return store_fail(err, STORE_EINVAL, "unknown collection %d", (int)kind);
	return STORE_OK;
}

struct embedding_put {
	store_kind kind;
	int64_t item_id;
	const char *model;
	const float *vec;
	int dim;
	uint64_t seq;
};

static int embedding_put_tx(store *s, void *ctx, store_err *err)
{
	struct embedding_put *a = ctx;
	store_conn *w = &s->writer;

	int rc = check_model_locked(s, a->model, err);
	if (rc != STORE_OK)
		return rc;
	/* Mark the item ready first: it tells whether the item still exists. */
	rc = store_run(w, &(store_query){
		.sql = a->kind == STORE_IMAGE ? SQL_ITEM_READY_IMAGE : SQL_ITEM_READY_TEXT,
		.what = "marking an item ready",
		.args = {BIND_INT(a->item_id), a->kind == STORE_IMAGE ? BIND_NOW : BIND_NONE},
	}, err);
	if (rc != STORE_OK)
		return rc;
	if (sqlite3_changes(w->db) == 0)
		return store_fail(err, STORE_ENOTFOUND, "no %s %lld",
		                  a->kind == STORE_IMAGE ? "image" : "text", (long long)a->item_id);
	if ((rc = store_next_seq(s, &a->seq, err)) != STORE_OK)
		return rc;
	/* Stored as the machine's float32 bytes: little-endian on every
	 * platform this server targets. */
	return store_run(w, &(store_query){
		.sql = SQL_EMB_PUT, .what = "storing an embedding",
		.args = {BIND_INT(a->kind), BIND_INT(a->item_id), BIND_TEXT(a->model), BIND_INT(a->dim),
		         BIND_BLOB(a->vec, (int)(sizeof(float) * (size_t)a->dim)), BIND_INT(a->seq)},
	}, err);
}

int store_embedding_put(store *s, store_kind kind, int64_t item_id, const char *model,
                        const float *vec, int dim, uint64_t *seq_out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc;
	if ((rc = check_kind(kind, err)) != STORE_OK)
		return rc;
	if (!model || !*model || !vec || dim <= 0)
		return store_fail(err, STORE_EINVAL, "an embedding needs a model, a vector and a dimension");
	struct embedding_put a = {kind, item_id, model, vec, dim, 0};
	rc = store_write(s, embedding_put_tx, &a, err);
	if (rc == STORE_OK && seq_out)
		*seq_out = a.seq;
	return rc;
}

/* Inside a write transaction: one item of store_embeddings_put_many. */
static int put_one_locked(store *s, store_kind kind, const char *model, int dim,
                          store_embedding_item *it, int64_t now, store_err *err)
{
	store_conn *w = &s->writer;
	uint64_t seq;
	it->stored = 0;
	int rc = store_run(w, &(store_query){
		.sql = kind == STORE_IMAGE ? SQL_ITEM_READY_IMAGE_SIZED : SQL_ITEM_READY_TEXT,
		.what = "marking an item ready",
		.args = {BIND_INT(it->item_id),
		         kind == STORE_IMAGE ? BIND_INT(now) : BIND_NONE,
		         kind == STORE_IMAGE ? BIND_INT(it->width) : BIND_NONE,
		         kind == STORE_IMAGE ? BIND_INT(it->height) : BIND_NONE},
	}, err);
	if (rc != STORE_OK)
		return rc;
	if (sqlite3_changes(w->db) == 0)
		return STORE_OK; /* deleted meanwhile */
	if ((rc = store_next_seq(s, &seq, err)) != STORE_OK)
		return rc;
	rc = store_run(w, &(store_query){
		.sql = SQL_EMB_PUT, .what = "storing an embedding",
		.args = {BIND_INT(kind), BIND_INT(it->item_id), BIND_TEXT(model), BIND_INT(dim),
		         BIND_BLOB(it->vec, (int)(sizeof(float) * (size_t)dim)), BIND_INT(seq)},
	}, err);
	if (rc != STORE_OK)
		return rc;
	if (it->work_id) {
		int found; /* not claimed any more: nothing to count */
		if ((rc = store_work_finish_locked(s, it->work_id, NULL, now, &found, err)) != STORE_OK)
			return rc;
	}
	it->stored = 1;
	return STORE_OK;
}

struct put_many {
	store_kind kind;
	const char *model;
	int dim;
	store_embedding_item *items;
	size_t n;
};

static int put_many_tx(store *s, void *ctx, store_err *err)
{
	struct put_many *a = ctx;
	int64_t now = store_now_ms();
	int rc = check_model_locked(s, a->model, err);
	for (size_t i = 0; i < a->n && rc == STORE_OK; i++)
		rc = put_one_locked(s, a->kind, a->model, a->dim, &a->items[i], now, err);
	return rc;
}

int store_embeddings_put_many(store *s, store_kind kind, const char *model, int dim,
                              store_embedding_item *items, size_t n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc;
	if ((rc = check_kind(kind, err)) != STORE_OK)
		return rc;
	if (!model || !*model || dim <= 0)
		return store_fail(err, STORE_EINVAL, "embeddings need a model and a dimension");
	for (size_t i = 0; i < n; i++) {
		items[i].stored = 0;
		if (!items[i].vec)
			return store_fail(err, STORE_EINVAL, "embedding %zu has no vector", i);
	}
	if (n == 0)
		return STORE_OK;
	struct put_many a = {kind, model, dim, items, n};
	rc = store_write(s, put_many_tx, &a, err);
	if (rc != STORE_OK)
		for (size_t i = 0; i < n; i++)
			items[i].stored = 0;
	return rc;
}

struct image_embedded {
	const store_image *img;
	const char *model;
	const float *vec;
	int dim;
	int64_t job_id, *id;
};

static int image_embedded_tx(store *s, void *ctx, store_err *err)
{
	struct image_embedded *a = ctx;
	int64_t now = store_now_ms();
	int rc = check_model_locked(s, a->model, err);
	if (rc == STORE_OK)
		rc = store_image_insert_locked(s, a->img, a->id, err);
	if (rc != STORE_OK)
		return rc;
	store_embedding_item it = {.item_id = *a->id, .width = a->img->width,
	                           .height = a->img->height, .vec = a->vec};
	if ((rc = put_one_locked(s, STORE_IMAGE, a->model, a->dim, &it, now, err)) != STORE_OK)
		return rc;
	return store_job_add_done_locked(s, a->job_id, STORE_IMAGE, *a->id, a->img->filename, now,
	                                 err);
}

int store_image_insert_embedded(store *s, const store_image *img, int64_t job_id,
                                const char *model, const float *vec, int dim, int64_t *id,
                                store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t tmp;
	if (!model || !*model || !vec || dim <= 0)
		return store_fail(err, STORE_EINVAL, "an embedding needs a model, a vector and a dimension");
	/* On STORE_EEXISTS nothing was written; *id is the existing image. */
	struct image_embedded a = {img, model, vec, dim, job_id, id ? id : &tmp};
	return store_write(s, image_embedded_tx, &a, err);
}

struct vec_out {
	float *vec;
	int dim;
};

static int vec_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct vec_out *v = ctx;
	if (sqlite3_column_int(st, 0) != v->dim ||
	    sqlite3_column_bytes(st, 1) != (int)(sizeof(float) * (size_t)v->dim))
		return store_fail(err, STORE_EINVAL, "embedding has dimension %d, expected %d",
		                  sqlite3_column_int(st, 0), v->dim);
	memcpy(v->vec, sqlite3_column_blob(st, 1), sizeof(float) * (size_t)v->dim);
	return 0;
}

int store_embedding_get(store *s, store_kind kind, int64_t item_id, const char *model, float *vec,
                        int dim, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc;
	if ((rc = check_kind(kind, err)) != STORE_OK)
		return rc;
	if (!model)
		return store_fail(err, STORE_EINVAL, "model is required");
	struct vec_out v = {vec, dim};
	store_query q = {
		.sql = SQL_EMB_GET, .what = "reading an embedding",
		.args = {BIND_INT(kind), BIND_INT(item_id), BIND_TEXT(model)}, .row = vec_row, .ctx = &v,
	};
	rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no embedding for item %lld", (long long)item_id);
	return rc;
}

struct changes_walk {
	int (*fn)(void *ctx, const store_change *c);
	void *ctx;
};

static int change_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct changes_walk *cw = ctx;
	store_change ch = {
		.seq = (uint64_t)sqlite3_column_int64(st, 0),
		.item_id = sqlite3_column_int64(st, 1),
		.dim = sqlite3_column_int(st, 2),
	};
	if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
		ch.vec = sqlite3_column_blob(st, 3);
		if (sqlite3_column_bytes(st, 3) != (int)(sizeof(float) * (size_t)ch.dim))
			return store_fail(err, STORE_ECORRUPT, "embedding of item %lld has a wrong size",
			                  (long long)ch.item_id);
	}
	return cw->fn(cw->ctx, &ch);
}

int store_changes_after(store *s, store_kind kind, const char *model, uint64_t after,
                        int (*fn)(void *ctx, const store_change *c), void *ctx, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc;
	if ((rc = check_kind(kind, err)) != STORE_OK)
		return rc;
	if (!model || !fn)
		return store_fail(err, STORE_EINVAL, "model and callback are required");
	/* A single statement reads one consistent snapshot in WAL mode. */
	struct changes_walk cw = {fn, ctx};
	return store_read(s, &(store_query){
		.sql = SQL_CHANGES, .what = "reading changes",
		.args = {BIND_INT(kind), BIND_TEXT(model), BIND_INT(after)}, .row = change_row, .ctx = &cw,
	}, err);
}

int store_last_seq(store *s, uint64_t *seq, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t last = 0;
	store_query q = {
		.sql = SQL_LAST_SEQ, .what = "reading the sequence", .row = store_int64_row, .ctx = &last,
	};
	int rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_sqlite_fail(err, NULL, SQLITE_DONE, "reading the sequence");
	if (rc == STORE_OK)
		*seq = (uint64_t)last;
	return rc;
}
