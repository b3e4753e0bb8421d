/*
 * store.c: opening the database, migrations, connections, errors, key-value.
 *
 * DESIGN: connections and locks.
 * - One writer connection (s->writer), guarded by s->writer.mu. Every write
 *   is one BEGIN IMMEDIATE ... COMMIT transaction taken under that mutex, so
 *   writes are serialised inside the process and SQLite's own lock only
 *   arbitrates with other processes (busy timeout 5 s).
 * - STORE_NREADERS reader connections, each guarded by its own mutex. A read
 *   borrows any free one (trylock in round-robin order, then blocks on one).
 *   In WAL mode readers see the last committed state and never wait for the
 *   writer. A multi-statement read runs inside one read transaction.
 * - A thread holds at most one of these mutexes at a time: there is no lock
 *   order to get wrong.
 * - Only store_read and store_write (below) take these mutexes, and only
 *   store_run steps a statement: the rest of the module describes each query
 *   as a store_query (store_int.h) and each write as a store_tx_fn.
 * - Durability: journal_mode=WAL with synchronous=FULL, so a transaction that
 *   returned STORE_OK survives power loss. Connections are opened with
 *   SQLITE_OPEN_NOMUTEX because our mutexes already keep one thread per
 *   connection.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

int store_schema_version(void)
{
	return store_nmigrations;
}

int store_fail(store_err *err, store_code code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
	}
	return code;
}

int store_sqlite_fail(store_err *err, sqlite3 *db, int rc, const char *what)
{
	int prim = rc & 0xff;
	const char *detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);

	switch (prim) {
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return store_fail(err, STORE_ECORRUPT,
		                  "%s: the database file is not a SQLite database or is damaged (%s)",
		                  what, detail);
	case SQLITE_CONSTRAINT:
		if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
			return store_fail(err, STORE_EEXISTS, "%s: already exists", what);
		return store_fail(err, STORE_EINVAL, "%s: %s", what, detail);
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return store_fail(err, STORE_EBUSY, "%s: the database is locked by another process", what);
	case SQLITE_NOMEM:
		return store_fail(err, STORE_ENOMEM, "%s: out of memory", what);
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_FULL:
	case SQLITE_READONLY:
	case SQLITE_PERM:
		return store_fail(err, STORE_EIO, "%s: %s", what, detail);
	default:
		return store_fail(err, STORE_EINTERNAL, "%s: %s", what, detail);
	}
}

int64_t store_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *store_col_strdup(sqlite3_stmt *st, int col, int *oom)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	if (!t)
		return NULL;
	char *d = strdup((const char *)t);
	if (!d)
		*oom = 1;
	return d;
}

/* The prepared statement for sql on c, reset and with bindings cleared. */
static sqlite3_stmt *cached_stmt(store_conn *c, const char *sql, store_err *err)
{
	for (int i = 0; i < c->nstmt; i++) {
		if (c->sql[i] == sql) {
			sqlite3_reset(c->stmt[i]);
			sqlite3_clear_bindings(c->stmt[i]);
			return c->stmt[i];
		}
	}
	if (c->nstmt == STORE_MAX_STMTS) {
		store_fail(err, STORE_EINTERNAL, "statement cache full");
		return NULL;
	}
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
	if (rc != SQLITE_OK) {
		store_sqlite_fail(err, c->db, rc, "preparing a query");
		return NULL;
	}
	c->sql[c->nstmt] = sql;
	c->stmt[c->nstmt] = st;
	c->nstmt++;
	return st;
}

