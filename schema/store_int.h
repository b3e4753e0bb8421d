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

/* Generated from schema/NNN_*.sql by tools/embed_file --table at build time. */
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

/* ---- running statements --------------------------------------------------
 *
 * Every query of the module is a store_query: its SQL, a phrase that names
 * it in error messages, its parameters as a table, and what to do with each
 * result row. store_run runs one on a connection the caller holds (the
 * writer, inside store_write); store_read runs one on a borrowed reader;
 * store_write wraps a function in one write transaction. Apart from
 * store_open (pragmas, migrations and checks, before any other thread can
 * see the handle), no other code in the module prepares, binds, steps or
 * resets a statement, or takes a connection's mutex.
 */

#define STORE_MAX_ARGS 10

typedef enum store_arg_type {
	STORE_ARG_NONE = 0, /* leaves the parameter unbound (SQL NULL) */
	STORE_ARG_INT,
	STORE_ARG_TEXT,
	STORE_ARG_BLOB,
	STORE_ARG_REAL,
	STORE_ARG_NOW, /* store_now_ms() when bound: the time of the write, taken
	                * inside its transaction */
} store_arg_type;

/* One parameter value. Text and blobs are bound SQLITE_STATIC: they must
 * stay valid until the store_run that binds them returns. */
typedef struct store_arg {
	store_arg_type type;
	int64_t i;     /* STORE_ARG_INT */
	const void *p; /* STORE_ARG_TEXT: NUL-terminated, NULL binds SQL NULL; STORE_ARG_BLOB */
	int n;         /* STORE_ARG_BLOB: its size in bytes */
	double d;      /* STORE_ARG_REAL */
} store_arg;

#define BIND_NONE ((store_arg){.type = STORE_ARG_NONE})
#define BIND_INT(v) ((store_arg){.type = STORE_ARG_INT, .i = (int64_t)(v)})
#define BIND_TEXT(s) ((store_arg){.type = STORE_ARG_TEXT, .p = (const char *)(s)})
#define BIND_BLOB(b, len) ((store_arg){.type = STORE_ARG_BLOB, .p = (b), .n = (len)})
#define BIND_REAL(v) ((store_arg){.type = STORE_ARG_REAL, .d = (double)(v)})
#define BIND_NOW ((store_arg){.type = STORE_ARG_NOW})

/* Called for each result row of a query, with the statement positioned on
 * it (read its columns with sqlite3_column_*; text and blobs stay valid only
 * until the callback returns). Returns 0 to go on; any other value stops the
 * query and becomes store_run's result unchanged: a store_code after filling
 * err (store_fail), or a caller's own stop value. */
typedef int store_row_fn(sqlite3_stmt *st, void *ctx, store_err *err);

/* A store_row_fn for one-integer queries: column 0 into *(int64_t *)ctx. */
int store_int64_row(sqlite3_stmt *st, void *ctx, store_err *err);

typedef struct store_query {
	const char *sql;  /* a static string of this module: its address keys the
	                   * connection's statement cache */
	const char *what; /* "reading a job": names the query in error messages */
	store_arg args[STORE_MAX_ARGS]; /* args[i] binds ?(i+1); entries left out
	                                 * are BIND_NONE */
	store_row_fn *row; /* NULL: result rows are stepped over */
	void *ctx;         /* handed to row */
	/* Set by store_run: */
	int64_t rows; /* result rows stepped (all of them, unless row stopped) */
	int step_rc;  /* SQLite's extended code of the last sqlite3_step: SQLITE_DONE
	               * once the rows are out, the error when a step failed; 0 when
	               * preparing or binding failed */
} store_query;

/* Runs q on connection c, which the calling thread holds (the writer inside
 * store_write, or a reader in store_read): takes the cached statement for
 * q->sql (preparing it on first use), binds q->args, steps it to the end
 * handing each row to q->row, and resets it on every path, so that no
 * statement stays open after the call.
 * Returns STORE_OK; or q->row's non-zero value; or a failure with err filled
 * (err must not be NULL): a full statement cache is STORE_EINTERNAL
 * "statement cache full", and a failing prepare ("preparing a query"), bind
 * or step (q->what) is mapped by store_sqlite_fail. A caller that gives some
 * SQLite result a meaning of its own (a CHECK or FOREIGN KEY constraint)
 * looks at q->step_rc and replaces the message with store_fail. */
