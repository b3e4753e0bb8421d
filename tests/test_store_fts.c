/*
 * test_store_fts: the keyword index against a real SQLite database: the
 * query rewrite for Chinese, Japanese and Korean, search by file name, path,
 * metadata and text in several scripts, rows kept in step with inserts,
 * metadata updates and deletes, only ready items found, FTS5's syntax errors
 * as STORE_EINVAL with its message, and the migration that builds the index
 * for a database written before it.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "store_int.h" /* store_fts_query, store_migrations */
#include "tap.h"

static char dir[256];

static store *open_fresh(const char *name, char *p, size_t n)
{
	store_err err;
	store *s = NULL;
	snprintf(p, n, "%s/%s", dir, name);
	unlink(p);
	if (store_open(p, 0, &s, &err) != STORE_OK)
		printf("# store_open %s: %s\n", p, err.msg);
	return s;
}

/* Inserts image i (queued) and, when ready, embeds it, so that it is ready. */
static int64_t add_image(store *s, int i, const char *filename, const char *meta, int ready)
{
	store_image img = {.mime = "image/png", .bytes = 10, .filename = (char *)filename,
	                   .meta = (char *)meta};
	snprintf(img.sha256, sizeof img.sha256, "%064x", i);
	int64_t job, id = -1;
	store_err err;
	if (!ready) /* not queued either: the claims below take the ready ones */
		return store_image_insert(s, &img, &id, &err) == STORE_OK ? id : -1;
	if (store_job_create(s, "batch", &job, &err) != STORE_OK ||
	    store_image_insert_queued(s, &img, job, &id, &err) != STORE_OK) {
		printf("# adding image %d: %s\n", i, err.msg);
		return -1;
	}
	store_work w;
	size_t n;
	float v[2] = {1, 0};
	if (store_work_claim(s, STORE_IMAGE, &w, 1, &n, &err) != STORE_OK || n != 1)
		return -1;
	store_embedding_item it = {.item_id = w.item_id, .work_id = w.work_id, .vec = v, .stored = -1};
	if (store_embeddings_put_many(s, STORE_IMAGE, "m", 2, &it, 1, &err) != STORE_OK) {
		printf("# embedding image %d: %s\n", i, err.msg);
		return -1;
	}
	return id;
}

static int64_t add_text(store *s, const char *text, const char *meta)
{
	int64_t job, id = -1;
	store_err err;
	const char *texts[1] = {text}, *metas[1] = {meta};
	if (store_job_create(s, "texts", &job, &err) != STORE_OK ||
	    store_texts_insert_queued(s, 1, texts, metas, job, &id, &err) != STORE_OK) {
		printf("# adding a text: %s\n", err.msg);
		return -1;
	}
	store_work w;
	size_t n;
	float v[2] = {0, 1};
	if (store_work_claim(s, STORE_TEXT, &w, 1, &n, &err) != STORE_OK || n != 1)
		return -1;
	store_embedding_item it = {.item_id = w.item_id, .work_id = w.work_id, .vec = v, .stored = -1};
	if (store_embeddings_put_many(s, STORE_TEXT, "m", 2, &it, 1, &err) != STORE_OK)
		return -1;
	return id;
}

/* The ids a keyword query finds, best first, as "1,2,3" ("!" and the
 * message when it fails). */
static const char *found(store *s, store_kind kind, const char *q)
{
	static char out[512];
	int64_t ids[32];
	double scores[32];
	int n = 0;
	store_err err;
	int rc = store_keyword_search(s, kind, q, 32, ids, scores, &n, &err);
	if (rc != STORE_OK) {
		snprintf(out, sizeof out, "!%d %s", rc, err.msg);
		return out;
	}
	out[0] = 0;
	for (int i = 0; i < n; i++)
		snprintf(out + strlen(out), sizeof out - strlen(out), "%s%lld", i ? "," : "",
		         (long long)ids[i]);
	return out;
}

#define FOUND(s, kind, q, want)                                                            \
	do {                                                                               \
		const char *got_ = found(s, kind, q);                                      \
		CHECKF(!strcmp(got_, want), "query %s: found '%s', want '%s'", q, got_, want); \
	} while (0)

