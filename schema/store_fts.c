/*
 * store_fts.c: the keyword index (migration 004): the text written into it,
 * the query rewrite that matches it, the rows kept in step with the items,
 * and the keyword search.
 *
 * FTS5's unicode61 tokenizer makes a token of each run of letters and
 * digits, which is right for scripts that put spaces between words and
 * useless for Chinese and Japanese ("海滩上的狗" would be one token, found
 * only by typing all of it). So the text stored in the index has a space on
 * both sides of every Han, kana and Hangul character (each is a token), and
 * a query's bareword or quoted string that holds such characters becomes a
 * phrase of them: a run of CJK characters in a query matches where the same
 * run occurs. That is what a user of a search box expects from 海滩
 * ("beach"), one character or many, and what Lucene's CJK analysers do with
 * bigrams; single characters keep queries of one character working too.
 * Full-width Latin letters and digits (ＡＢＣ１２３) are stored and queried as
 * their ASCII forms.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* Decodes one UTF-8 sequence at s (n bytes left); *len is its length. An
 * invalid byte decodes as itself (never a CJK character) with length 1. */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *len)
{
	uint32_t c = s[0];
	size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
	if (k == 0 || k > n) {
		*len = 1;
		return c;
	}
	if (k == 1) {
		*len = 1;
		return c;
	}
	c &= 0x7f >> k;
	for (size_t i = 1; i < k; i++) {
		if ((s[i] & 0xc0) != 0x80) {
			*len = 1;
			return s[0];
		}
		c = (c << 6) | (s[i] & 0x3f);
	}
	*len = k;
	return c;
}

/* Scripts written without spaces between words (and Hangul, whose words
 * carry their particles): each character is a token. */
static int is_cjk(uint32_t c)
{
	return (c >= 0x2e80 && c <= 0x2fdf) ||   /* CJK and Kangxi radicals */
	       (c >= 0x3005 && c <= 0x3007) ||   /* 々 〆 〇 */
	       (c >= 0x3040 && c <= 0x30ff) ||   /* hiragana, katakana */
	       (c >= 0x3100 && c <= 0x312f) ||   /* bopomofo */
	       (c >= 0x31f0 && c <= 0x31ff) ||   /* katakana extensions */
	       (c >= 0x3400 && c <= 0x4dbf) ||   /* CJK extension A */
	       (c >= 0x4e00 && c <= 0x9fff) ||   /* CJK unified ideographs */
	       (c >= 0xac00 && c <= 0xd7af) ||   /* Hangul syllables */
	       (c >= 0xf900 && c <= 0xfaff) ||   /* CJK compatibility ideographs */
	       (c >= 0xff66 && c <= 0xff9f) ||   /* half-width katakana */
	       (c >= 0x20000 && c <= 0x323af);   /* CJK extensions B to H */
}

/* A full-width letter or digit's ASCII form, else 0. */
static char fullwidth_alnum(uint32_t c)
{
	if ((c >= 0xff10 && c <= 0xff19) || (c >= 0xff21 && c <= 0xff3a) ||
	    (c >= 0xff41 && c <= 0xff5a))
		return (char)(c - 0xfee0);
	return 0;
}

typedef struct buf {
	char *p;
	size_t n, cap;
	int oom;
} buf;