int store_run(store_conn *c, store_query *q, store_err *err);

/* store_run on a reader connection: borrows one (trylock in round-robin
 * order, then blocks on one), runs q and gives the reader back on every
 * path. A single statement reads one consistent snapshot. q->row runs with
 * the reader's mutex held, so it must not call into the store. Safe from any
 * number of threads. Returns as store_run. */
int store_read(store *s, store_query *q, store_err *err);

/* The body of a write transaction: runs its statements with
 * store_run(&s->writer, ...) and the *_locked functions, and returns
 * STORE_OK to commit or a failure (err filled) to roll back. It holds the
 * writer's mutex, so it must not call the public store functions (the mutex
 * is not recursive) nor store_read (a thread holds one store mutex at a
 * time, and a reader would not see the uncommitted rows). */
typedef int store_tx_fn(store *s, void *ctx, store_err *err);

/* One write transaction: takes the writer's mutex, BEGIN IMMEDIATE, calls
 * fn(s, ctx, err), then COMMITs when it returned STORE_OK or ROLLBACKs
 * otherwise, and releases the mutex on every path. Writes are serialised in
 * the process; other processes wait up to the busy timeout, then the begin
 * or the commit fails with STORE_EBUSY. Returns fn's code (a failed rollback
 * leaves err as fn filled it), or the begin's or the commit's failure with
 * err filled. err must not be NULL. Safe from any number of threads. */
int store_write(store *s, store_tx_fn *fn, void *ctx, store_err *err);

/* Takes the next store-wide sequence number (inside a write transaction). */
int store_next_seq(store *s, uint64_t *seq, store_err *err);

/* strdup of a column, NULL for SQL NULL. *oom set on allocation failure. */
char *store_col_strdup(sqlite3_stmt *st, int col, int *oom);

int64_t store_now_ms(void);

/* Inside a write transaction: inserts an image, or finds the duplicate
 * (STORE_EEXISTS with *id set). */
int store_image_insert_locked(store *s, const store_image *img, int64_t *id, store_err *err);

/* Inside a write transaction: records image id's metadata (e NULL:
 * nothing known) and marks it read; with only_unread, an image already read
 * is left alone. *found is 1 when the row was written. */
int store_image_set_exif_locked(store *s, int64_t id, const store_exif *e, int only_unread,
                                int *found, store_err *err);

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

/* Inside a write transaction: adds an item to a job as done already (it
 * came with its embedding), counting it. */
int store_job_add_done_locked(store *s, int64_t job_id, store_kind kind, int64_t item_id,
                              const char *name, int64_t now, store_err *err);

/* A JSON array of the n ids as text ("[1,2,3]"), for json_each(?) in one
 * prepared statement; malloc'ed, NULL when out of memory. */
char *store_ids_json(const int64_t *ids, size_t n);

/* The keyword index (store_fts.c). store_fts_register adds its SQL
 * functions to a connection (every connection, before the migrations); the
 * *_locked functions keep an item's row in step inside the transaction that
 * writes the item: put (insert or replace) takes an image's filename or a
 * text's text, and its meta. */
int store_fts_register(sqlite3 *db);
int store_fts_put_locked(store *s, store_kind kind, int64_t id, const char *name_or_text,
                         const char *meta_json, store_err *err);
int store_fts_image_meta_locked(store *s, int64_t id, const char *meta_json, store_err *err);
int store_fts_delete_locked(store *s, store_kind kind, int64_t id, store_err *err);

/* A keyword query rewritten for the index's segmented text (store_fts.c):
 * malloc'ed, NULL when out of memory. */
char *store_fts_query(const char *q);

/* Public entry points accept a NULL err; internals may then assume one. */
#define STORE_ERR_DEFAULT(err) \
	store_err err##_fallback_; \
	if (!(err)) \
	(err) = &err##_fallback_

#endif
