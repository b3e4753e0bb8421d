/* store_items.c: the images and texts collections. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

static const char SQL_IMAGE_INSERT[] =
	"INSERT INTO images (sha256, filename, mime, width, height, bytes, meta, status, "
	"created_ms, updated_ms, pinned) VALUES (?1, ?2, ?3, ?4, ?5, ?6, coalesce(?7, '{}'), 0, ?8, ?8, ?9)";
static const char SQL_IMAGE_BY_SHA_ID[] = "SELECT id FROM images WHERE sha256 = ?1";
static const char SQL_IMAGE_COLS[] =
	"SELECT id, sha256, filename, mime, width, height, bytes, meta, status, error, "
	"created_ms, updated_ms, pinned FROM images WHERE id = ?1";
static const char SQL_IMAGE_COLS_SHA[] =
	"SELECT id, sha256, filename, mime, width, height, bytes, meta, status, error, "
	"created_ms, updated_ms, pinned FROM images WHERE sha256 = ?1";
static const char SQL_IMAGE_SET_META[] =
	"UPDATE images SET meta = ?2, updated_ms = ?3 WHERE id = ?1";
static const char SQL_IMAGE_PIN[] = "UPDATE images SET pinned = 1 WHERE id = ?1";
static const char SQL_IMAGE_SET_SIZE[] =
	"UPDATE images SET width = ?2, height = ?3, updated_ms = ?4 WHERE id = ?1";
static const char SQL_IMAGE_SET_FAILED[] =
	"UPDATE images SET status = 2, error = ?2, updated_ms = ?3 WHERE id = ?1";
static const char SQL_IMAGE_DELETE[] = "DELETE FROM images WHERE id = ?1";
static const char SQL_IMAGE_COUNT[] =
	"SELECT count(*), coalesce(sum(status = 1), 0) FROM images";

static const char SQL_TEXT_INSERT[] =
	"INSERT INTO texts (text, meta, status, created_ms) VALUES (?1, coalesce(?2, '{}'), 0, ?3)";
static const char SQL_TEXT_GET[] =
	"SELECT id, text, meta, status, created_ms FROM texts WHERE id = ?1";
static const char SQL_TEXT_DELETE[] = "DELETE FROM texts WHERE id = ?1";
static const char SQL_TEXT_COUNT[] = "SELECT count(*) FROM texts";

/* Shared by both collections: what goes with an item when it is deleted. */
static const char SQL_EMB_DELETE_ITEM[] =
	"DELETE FROM embeddings WHERE kind = ?1 AND item_id = ?2";
static const char SQL_REMOVAL_PUT[] =
	"INSERT INTO removals (kind, item_id, seq) VALUES (?1, ?2, ?3) "
	"ON CONFLICT (kind, item_id) DO UPDATE SET seq = excluded.seq";
static const char SQL_WORK_DROP_ITEM[] =
	"UPDATE job_items SET state = 3, error = 'deleted before it was indexed', updated_ms = ?3 "
	"WHERE kind = ?1 AND item_id = ?2 AND state IN (0, 1) RETURNING job_id";
static const char SQL_JOB_COUNT_FAILED[] =
	"UPDATE jobs SET failed = failed + 1, updated_ms = ?2, "
	"state = CASE WHEN sealed AND done + failed + 1 >= total THEN 2 ELSE state END WHERE id = ?1";

/* Many rows by id in one statement: json_each walks the bound array of ids
 * (its key is the position in the array) and each id is a primary-key
 * lookup. CROSS JOIN keeps that loop order. */
static const char SQL_IMAGE_MANY[] =
	"SELECT j.key, i.id, i.sha256, i.filename, i.mime, i.width, i.height, i.bytes, i.meta, "
	"i.status, i.error, i.created_ms, i.updated_ms, i.pinned "
	"FROM json_each(?1) AS j CROSS JOIN images AS i ON i.id = j.value";
static const char SQL_TEXT_MANY[] =
	"SELECT j.key, t.id, t.text, t.meta, t.status, t.created_ms "
	"FROM json_each(?1) AS j CROSS JOIN texts AS t ON t.id = j.value";

static int json_meta_error(store_err *err)
{
	return store_fail(err, STORE_EINVAL, "metadata must be a JSON object");
}

