/* store_items.c: the images and texts collections. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

static const char SQL_IMAGE_INSERT[] =
	"INSERT INTO images (sha256, filename, mime, width, height, bytes, meta, status, "
	"created_ms, updated_ms, pinned) VALUES (?1, ?2, ?3, ?4, ?5, ?6, coalesce(?7, '{}'), 0, ?8, ?8, ?9)";
static const char SQL_IMAGE_BY_SHA_ID[] = "SELECT id FROM images WHERE sha256 = ?1";
/* The EXIF columns (migration 005), last in every image row; fill_image
 * reads them in this order. */
#define EXIF_COLS \
	"taken, taken_ms, gps_lat, gps_lon, camera_make, camera_model, lens, orientation, exif_read"
static const char SQL_IMAGE_COLS[] =
	"SELECT id, sha256, filename, mime, width, height, bytes, meta, status, error, "
	"created_ms, updated_ms, pinned, " EXIF_COLS " FROM images WHERE id = ?1";
static const char SQL_IMAGE_COLS_SHA[] =
	"SELECT id, sha256, filename, mime, width, height, bytes, meta, status, error, "
	"created_ms, updated_ms, pinned, " EXIF_COLS " FROM images WHERE sha256 = ?1";
/* ?9 orientation 0 is stored as NULL; the row's CHECKs hold the ranges. A
 * row already read is left alone (?10: 1 requires exif_read = 0, the
 * backfill's guard against overwriting what an ingest wrote). */
static const char SQL_IMAGE_SET_EXIF[] =
	"UPDATE images SET taken = ?2, taken_ms = ?3, gps_lat = ?4, gps_lon = ?5, "
	"camera_make = ?6, camera_model = ?7, lens = ?8, orientation = nullif(?9, 0), "
	"exif_read = 1 WHERE id = ?1 AND (?10 = 0 OR exif_read = 0)";
static const char SQL_IMAGE_EXIF_UNREAD[] =
	"SELECT id, sha256 FROM images WHERE exif_read = 0 AND id > ?1 ORDER BY id LIMIT ?2";
static const char SQL_IMAGE_EXIF_UNREAD_COUNT[] =
	"SELECT count(*) FROM images WHERE exif_read = 0";
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
	"i.status, i.error, i.created_ms, i.updated_ms, i.pinned, i.taken, i.taken_ms, i.gps_lat, "
	"i.gps_lon, i.camera_make, i.camera_model, i.lens, i.orientation, i.exif_read "
	"FROM json_each(?1) AS j CROSS JOIN images AS i ON i.id = j.value";
static const char SQL_TEXT_MANY[] =
	"SELECT j.key, t.id, t.text, t.meta, t.status, t.created_ms "
	"FROM json_each(?1) AS j CROSS JOIN texts AS t ON t.id = j.value";

static int json_meta_error(store_err *err)
{
	return store_fail(err, STORE_EINVAL, "metadata must be a JSON object");
}

void store_exif_clear(store_exif *e)
{
	if (!e)
		return;
	free(e->taken);
	free(e->camera_make);
	free(e->camera_model);
	free(e->lens);
	memset(e, 0, sizeof *e);
}