static void t_query_rewrite(void)
{
	static const char *const cases[][2] = {
		{"dog beach", "dog beach"},
		{"海滩", "\" 海  滩 \""},
		{"海滩*", "\" 海  滩 \"*"},
		{"\"海滩 上\"", "\" 海  滩   上 \""},
		{"name:狗 OR cat", "name:\" 狗 \" OR cat"},
		{"ｃａｔ１２", "cat12"},
		{"\"a \"\"q\"\" b\"", "\"a \"\"q\"\" b\""},
		{"\"unclosed 海", "\"unclosed  海 "},
		{"(a AND b) NOT c", "(a AND b) NOT c"},
		{"", ""},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *q = store_fts_query(cases[i][0]);
		REQUIRE(q);
		CHECKF(!strcmp(q, cases[i][1]), "'%s' -> '%s', want '%s'", cases[i][0], q, cases[i][1]);
		free(q);
	}
}

static void t_search_images(void)
{
	char p[512];
	store *s = open_fresh("images.db", p, sizeof p);
	REQUIRE(s);
	int64_t a = add_image(s, 1, "holiday/2019/IMG_2041.jpg", "{\"caption\":\"海滩上的狗\"}", 1);
	int64_t b = add_image(s, 2, "holiday/2021/cat on the sofa.png",
	                      "{\"caption\":\"Crème brûlée at the café\",\"year\":2021}", 1);
	int64_t c = add_image(s, 3, "東京タワー.jpg", "{\"album\":\"여름 해변에서\"}", 1);
	int64_t d = add_image(s, 4, "beach-pending.jpg", "{\"caption\":\"海滩\"}", 0);
	REQUIRE(a > 0 && b > 0 && c > 0 && d > 0);
	char want[64];

	snprintf(want, sizeof want, "%lld", (long long)a);
	FOUND(s, STORE_IMAGE, "海滩", want);     /* a run inside a caption */
	FOUND(s, STORE_IMAGE, "狗", want);       /* one character */
	FOUND(s, STORE_IMAGE, "IMG_2041", want); /* the file name's words */
	FOUND(s, STORE_IMAGE, "img", want);      /* case folded */
	FOUND(s, STORE_IMAGE, "2019", want);     /* a directory of its path */
	FOUND(s, STORE_IMAGE, "\"IMG_2041.jpg\"", want);
	FOUND(s, STORE_IMAGE, "name:2041", want);
	FOUND(s, STORE_IMAGE, "name:holiday", ""); /* the directory is not the name */
	FOUND(s, STORE_IMAGE, "狗海", "");         /* a run that does not occur */
	snprintf(want, sizeof want, "%lld", (long long)b);
	FOUND(s, STORE_IMAGE, "creme brulee", want); /* diacritics removed */
	FOUND(s, STORE_IMAGE, "CAFÉ", want);
	FOUND(s, STORE_IMAGE, "sof*", want);
	FOUND(s, STORE_IMAGE, "meta:2021", want); /* a number's value */
	FOUND(s, STORE_IMAGE, "ｓｏｆａ", want);   /* full-width letters */
	snprintf(want, sizeof want, "%lld", (long long)c);
	FOUND(s, STORE_IMAGE, "タワー", want); /* katakana */
	FOUND(s, STORE_IMAGE, "東京", want);
	FOUND(s, STORE_IMAGE, "해변", want); /* a Hangul word with its particle */
	snprintf(want, sizeof want, "%lld,%lld", (long long)a, (long long)b);
	FOUND(s, STORE_IMAGE, "holiday", want);
	FOUND(s, STORE_IMAGE, "pending", ""); /* not ready: not found */

	/* Metadata updates and deletes keep the index in step. */
	store_err err;
	CHECK(store_image_set_meta(s, b, "{\"caption\":\"晚霞\"}", &err) == STORE_OK);
	FOUND(s, STORE_IMAGE, "creme", "");
	snprintf(want, sizeof want, "%lld", (long long)b);
	FOUND(s, STORE_IMAGE, "晚霞", want);
	FOUND(s, STORE_IMAGE, "sofa", want); /* the name is unchanged */
	CHECK(store_image_delete(s, a, &err) == STORE_OK);
	FOUND(s, STORE_IMAGE, "海滩", "");
	FOUND(s, STORE_IMAGE, "IMG_2041", "");

	/* FTS5's refusals are the caller's errors, with FTS5's message. */
	const char *bad[] = {"\"unclosed", "AND", "beach.jpg", "nosuchcolumn:x", "(a OR", "NEAR(a b"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int64_t ids[4];
		double sc[4];
		int n = -1;
		int rc = store_keyword_search(s, STORE_IMAGE, bad[i], 4, ids, sc, &n, &err);
		CHECKF(rc == STORE_EINVAL && n == 0 && strstr(err.msg, "keyword query"),
		       "'%s': rc %d, '%s'", bad[i], rc, err.msg);
	}
	/* The best match first: bm25 favours the rarer and the shorter. */
	int64_t e = add_image(s, 5, "sunset.jpg", "{\"caption\":\"sunset sunset over the sea\"}", 1);
	int64_t f = add_image(s, 6, "x.jpg",
	                      "{\"caption\":\"a long caption that mentions a sunset once among many "
	                      "other words about the day\"}", 1);
	REQUIRE(e > 0 && f > 0);
	snprintf(want, sizeof want, "%lld,%lld", (long long)e, (long long)f);
	FOUND(s, STORE_IMAGE, "sunset", want);
	store_close(s);
}