static int bind_args(store_conn *c, sqlite3_stmt *st, const store_query *q, store_err *err)
{
	for (int i = 0; i < STORE_MAX_ARGS; i++) {
		const store_arg *a = &q->args[i];
		int rc;
		switch (a->type) {
		case STORE_ARG_NONE:
			continue;
		case STORE_ARG_INT:
			rc = sqlite3_bind_int64(st, i + 1, a->i);
			break;
		case STORE_ARG_TEXT:
			rc = sqlite3_bind_text(st, i + 1, a->p, -1, SQLITE_STATIC);
			break;
		case STORE_ARG_BLOB:
			rc = sqlite3_bind_blob(st, i + 1, a->p, a->n, SQLITE_STATIC);
			break;
		case STORE_ARG_REAL:
			rc = sqlite3_bind_double(st, i + 1, a->d);
			break;
		case STORE_ARG_NOW:
			rc = sqlite3_bind_int64(st, i + 1, store_now_ms());
			break;
		default:
			return store_fail(err, STORE_EINTERNAL, "%s: bad parameter %d", q->what, i + 1);
		}
		if (rc != SQLITE_OK)
			return store_sqlite_fail(err, c->db, rc, q->what);
	}
	return STORE_OK;
}

int store_run(store_conn *c, store_query *q, store_err *err)
{
	q->rows = 0;
	q->step_rc = 0;
	sqlite3_stmt *st = cached_stmt(c, q->sql, err);
	if (!st)
		return err->code;
	/* Bindings that fail leave the statement unstepped; the next
	 * cached_stmt clears them. */
	int rc = bind_args(c, st, q, err);
	if (rc != STORE_OK)
		return rc;
	while ((q->step_rc = sqlite3_step(st)) == SQLITE_ROW) {
		q->rows++;
		if (q->row && (rc = q->row(st, q->ctx, err)) != 0)
			break;
	}
	if (rc == 0 && q->step_rc != SQLITE_DONE)
		rc = store_sqlite_fail(err, c->db, q->step_rc, q->what);
	sqlite3_reset(st);
	return rc;
}

/* Steps BEGIN, COMMIT or ROLLBACK. */
static int step_done(store_conn *c, sqlite3_stmt *st, const char *what, store_err *err)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE || rc == SQLITE_ROW)
		return STORE_OK;
	return store_sqlite_fail(err, c->db, rc, what);
}

static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";

/* Takes the writer and begins an IMMEDIATE transaction. On success the
 * caller must call write_end. */
static int write_begin(store *s, store_err *err)
{
	pthread_mutex_lock(&s->writer.mu);
	sqlite3_stmt *st = cached_stmt(&s->writer, SQL_BEGIN, err);
	int rc = st ? step_done(&s->writer, st, "starting a write", err) : (int)err->code;
	if (rc != STORE_OK)
		pthread_mutex_unlock(&s->writer.mu);
	return rc;
}

/* Commits (rc == STORE_OK) or rolls back, then releases the writer. Returns
 * rc, or the commit's error. */
static int write_end(store *s, int rc, store_err *err)
{
	store_conn *w = &s->writer;
	if (rc == STORE_OK) {
		sqlite3_stmt *st = cached_stmt(w, SQL_COMMIT, err);
		rc = st ? step_done(w, st, "committing", err) : STORE_EINTERNAL;
	}
	if (rc != STORE_OK && !sqlite3_get_autocommit(w->db)) {
		/* The error is already in err; a failing rollback adds nothing
		 * useful, and SQLite rolls back on close anyway. */
		sqlite3_stmt *st = cached_stmt(w, SQL_ROLLBACK, NULL);
		if (st)
			step_done(w, st, "rolling back", NULL);
	}
	pthread_mutex_unlock(&w->mu);
	return rc;
}

int store_write(store *s, store_tx_fn *fn, void *ctx, store_err *err)
{
	int rc = write_begin(s, err);
	if (rc != STORE_OK)
		return rc;
	return write_end(s, fn(s, ctx, err), err);
}

int store_read(store *s, store_query *q, store_err *err)
{
	unsigned start = s->next_reader++;
	store_conn *c = NULL;
	for (int i = 0; i < s->nreaders && !c; i++) {
		store_conn *r = &s->readers[(start + i) % s->nreaders];
		if (pthread_mutex_trylock(&r->mu) == 0)
			c = r;
	}
	if (!c) {
		c = &s->readers[start % s->nreaders];
		pthread_mutex_lock(&c->mu);
	}
	int rc = store_run(c, q, err);
	pthread_mutex_unlock(&c->mu);
	return rc;
}