void store_image_clear(store_image *img)
{
	if (!img)
		return;
	store_exif_clear(&img->exif);
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

int store_sha256_valid(const char *h)
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
	if (!store_sha256_valid(img->sha256))
		return store_fail(err, STORE_EINVAL, "sha256 must be 64 lower-case hex digits");
	if (!img->mime || !*img->mime)
		return store_fail(err, STORE_EINVAL, "mime type is required");
	if (img->bytes < 0 || img->width < 0 || img->height < 0)
		return store_fail(err, STORE_EINVAL, "sizes must not be negative");

	store_query q = {
		.sql = SQL_IMAGE_BY_SHA_ID, .what = "looking up an image",
		.args = {BIND_TEXT(img->sha256)}, .row = store_int64_row, .ctx = id,
	};
	int rc = store_run(w, &q, err);
	if (rc != STORE_OK)
		return rc;
	if (q.rows > 0)
		return store_fail(err, STORE_EEXISTS, "an image with the same content exists (id %lld)",
		                  (long long)*id);

	q = (store_query){
		.sql = SQL_IMAGE_INSERT, .what = "inserting an image",
		.args = {BIND_TEXT(img->sha256), BIND_TEXT(img->filename), BIND_TEXT(img->mime),
		         BIND_INT(img->width), BIND_INT(img->height), BIND_INT(img->bytes),
		         BIND_TEXT(img->meta), BIND_NOW, BIND_INT(img->pinned ? 1 : 0)},
	};
	rc = store_run(w, &q, err);
	if (q.step_rc == SQLITE_CONSTRAINT_CHECK)
		return json_meta_error(err);
	if (rc != STORE_OK)
		return rc;
	*id = sqlite3_last_insert_rowid(w->db);
	rc = store_fts_put_locked(s, STORE_IMAGE, *id, img->filename, img->meta, err);
	if (rc == STORE_OK && img->exif_read) {
		int found;
		rc = store_image_set_exif_locked(s, *id, &img->exif, 0, &found, err);
	}
	return rc;
}

static int exif_check(const store_exif *e, store_err *err)
{
	if (e->has_gps && !(e->gps_lat >= -90 && e->gps_lat <= 90 && e->gps_lon >= -180 &&
	                    e->gps_lon <= 180))
		return store_fail(err, STORE_EINVAL, "GPS coordinates out of range");
	if (e->orientation < 0 || e->orientation > 8)
		return store_fail(err, STORE_EINVAL, "orientation must be 1..8 (or 0, unknown)");
	if (e->has_taken != (e->taken != NULL))
		return store_fail(err, STORE_EINVAL, "a capture time needs both its text and instant");
	return STORE_OK;
}

int store_image_set_exif_locked(store *s, int64_t id, const store_exif *e, int only_unread,
                                int *found, store_err *err)
{
	static const store_exif none;
	*found = 0;
	if (!e)
		e = &none;
	int rc = exif_check(e, err);
	if (rc != STORE_OK)
		return rc;
	store_query q = {
		.sql = SQL_IMAGE_SET_EXIF, .what = "recording an image's metadata",
		.args = {BIND_INT(id), BIND_TEXT(e->taken), e->has_taken ? BIND_INT(e->taken_ms) : BIND_NONE,
		         e->has_gps ? BIND_REAL(e->gps_lat) : BIND_NONE,
		         e->has_gps ? BIND_REAL(e->gps_lon) : BIND_NONE, BIND_TEXT(e->camera_make),
		         BIND_TEXT(e->camera_model), BIND_TEXT(e->lens), BIND_INT(e->orientation),
		         BIND_INT(only_unread)},
	};
	rc = store_run(&s->writer, &q, err);
	if (q.step_rc == SQLITE_CONSTRAINT_CHECK)
		return store_fail(err, STORE_EINVAL, "an image's metadata is out of range");
	if (rc == STORE_OK)
		*found = sqlite3_changes(s->writer.db) > 0;
	return rc;
}

struct image_insert {
	const store_image *img;
	int64_t *id;
};

static int image_insert_tx(store *s, void *ctx, store_err *err)
{
	struct image_insert *a = ctx;
	return store_image_insert_locked(s, a->img, a->id, err);
}

int store_image_insert(store *s, const store_image *img, int64_t *id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t tmp;
	struct image_insert a = {img, id ? id : &tmp};
	return store_write(s, image_insert_tx, &a, err);
}

struct images_insert {
	store_image_batch_item *items;
	size_t n;
};

static int images_insert_tx(store *s, void *ctx, store_err *err)
{
	struct images_insert *a = ctx;
	for (size_t i = 0; i < a->n; i++) {
		store_image_batch_item *it = &a->items[i];
		int rc = store_image_insert_locked(s, it->img, &it->id, err);
		if (rc == STORE_EEXISTS)
			it->existed = 1;
		else if (rc != STORE_OK)
			return rc;
	}
	return STORE_OK;
}