static void t_search_texts(void)
{
	char p[512];
	store *s = open_fresh("texts.db", p, sizeof p);
	REQUIRE(s);
	int64_t a = add_text(s, "一只在海滩上奔跑的金毛犬", "{\"source\":\"相册\"}");
	int64_t b = add_text(s, "a golden retriever running on the beach", NULL);
	REQUIRE(a > 0 && b > 0);
	char want[64];
	snprintf(want, sizeof want, "%lld", (long long)a);
	FOUND(s, STORE_TEXT, "金毛犬", want);
	FOUND(s, STORE_TEXT, "相册", want);
	FOUND(s, STORE_TEXT, "text:相册", "");
	snprintf(want, sizeof want, "%lld", (long long)b);
	FOUND(s, STORE_TEXT, "retriever", want);
	FOUND(s, STORE_TEXT, "golden NOT 海滩", want);
	store_err err;
	CHECK(store_text_delete(s, b, &err) == STORE_OK);
	FOUND(s, STORE_TEXT, "retriever", "");
	store_close(s);
}

/* A database of schema 3 (before the keyword index) with items: opening it
 * builds the index from them. */
static void t_migration_builds_index(void)
{
	char p[512];
	sqlite3 *db;
	snprintf(p, sizeof p, "%s/v3.db", dir);
	unlink(p);
	REQUIRE(sqlite3_open(p, &db) == SQLITE_OK);
	for (int v = 0; v < 3; v++)
		CHECK(sqlite3_exec(db, store_migrations[v].sql, NULL, NULL, NULL) == SQLITE_OK);
	char sql[2048];
	snprintf(sql, sizeof sql,
	         "PRAGMA user_version = 3;"
	         "INSERT INTO images (id, sha256, filename, mime, bytes, meta, status, created_ms, "
	         "updated_ms) VALUES (7, '%064x', 'trips/京都/temple.jpg', 'image/jpeg', 1, "
	         "'{\"tags\":[\"秋天\",\"maple\"]}', 1, 1, 1);"
	         "INSERT INTO texts (id, text, meta, status, created_ms) VALUES "
	         "(9, '红叶和寺庙', '{}', 1, 1);",
	         7);
	CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);

	store *s;
	store_err err;
	REQUIRE(store_open(p, 0, &s, &err) == STORE_OK);
	FOUND(s, STORE_IMAGE, "京都", "7");
	FOUND(s, STORE_IMAGE, "temple", "7");
	FOUND(s, STORE_IMAGE, "秋天 maple", "7"); /* values inside an array */
	FOUND(s, STORE_TEXT, "寺庙", "9");
	store_close(s);
}

static void t_bad_arguments(void)
{
	char p[512];
	store *s = open_fresh("bad.db", p, sizeof p);
	REQUIRE(s);
	int64_t ids[1];
	double sc[1];
	int n;
	CHECK(store_keyword_search(s, STORE_IMAGE, NULL, 1, ids, sc, &n, NULL) == STORE_EINVAL);
	CHECK(store_keyword_search(s, STORE_IMAGE, "x", 0, ids, sc, &n, NULL) == STORE_EINVAL);
	/* Invalid UTF-8 is stored and searched as bytes, never a crash. */
	CHECK(add_image(s, 1, "\xff\xfe\xe6\xb5.jpg", "{}", 1) > 0);
	CHECK(store_keyword_search(s, STORE_IMAGE, "\xe6\xb5", 1, ids, sc, &n, NULL) == STORE_OK);
	store_close(s);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/test_store_fts.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	TAP_RUN(t_query_rewrite);
	TAP_RUN(t_search_images);
	TAP_RUN(t_search_texts);
	TAP_RUN(t_migration_builds_index);
	TAP_RUN(t_bad_arguments);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", dir);
	return tap_done();
}