static void put(buf *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

/* Appends s[0..n) as the index stores it, and as a query's bareword or
 * string must say it: CJK characters spaced apart, full-width letters and
 * digits as ASCII. */
static void put_segmented(buf *b, const unsigned char *s, size_t n)
{
	size_t i = 0, len;
	while (i < n) {
		uint32_t c = utf8_next(s + i, n - i, &len);
		char a = fullwidth_alnum(c);
		if (a) {
			put(b, &a, 1);
		} else if (is_cjk(c)) {
			put(b, " ", 1);
			put(b, s + i, len);
			put(b, " ", 1);
		} else {
			put(b, s + i, len);
		}
		i += len;
	}
}

/* clipd_fts_text(x): x as the index stores it; NULL stays NULL. */
static void sql_fts_text(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	if (sqlite3_value_type(argv[0]) == SQLITE_NULL)
		return;
	const unsigned char *s = sqlite3_value_text(argv[0]);
	int n = sqlite3_value_bytes(argv[0]);
	buf b = {0};
	put(&b, "", 0);
	if (s)
		put_segmented(&b, s, (size_t)n);
	if (b.oom) {
		free(b.p);
		sqlite3_result_error_nomem(ctx);
		return;
	}
	sqlite3_result_text(ctx, b.p, (int)b.n, free);
}

/* clipd_fts_basename(path): what follows the last '/'; NULL stays NULL. */
static void sql_fts_basename(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	if (sqlite3_value_type(argv[0]) == SQLITE_NULL)
		return;
	const char *s = (const char *)sqlite3_value_text(argv[0]);
	if (!s)
		return;
	const char *slash = strrchr(s, '/');
	sqlite3_result_text(ctx, slash ? slash + 1 : s, -1, SQLITE_TRANSIENT);
}

int store_fts_register(sqlite3 *db)
{
	int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
	int rc = sqlite3_create_function(db, "clipd_fts_text", 1, flags, NULL, sql_fts_text, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_create_function(db, "clipd_fts_basename", 1, flags, NULL, sql_fts_basename,
		                             NULL, NULL);
	return rc;
}

/* FTS5 barewords: runs of ASCII letters, digits and '_', and of any
 * non-ASCII character (FTS5's own rule). */
static int bareword_byte(unsigned char c)
{
	return c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
	       (c >= 'a' && c <= 'z') || c == '_' || c == 0x1a;
}

static int has_cjk(const unsigned char *s, size_t n)
{
	size_t i = 0, len;
	while (i < n) {
		if (is_cjk(utf8_next(s + i, n - i, &len)))
			return 1;
		i += len;
	}
	return 0;
}

char *store_fts_query(const char *q)
{
	const unsigned char *s = (const unsigned char *)q;
	size_t n = strlen(q), i = 0;
	buf b = {0};
	put(&b, "", 0);
	while (i < n) {
		if (s[i] == '"') {
			/* A string: up to the closing quote ("" inside is one quote).
			 * An unclosed one is left for FTS5 to refuse. */
			size_t j = i + 1;
			for (;;) {
				while (j < n && s[j] != '"')
					j++;
				if (j + 1 < n && s[j + 1] == '"') {
					j += 2;
					continue;
				}
				break;
			}
			put(&b, "\"", 1);
			put_segmented(&b, s + i + 1, (j < n ? j : n) - (i + 1));
			if (j < n)
				put(&b, "\"", 1);
			i = j < n ? j + 1 : n;
		} else if (bareword_byte(s[i])) {
			size_t j = i;
			while (j < n && bareword_byte(s[j]))
				j++;
			/* A bareword with CJK characters would be one token; as a
			 * string it is the phrase of its characters (a '*' after it
			 * still makes a prefix query). */
			if (has_cjk(s + i, j - i)) {
				put(&b, "\"", 1);
				put_segmented(&b, s + i, j - i);
				put(&b, "\"", 1);
			} else {
				put_segmented(&b, s + i, j - i);
			}
			i = j;
		} else {
			put(&b, s + i, 1);
			i++;
		}
	}
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/* ---- rows kept in step with the items ------------------------------------ */

#define META_VALUES \
	"clipd_fts_text((SELECT group_concat(value, ' ') FROM json_tree(coalesce(?3, '{}')) " \
	"WHERE type IN ('text', 'integer', 'real')))"

static const char SQL_FTS_IMAGE_PUT[] =
	"INSERT OR REPLACE INTO images_fts (rowid, name, path, meta) VALUES "
	"(?1, clipd_fts_text(clipd_fts_basename(?2)), clipd_fts_text(?2), " META_VALUES ")";
static const char SQL_FTS_IMAGE_META[] =
	"UPDATE images_fts SET meta = " META_VALUES " WHERE rowid = ?1";
static const char SQL_FTS_TEXT_PUT[] =
	"INSERT OR REPLACE INTO texts_fts (rowid, text, meta) VALUES (?1, clipd_fts_text(?2), " META_VALUES ")";
static const char SQL_FTS_IMAGE_DELETE[] = "DELETE FROM images_fts WHERE rowid = ?1";
static const char SQL_FTS_TEXT_DELETE[] = "DELETE FROM texts_fts WHERE rowid = ?1";

int store_fts_put_locked(store *s, store_kind kind, int64_t id, const char *name_or_text,
                         const char *meta_json, store_err *err)
{
	return store_run(&s->writer, &(store_query){
		.sql = kind == STORE_IMAGE ? SQL_FTS_IMAGE_PUT : SQL_FTS_TEXT_PUT,
		.what = "indexing an item's keywords",
		.args = {BIND_INT(id), BIND_TEXT(name_or_text), BIND_TEXT(meta_json)},
	}, err);
}

int store_fts_image_meta_locked(store *s, int64_t id, const char *meta_json, store_err *err)
{
	return store_run(&s->writer, &(store_query){
		.sql = SQL_FTS_IMAGE_META, .what = "indexing an image's metadata",
		.args = {BIND_INT(id), BIND_NONE, BIND_TEXT(meta_json)},
	}, err);
}

int store_fts_delete_locked(store *s, store_kind kind, int64_t id, store_err *err)
{
	return store_run(&s->writer, &(store_query){
		.sql = kind == STORE_IMAGE ? SQL_FTS_IMAGE_DELETE : SQL_FTS_TEXT_DELETE,
		.what = "removing an item's keywords", .args = {BIND_INT(id)},
	}, err);
}

/* ---- the search ----------------------------------------------------------- */

/* Ready items only, as the vector search has them; bm25 is lower for a
 * better match (FTS5's rank), so the score is its negation. */
static const char SQL_FTS_IMAGE_SEARCH[] =
	"SELECT images_fts.rowid, -bm25(images_fts) FROM images_fts "
	"JOIN images AS i ON i.id = images_fts.rowid "
	"WHERE images_fts MATCH ?1 AND i.status = 1 ORDER BY bm25(images_fts), images_fts.rowid LIMIT ?2";
static const char SQL_FTS_TEXT_SEARCH[] =
	"SELECT texts_fts.rowid, -bm25(texts_fts) FROM texts_fts "
	"JOIN texts AS t ON t.id = texts_fts.rowid "
	"WHERE texts_fts MATCH ?1 AND t.status = 1 ORDER BY bm25(texts_fts), texts_fts.rowid LIMIT ?2";

struct hits {
	int64_t *ids;
	double *scores;
	int n, cap;
};

static int hit_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct hits *h = ctx;
	(void)err;
	if (h->n >= h->cap)
		return STORE_OK;
	h->ids[h->n] = sqlite3_column_int64(st, 0);
	h->scores[h->n] = sqlite3_column_double(st, 1);
	h->n++;
	return STORE_OK;
}

int store_keyword_search(store *s, store_kind kind, const char *query, int limit, int64_t *ids,
                         double *scores, int *n, store_err *err)
{
	STORE_ERR_DEFAULT(err);
	*n = 0;
	if (!query || limit <= 0)
		return store_fail(err, STORE_EINVAL, "a keyword query and a positive limit are required");
	char *q = store_fts_query(query);
	if (!q)
		return store_fail(err, STORE_ENOMEM, "out of memory");
	struct hits h = {ids, scores, 0, limit};
	store_query sq = {
		.sql = kind == STORE_IMAGE ? SQL_FTS_IMAGE_SEARCH : SQL_FTS_TEXT_SEARCH,
		.what = "searching keywords",
		.args = {BIND_TEXT(q), BIND_INT(limit)},
		.row = hit_row, .ctx = &h,
	};
	int rc = store_read(s, &sq, err);
	free(q);
	/* The statement is fixed and prepared, so an error while stepping is
	 * the MATCH expression's: FTS5's syntax, an unknown column. */
	if (rc == STORE_EINTERNAL && (sq.step_rc & 0xff) == SQLITE_ERROR) {
		const char *detail = strstr(err->msg, ": ");
		char msg[sizeof err->msg];
		snprintf(msg, sizeof msg, "%s", detail ? detail + 2 : err->msg);
		return store_fail(err, STORE_EINVAL, "the keyword query is not valid (FTS5 syntax): %s",
		                  msg);
	}
	if (rc != STORE_OK)
		return rc;
	*n = h.n;
	return STORE_OK;
}
