/* Private to the store module: connections, statement cache, errors. */
#ifndef CLIPD_STORE_INT_H
#define CLIPD_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "store.h"

struct store_migration {
	const char *name;
	const char *sql;
};

/* Generated from schema/NNN_*.sql by embed_sql at build time. */
extern const struct store_migration store_migrations[];
extern const int store_nmigrations;

#define STORE_MAX_STMTS 96
#define STORE_NREADERS 4

/* One SQLite connection with its prepared statements, keyed by the address
 * of their SQL text (every statement is a static string in this module). */
typedef struct store_conn {
	sqlite3 *db;
	pthread_mutex_t mu;
	int nstmt;
	const char *sql[STORE_MAX_STMTS];
	sqlite3_stmt *stmt[STORE_MAX_STMTS];
} store_conn;

struct store {
	char *path;
	store_conn writer;                /* guarded by writer.mu */
	store_conn readers[STORE_NREADERS];
	int nreaders;
	unsigned next_reader;             /* round-robin hint; races are harmless */
};

/* Sets err (if any) and returns code. printf-style message. */
int store_fail(store_err *err, store_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Maps an SQLite result on conn to a store error with a message that names
 * what was being done (what), never the SQL. */
int store_sqlite_fail(store_err *err, sqlite3 *db, int rc, const char *what);

/* The prepared statement for sql on c, reset and with bindings cleared. */
sqlite3_stmt *store_stmt(store_conn *c, const char *sql, store_err *err);

/* Takes the writer and begins an IMMEDIATE transaction. On success the
 * caller must call store_write_end. */
int store_write_begin(store *s, store_err *err);

/* Commits (rc == STORE_OK) or rolls back, then releases the writer. Returns
 * rc, or the commit's error. */
int store_write_end(store *s, int rc, store_err *err);

/* Borrows a reader connection (locked); give it back with store_reader_put. */
store_conn *store_reader_get(store *s);
void store_reader_put(store_conn *c);

/* Steps a statement that returns no rows. */
int store_step_done(store_conn *c, sqlite3_stmt *st, const char *what, store_err *err);

/* Takes the next store-wide sequence number (inside a write transaction). */
int store_next_seq(store *s, uint64_t *seq, store_err *err);

/* strdup of a column, NULL for SQL NULL. *oom set on allocation failure. */
char *store_col_strdup(sqlite3_stmt *st, int col, int *oom);

int64_t store_now_ms(void);

/* Inside a write transaction: inserts an image, or finds the duplicate
 * (STORE_EEXISTS with *id set). */
int store_image_insert_locked(store *s, const store_image *img, int64_t *id, store_err *err);

/* Inside a write transaction: inserts a text (status pending). */
int store_text_insert_locked(store *s, const char *text, const char *meta_json, int64_t *id,
                             store_err *err);

/* Inside a write transaction: deletes an image as store_image_delete does.
 * *found is 0 (and STORE_OK returned) when there is no such image. */
int store_image_delete_locked(store *s, int64_t id, int *found, store_err *err);

/* Inside a write transaction: finishes a claimed job item, done (why NULL)
 * or failed, counting it in its job. *found is 0 (and STORE_OK returned)
 * when the item is not claimed. */
int store_work_finish_locked(store *s, int64_t work_id, const char *why, int64_t now, int *found,
                             store_err *err);

/* A JSON array of the n ids as text ("[1,2,3]"), for json_each(?) in one
 * prepared statement; malloc'ed, NULL when out of memory. */
char *store_ids_json(const int64_t *ids, size_t n);

/* Public entry points accept a NULL err; internals may then assume one. */
#define STORE_ERR_DEFAULT(err) \
	store_err err##_fallback_; \
	if (!(err)) \
	(err) = &err##_fallback_

#endif