int store_images_insert_many(store *s, store_image_batch_item *items, size_t n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	for (size_t i = 0; i < n; i++) {
		items[i].id = 0;
		items[i].existed = 0;
		if (!items[i].img)
			return store_fail(err, STORE_EINVAL, "image %zu is missing", i);
	}
	if (n == 0)
		return STORE_OK;
	struct images_insert a = {items, n};
	int rc = store_write(s, images_insert_tx, &a, err);
	if (rc != STORE_OK)
		for (size_t i = 0; i < n; i++)
			items[i].id = 0, items[i].existed = 0;
	return rc;
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
	store_exif *e = &out->exif;
	e->taken = store_col_strdup(st, c0 + 13, oom);
	e->has_taken = sqlite3_column_type(st, c0 + 14) != SQLITE_NULL;
	e->taken_ms = sqlite3_column_int64(st, c0 + 14);
	e->has_gps = sqlite3_column_type(st, c0 + 15) != SQLITE_NULL &&
	             sqlite3_column_type(st, c0 + 16) != SQLITE_NULL;
	e->gps_lat = e->has_gps ? sqlite3_column_double(st, c0 + 15) : 0;
	e->gps_lon = e->has_gps ? sqlite3_column_double(st, c0 + 16) : 0;
	e->camera_make = store_col_strdup(st, c0 + 17, oom);
	e->camera_model = store_col_strdup(st, c0 + 18, oom);
	e->lens = store_col_strdup(st, c0 + 19, oom);
	e->orientation = sqlite3_column_int(st, c0 + 20);
	out->exif_read = sqlite3_column_int(st, c0 + 21);
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

static int image_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	int oom = 0;
	fill_image(st, 0, ctx, &oom);
	if (!oom)
		return 0;
	store_image_clear(ctx);
	return store_fail(err, STORE_ENOMEM, "out of memory");
}

static int text_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	int oom = 0;
	fill_text(st, 0, ctx, &oom);
	if (!oom)
		return 0;
	store_text_clear(ctx);
	return store_fail(err, STORE_ENOMEM, "out of memory");
}

int store_image_get(store *s, int64_t id, store_image *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	memset(out, 0, sizeof *out);
	store_query q = {
		.sql = SQL_IMAGE_COLS, .what = "reading an image", .args = {BIND_INT(id)},
		.row = image_row, .ctx = out,
	};
	int rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no image %lld", (long long)id);
	return rc;
}

int store_image_find_sha(store *s, const char *sha256, store_image *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	memset(out, 0, sizeof *out);
	if (!store_sha256_valid(sha256))
		return store_fail(err, STORE_EINVAL, "sha256 must be 64 lower-case hex digits");
	store_query q = {
		.sql = SQL_IMAGE_COLS_SHA, .what = "reading an image", .args = {BIND_TEXT(sha256)},
		.row = image_row, .ctx = out,
	};
	int rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no image with that content hash");
	return rc;
}

/* The transaction of an UPDATE of one image row: ctx is the query, whose ?1
 * is the image id. */
static int update_image_tx(store *s, void *ctx, store_err *err)
{
	store_query *q = ctx;
	int rc = store_run(&s->writer, q, err);
	if (q->step_rc == SQLITE_CONSTRAINT_CHECK)
		return json_meta_error(err);
	if (rc == STORE_OK && sqlite3_changes(s->writer.db) == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no image %lld", (long long)q->args[0].i);
	return rc;
}

/* The new metadata and its keywords, in one transaction. */
static int set_meta_tx(store *s, void *ctx, store_err *err)
{
	store_query *q = ctx;
	int rc = update_image_tx(s, q, err);
	return rc != STORE_OK ? rc : store_fts_image_meta_locked(s, q->args[0].i, q->args[1].p, err);
}

int store_image_set_meta(store *s, int64_t id, const char *meta_json, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!meta_json)
		return json_meta_error(err);
	store_query q = {
		.sql = SQL_IMAGE_SET_META, .what = "updating metadata",
		.args = {BIND_INT(id), BIND_TEXT(meta_json), BIND_NOW},
	};
	return store_write(s, set_meta_tx, &q, err);
}