void store_image_clear(store_image *img)
{
	if (!img)
		return;
	free(img->filename);
	free(img->mime);
	free(img->meta);
	free(img->error);
	memset(img, 0, sizeof *img);
}

void store_text_clear(store_text *t)
{
	if (!t)
		return;
	free(t->text);
	free(t->meta);
	memset(t, 0, sizeof *t);
}

static int valid_sha(const char *h)
{
	if (!h || strlen(h) != 64)
		return 0;
	for (int i = 0; i < 64; i++)
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			return 0;
	return 1;
}

int store_image_insert_locked(store *s, const store_image *img, int64_t *id, store_err *err)
{
	store_conn *w = &s->writer;
	if (!valid_sha(img->sha256))
		return store_fail(err, STORE_EINVAL, "sha256 must be 64 lower-case hex digits");
	if (!img->mime || !*img->mime)
		return store_fail(err, STORE_EINVAL, "mime type is required");
	if (img->bytes < 0 || img->width < 0 || img->height < 0)
		return store_fail(err, STORE_EINVAL, "sizes must not be negative");

	sqlite3_stmt *st = store_stmt(w, SQL_IMAGE_BY_SHA_ID, err);
	if (!st)
		return err->code;
	sqlite3_bind_text(st, 1, img->sha256, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
		return store_fail(err, STORE_EEXISTS, "an image with the same content exists (id %lld)",
		                  (long long)*id);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_fail(err, w->db, rc, "looking up an image");

	if (!(st = store_stmt(w, SQL_IMAGE_INSERT, err)))
		return err->code;
	sqlite3_bind_text(st, 1, img->sha256, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, img->filename, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, img->mime, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, img->width);
	sqlite3_bind_int(st, 5, img->height);
	sqlite3_bind_int64(st, 6, img->bytes);
	sqlite3_bind_text(st, 7, img->meta, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 8, store_now_ms());
	sqlite3_bind_int(st, 9, img->pinned ? 1 : 0);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_CONSTRAINT_CHECK)
		return json_meta_error(err);
	if (rc != SQLITE_DONE)
		return store_sqlite_fail(err, w->db, rc, "inserting an image");
	*id = sqlite3_last_insert_rowid(w->db);
	return STORE_OK;
}

int store_image_insert(store *s, const store_image *img, int64_t *id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t tmp;
	if (!id)
		id = &tmp;
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	rc = store_image_insert_locked(s, img, id, err);
	return store_write_end(s, rc, err);
}

/* An image row from column c0 on (the column order of SQL_IMAGE_COLS). */
static void fill_image(sqlite3_stmt *st, int c0, store_image *out, int *oom)
{
	out->id = sqlite3_column_int64(st, c0);
	const unsigned char *h = sqlite3_column_text(st, c0 + 1);
	snprintf(out->sha256, sizeof out->sha256, "%s", h ? (const char *)h : "");
	out->filename = store_col_strdup(st, c0 + 2, oom);
	out->mime = store_col_strdup(st, c0 + 3, oom);
	out->width = sqlite3_column_int(st, c0 + 4);
	out->height = sqlite3_column_int(st, c0 + 5);
	out->bytes = sqlite3_column_int64(st, c0 + 6);
	out->meta = store_col_strdup(st, c0 + 7, oom);
	out->status = (store_status)sqlite3_column_int(st, c0 + 8);
	out->error = store_col_strdup(st, c0 + 9, oom);
	out->created_ms = sqlite3_column_int64(st, c0 + 10);
	out->updated_ms = sqlite3_column_int64(st, c0 + 11);
	out->pinned = sqlite3_column_int(st, c0 + 12);
}

/* A text row from column c0 on (the column order of SQL_TEXT_GET). */
static void fill_text(sqlite3_stmt *st, int c0, store_text *out, int *oom)
{
	out->id = sqlite3_column_int64(st, c0);
	out->text = store_col_strdup(st, c0 + 1, oom);
	out->meta = store_col_strdup(st, c0 + 2, oom);
	out->status = (store_status)sqlite3_column_int(st, c0 + 3);
	out->created_ms = sqlite3_column_int64(st, c0 + 4);
}