static const char SQL_NEXT_SEQ[] = "UPDATE seq SET last = last + 1 WHERE id = 1 RETURNING last";

int store_int64_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	(void)err;
	*(int64_t *)ctx = sqlite3_column_int64(st, 0);
	return 0;
}

int store_next_seq(store *s, uint64_t *seq, store_err *err)
{
	int64_t last = 0;
	store_query q = {
		.sql = SQL_NEXT_SEQ, .what = "taking a sequence number", .row = store_int64_row, .ctx = &last,
	};
	int rc = store_run(&s->writer, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_sqlite_fail(err, s->writer.db, SQLITE_DONE, "taking a sequence number");
	if (rc == STORE_OK)
		*seq = (uint64_t)last;
	return rc;
}

static void conn_close(store_conn *c)
{
	for (int i = 0; i < c->nstmt; i++)
		sqlite3_finalize(c->stmt[i]);
	c->nstmt = 0;
	if (c->db)
		sqlite3_close(c->db);
	c->db = NULL;
	pthread_mutex_destroy(&c->mu);
}

/* Runs a constant SQL script (pragmas, migrations) on one connection. */
static int exec_script(store_conn *c, const char *sql, const char *what, store_err *err)
{
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? STORE_OK : store_sqlite_fail(err, c->db, rc, what);
}

static int conn_open(store_conn *c, const char *path, int readonly, store_err *err)
{
	int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
	flags |= readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;

	memset(c, 0, sizeof *c);
	pthread_mutex_init(&c->mu, NULL);
	int rc = sqlite3_open_v2(path, &c->db, flags, NULL);
	if (rc != SQLITE_OK)
		return store_fail(err, rc == SQLITE_NOMEM ? STORE_ENOMEM : STORE_EIO,
		                  "cannot open database %s: %s", path,
		                  c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
	sqlite3_busy_timeout(c->db, 5000);
	if ((rc = store_fts_register(c->db)) != SQLITE_OK)
		return store_sqlite_fail(err, c->db, rc, "registering the keyword index's functions");
	sqlite3_extended_result_codes(c->db, 1);
	return exec_script(c, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;",
	                   "configuring the database", err);
}

static int read_user_version(store_conn *c, int *v, store_err *err)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_fail(err, c->db, rc, "reading the schema version");
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? STORE_OK : store_sqlite_fail(err, c->db, rc, "reading the schema version");
}

/* Applies every migration past the database's user_version, each in its own
 * transaction together with the new version number. */
static int store_migrate(store *s, store_err *err)
{
	store_conn *c = &s->writer;
	int v, rc;

	if ((rc = read_user_version(c, &v, err)) != STORE_OK)
		return rc;
	if (v > store_nmigrations)
		return store_fail(err, STORE_ETOONEW,
		                  "database %s has schema version %d but this build knows only up to %d: "
		                  "it was written by a newer clipd; use that version or restore a backup",
		                  s->path, v, store_nmigrations);
	for (; v < store_nmigrations; v++) {
		/* PRAGMA takes no bound parameters; the number is ours, not input. */
		char pragma[64];
		snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
		if ((rc = exec_script(c, "BEGIN IMMEDIATE", "starting a migration", err)) != STORE_OK)
			return rc;
		rc = exec_script(c, store_migrations[v].sql, store_migrations[v].name, err);
		if (rc == STORE_OK)
			rc = exec_script(c, pragma, "recording the schema version", err);
		if (rc == STORE_OK)
			rc = exec_script(c, "COMMIT", "committing a migration", err);
		if (rc != STORE_OK) {
			sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
			return rc;
		}
	}
	return STORE_OK;
}

static int quick_check(store_conn *c, store_err *err)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(c->db, "PRAGMA quick_check(1)", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_fail(err, c->db, rc, "checking the database");
	rc = sqlite3_step(st);
	int ok = rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
	if (rc != SQLITE_ROW)
		rc = store_sqlite_fail(err, c->db, rc, "checking the database");
	else if (!ok)
		rc = store_fail(err, STORE_ECORRUPT, "database is damaged: %s",
		                (const char *)sqlite3_column_text(st, 0));
	else
		rc = STORE_OK;
	sqlite3_finalize(st);
	return rc;
}

int store_open(const char *path, int flags, store **out, store_err *err)
{
	int rc, readonly = !!(flags & STORE_OPEN_READONLY);
	store *s;

	*out = NULL;
	if (!path || !*path)
		return store_fail(err, STORE_EINVAL, "no database path given");
	s = calloc(1, sizeof *s);
	if (!s || !(s->path = strdup(path))) {
		free(s);
		return store_fail(err, STORE_ENOMEM, "out of memory");
	}
	if ((rc = conn_open(&s->writer, path, readonly, err)) != STORE_OK)
		goto out;
	if (!readonly) {
		/* journal_mode answers with a row; sqlite3_exec discards it. It is
		 * the first statement that reads the file, so garbage shows here. */
		if ((rc = exec_script(&s->writer, "PRAGMA journal_mode = WAL", "opening the database",
		                      err)) != STORE_OK)
			goto out;
		if ((rc = store_migrate(s, err)) != STORE_OK)
			goto out;
	} else {
		int v;
		if ((rc = read_user_version(&s->writer, &v, err)) != STORE_OK)
			goto out;
		if (v != store_nmigrations) {
			rc = store_fail(err, v > store_nmigrations ? STORE_ETOONEW : STORE_EINVAL,
			                "database %s has schema version %d, this build needs %d",
			                path, v, store_nmigrations);
			goto out;
		}
	}
	if ((flags & STORE_OPEN_CHECK) && (rc = quick_check(&s->writer, err)) != STORE_OK)
		goto out;
	for (s->nreaders = 0; s->nreaders < STORE_NREADERS; s->nreaders++) {
		rc = conn_open(&s->readers[s->nreaders], path, 1, err);
		if (rc != STORE_OK) {
			conn_close(&s->readers[s->nreaders]);
			goto out;
		}
	}
	*out = s;
	return STORE_OK;
out:
	store_close(s);
	return rc;
}

void store_close(store *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->nreaders; i++)
		conn_close(&s->readers[i]);
	conn_close(&s->writer);
	free(s->path);
	free(s);
}

