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

static int check_kind(store_kind kind, store_err *err)
{
	if (kind != STORE_IMAGE && kind != STORE_TEXT)
		return store_fail(err, STORE_EINVAL, "unknown collection %d", (int)kind);
	return STORE_OK;
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
	if ((rc = store_write_begin(s, err)) != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	uint64_t seq = 0;

	/* Mark the item ready first: it tells whether the item still exists. */
	sqlite3_stmt *st = store_stmt(w, kind == STORE_IMAGE ? SQL_ITEM_READY_IMAGE : SQL_ITEM_READY_TEXT,
	                              err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int64(st, 1, item_id);
	if (kind == STORE_IMAGE)
		sqlite3_bind_int64(st, 2, store_now_ms());
	if ((rc = store_step_done(w, st, "marking an item ready", err)) != STORE_OK)
		goto out;
	if (sqlite3_changes(w->db) == 0) {
		rc = store_fail(err, STORE_ENOTFOUND, "no %s %lld", kind == STORE_IMAGE ? "image" : "text",
		                (long long)item_id);
		goto out;
	}
	if ((rc = store_next_seq(s, &seq, err)) != STORE_OK)
		goto out;
	if (!(st = store_stmt(w, SQL_EMB_PUT, err))) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_int64(st, 2, item_id);
	sqlite3_bind_text(st, 3, model, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, dim);
	/* Stored as the machine's float32 bytes: little-endian on every
	 * platform this server targets. */
	sqlite3_bind_blob(st, 5, vec, (int)(sizeof(float) * (size_t)dim), SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, (int64_t)seq);
	rc = store_step_done(w, st, "storing an embedding", err);
out:
	rc = store_write_end(s, rc, err);
	if (rc == STORE_OK && seq_out)
		*seq_out = seq;
	return rc;
}

/* Inside a write transaction: one item of store_embeddings_put_many. */
static int put_one_locked(store *s, store_kind kind, const char *model, int dim,
                          store_embedding_item *it, int64_t now, store_err *err)
{
	store_conn *w = &s->writer;
	uint64_t seq;
	int rc;
	it->stored = 0;
	sqlite3_stmt *st = store_stmt(w, kind == STORE_IMAGE ? SQL_ITEM_READY_IMAGE_SIZED
	                                                     : SQL_ITEM_READY_TEXT, err);
	if (!st)
		return err->code;
	sqlite3_bind_int64(st, 1, it->item_id);
	if (kind == STORE_IMAGE) {
		sqlite3_bind_int64(st, 2, now);
		sqlite3_bind_int(st, 3, it->width);
		sqlite3_bind_int(st, 4, it->height);
	}
	if ((rc = store_step_done(w, st, "marking an item ready", err)) != STORE_OK)
		return rc;
	if (sqlite3_changes(w->db) == 0)
		return STORE_OK; /* deleted meanwhile */
	if ((rc = store_next_seq(s, &seq, err)) != STORE_OK)
		return rc;
	if (!(st = store_stmt(w, SQL_EMB_PUT, err)))
		return err->code;
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_int64(st, 2, it->item_id);
	sqlite3_bind_text(st, 3, model, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, dim);
	sqlite3_bind_blob(st, 5, it->vec, (int)(sizeof(float) * (size_t)dim), SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, (int64_t)seq);
	if ((rc = store_step_done(w, st, "storing an embedding", err)) != STORE_OK)
		return rc;
	if (it->work_id) {
		int found; /* not claimed any more: nothing to count */
		if ((rc = store_work_finish_locked(s, it->work_id, NULL, now, &found, err)) != STORE_OK)
			return rc;
	}
	it->stored = 1;
	return STORE_OK;
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
	if ((rc = store_write_begin(s, err)) != STORE_OK)
		return rc;
	int64_t now = store_now_ms();
	for (size_t i = 0; i < n && rc == STORE_OK; i++)
		rc = put_one_locked(s, kind, model, dim, &items[i], now, err);
	rc = store_write_end(s, rc, err);
	if (rc != STORE_OK)
		for (size_t i = 0; i < n; i++)
			items[i].stored = 0;
	return rc;
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
	store_conn *c = store_reader_get(s);
	sqlite3_stmt *st = store_stmt(c, SQL_EMB_GET, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_int64(st, 2, item_id);
	sqlite3_bind_text(st, 3, model, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		rc = store_fail(err, STORE_ENOTFOUND, "no embedding for item %lld", (long long)item_id);
	} else if (rc != SQLITE_ROW) {
		rc = store_sqlite_fail(err, c->db, rc, "reading an embedding");
	} else if (sqlite3_column_int(st, 0) != dim ||
	           sqlite3_column_bytes(st, 1) != (int)(sizeof(float) * (size_t)dim)) {
		rc = store_fail(err, STORE_EINVAL, "embedding has dimension %d, expected %d",
		                sqlite3_column_int(st, 0), dim);
	} else {
		memcpy(vec, sqlite3_column_blob(st, 1), sizeof(float) * (size_t)dim);
		rc = STORE_OK;
	}
	sqlite3_reset(st);
out:
	store_reader_put(c);
	return rc;
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
	store_conn *c = store_reader_get(s);
	sqlite3_stmt *st = store_stmt(c, SQL_CHANGES, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_text(st, 2, model, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)after);
	/* A single statement reads one consistent snapshot in WAL mode. */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_change ch = {
			.seq = (uint64_t)sqlite3_column_int64(st, 0),
			.item_id = sqlite3_column_int64(st, 1),
			.dim = sqlite3_column_int(st, 2),
		};
		if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
			ch.vec = sqlite3_column_blob(st, 3);
			if (sqlite3_column_bytes(st, 3) != (int)(sizeof(float) * (size_t)ch.dim)) {
				rc = store_fail(err, STORE_ECORRUPT, "embedding of item %lld has a wrong size",
				                (long long)ch.item_id);
				sqlite3_reset(st);
				goto out;
			}
		}
		int stop = fn(ctx, &ch);
		if (stop) {
			sqlite3_reset(st);
			rc = stop;
			goto out;
		}
	}
	sqlite3_reset(st);
	rc = rc == SQLITE_DONE ? STORE_OK : store_sqlite_fail(err, c->db, rc, "reading changes");
out:
	store_reader_put(c);
	return rc;
}

int store_last_seq(store *s, uint64_t *seq, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	store_conn *c = store_reader_get(s);
	int rc;
	sqlite3_stmt *st = store_stmt(c, SQL_LAST_SEQ, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*seq = (uint64_t)sqlite3_column_int64(st, 0);
		rc = STORE_OK;
	} else {
		rc = store_sqlite_fail(err, c->db, rc, "reading the sequence");
	}
	sqlite3_reset(st);
out:
	store_reader_put(c);
	return rc;
}
