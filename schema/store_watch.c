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

struct watch_walk {
	int (*fn)(void *ctx, const store_watched *w);
	void *ctx;
};

static int watch_walk_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct watch_walk *ww = ctx;
	(void)err;
	store_watched w = {
		.path = (char *)sqlite3_column_text(st, 0),
		.size = sqlite3_column_int64(st, 1),
		.mtime_ns = sqlite3_column_int64(st, 2),
		.image_id = sqlite3_column_int64(st, 3),
	};
	return ww->fn(ww->ctx, &w);
}

int store_watch_list(store *s, const char *dir, int (*fn)(void *ctx, const store_watched *w),
                     void *ctx, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!dir || !fn)
		return store_fail(err, STORE_EINVAL, "a directory and a callback are required");
	struct watch_walk ww = {fn, ctx};
	return store_read(s, &(store_query){
		.sql = SQL_WATCH_LIST, .what = "listing watched files", .args = {BIND_TEXT(dir)},
		.row = watch_walk_row, .ctx = &ww,
	}, err);
}

static int watched_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	store_watched *out = ctx;
	int oom = 0;
	out->path = store_col_strdup(st, 0, &oom);
	out->size = sqlite3_column_int64(st, 1);
	out->mtime_ns = sqlite3_column_int64(st, 2);
	out->image_id = sqlite3_column_int64(st, 3);
	if (!oom)
		return 0;
	store_watched_clear(out);
	return store_fail(err, STORE_ENOMEM, "out of memory");
}

int store_watch_get(store *s, const char *path, store_watched *out, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	memset(out, 0, sizeof *out);
	if (!path)
		return store_fail(err, STORE_EINVAL, "a path is required");
	store_query q = {
		.sql = SQL_WATCH_GET_R, .what = "reading a watched file", .args = {BIND_TEXT(path)},
		.row = watched_row, .ctx = out,
	};
	int rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "the file is not watched");
	return rc;
}

/* Inside a write transaction: one integer from a one-row query on path (or
 * id, when path is NULL); *found 0 when no row. */
static int query_int(store *s, const char *sql, const char *path, int64_t id, int64_t *v,
                     int *found, store_err *err)
{
	store_query q = {
		.sql = sql, .what = "reading watched files",
		.args = {path ? BIND_TEXT(path) : BIND_INT(id)}, .row = store_int64_row, .ctx = v,
	};
	*v = 0;
	int rc = store_run(&s->writer, &q, err);
	*found = rc == STORE_OK && q.rows > 0;
	return rc;
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

struct watch_change {
	const char *path;
	int64_t size, mtime_ns, image_id;
	int64_t *dropped;
};

static int watch_set_tx(store *s, void *ctx, store_err *err)
{
	struct watch_change *a = ctx;
	int64_t old;
	int found;
	int rc = query_int(s, SQL_WATCH_OLD, a->path, 0, &old, &found, err);
	if (rc != STORE_OK)
		return rc;
	rc = store_run(&s->writer, &(store_query){
		.sql = SQL_WATCH_PUT, .what = "recording a watched file",
		.args = {BIND_TEXT(a->path), BIND_INT(a->size), BIND_INT(a->mtime_ns),
		         BIND_INT(a->image_id), BIND_NOW},
	}, err);
	if (rc == STORE_OK && old != a->image_id)
		rc = drop_if_orphan(s, old, a->dropped, err);
	return rc;
}

int store_watch_set(store *s, const char *path, int64_t size, int64_t mtime_ns, int64_t image_id,
                    int64_t *dropped, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t tmp;
	if (!dropped)
		dropped = &tmp;
	*dropped = 0;
	if (!path || !*path || size < 0 || image_id < 0)
		return store_fail(err, STORE_EINVAL, "a watched file needs a path and a size");
	struct watch_change a = {path, size, mtime_ns, image_id, dropped};
	int rc = store_write(s, watch_set_tx, &a, err);
	if (rc != STORE_OK)
		*dropped = 0;
	return rc;
}

static int watch_remove_tx(store *s, void *ctx, store_err *err)
{
	struct watch_change *a = ctx;
	int64_t old;
	int found;
	int rc = query_int(s, SQL_WATCH_OLD, a->path, 0, &old, &found, err);
	if (rc != STORE_OK)
		return rc;
	if (!found)
		return store_fail(err, STORE_ENOTFOUND, "the file is not watched");
	rc = store_run(&s->writer, &(store_query){
		.sql = SQL_WATCH_DEL, .what = "forgetting a watched file", .args = {BIND_TEXT(a->path)},
	}, err);
	return rc == STORE_OK ? drop_if_orphan(s, old, a->dropped, err) : rc;
}

int store_watch_remove(store *s, const char *path, int64_t *dropped, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	int64_t tmp;
	if (!dropped)
		dropped = &tmp;
	*dropped = 0;
	if (!path)
		return store_fail(err, STORE_EINVAL, "a path is required");
	struct watch_change a = {.path = path, .dropped = dropped};
	int rc = store_write(s, watch_remove_tx, &a, err);
	if (rc != STORE_OK)
		*dropped = 0;
	return rc;
}