/* ---- key-value ----------------------------------------------------------- */

static const char SQL_KV_SET[] =
	"INSERT INTO kv (key, value) VALUES (?1, ?2) "
	"ON CONFLICT (key) DO UPDATE SET value = excluded.value";
static const char SQL_KV_GET[] = "SELECT value FROM kv WHERE key = ?1";

static int kv_set_tx(store *s, void *ctx, store_err *err)
{
	const char *const *kv = ctx;
	return store_run(&s->writer, &(store_query){
		.sql = SQL_KV_SET, .what = "setting a key", .args = {BIND_TEXT(kv[0]), BIND_TEXT(kv[1])},
	}, err);
}

int store_kv_set(store *s, const char *key, const char *value, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	if (!key || !value)
		return store_fail(err, STORE_EINVAL, "key and value are required");
	const char *kv[2] = {key, value};
	return store_write(s, kv_set_tx, kv, err);
}

/* A text column 0 into *(char **)ctx, which must be NULL on entry. */
static int strdup_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	int oom = 0;
	*(char **)ctx = store_col_strdup(st, 0, &oom);
	return oom ? store_fail(err, STORE_ENOMEM, "out of memory") : 0;
}

int store_kv_get(store *s, const char *key, char **value, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	*value = NULL;
	store_query q = {
		.sql = SQL_KV_GET, .what = "reading a key", .args = {BIND_TEXT(key)},
		.row = strdup_row, .ctx = value,
	};
	int rc = store_read(s, &q, err);
	if (rc == STORE_OK && q.rows == 0)
		rc = store_fail(err, STORE_ENOTFOUND, "no value for key %s", key);
	return rc;
}
