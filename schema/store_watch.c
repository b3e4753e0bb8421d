/*
 * store_watch.c: the files under --watch directories and their images.
 *
 * One row per file: its size and mtime when it was last ingested (so a
 * restart does not ingest everything again) and the image it became. Two
 * files with the same content share one image (one image per content); an
 * image the watcher created is deleted with the last watched file that
 * names it, in the transaction that changes or forgets that file, so a
 * crash can neither leave an image nobody watches nor delete one still
 * watched. An image that another source added or sent again (an upload, a
 * bulk or path ingest: images.pinned) is never deleted here, so a file
 * event cannot remove what it did not create.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* Rows under a directory: the paths that start with dir + '/', i.e. from
 * dir || '/' up to (not including) dir || '0' ('0' follows '/' in ASCII). */
static const char SQL_WATCH_LIST[] =
	"SELECT path, size, mtime_ns, coalesce(image_id, 0) FROM watched_files "
	"WHERE path > ?1 || '/' AND path < ?1 || '0' ORDER BY path";
static const char SQL_WATCH_GET_R[] =
	"SELECT path, size, mtime_ns, coalesce(image_id, 0) FROM watched_files WHERE path = ?1";
static const char SQL_WATCH_OLD[] =
	"SELECT coalesce(image_id, 0) FROM watched_files WHERE path = ?1";
static const char SQL_WATCH_PUT[] =
	"INSERT INTO watched_files (path, size, mtime_ns, image_id, updated_ms) "
	"VALUES (?1, ?2, ?3, nullif(?4, 0), ?5) "
	"ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
	"image_id = excluded.image_id, updated_ms = excluded.updated_ms";
static const char SQL_WATCH_DEL[] = "DELETE FROM watched_files WHERE path = ?1";
/* 1 when image ?1 must stay: pinned by another source, or still named by a
 * watched file; NULL (no row) when it is gone already. */
static const char SQL_WATCH_KEEP[] =
	"SELECT pinned OR EXISTS (SELECT 1 FROM watched_files WHERE image_id = ?1) "
	"FROM images WHERE id = ?1";

void store_watched_clear(store_watched *w)
{
	if (!w)
		return;
	free(w->path);
	memset(w, 0, sizeof *w);
}

int store_watch_list(store *s, const char *dir, int (*fn)(void *ctx, const store_watched *w),
                     void *ctx, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!dir || !fn)
		return store_fail(err, STORE_EINVAL, "a directory and a callback are required");
	store_conn *c = store_reader_get(s);
	int rc;
	sqlite3_stmt *st = store_stmt(c, SQL_WATCH_LIST, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_text(st, 1, dir, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_watched w = {
			.path = (char *)sqlite3_column_text(st, 0),
			.size = sqlite3_column_int64(st, 1),
			.mtime_ns = sqlite3_column_int64(st, 2),
			.image_id = sqlite3_column_int64(st, 3),
		};
		int stop = fn(ctx, &w);
		if (stop) {
			sqlite3_reset(st);
			rc = stop;
			goto out;
		}
	}
	sqlite3_reset(st);
	rc = rc == SQLITE_DONE ? STORE_OK : store_sqlite_fail(err, c->db, rc, "listing watched files");
out:
	store_reader_put(c);
	return rc;
}

int store_watch_get(store *s, const char *path, store_watched *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	memset(out, 0, sizeof *out);
	if (!path)
		return store_fail(err, STORE_EINVAL, "a path is required");
	store_conn *c = store_reader_get(s);
	int rc, oom = 0;
	sqlite3_stmt *st = store_stmt(c, SQL_WATCH_GET_R, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		out->path = store_col_strdup(st, 0, &oom);
		out->size = sqlite3_column_int64(st, 1);
		out->mtime_ns = sqlite3_column_int64(st, 2);
		out->image_id = sqlite3_column_int64(st, 3);
		rc = oom ? store_fail(err, STORE_ENOMEM, "out of memory") : STORE_OK;
		if (oom)
			store_watched_clear(out);
	} else if (rc == SQLITE_DONE) {
		rc = store_fail(err, STORE_ENOTFOUND, "the file is not watched");
	} else {
		rc = store_sqlite_fail(err, c->db, rc, "reading a watched file");
	}
	sqlite3_reset(st);
out:
	store_reader_put(c);
	return rc;
}