int store_image_pin(store *s, int64_t id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	/* pinned = 1 always passes its CHECK: no metadata error can come. */
	store_query q = {.sql = SQL_IMAGE_PIN, .what = "pinning an image", .args = {BIND_INT(id)}};
	return store_write(s, update_image_tx, &q, err);
}

int store_image_set_size(store *s, int64_t id, int width, int height, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (width < 0 || height < 0)
		return store_fail(err, STORE_EINVAL, "sizes must not be negative");
	store_query q = {
		.sql = SQL_IMAGE_SET_SIZE, .what = "updating an image",
		.args = {BIND_INT(id), BIND_INT(width), BIND_INT(height), BIND_NOW},
	};
	return store_write(s, update_image_tx, &q, err);
}

int store_image_set_failed(store *s, int64_t id, const char *why, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	store_query q = {
		.sql = SQL_IMAGE_SET_FAILED, .what = "updating an image",
		.args = {BIND_INT(id), BIND_TEXT(why ? why : "failed"), BIND_NOW},
	};
	return store_write(s, update_image_tx, &q, err);
}

struct set_exif {
	int64_t id;
	const store_exif *e;
};

static int set_exif_tx(store *s, void *ctx, store_err *err)
{
	struct set_exif *a = ctx;
	int found, rc = store_image_set_exif_locked(s, a->id, a->e, 0, &found, err);
	if (rc == STORE_OK && !found)
		rc = store_fail(err, STORE_ENOTFOUND, "no image %lld", (long long)a->id);
	return rc;
}

int store_image_set_exif(store *s, int64_t id, const store_exif *e, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	struct set_exif a = {id, e};
	return store_write(s, set_exif_tx, &a, err);
}

struct set_exif_many {
	store_exif_item *items;
	size_t n;
};

static int set_exif_many_tx(store *s, void *ctx, store_err *err)
{
	struct set_exif_many *a = ctx;
	for (size_t i = 0; i < a->n; i++) {
		store_exif_item *it = &a->items[i];
		int rc = store_image_set_exif_locked(s, it->id, it->exif, 1, &it->stored, err);
		if (rc != STORE_OK)
			return rc;
	}
	return STORE_OK;
}

int store_images_set_exif(store *s, store_exif_item *items, size_t n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	for (size_t i = 0; i < n; i++)
		items[i].stored = 0;
	if (n == 0)
		return STORE_OK;
	struct set_exif_many a = {items, n};
	int rc = store_write(s, set_exif_many_tx, &a, err);
	if (rc != STORE_OK)
		for (size_t i = 0; i < n; i++)
			items[i].stored = 0;
	return rc;
}

struct exif_unread {
	int64_t *ids;
	char (*shas)[65];
	size_t n, max;
};

static int exif_unread_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct exif_unread *u = ctx;
	(void)err;
	if (u->n >= u->max)
		return 0;
	u->ids[u->n] = sqlite3_column_int64(st, 0);
	const unsigned char *h = sqlite3_column_text(st, 1);
	snprintf(u->shas[u->n], 65, "%s", h ? (const char *)h : "");
	u->n++;
	return 0;
}

int store_images_exif_unread(store *s, int64_t after, size_t max, int64_t *ids,
                             char (*shas)[65], size_t *n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	struct exif_unread u = {ids, shas, 0, max};
	*n = 0;
	int rc = store_read(s, &(store_query){
		.sql = SQL_IMAGE_EXIF_UNREAD, .what = "listing images to read",
		.args = {BIND_INT(after), BIND_INT((int64_t)max)}, .row = exif_unread_row, .ctx = &u,
	}, err);
	if (rc == STORE_OK)
		*n = u.n;
	return rc;
}