static int read_image(store *s, const char *sql, int64_t id, const char *sha, store_image *out,
                      store_err *err)
{
	memset(out, 0, sizeof *out);
	store_conn *c = store_reader_get(s);
	int rc, oom = 0;
	sqlite3_stmt *st = store_stmt(c, sql, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	if (sha)
		sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		rc = sha ? store_fail(err, STORE_ENOTFOUND, "no image with that content hash")
		         : store_fail(err, STORE_ENOTFOUND, "no image %lld", (long long)id);
	} else if (rc != SQLITE_ROW) {
		rc = store_sqlite_fail(err, c->db, rc, "reading an image");
	} else {
		fill_image(st, 0, out, &oom);
		rc = STORE_OK;
		if (oom) {
			store_image_clear(out);
			rc = store_fail(err, STORE_ENOMEM, "out of memory");
		}
	}
	sqlite3_reset(st);
out:
	store_reader_put(c);
	return rc;
}

int store_image_get(store *s, int64_t id, store_image *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return read_image(s, SQL_IMAGE_COLS, id, NULL, out, err);
}

int store_image_find_sha(store *s, const char *sha256, store_image *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!valid_sha(sha256)) {
		memset(out, 0, sizeof *out);
		return store_fail(err, STORE_EINVAL, "sha256 must be 64 lower-case hex digits");
	}
	return read_image(s, SQL_IMAGE_COLS_SHA, 0, sha256, out, err);
}

/* Runs one UPDATE of a single image row in its own transaction.
 * Binds: ?1 id, then the text/ints given, then the time last. */
static int update_image(store *s, const char *sql, int64_t id, const char *text, int a, int b,
                        int nints, const char *what, store_err *err)
{
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	sqlite3_stmt *st = store_stmt(w, sql, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	int p = 1;
	sqlite3_bind_int64(st, p++, id);
	if (text)
		sqlite3_bind_text(st, p++, text, -1, SQLITE_STATIC);
	if (nints > 0)
		sqlite3_bind_int(st, p++, a);
	if (nints > 1)
		sqlite3_bind_int(st, p++, b);
	sqlite3_bind_int64(st, p, store_now_ms());
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_CONSTRAINT_CHECK)
		rc = json_meta_error(err);
	else if (rc != SQLITE_DONE)
		rc = store_sqlite_fail(err, w->db, rc, what);
	else if (sqlite3_changes(w->db) == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no image %lld", (long long)id);
	else
		rc = STORE_OK;
out:
	return store_write_end(s, rc, err);
}

int store_image_set_meta(store *s, int64_t id, const char *meta_json, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!meta_json)
		return json_meta_error(err);
	return update_image(s, SQL_IMAGE_SET_META, id, meta_json, 0, 0, 0, "updating metadata", err);
}