/* Inside a write transaction: one integer from a one-row query on path or
 * id; *found 0 when no row. */
static int query_int(store *s, const char *sql, const char *path, int64_t id, int64_t *v,
                     int *found, store_err *err)
{
	store_conn *w = &s->writer;
	sqlite3_stmt *st = store_stmt(w, sql, err);
	*found = 0;
	*v = 0;
	if (!st)
		return err->code;
	if (path)
		sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 1, id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*found = 1;
		*v = sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_sqlite_fail(err, w->db, rc, "reading watched files");
	return STORE_OK;
}

/* Inside a write transaction, after path's row changed or went: deletes
 * image old when the watcher owns it alone (not pinned) and no watched
 * file names it any more. */
static int drop_if_orphan(store *s, int64_t old, int64_t *dropped, store_err *err)
{
	int64_t keep;
	int found, rc;
	if (old <= 0)
		return STORE_OK;
	if ((rc = query_int(s, SQL_WATCH_KEEP, NULL, old, &keep, &found, err)) != STORE_OK)
		return rc;
	if (!found || keep) /* deleted through the API already, or not the watcher's to delete */
		return STORE_OK;
	if ((rc = store_image_delete_locked(s, old, &found, err)) != STORE_OK)
		return rc;
	if (found)
		*dropped = old;
	return STORE_OK;
}

int store_watch_set(store *s, const char *path, int64_t size, int64_t mtime_ns, int64_t image_id,
                    int64_t *dropped, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t tmp, old;
	int found;
	if (!dropped)
		dropped = &tmp;
	*dropped = 0;
	if (!path || !*path || size < 0 || image_id < 0)
		return store_fail(err, STORE_EINVAL, "a watched file needs a path and a size");
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	if ((rc = query_int(s, SQL_WATCH_OLD, path, 0, &old, &found, err)) != STORE_OK)
		goto out;
	sqlite3_stmt *st = store_stmt(w, SQL_WATCH_PUT, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, size);
	sqlite3_bind_int64(st, 3, mtime_ns);
	sqlite3_bind_int64(st, 4, image_id);
	sqlite3_bind_int64(st, 5, store_now_ms());
	if ((rc = store_step_done(w, st, "recording a watched file", err)) != STORE_OK)
		goto out;
	if (old != image_id)
		rc = drop_if_orphan(s, old, dropped, err);
out:
	rc = store_write_end(s, rc, err);
	if (rc != STORE_OK)
		*dropped = 0;
	return rc;
}

int store_watch_remove(store *s, const char *path, int64_t *dropped, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t tmp, old;
	int found;
	if (!dropped)
		dropped = &tmp;
	*dropped = 0;
	if (!path)
		return store_fail(err, STORE_EINVAL, "a path is required");
	int rc = store_write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	store_conn *w = &s->writer;
	if ((rc = query_int(s, SQL_WATCH_OLD, path, 0, &old, &found, err)) != STORE_OK)
		goto out;
	if (!found) {
		rc = store_fail(err, STORE_ENOTFOUND, "the file is not watched");
		goto out;
	}
	sqlite3_stmt *st = store_stmt(w, SQL_WATCH_DEL, err);
	if (!st) {
		rc = err->code;
		goto out;
	}
	sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	if ((rc = store_step_done(w, st, "forgetting a watched file", err)) != STORE_OK)
		goto out;
	rc = drop_if_orphan(s, old, dropped, err);
out:
	rc = store_write_end(s, rc, err);
	if (rc != STORE_OK)
		*dropped = 0;
	return rc;
}