/* The jobs whose items SQL_WORK_DROP_ITEM failed; more than fit are not
 * counted (an item is queued in few jobs). */
struct job_ids {
	int64_t id[64];
	int n;
};

static int job_id_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct job_ids *j = ctx;
	(void)err;
	if (j->n < (int)(sizeof j->id / sizeof j->id[0]))
		j->id[j->n++] = sqlite3_column_int64(st, 0);
	return 0;
}

/* Inside a write transaction: drops an item's embedding (logging the
 * removal when there was one) and fails its unfinished job items. */
static int drop_item_locked(store *s, store_kind kind, int64_t id, store_err *err)
{
	store_conn *w = &s->writer;
	int64_t now = store_now_ms();
	int rc = store_run(w, &(store_query){
		.sql = SQL_EMB_DELETE_ITEM, .what = "deleting an embedding",
		.args = {BIND_INT(kind), BIND_INT(id)},
	}, err);
	if (rc != STORE_OK)
		return rc;
	if (sqlite3_changes(w->db) > 0) {
		uint64_t seq;
		if ((rc = store_next_seq(s, &seq, err)) != STORE_OK)
			return rc;
		rc = store_run(w, &(store_query){
			.sql = SQL_REMOVAL_PUT, .what = "logging a removal",
			.args = {BIND_INT(kind), BIND_INT(id), BIND_INT(seq)},
		}, err);
		if (rc != STORE_OK)
			return rc;
	}

	/* Collect the jobs first: the RETURNING rows must be read to the end
	 * before another statement changes the same tables. */
	struct job_ids jobs = {.n = 0};
	rc = store_run(w, &(store_query){
		.sql = SQL_WORK_DROP_ITEM, .what = "updating the queue",
		.args = {BIND_INT(kind), BIND_INT(id), BIND_INT(now)}, .row = job_id_row, .ctx = &jobs,
	}, err);
	for (int i = 0; i < jobs.n && rc == STORE_OK; i++)
		rc = store_run(w, &(store_query){
			.sql = SQL_JOB_COUNT_FAILED, .what = "updating a job",
			.args = {BIND_INT(jobs.id[i]), BIND_INT(now)},
		}, err);
	return rc;
}

/* Inside a write transaction: deletes an item with what goes with it;
 * *found 0 when there was none. */
static int delete_item_locked(store *s, store_kind kind, const char *sql, int64_t id, int *found,
                              store_err *err)
{
	*found = 0;
	int rc = store_run(&s->writer, &(store_query){
		.sql = sql, .what = "deleting an item", .args = {BIND_INT(id)},
	}, err);
	if (rc != STORE_OK || sqlite3_changes(s->writer.db) == 0)
		return rc;
	*found = 1;
	if ((rc = store_fts_delete_locked(s, kind, id, err)) != STORE_OK)
		return rc;
	return drop_item_locked(s, kind, id, err);
}

int store_image_delete_locked(store *s, int64_t id, int *found, store_err *err)
{
	return delete_item_locked(s, STORE_IMAGE, SQL_IMAGE_DELETE, id, found, err);
}

struct item_delete {
	store_kind kind;
	const char *sql;
	int64_t id;
};

static int delete_item_tx(store *s, void *ctx, store_err *err)
{
	struct item_delete *d = ctx;
	int found, rc = delete_item_locked(s, d->kind, d->sql, d->id, &found, err);
	if (rc == STORE_OK && !found)
		rc = store_fail(err, STORE_ENOTFOUND, "no %s %lld",
		                d->kind == STORE_IMAGE ? "image" : "text", (long long)d->id);
	return rc;
}

int store_image_delete(store *s, int64_t id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	struct item_delete d = {STORE_IMAGE, SQL_IMAGE_DELETE, id};
	return store_write(s, delete_item_tx, &d, err);
}