int store_image_pin(store *s, int64_t id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	sqlite3_stmt *st = store_stmt(w, SQL_IMAGE_PIN, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	if ((rc = store_step_done(w, st, "pinning an image", err)) == STORE_OK &&
	    sqlite3_changes(w->db) == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no image %lld", (long long)id);
out:
	return store_write_end(s, rc, err);
}

int store_image_set_size(store *s, int64_t id, int width, int height, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (width < 0 || height < 0)
		return store_fail(err, STORE_EINVAL, "sizes must not be negative");
	return update_image(s, SQL_IMAGE_SET_SIZE, id, NULL, width, height, 2, "updating an image",
	                    err);
}

int store_image_set_failed(store *s, int64_t id, const char *why, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return update_image(s, SQL_IMAGE_SET_FAILED, id, why ? why : "failed", 0, 0, 0,
	                    "updating an image", err);
}

/* Inside a write transaction: drops an item's embedding (logging the
 * removal when there was one) and fails its unfinished job items. */
static int drop_item_locked(store *s, store_kind kind, int64_t id, store_err *err)
{
	store_conn *w = &s->writer;
	int64_t now = store_now_ms();
	sqlite3_stmt *st = store_stmt(w, SQL_EMB_DELETE_ITEM, err);
	if (!st)
		return err->code;
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_int64(st, 2, id);
	int rc = store_step_done(w, st, "deleting an embedding", err);
	if (rc != STORE_OK)
		return rc;
	if (sqlite3_changes(w->db) > 0) {
		uint64_t seq;
		if ((rc = store_next_seq(s, &seq, err)) != STORE_OK)
			return rc;
		if (!(st = store_stmt(w, SQL_REMOVAL_PUT, err)))
			return err->code;
		sqlite3_bind_int(st, 1, kind);
		sqlite3_bind_int64(st, 2, id);
		sqlite3_bind_int64(st, 3, (int64_t)seq);
		if ((rc = store_step_done(w, st, "logging a removal", err)) != STORE_OK)
			return rc;
	}

	/* Collect the jobs first: the RETURNING rows must be read to the end
	 * before another statement changes the same tables. */
	int64_t jobs[64];
	int njobs = 0;
	if (!(st = store_stmt(w, SQL_WORK_DROP_ITEM, err)))
		return err->code;
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_int64(st, 2, id);
	sqlite3_bind_int64(st, 3, now);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (njobs < (int)(sizeof jobs / sizeof jobs[0]))
			jobs[njobs++] = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_fail(err, w->db, rc, "updating the queue");
	for (int i = 0; i < njobs; i++) {
		if (!(st = store_stmt(w, SQL_JOB_COUNT_FAILED, err)))
			return err->code;
		sqlite3_bind_int64(st, 1, jobs[i]);
		sqlite3_bind_int64(st, 2, now);
		if ((rc = store_step_done(w, st, "updating a job", err)) != STORE_OK)
			return rc;
	}
	return STORE_OK;
}

/* Inside a write transaction: deletes an item with what goes with it;
 * *found 0 when there was none. */
static int delete_item_locked(store *s, store_kind kind, const char *sql, int64_t id, int *found,
                              store_err *err)
{
	store_conn *w = &s->writer;
	sqlite3_stmt *st = store_stmt(w, sql, err);
	*found = 0;
	if (!st)
		return err->code;
	sqlite3_bind_int64(st, 1, id);
	int rc = store_step_done(w, st, "deleting an item", err);
	if (rc != STORE_OK || sqlite3_changes(w->db) == 0)
		return rc;
	*found = 1;
	return drop_item_locked(s, kind, id, err);
}

int store_image_delete_locked(store *s, int64_t id, int *found, store_err *err)
{
	return delete_item_locked(s, STORE_IMAGE, SQL_IMAGE_DELETE, id, found, err);
}

static int delete_item(store *s, store_kind kind, const char *sql, int64_t id, store_err *err)
{
	int found, rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	rc = delete_item_locked(s, kind, sql, id, &found, err);
	if (rc == STORE_OK && !found)
		rc = store_fail(err, STORE_ENOTFOUND, "no %s %lld", kind == STORE_IMAGE ? "image" : "text",
		                (long long)id);
	return store_write_end(s, rc, err);
}

int store_image_delete(store *s, int64_t id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return delete_item(s, STORE_IMAGE, SQL_IMAGE_DELETE, id, err);
}

int store_text_delete(store *s, int64_t id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return delete_item(s, STORE_TEXT, SQL_TEXT_DELETE, id, err);
}

/* One row of one or two integers from a reader. */
static int read_counts(store *s, const char *sql, int64_t *a, int64_t *b, store_err *err)
{
	store_conn *c = store_reader_get(s);
	int rc;
	sqlite3_stmt *st = store_stmt(c, sql, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (a)
			*a = sqlite3_column_int64(st, 0);
		if (b)
			*b = sqlite3_column_int64(st, 1);
		rc = STORE_OK;
	} else {
		rc = store_sqlite_fail(err, c->db, rc, "counting");
	}
	sqlite3_reset(st);
out:
	store_reader_put(c);
	return rc;
}

int store_image_count(store *s, int64_t *total, int64_t *ready, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return read_counts(s, SQL_IMAGE_COUNT, total, ready, err);
}

int store_text_count(store *s, int64_t *total, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return read_counts(s, SQL_TEXT_COUNT, total, NULL, err);
}

int store_text_insert_locked(store *s, const char *text, const char *meta_json, int64_t *id,
                             store_err *err)
{
	store_conn *w = &s->writer;
	if (!text)
		return store_fail(err, STORE_EINVAL, "text is required");
	sqlite3_stmt *st = store_stmt(w, SQL_TEXT_INSERT, err);
	if (!st)
		return err->code;
	sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, meta_json, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, store_now_ms());
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_CONSTRAINT_CHECK)
		return json_meta_error(err);
	if (rc != SQLITE_DONE)
		return store_sqlite_fail(err, w->db, rc, "inserting a text");
	if (id)
		*id = sqlite3_last_insert_rowid(w->db);
	return STORE_OK;
}

int store_text_insert(store *s, const char *text, const char *meta_json, int64_t *id,
                      store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!text)
		return store_fail(err, STORE_EINVAL, "text is required");
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	rc = store_text_insert_locked(s, text, meta_json, id, err);
	return store_write_end(s, rc, err);
}

int store_text_get(store *s, int64_t id, store_text *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	memset(out, 0, sizeof *out);
	store_conn *c = store_reader_get(s);
	int rc, oom = 0;
	sqlite3_stmt *st = store_stmt(c, SQL_TEXT_GET, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		rc = store_fail(err, STORE_ENOTFOUND, "no text %lld", (long long)id);
	} else if (rc != SQLITE_ROW) {
		rc = store_sqlite_fail(err, c->db, rc, "reading a text");
	} else {
		fill_text(st, 0, out, &oom);
		rc = STORE_OK;
		if (oom) {
			store_text_clear(out);
			rc = store_fail(err, STORE_ENOMEM, "out of memory");
		}
	}
	sqlite3_reset(st);
out:
	store_reader_put(c);
	return rc;
}

char *store_ids_json(const int64_t *ids, size_t n)
{
	/* "-9223372036854775808," is 21 characters. */
	char *buf = malloc(n * 21 + 3), *p = buf;
	if (!buf)
		return NULL;
	*p++ = '[';
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, i ? ",%lld" : "%lld", (long long)ids[i]);
	*p++ = ']';
	*p = 0;
	return buf;
}

/* Runs SQL_IMAGE_MANY or SQL_TEXT_MANY over ids and hands every row, with
 * its position in ids, to fill. */
static int read_many(store *s, const char *sql, const int64_t *ids, size_t n,
                     void (*fill)(sqlite3_stmt *st, size_t pos, void *out, int *oom), void *out,
                     const char *what, store_err *err)
{
	char *json = store_ids_json(ids, n);
	if (!json)
		return store_fail(err, STORE_ENOMEM, "out of memory");
	store_conn *c = store_reader_get(s);
	int rc, oom = 0;
	sqlite3_stmt *st = store_stmt(c, sql, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		sqlite3_int64 pos = sqlite3_column_int64(st, 0);
		if (pos >= 0 && (size_t)pos < n)
			fill(st, (size_t)pos, out, &oom);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		rc = store_sqlite_fail(err, c->db, rc, what);
	else if (oom)
		rc = store_fail(err, STORE_ENOMEM, "out of memory");
	else
		rc = STORE_OK;
out:
	store_reader_put(c);
	free(json);
	return rc;
}

static void fill_image_at(sqlite3_stmt *st, size_t pos, void *out, int *oom)
{
	store_image *img = (store_image *)out + pos;
	store_image_clear(img); /* an id given twice */
	fill_image(st, 1, img, oom);
}

static void fill_text_at(sqlite3_stmt *st, size_t pos, void *out, int *oom)
{
	store_text *t = (store_text *)out + pos;
	store_text_clear(t);
	fill_text(st, 1, t, oom);
}

int store_images_get_many(store *s, const int64_t *ids, size_t n, store_image *out,
                          store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (n == 0)
		return STORE_OK;
	memset(out, 0, n * sizeof *out);
	int rc = read_many(s, SQL_IMAGE_MANY, ids, n, fill_image_at, out, "reading images", err);
	if (rc != STORE_OK)
		for (size_t i = 0; i < n; i++)
			store_image_clear(&out[i]);
	return rc;
}

int store_texts_get_many(store *s, const int64_t *ids, size_t n, store_text *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (n == 0)
		return STORE_OK;
	memset(out, 0, n * sizeof *out);
	int rc = read_many(s, SQL_TEXT_MANY, ids, n, fill_text_at, out, "reading texts", err);
	if (rc != STORE_OK)
		for (size_t i = 0; i < n; i++)
			store_text_clear(&out[i]);
	return rc;
}