int store_text_delete(store *s, int64_t id, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	struct item_delete d = {STORE_TEXT, SQL_TEXT_DELETE, id};
	return store_write(s, delete_item_tx, &d, err);
}

/* Columns 0 and 1 of a count query, into the non-NULL ones of ctx[0..1]. */
static int counts_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	int64_t **out = ctx;
	(void)err;
	for (int i = 0; i < 2; i++)
		if (out[i])
			*out[i] = sqlite3_column_int64(st, i);
	return 0;
}

/* One row of one or two integers from a reader. */
static int read_counts(store *s, const char *sql, int64_t *a, int64_t *b, store_err *err)
{
	int64_t *out[2] = {a, b};
	store_query q = {.sql = sql, .what = "counting", .row = counts_row, .ctx = out};
	int rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_sqlite_fail(err, NULL, SQLITE_DONE, "counting");
	return rc;
}

int store_image_count(store *s, int64_t *total, int64_t *ready, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return read_counts(s, SQL_IMAGE_COUNT, total, ready, err);
}

int store_images_exif_unread_count(store *s, int64_t *n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return read_counts(s, SQL_IMAGE_EXIF_UNREAD_COUNT, n, NULL, err);
}

int store_text_count(store *s, int64_t *total, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	return read_counts(s, SQL_TEXT_COUNT, total, NULL, err);
}

int store_text_insert_locked(store *s, const char *text, const char *meta_json, int64_t *id,
                             store_err *err)
{
	if (!text)
		return store_fail(err, STORE_EINVAL, "text is required");
	store_query q = {
		.sql = SQL_TEXT_INSERT, .what = "inserting a text",
		.args = {BIND_TEXT(text), BIND_TEXT(meta_json), BIND_NOW},
	};
	int rc = store_run(&s->writer, &q, err);
	if (q.step_rc == SQLITE_CONSTRAINT_CHECK)
		return json_meta_error(err);
	if (rc != STORE_OK)
		return rc;
	int64_t rowid = sqlite3_last_insert_rowid(s->writer.db);
	if (id)
		*id = rowid;
	return store_fts_put_locked(s, STORE_TEXT, rowid, text, meta_json, err);
}

struct text_insert {
	const char *text, *meta_json;
	int64_t *id;
};

static int text_insert_tx(store *s, void *ctx, store_err *err)
{
	struct text_insert *a = ctx;
	return store_text_insert_locked(s, a->text, a->meta_json, a->id, err);
}

int store_text_insert(store *s, const char *text, const char *meta_json, int64_t *id,
                      store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!text)
		return store_fail(err, STORE_EINVAL, "text is required");
	struct text_insert a = {text, meta_json, id};
	return store_write(s, text_insert_tx, &a, err);
}

int store_text_get(store *s, int64_t id, store_text *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	memset(out, 0, sizeof *out);
	store_query q = {
		.sql = SQL_TEXT_GET, .what = "reading a text", .args = {BIND_INT(id)},
		.row = text_row, .ctx = out,
	};
	int rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no text %lld", (long long)id);
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

/* The rows of SQL_IMAGE_MANY or SQL_TEXT_MANY: each goes to fill with its
 * position in the ids (column 0). Running out of memory is noted and the
 * rows read on, as a failing step would still be the error to report. */
struct many {
	size_t n;
	void (*fill)(sqlite3_stmt *st, size_t pos, void *out, int *oom);
	void *out;
	int oom;
};

static int many_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct many *m = ctx;
	(void)err;
	sqlite3_int64 pos = sqlite3_column_int64(st, 0);
	if (pos >= 0 && (size_t)pos < m->n)
		m->fill(st, (size_t)pos, m->out, &m->oom);
	return 0;
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
	struct many m = {n, fill, out, 0};
	int rc = store_read(s, &(store_query){
		.sql = sql, .what = what, .args = {BIND_TEXT(json)}, .row = many_row, .ctx = &m,
	}, err);
	if (rc == STORE_OK && m.oom)
		rc = store_fail(err, STORE_ENOMEM, "out of memory");
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
