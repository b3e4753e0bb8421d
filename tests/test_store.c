/*
 * test_store: the SQLite store against a real SQLite database in a temporary
 * directory: migrations (also from an older schema), refusal of newer and
 * damaged databases, images, texts, embeddings and the change log, the job
 * queue across a crash, open and sealed jobs and their errors, the batch
 * calls (reads, queued texts, embeddings, completions; all or nothing across
 * a kill -9), watched files and which images the watcher may delete (also
 * across the migration that records it), the key-value table, and readers
 * alongside the writer.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store.h"
#include "store_int.h" /* store_migrations: to build a database of an older schema */
#include "tap.h"

static char dir[256];

static void path_of(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", dir, name);
}

/* A distinct, valid content hash for i. */
static void sha_of(char out[65], int i)
{
	snprintf(out, 65, "%064x", i);
}

static store *open_fresh(const char *name)
{
	char p[512];
	store_err err;
	store *s = NULL;
	path_of(p, sizeof p, name);
	unlink(p);
	if (store_open(p, 0, &s, &err) != STORE_OK)
		printf("# store_open %s: %s\n", p, err.msg);
	return s;
}

static int64_t add_image(store *s, int i)
{
	store_image img = {.mime = "image/png", .bytes = 100 + i, .filename = "x.png"};
	int64_t id = -1;
	sha_of(img.sha256, i);
	if (store_image_insert(s, &img, &id, NULL) != STORE_OK)
		return -1;
	return id;
}

static int user_version(const char *p)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int v = -1;
	if (sqlite3_open(p, &db) != SQLITE_OK)
		return -1;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return v;
}

static void t_migrations_fresh_and_existing(void)
{
	char p[512];
	store_err err;
	store *s = open_fresh("mig.db");
	REQUIRE(s);
	path_of(p, sizeof p, "mig.db");
	CHECK(store_schema_version() >= 1);
	CHECK(user_version(p) == store_schema_version());
	int64_t id = add_image(s, 1);
	CHECK(id > 0);
	store_close(s);

	/* Reopening applies nothing twice and keeps the data. */
	REQUIRE(store_open(p, 0, &s, &err) == STORE_OK);
	CHECK(user_version(p) == store_schema_version());
	int64_t total = -1, ready = -1;
	CHECK(store_image_count(s, &total, &ready, NULL) == STORE_OK);
	CHECK(total == 1 && ready == 0);
	store_close(s);
}

static void t_newer_version_refused(void)
{
	char p[512];
	store_err err;
	store *s = open_fresh("newer.db");
	REQUIRE(s);
	add_image(s, 1);
	store_close(s);
	path_of(p, sizeof p, "newer.db");
	sqlite3 *db;
	REQUIRE(sqlite3_open(p, &db) == SQLITE_OK);
	char sql[64];
	snprintf(sql, sizeof sql, "PRAGMA user_version = %d", store_schema_version() + 1);
	CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);

	s = (store *)1;
	CHECK(store_open(p, 0, &s, &err) == STORE_ETOONEW);
	CHECK(s == NULL);
	CHECK(err.code == STORE_ETOONEW);
	CHECKF(strstr(err.msg, "newer") != NULL, "message: %s", err.msg);
	/* Refusal changed nothing. */
	CHECK(user_version(p) == store_schema_version() + 1);
}

static void write_file(const char *p, const void *data, size_t n)
{
	FILE *f = fopen(p, "wb");
	if (f) {
		fwrite(data, 1, n, f);
		fclose(f);
	}
}

static void t_garbage_and_truncated_refused(void)
{
	char p[512];
	store_err err;
	store *s;

	/* A text file. */
	path_of(p, sizeof p, "text.db");
	const char *text = "this is not a database, just some words in a file that is long enough\n";
	char big[4096];
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = text[i % strlen(text)];
	write_file(p, big, sizeof big);
	CHECK(store_open(p, 0, &s, &err) == STORE_ECORRUPT);
	CHECKF(strstr(err.msg, "not a SQLite database") != NULL, "message: %s", err.msg);
	CHECK(s == NULL);

	/* Random bytes. */
	path_of(p, sizeof p, "random.db");
	srand(7);
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (char)rand();
	write_file(p, big, sizeof big);
	CHECK(store_open(p, 0, &s, &err) == STORE_ECORRUPT);

	/* A real database cut short: the header still claims the full size, so
	 * the whole-file check finds it. */
	s = open_fresh("trunc.db");
	REQUIRE(s);
	for (int i = 0; i < 2000; i++)
		add_image(s, i);
	store_close(s);
	path_of(p, sizeof p, "trunc.db");
	struct stat st;
	REQUIRE(stat(p, &st) == 0);
	REQUIRE(truncate(p, st.st_size / 2) == 0);
	int rc = store_open(p, STORE_OPEN_CHECK, &s, &err);
	CHECKF(rc == STORE_ECORRUPT, "rc %d: %s", rc, err.msg);
	CHECK(s == NULL);
	store_close(s);
}

static void t_images_crud(void)
{
	store *s = open_fresh("img.db");
	store_err err;
	REQUIRE(s);
	store_image in = {.filename = "cat.jpg", .mime = "image/jpeg", .width = 0, .bytes = 1234,
	                  .meta = "{\"album\":\"pets\"}"};
	sha_of(in.sha256, 42);
	int64_t id = 0;
	REQUIRE(store_image_insert(s, &in, &id, &err) == STORE_OK);
	CHECK(id > 0);

	store_image out;
	REQUIRE(store_image_get(s, id, &out, &err) == STORE_OK);
	CHECK(out.id == id);
	CHECK(strcmp(out.sha256, in.sha256) == 0);
	CHECK(strcmp(out.filename, "cat.jpg") == 0);
	CHECK(strcmp(out.mime, "image/jpeg") == 0);
	CHECK(out.bytes == 1234);
	CHECK(strcmp(out.meta, "{\"album\":\"pets\"}") == 0);
	CHECK(out.status == STORE_PENDING);
	CHECK(out.error == NULL);
	CHECK(out.created_ms > 0 && out.updated_ms >= out.created_ms);
	store_image_clear(&out);

	CHECK(store_image_set_size(s, id, 640, 480, &err) == STORE_OK);
	CHECK(store_image_set_meta(s, id, "{\"album\":\"cats\",\"n\":2}", &err) == STORE_OK);
	REQUIRE(store_image_get(s, id, &out, &err) == STORE_OK);
	CHECK(out.width == 640 && out.height == 480);
	CHECK(strcmp(out.meta, "{\"album\":\"cats\",\"n\":2}") == 0);
	store_image_clear(&out);

	/* Metadata must be a JSON object; a refusal leaves the old value. */
	CHECK(store_image_set_meta(s, id, "[1,2]", &err) == STORE_EINVAL);
	CHECKF(strstr(err.msg, "JSON object") != NULL, "message: %s", err.msg);
	CHECK(store_image_set_meta(s, id, "{not json", &err) == STORE_EINVAL);
	CHECK(store_image_set_meta(s, id, NULL, &err) == STORE_EINVAL);
	REQUIRE(store_image_get(s, id, &out, &err) == STORE_OK);
	CHECK(strcmp(out.meta, "{\"album\":\"cats\",\"n\":2}") == 0);
	store_image_clear(&out);

	/* Bad inserts. */
	store_image bad = in;
	sha_of(bad.sha256, 43);
	bad.meta = "\"a string\"";
	CHECK(store_image_insert(s, &bad, NULL, &err) == STORE_EINVAL);
	bad.meta = NULL;
	bad.mime = NULL;
	CHECK(store_image_insert(s, &bad, NULL, &err) == STORE_EINVAL);
	bad.mime = "image/png";
	strcpy(bad.sha256, "XYZ");
	CHECK(store_image_insert(s, &bad, NULL, &err) == STORE_EINVAL);
	int64_t total;
	CHECK(store_image_count(s, &total, NULL, NULL) == STORE_OK && total == 1);

	CHECK(store_image_set_failed(s, id, "cannot decode", &err) == STORE_OK);
	REQUIRE(store_image_get(s, id, &out, &err) == STORE_OK);
	CHECK(out.status == STORE_FAILED && out.error && strcmp(out.error, "cannot decode") == 0);
	store_image_clear(&out);

	CHECK(store_image_get(s, id + 100, &out, &err) == STORE_ENOTFOUND);
	CHECK(store_image_set_meta(s, id + 100, "{}", &err) == STORE_ENOTFOUND);
	CHECK(store_image_delete(s, id, &err) == STORE_OK);
	CHECK(store_image_get(s, id, &out, &err) == STORE_ENOTFOUND);
	CHECK(store_image_delete(s, id, &err) == STORE_ENOTFOUND);

	/* Ids are never handed out twice, even after the highest is deleted. */
	int64_t id2 = add_image(s, 44);
	CHECK(id2 > id);
	store_close(s);
}

static void t_dedupe_by_sha(void)
{
	store *s = open_fresh("dedupe.db");
	store_err err;
	REQUIRE(s);
	int64_t a = add_image(s, 7);
	REQUIRE(a > 0);
	store_image dup = {.mime = "image/png", .bytes = 1};
	sha_of(dup.sha256, 7);
	int64_t b = 0;
	CHECK(store_image_insert(s, &dup, &b, &err) == STORE_EEXISTS);
	CHECK(b == a);
	CHECKF(strstr(err.msg, "same content") != NULL, "message: %s", err.msg);

	store_image found;
	CHECK(store_image_find_sha(s, dup.sha256, &found, &err) == STORE_OK && found.id == a);
	store_image_clear(&found);
	char other[65];
	sha_of(other, 8);
	CHECK(store_image_find_sha(s, other, &found, &err) == STORE_ENOTFOUND);
	CHECK(store_image_find_sha(s, "nothex", &found, &err) == STORE_EINVAL);

	/* The queued insert dedupes too, and queues nothing for a duplicate. */
	int64_t job;
	REQUIRE(store_job_create(s, "upload", &job, &err) == STORE_OK);
	CHECK(store_image_insert_queued(s, &dup, job, &b, &err) == STORE_EEXISTS);
	CHECK(b == a);
	int64_t depth = -1;
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK && depth == 0);
	int64_t total;
	CHECK(store_image_count(s, &total, NULL, NULL) == STORE_OK && total == 1);
	store_close(s);
}

/* An imported image (store_image_insert_embedded): ready with its
 * embedding in one transaction, never queued, counted done in its job;
 * the same content again is refused whole; another model's vector is
 * refused once the data directory names its model. */
static void t_insert_embedded(void)
{
	store *s = open_fresh("embedded.db");
	store_err err;
	REQUIRE(s);
	int64_t job, a = 0, b = 0;
	REQUIRE(store_job_create_open(s, "import", &job, &err) == STORE_OK);
	float v[4] = {0.5f, 0.5f, 0.5f, 0.5f}, got[4];
	store_image img = {.filename = "/photos/a.jpg", .mime = "image/jpeg", .width = 40,
	                   .height = 30, .bytes = 10, .pinned = 1};
	sha_of(img.sha256, 21);
	CHECK(store_image_insert_embedded(s, &img, job, "m1", v, 4, &a, &err) == STORE_OK);
	store_image out;
	REQUIRE(store_image_get(s, a, &out, &err) == STORE_OK);
	CHECK(out.status == STORE_READY && out.width == 40 && out.height == 30);
	store_image_clear(&out);
	CHECK(store_embedding_get(s, STORE_IMAGE, a, "m1", got, 4, &err) == STORE_OK &&
	      memcmp(got, v, sizeof v) == 0);
	int64_t depth = -1;
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK && depth == 0);
	uint64_t seq = 0;
	CHECK(store_last_seq(s, &seq, NULL) == STORE_OK && seq == 1);

	CHECK(store_image_insert_embedded(s, &img, job, "m1", v, 4, &b, &err) == STORE_EEXISTS);
	CHECK(b == a);
	CHECK(store_last_seq(s, &seq, NULL) == STORE_OK && seq == 1);

	REQUIRE(store_kv_set(s, "model.id", "m1", &err) == STORE_OK);
	store_image other = img;
	sha_of(other.sha256, 22);
	CHECK(store_image_insert_embedded(s, &other, job, "m2", v, 4, &b, &err) == STORE_ESTALE);
	CHECK(store_image_find_sha(s, other.sha256, &out, &err) == STORE_ENOTFOUND);
	CHECK(store_image_insert_embedded(s, &other, job + 99, "m1", v, 4, &b, &err) ==
	      STORE_ENOTFOUND);
	CHECK(store_image_find_sha(s, other.sha256, &out, &err) == STORE_ENOTFOUND);
	CHECK(store_image_insert_embedded(s, &other, job, "m1", NULL, 4, &b, &err) == STORE_EINVAL);

	store_job j;
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.total == 1 && j.done == 1 && j.failed == 0 && j.state != STORE_JOB_DONE);
	store_job_clear(&j);
	REQUIRE(store_job_seal(s, job, &err) == STORE_OK);
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.state == STORE_JOB_DONE);
	store_job_clear(&j);
	int64_t total, ready;
	CHECK(store_image_count(s, &total, &ready, NULL) == STORE_OK && total == 1 && ready == 1);
	store_close(s);
}

/* store_images_insert_many: one transaction; existing content is found,
 * not refused; a bad item writes nothing. */
static void t_insert_many(void)
{
	store *s = open_fresh("many.db");
	store_err err;
	REQUIRE(s);
	store_image imgs[5];
	store_image_batch_item items[5];
	for (int i = 0; i < 5; i++) {
		imgs[i] = (store_image){.mime = "image/png", .bytes = 10 + i, .pinned = 1};
		sha_of(imgs[i].sha256, 40 + (i == 4 ? 1 : i)); /* the last repeats the second */
		items[i].img = &imgs[i];
	}
	REQUIRE(store_images_insert_many(s, items, 5, &err) == STORE_OK);
	CHECK(items[0].id > 0 && items[1].id > items[0].id && !items[0].existed);
	CHECK(items[4].existed && items[4].id == items[1].id);
	int64_t total;
	CHECK(store_image_count(s, &total, NULL, NULL) == STORE_OK && total == 4);
	REQUIRE(store_images_insert_many(s, items, 3, &err) == STORE_OK);
	CHECK(items[0].existed && items[1].existed && items[2].existed);

	store_image fresh = {.mime = "image/png", .bytes = 1}, bad = {.mime = "", .bytes = 1};
	sha_of(fresh.sha256, 50);
	sha_of(bad.sha256, 51);
	store_image_batch_item two[2] = {{.img = &fresh}, {.img = &bad}};
	CHECK(store_images_insert_many(s, two, 2, &err) == STORE_EINVAL);
	CHECK(two[0].id == 0);
	store_image out;
	CHECK(store_image_find_sha(s, fresh.sha256, &out, &err) == STORE_ENOTFOUND);
	CHECK(store_image_count(s, &total, NULL, NULL) == STORE_OK && total == 4);
	CHECK(store_images_insert_many(s, NULL, 0, &err) == STORE_OK);
	store_close(s);
}

static void t_texts(void)
{
	store *s = open_fresh("texts.db");
	store_err err;
	REQUIRE(s);
	int64_t a, b;
	CHECK(store_text_insert(s, "a photo of a cat", NULL, &a, &err) == STORE_OK);
	CHECK(store_text_insert(s, "un chat \xc3\xa0 la plage", "{\"lang\":\"fr\"}", &b, &err) == STORE_OK);
	CHECK(store_text_insert(s, NULL, NULL, NULL, &err) == STORE_EINVAL);
	CHECK(store_text_insert(s, "x", "[]", NULL, &err) == STORE_EINVAL);
	store_text t;
	REQUIRE(store_text_get(s, b, &t, &err) == STORE_OK);
	CHECK(strcmp(t.text, "un chat \xc3\xa0 la plage") == 0);
	CHECK(strcmp(t.meta, "{\"lang\":\"fr\"}") == 0);
	CHECK(t.status == STORE_PENDING);
	store_text_clear(&t);
	int64_t n;
	CHECK(store_text_count(s, &n, NULL) == STORE_OK && n == 2);
	CHECK(store_text_delete(s, a, &err) == STORE_OK);
	CHECK(store_text_get(s, a, &t, &err) == STORE_ENOTFOUND);
	CHECK(store_text_delete(s, a, &err) == STORE_ENOTFOUND);
	CHECK(store_text_count(s, &n, NULL) == STORE_OK && n == 1);
	store_close(s);
}

struct change_log {
	int n;
	uint64_t seq[64];
	int64_t id[64];
	int removed[64];
	float first[64];
};

static int collect(void *ctx, const store_change *c)
{
	struct change_log *log = ctx;
	if (log->n < 64) {
		log->seq[log->n] = c->seq;
		log->id[log->n] = c->item_id;
		log->removed[log->n] = c->vec == NULL;
		log->first[log->n] = c->vec ? c->vec[0] : 0;
		log->n++;
	}
	return 0;
}

static void t_embeddings_and_changes(void)
{
	store *s = open_fresh("emb.db");
	store_err err;
	REQUIRE(s);
	int64_t ids[4];
	for (int i = 0; i < 4; i++)
		REQUIRE((ids[i] = add_image(s, i)) > 0);
	int64_t text;
	REQUIRE(store_text_insert(s, "hello", NULL, &text, &err) == STORE_OK);

	float v[8], back[8];
	uint64_t seq[4], tseq, last;
	CHECK(store_last_seq(s, &last, NULL) == STORE_OK && last == 0);
	for (int i = 0; i < 4; i++) {
		for (int j = 0; j < 8; j++)
			v[j] = (float)(i * 10 + j);
		CHECK(store_embedding_put(s, STORE_IMAGE, ids[i], "m1", v, 8, &seq[i], &err) == STORE_OK);
	}
	CHECK(seq[0] < seq[1] && seq[1] < seq[2] && seq[2] < seq[3]);
	CHECK(store_embedding_put(s, STORE_TEXT, text, "m1", v, 8, &tseq, &err) == STORE_OK);
	CHECK(tseq > seq[3]);

	CHECK(store_embedding_get(s, STORE_IMAGE, ids[2], "m1", back, 8, &err) == STORE_OK);
	CHECK(back[0] == 20.0f && back[7] == 27.0f);
	CHECK(store_embedding_get(s, STORE_IMAGE, ids[2], "m1", back, 4, &err) == STORE_EINVAL);
	CHECK(store_embedding_get(s, STORE_IMAGE, ids[2], "m2", back, 8, &err) == STORE_ENOTFOUND);
	store_image img;
	REQUIRE(store_image_get(s, ids[2], &img, &err) == STORE_OK);
	CHECK(img.status == STORE_READY);
	store_image_clear(&img);

	/* An embedding for an item that does not exist is refused. */
	CHECK(store_embedding_put(s, STORE_IMAGE, 9999, "m1", v, 8, NULL, &err) == STORE_ENOTFOUND);
	CHECK(store_embedding_put(s, STORE_IMAGE, ids[0], "m1", v, 0, NULL, &err) == STORE_EINVAL);
	CHECK(store_embedding_put(s, (store_kind)7, ids[0], "m1", v, 8, NULL, &err) == STORE_EINVAL);

	/* Replace one, delete one: the log shows the newest state only. */
	v[0] = -1;
	uint64_t rseq;
	CHECK(store_embedding_put(s, STORE_IMAGE, ids[1], "m1", v, 8, &rseq, &err) == STORE_OK);
	CHECK(store_image_delete(s, ids[3], &err) == STORE_OK);
	CHECK(store_last_seq(s, &last, NULL) == STORE_OK && last == rseq + 1);

	struct change_log log = {0};
	CHECK(store_changes_after(s, STORE_IMAGE, "m1", 0, collect, &log, &err) == STORE_OK);
	/* ids[0] at seq[0], ids[2] at seq[2], ids[1] replaced at rseq, ids[3] removed. */
	REQUIRE(log.n == 4);
	CHECK(log.id[0] == ids[0] && log.seq[0] == seq[0] && !log.removed[0]);
	CHECK(log.id[1] == ids[2] && !log.removed[1]);
	CHECK(log.id[2] == ids[1] && log.seq[2] == rseq && log.first[2] == -1.0f);
	CHECK(log.id[3] == ids[3] && log.removed[3]);
	for (int i = 1; i < log.n; i++)
		CHECK(log.seq[i] > log.seq[i - 1]);

	/* Only what is newer than a point. */
	memset(&log, 0, sizeof log);
	CHECK(store_changes_after(s, STORE_IMAGE, "m1", seq[3], collect, &log, &err) == STORE_OK);
	CHECK(log.n == 2);
	/* The other collection and another model are separate. */
	memset(&log, 0, sizeof log);
	CHECK(store_changes_after(s, STORE_TEXT, "m1", 0, collect, &log, &err) == STORE_OK);
	CHECK(log.n == 1 && log.id[0] == text);
	memset(&log, 0, sizeof log);
	CHECK(store_changes_after(s, STORE_IMAGE, "m2", 0, collect, &log, &err) == STORE_OK);
	CHECK(log.n == 1 && log.removed[0]); /* removals are per item, whatever the model */
	store_close(s);
}

static void t_job_queue(void)
{
	store *s = open_fresh("jobs.db");
	store_err err;
	REQUIRE(s);
	int64_t job, ids[3];
	REQUIRE(store_job_create(s, "batch", &job, &err) == STORE_OK);
	for (int i = 0; i < 3; i++) {
		store_image img = {.mime = "image/png", .bytes = 10};
		sha_of(img.sha256, 100 + i);
		REQUIRE(store_image_insert_queued(s, &img, job, &ids[i], &err) == STORE_OK);
	}
	store_image bad = {.mime = "image/png", .bytes = 10};
	CHECK(store_image_insert_queued(s, &bad, job, NULL, &err) == STORE_EINVAL);
	sha_of(bad.sha256, 200);
	CHECK(store_image_insert_queued(s, &bad, job + 50, NULL, &err) == STORE_ENOTFOUND);
	/* The refused queued insert stored no image. */
	CHECK(store_image_find_sha(s, bad.sha256, &(store_image){0}, NULL) == STORE_ENOTFOUND);

	store_job j;
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.total == 3 && j.done == 0 && j.failed == 0 && j.state == STORE_JOB_QUEUED);
	CHECK(strcmp(j.kind, "batch") == 0);
	store_job_clear(&j);

	int64_t depth;
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK && depth == 3);
	store_work w[8];
	size_t n;
	CHECK(store_work_claim(s, STORE_TEXT, w, 8, &n, &err) == STORE_OK && n == 0);
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 2, &n, &err) == STORE_OK);
	REQUIRE(n == 2);
	CHECK(w[0].item_id == ids[0] && w[1].item_id == ids[1]);
	CHECK(w[0].job_id == job && w[0].attempts == 1 && w[0].kind == STORE_IMAGE);
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.state == STORE_JOB_RUNNING);
	store_job_clear(&j);

	float v[4] = {1, 0, 0, 0};
	CHECK(store_embedding_put(s, STORE_IMAGE, w[0].item_id, "m", v, 4, NULL, &err) == STORE_OK);
	CHECK(store_work_complete(s, w[0].work_id, &err) == STORE_OK);
	CHECK(store_work_complete(s, w[0].work_id, &err) == STORE_ENOTFOUND); /* not twice */
	CHECK(store_work_fail(s, w[1].work_id, "not an image", &err) == STORE_OK);
	store_image img;
	REQUIRE(store_image_get(s, ids[1], &img, &err) == STORE_OK);
	CHECK(img.status == STORE_FAILED && img.error && strcmp(img.error, "not an image") == 0);
	store_image_clear(&img);

	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.done == 1 && j.failed == 1 && j.state == STORE_JOB_RUNNING);
	store_job_clear(&j);
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK && depth == 1);

	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 8, &n, &err) == STORE_OK && n == 1);
	CHECK(w[0].item_id == ids[2]);
	CHECK(store_work_complete(s, w[0].work_id, &err) == STORE_OK);
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.done == 2 && j.failed == 1 && j.state == STORE_JOB_DONE);
	store_job_clear(&j);
	CHECK(store_work_claim(s, STORE_IMAGE, w, 8, &n, &err) == STORE_OK && n == 0);
	CHECK(store_job_get(s, job + 10, &j, &err) == STORE_ENOTFOUND);

	/* Newest first. */
	int64_t job2;
	REQUIRE(store_job_create(s, "upload", &job2, &err) == STORE_OK);
	store_job *list;
	CHECK(store_job_list(s, 10, &list, &n, &err) == STORE_OK);
	CHECK(n == 2 && list[0].id == job2 && list[1].id == job);
	store_jobs_free(list, n);
	CHECK(store_job_create(s, "", &job2, &err) == STORE_EINVAL);
	store_close(s);
}

static void t_delete_while_queued(void)
{
	store *s = open_fresh("delq.db");
	store_err err;
	REQUIRE(s);
	int64_t job, a, b;
	REQUIRE(store_job_create(s, "batch", &job, &err) == STORE_OK);
	store_image img = {.mime = "image/png", .bytes = 10};
	sha_of(img.sha256, 1);
	REQUIRE(store_image_insert_queued(s, &img, job, &a, &err) == STORE_OK);
	sha_of(img.sha256, 2);
	REQUIRE(store_image_insert_queued(s, &img, job, &b, &err) == STORE_OK);
	CHECK(store_image_delete(s, a, &err) == STORE_OK);
	store_work w[4];
	size_t n;
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 4, &n, &err) == STORE_OK);
	CHECK(n == 1 && w[0].item_id == b);
	CHECK(store_work_complete(s, w[0].work_id, &err) == STORE_OK);
	store_job j;
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.total == 2 && j.done == 1 && j.failed == 1 && j.state == STORE_JOB_DONE);
	store_job_clear(&j);
	store_close(s);
}

/* A child process queues work and claims it, then dies by SIGKILL without
 * closing anything; the parent reopens the database. */
static void t_resume_after_crash(void)
{
	char p[512];
	store_err err;
	path_of(p, sizeof p, "crash.db");
	unlink(p);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		store *s;
		int64_t job;
		store_work w[4];
		size_t n;
		if (store_open(p, 0, &s, NULL) != STORE_OK || store_job_create(s, "batch", &job, NULL))
			_exit(1);
		for (int i = 0; i < 3; i++) {
			store_image img = {.mime = "image/png", .bytes = 10};
			sha_of(img.sha256, i);
			if (store_image_insert_queued(s, &img, job, NULL, NULL) != STORE_OK)
				_exit(1);
		}
		if (store_work_claim(s, STORE_IMAGE, w, 2, &n, NULL) != STORE_OK || n != 2)
			_exit(1);
		kill(getpid(), SIGKILL);
		_exit(2);
	}
	int status;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	REQUIRE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	store *s;
	REQUIRE(store_open(p, 0, &s, &err) == STORE_OK);
	int64_t total, depth, requeued = -1;
	CHECK(store_image_count(s, &total, NULL, NULL) == STORE_OK && total == 3);
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK && depth == 3);
	CHECK(store_work_requeue_claimed(s, &requeued, &err) == STORE_OK);
	CHECK(requeued == 2);
	store_work w[4];
	size_t n;
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 4, &n, &err) == STORE_OK);
	CHECK(n == 3);
	CHECK(w[0].attempts == 2 && w[1].attempts == 2 && w[2].attempts == 1);

	/* An item that keeps killing the process is given up after 3 claims. */
	CHECK(store_work_requeue_claimed(s, NULL, &err) == STORE_OK);
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 4, &n, &err) == STORE_OK && n == 3);
	CHECK(w[0].attempts == 3);
	CHECK(store_work_requeue_claimed(s, &requeued, &err) == STORE_OK);
	CHECK(requeued == 1);
	store_image img;
	REQUIRE(store_image_get(s, w[0].item_id, &img, &err) == STORE_OK);
	CHECK(img.status == STORE_FAILED && img.error && strstr(img.error, "stopped"));
	store_image_clear(&img);
	store_job j;
	REQUIRE(store_job_get(s, w[0].job_id, &j, &err) == STORE_OK);
	CHECK(j.failed == 2 && j.done == 0);
	store_job_clear(&j);
	store_close(s);
}

static int job_state(store *s, int64_t job, store_job *j)
{
	if (store_job_get(s, job, j, NULL) != STORE_OK)
		return -1;
	int st = j->state;
	store_job_clear(j);
	return st;
}

static void t_texts_insert_queued(void)
{
	store *s = open_fresh("textsq.db");
	store_err err;
	store_job j;
	REQUIRE(s);
	int64_t job, one, ids[3] = {0};
	REQUIRE(store_job_create(s, "texts", &job, &err) == STORE_OK);
	CHECK(job_state(s, job, &j) == STORE_JOB_DONE); /* sealed and empty */
	CHECK(store_text_insert_queued(s, "a dog", "{\"k\":1}", job, &one, &err) == STORE_OK);
	const char *texts[3] = {"a cat", "a bird", "a fish"};
	const char *metas[3] = {NULL, "{\"n\":2}", NULL};
	REQUIRE(store_texts_insert_queued(s, 3, texts, metas, job, ids, &err) == STORE_OK);
	CHECK(ids[0] > one && ids[1] == ids[0] + 1 && ids[2] == ids[1] + 1);
	store_text t;
	REQUIRE(store_text_get(s, ids[1], &t, &err) == STORE_OK);
	CHECK(strcmp(t.text, "a bird") == 0 && strcmp(t.meta, "{\"n\":2}") == 0);
	store_text_clear(&t);
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.total == 4 && j.state == STORE_JOB_QUEUED);
	store_job_clear(&j);
	int64_t depth, n;
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK && depth == 4);

	/* All or nothing: a bad metadata in the middle stores none of them. */
	const char *bad_metas[3] = {NULL, NULL, "[1]"};
	CHECK(store_texts_insert_queued(s, 3, texts, bad_metas, job, NULL, &err) == STORE_EINVAL);
	CHECKF(strstr(err.msg, "text 2") && strstr(err.msg, "JSON object"), "message: %s", err.msg);
	const char *missing[2] = {"x", NULL};
	CHECK(store_texts_insert_queued(s, 2, missing, NULL, job, NULL, &err) == STORE_EINVAL);
	CHECK(store_texts_insert_queued(s, 3, texts, NULL, job + 99, NULL, &err) == STORE_ENOTFOUND);
	CHECK(store_text_count(s, &n, NULL) == STORE_OK && n == 4);
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK && depth == 4);
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.total == 4);
	store_job_clear(&j);

	/* The queued texts are claimed as texts. */
	store_work w[8];
	size_t got;
	REQUIRE(store_work_claim(s, STORE_TEXT, w, 8, &got, &err) == STORE_OK);
	CHECK(got == 4 && w[0].item_id == one && w[3].item_id == ids[2]);
	store_close(s);
}

static void t_job_seal(void)
{
	store *s = open_fresh("seal.db");
	store_err err;
	store_job j;
	REQUIRE(s);
	/* An open job is not done while its items so far are. */
	int64_t job, id;
	REQUIRE(store_job_create_open(s, "batch", &job, &err) == STORE_OK);
	CHECK(job_state(s, job, &j) == STORE_JOB_QUEUED);
	store_image img = {.mime = "image/png", .bytes = 10, .filename = "a.png"};
	sha_of(img.sha256, 1);
	REQUIRE(store_image_insert_queued(s, &img, job, &id, &err) == STORE_OK);
	store_work w[4];
	size_t n;
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 4, &n, &err) == STORE_OK && n == 1);
	REQUIRE(store_work_complete(s, w[0].work_id, &err) == STORE_OK);
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.total == 1 && j.done == 1 && j.state == STORE_JOB_RUNNING && !j.sealed);
	store_job_clear(&j);
	/* More items may come; then the seal makes it done. */
	sha_of(img.sha256, 2);
	REQUIRE(store_image_insert_queued(s, &img, job, &id, &err) == STORE_OK);
	CHECK(store_job_seal(s, job, &err) == STORE_OK);
	CHECK(job_state(s, job, &j) == STORE_JOB_RUNNING);
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 4, &n, &err) == STORE_OK && n == 1);
	REQUIRE(store_work_complete(s, w[0].work_id, &err) == STORE_OK);
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.total == 2 && j.done == 2 && j.state == STORE_JOB_DONE && j.sealed);
	store_job_clear(&j);
	CHECK(store_job_seal(s, job, &err) == STORE_OK); /* twice: harmless */
	CHECK(job_state(s, job, &j) == STORE_JOB_DONE);

	/* An empty job is done once sealed (every file was a duplicate). */
	int64_t empty;
	REQUIRE(store_job_create_open(s, "batch", &empty, &err) == STORE_OK);
	CHECK(store_image_insert_queued(s, &img, empty, &id, &err) == STORE_EEXISTS);
	CHECK(job_state(s, empty, &j) == STORE_JOB_QUEUED);
	CHECK(store_job_seal(s, empty, &err) == STORE_OK);
	REQUIRE(store_job_get(s, empty, &j, &err) == STORE_OK);
	CHECK(j.total == 0 && j.state == STORE_JOB_DONE);
	store_job_clear(&j);
	CHECK(store_job_seal(s, empty + 100, &err) == STORE_ENOTFOUND);

	/* A sealed job that gets an item is no longer done. */
	int64_t sealed;
	REQUIRE(store_job_create(s, "upload", &sealed, &err) == STORE_OK);
	CHECK(job_state(s, sealed, &j) == STORE_JOB_DONE);
	sha_of(img.sha256, 3);
	REQUIRE(store_image_insert_queued(s, &img, sealed, &id, &err) == STORE_OK);
	CHECK(job_state(s, sealed, &j) == STORE_JOB_QUEUED);

	/* Refused files: failed items that count; an open job stays open. */
	int64_t bulk;
	REQUIRE(store_job_create_open(s, "batch", &bulk, &err) == STORE_OK);
	CHECK(store_job_add_failed(s, bulk, "notes.txt", "not an image", &err) == STORE_OK);
	REQUIRE(store_job_get(s, bulk, &j, &err) == STORE_OK);
	CHECK(j.total == 1 && j.failed == 1 && j.state == STORE_JOB_RUNNING);
	store_job_clear(&j);
	CHECK(store_job_seal(s, bulk, &err) == STORE_OK);
	CHECK(job_state(s, bulk, &j) == STORE_JOB_DONE);
	CHECK(store_job_add_failed(s, bulk + 100, "x", "y", &err) == STORE_ENOTFOUND);
	/* ... and nothing to claim. */
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 4, &n, &err) == STORE_OK);
	CHECK(n == 1 && w[0].job_id == sealed);

	/* An open job whose filler died is sealed at start-up recovery. */
	int64_t orphan;
	REQUIRE(store_job_create_open(s, "batch", &orphan, &err) == STORE_OK);
	CHECK(store_work_requeue_claimed(s, NULL, &err) == STORE_OK);
	REQUIRE(store_job_get(s, orphan, &j, &err) == STORE_OK);
	CHECK(j.sealed && j.state == STORE_JOB_DONE);
	store_job_clear(&j);
	CHECK(job_state(s, sealed, &j) == STORE_JOB_RUNNING); /* its item requeued: not done */
	store_close(s);
}

static void t_job_errors(void)
{
	store *s = open_fresh("joberr.db");
	store_err err;
	REQUIRE(s);
	int64_t job, ids[3], tid;
	REQUIRE(store_job_create_open(s, "batch", &job, &err) == STORE_OK);
	for (int i = 0; i < 3; i++) {
		char name[32];
		snprintf(name, sizeof name, "f%d.png", i);
		store_image img = {.mime = "image/png", .bytes = 10, .filename = name};
		sha_of(img.sha256, 10 + i);
		REQUIRE(store_image_insert_queued(s, &img, job, &ids[i], &err) == STORE_OK);
	}
	CHECK(store_job_add_failed(s, job, "notes.txt", "not a supported image", &err) == STORE_OK);
	REQUIRE(store_text_insert_queued(s, "a caption that fails", NULL, job, &tid, &err) == STORE_OK);
	CHECK(store_job_seal(s, job, &err) == STORE_OK);

	store_job_error e[8];
	size_t n = 99;
	CHECK(store_job_errors(s, job, 8, e, &n, &err) == STORE_OK && n == 1);
	CHECK(e[0].item_id == 0 && strcmp(e[0].name, "notes.txt") == 0 &&
	      strcmp(e[0].error, "not a supported image") == 0);
	store_job_errors_clear(e, n);

	store_work w[4];
	size_t got;
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 4, &got, &err) == STORE_OK && got == 3);
	CHECK(store_work_fail(s, w[0].work_id, "damaged or truncated image", &err) == STORE_OK);
	CHECK(store_work_complete(s, w[1].work_id, &err) == STORE_OK);
	/* The failed image is deleted: its name and reason stay in the job. */
	CHECK(store_image_delete(s, ids[0], &err) == STORE_OK);
	/* An image deleted before it was indexed fails its item. */
	CHECK(store_image_delete(s, ids[2], &err) == STORE_OK);
	REQUIRE(store_work_claim(s, STORE_TEXT, w, 4, &got, &err) == STORE_OK && got == 1);
	CHECK(store_work_fail(s, w[0].work_id, "too long", &err) == STORE_OK);

	REQUIRE(store_job_errors(s, job, 8, e, &n, &err) == STORE_OK);
	REQUIRE(n == 4);
	CHECK(e[0].item_id == ids[0] && e[0].kind == STORE_IMAGE && strcmp(e[0].name, "f0.png") == 0 &&
	      strcmp(e[0].error, "damaged or truncated image") == 0);
	CHECK(e[1].item_id == ids[2] && strcmp(e[1].name, "f2.png") == 0 &&
	      strstr(e[1].error, "deleted") != NULL);
	CHECK(e[2].item_id == 0 && strcmp(e[2].name, "notes.txt") == 0);
	CHECK(e[3].item_id == tid && e[3].kind == STORE_TEXT &&
	      strcmp(e[3].name, "a caption that fails") == 0 && strcmp(e[3].error, "too long") == 0);
	store_job_errors_clear(e, n);
	CHECK(store_job_errors(s, job, 2, e, &n, &err) == STORE_OK && n == 2);
	store_job_errors_clear(e, n);
	CHECK(store_job_errors(s, job + 100, 8, e, &n, &err) == STORE_OK && n == 0);
	store_job j;
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.total == 5 && j.done == 1 && j.failed == 4 && j.state == STORE_JOB_DONE);
	store_job_clear(&j);
	store_close(s);
}

static void t_get_many(void)
{
	store *s = open_fresh("many.db");
	store_err err;
	REQUIRE(s);
	int64_t ids[5];
	for (int i = 0; i < 5; i++)
		REQUIRE((ids[i] = add_image(s, i)) > 0);
	CHECK(store_image_delete(s, ids[3], &err) == STORE_OK);
	/* Any order, missing ids, an id twice. */
	int64_t want[7] = {ids[4], 12345, ids[0], ids[3], ids[4], -1, ids[1]};
	store_image out[7];
	REQUIRE(store_images_get_many(s, want, 7, out, &err) == STORE_OK);
	CHECK(out[0].id == ids[4] && out[1].id == 0 && out[2].id == ids[0] && out[3].id == 0 &&
	      out[4].id == ids[4] && out[5].id == 0 && out[6].id == ids[1]);
	store_image one;
	REQUIRE(store_image_get(s, ids[4], &one, &err) == STORE_OK);
	CHECK(strcmp(out[0].sha256, one.sha256) == 0 && strcmp(out[0].filename, one.filename) == 0 &&
	      strcmp(out[0].mime, one.mime) == 0 && out[0].bytes == one.bytes &&
	      strcmp(out[0].meta, one.meta) == 0 && out[0].created_ms == one.created_ms);
	store_image_clear(&one);
	for (int i = 0; i < 7; i++)
		store_image_clear(&out[i]);
	CHECK(store_images_get_many(s, want, 0, out, &err) == STORE_OK);

	/* Many at once (a deep page of search results). */
	enum { N = 3000 };
	int64_t *big = malloc(N * sizeof *big);
	store_image *bout = malloc(N * sizeof *bout);
	REQUIRE(big && bout);
	for (int i = 0; i < N; i++)
		big[i] = ids[i % 3];
	CHECK(store_images_get_many(s, big, N, bout, &err) == STORE_OK);
	int good = 1;
	for (int i = 0; i < N; i++) {
		good &= bout[i].id == ids[i % 3];
		store_image_clear(&bout[i]);
	}
	CHECK(good);
	free(big);
	free(bout);

	int64_t t1, t2;
	REQUIRE(store_text_insert(s, "first", "{\"a\":1}", &t1, &err) == STORE_OK);
	REQUIRE(store_text_insert(s, "second", NULL, &t2, &err) == STORE_OK);
	int64_t tw[3] = {t2, t1 + 1000, t1};
	store_text tout[3];
	REQUIRE(store_texts_get_many(s, tw, 3, tout, &err) == STORE_OK);
	CHECK(tout[0].id == t2 && strcmp(tout[0].text, "second") == 0 && tout[1].id == 0 &&
	      tout[2].id == t1 && strcmp(tout[2].meta, "{\"a\":1}") == 0);
	for (int i = 0; i < 3; i++)
		store_text_clear(&tout[i]);
	store_close(s);
}

static void t_put_many(void)
{
	store *s = open_fresh("putmany.db");
	store_err err;
	REQUIRE(s);
	int64_t job, ids[4];
	REQUIRE(store_job_create(s, "batch", &job, &err) == STORE_OK);
	for (int i = 0; i < 4; i++) {
		store_image img = {.mime = "image/png", .bytes = 10, .width = 7, .height = 5};
		sha_of(img.sha256, i);
		REQUIRE(store_image_insert_queued(s, &img, job, &ids[i], &err) == STORE_OK);
	}
	store_work w[4];
	size_t n;
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 4, &n, &err) == STORE_OK && n == 4);
	CHECK(store_image_delete(s, ids[2], &err) == STORE_OK); /* while "encoding" */
	uint64_t seq0;
	REQUIRE(store_last_seq(s, &seq0, NULL) == STORE_OK);

	float v[4][3];
	store_embedding_item it[4];
	for (int i = 0; i < 4; i++) {
		for (int k = 0; k < 3; k++)
			v[i][k] = (float)(i * 10 + k);
		it[i] = (store_embedding_item){.item_id = w[i].item_id, .work_id = w[i].work_id,
		                               .vec = v[i], .stored = -1};
	}
	it[1].width = 640;
	it[1].height = 480;
	CHECK(store_embeddings_put_many(s, STORE_IMAGE, "m", 3, it, 4, &err) == STORE_OK);
	CHECK(it[0].stored == 1 && it[1].stored == 1 && it[2].stored == 0 && it[3].stored == 1);

	/* Each its own sequence number, in order; the index follows them. */
	struct change_log log = {0};
	CHECK(store_changes_after(s, STORE_IMAGE, "m", seq0, collect, &log, &err) == STORE_OK);
	REQUIRE(log.n == 3);
	CHECK(log.id[0] == ids[0] && log.id[1] == ids[1] && log.id[2] == ids[3]);
	CHECK(log.seq[1] == log.seq[0] + 1 && log.seq[2] == log.seq[1] + 1);
	CHECK(log.first[2] == 30.0f);
	store_image img;
	REQUIRE(store_image_get(s, ids[1], &img, &err) == STORE_OK);
	CHECK(img.status == STORE_READY && img.width == 640 && img.height == 480);
	store_image_clear(&img);
	REQUIRE(store_image_get(s, ids[0], &img, &err) == STORE_OK);
	CHECK(img.status == STORE_READY && img.width == 7 && img.height == 5);
	store_image_clear(&img);
	/* The work was completed with it. */
	store_job j;
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.done == 3 && j.failed == 1 && j.state == STORE_JOB_DONE);
	store_job_clear(&j);
	int64_t depth;
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK && depth == 0);

	/* Refused arguments write nothing. */
	uint64_t seq1, seq2;
	REQUIRE(store_last_seq(s, &seq1, NULL) == STORE_OK);
	it[0].work_id = 0;
	it[3].vec = NULL;
	CHECK(store_embeddings_put_many(s, STORE_IMAGE, "m", 3, it, 4, &err) == STORE_EINVAL);
	CHECK(store_embeddings_put_many(s, STORE_IMAGE, NULL, 3, it, 1, &err) == STORE_EINVAL);
	CHECK(store_embeddings_put_many(s, (store_kind)5, "m", 3, it, 1, &err) == STORE_EINVAL);
	CHECK(store_last_seq(s, &seq2, NULL) == STORE_OK && seq2 == seq1);
	CHECK(store_embeddings_put_many(s, STORE_IMAGE, "m", 3, it, 0, &err) == STORE_OK);

	/* Texts too, without work. */
	int64_t t;
	REQUIRE(store_text_insert(s, "hello", NULL, &t, &err) == STORE_OK);
	store_embedding_item ti = {.item_id = t, .vec = v[0]};
	CHECK(store_embeddings_put_many(s, STORE_TEXT, "m", 3, &ti, 1, &err) == STORE_OK && ti.stored);
	store_text tx;
	REQUIRE(store_text_get(s, t, &tx, &err) == STORE_OK);
	CHECK(tx.status == STORE_READY);
	store_text_clear(&tx);
	store_close(s);
}

static void t_complete_many(void)
{
	store *s = open_fresh("complmany.db");
	store_err err;
	REQUIRE(s);
	int64_t job, ids[3];
	REQUIRE(store_job_create(s, "batch", &job, &err) == STORE_OK);
	for (int i = 0; i < 3; i++) {
		store_image img = {.mime = "image/png", .bytes = 10};
		sha_of(img.sha256, i);
		REQUIRE(store_image_insert_queued(s, &img, job, &ids[i], &err) == STORE_OK);
	}
	store_work w[3];
	size_t n, done = 99;
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 3, &n, &err) == STORE_OK && n == 3);
	CHECK(store_image_delete(s, ids[1], &err) == STORE_OK);
	int64_t wids[3] = {w[0].work_id, w[1].work_id, w[2].work_id};
	CHECK(store_work_complete_many(s, wids, 3, &done, &err) == STORE_OK && done == 2);
	store_job j;
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.done == 2 && j.failed == 1 && j.state == STORE_JOB_DONE);
	store_job_clear(&j);
	CHECK(store_work_complete_many(s, wids, 3, &done, &err) == STORE_OK && done == 0);
	CHECK(store_work_complete_many(s, wids, 0, NULL, &err) == STORE_OK);
	store_close(s);
}

/* The batch writes are all or nothing across a crash: a child writes
 * batches until it is killed at an arbitrary moment; every batch is then
 * either complete or absent. */
enum { CRASH_BATCH = 200, CRASH_BATCHES = 40, CRASH_DIM = 128 };

static void t_batches_across_crash(void)
{
	char p[512];
	store_err err;
	store *s = open_fresh("batchcrash.db");
	REQUIRE(s);
	path_of(p, sizeof p, "batchcrash.db");
	int64_t job;
	REQUIRE(store_job_create(s, "batch", &job, &err) == STORE_OK);
	for (int i = 0; i < CRASH_BATCH * CRASH_BATCHES; i++) {
		store_image img = {.mime = "image/png", .bytes = 10};
		sha_of(img.sha256, i);
		REQUIRE(store_image_insert_queued(s, &img, job, NULL, &err) == STORE_OK);
	}
	store_close(s);

	int fds[2];
	REQUIRE(pipe(fds) == 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		static float vec[CRASH_BATCH][CRASH_DIM];
		static store_embedding_item it[CRASH_BATCH];
		static const char *texts[CRASH_BATCH];
		store_work w[CRASH_BATCH];
		size_t n;
		int64_t tjob;
		close(fds[0]);
		if (store_open(p, 0, &s, NULL) != STORE_OK)
			_exit(1);
		for (int i = 0; i < CRASH_BATCH; i++)
			texts[i] = "some caption";
		for (int b = 0; b < CRASH_BATCHES; b++) {
			if (store_work_claim(s, STORE_IMAGE, w, CRASH_BATCH, &n, NULL) != STORE_OK ||
			    n != CRASH_BATCH)
				_exit(1);
			for (size_t i = 0; i < n; i++)
				it[i] = (store_embedding_item){.item_id = w[i].item_id, .work_id = w[i].work_id,
				                               .vec = vec[i]};
			if (store_embeddings_put_many(s, STORE_IMAGE, "m", CRASH_DIM, it, n, NULL) != STORE_OK)
				_exit(1);
			if (store_job_create(s, "texts", &tjob, NULL) != STORE_OK ||
			    store_texts_insert_queued(s, CRASH_BATCH, texts, NULL, tjob, NULL, NULL) != STORE_OK)
				_exit(1);
			if (write(fds[1], "b", 1) != 1)
				_exit(1);
		}
		_exit(0);
	}
	close(fds[1]);
	char c;
	int seen = 0;
	while (seen < 3 && read(fds[0], &c, 1) == 1)
		seen++;
	usleep(3000 + (useconds_t)(getpid() % 7) * 1000); /* somewhere inside a later batch */
	kill(pid, SIGKILL);
	int status;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	close(fds[0]);
	CHECKF(WIFSIGNALED(status), "the writer finished before the kill (status %d)", status);

	REQUIRE(store_open(p, STORE_OPEN_CHECK, &s, &err) == STORE_OK);
	int64_t total, ready, texts, depth;
	uint64_t last;
	CHECK(store_image_count(s, &total, &ready, NULL) == STORE_OK);
	CHECK(store_text_count(s, &texts, NULL) == STORE_OK);
	CHECK(store_last_seq(s, &last, NULL) == STORE_OK);
	printf("# killed after %lld ready images, %lld texts\n", (long long)ready, (long long)texts);
	CHECK(total == CRASH_BATCH * CRASH_BATCHES);
	CHECKF(ready % CRASH_BATCH == 0 && ready >= 3 * CRASH_BATCH, "ready %lld", (long long)ready);
	CHECKF(texts % CRASH_BATCH == 0, "texts %lld", (long long)texts);
	CHECK((int64_t)last == ready); /* one sequence number per stored embedding */
	struct change_log log = {0};
	CHECK(store_changes_after(s, STORE_IMAGE, "m", last - 1, collect, &log, &err) == STORE_OK);
	CHECK(log.n == 1 && log.seq[0] == last);
	/* Completed work went with its embeddings; queued texts with theirs. */
	store_job j;
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.done == ready);
	store_job_clear(&j);
	int64_t requeued;
	CHECK(store_work_requeue_claimed(s, &requeued, &err) == STORE_OK);
	CHECK(requeued == 0 || requeued == CRASH_BATCH); /* the claim of the batch in hand */
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK &&
	      depth == (total - ready) + texts);
	store_close(s);
}

/* A database of schema 1 with a job left empty and queued, as the first
 * server version made them: the migration makes it done. */
static void t_migration_from_v1(void)
{
	char p[512];
	sqlite3 *db;
	path_of(p, sizeof p, "v1.db");
	unlink(p);
	REQUIRE(sqlite3_open(p, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, store_migrations[0].sql, NULL, NULL, NULL) == SQLITE_OK);
	CHECK(sqlite3_exec(db,
	                   "PRAGMA user_version = 1;"
	                   "INSERT INTO jobs (kind, state, total, created_ms, updated_ms) "
	                   "VALUES ('batch', 0, 0, 1, 1), ('batch', 1, 2, 1, 1);",
	                   NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	store *s;
	store_err err;
	REQUIRE(store_open(p, 0, &s, &err) == STORE_OK);
	CHECK(user_version(p) == store_schema_version());
	store_job j;
	REQUIRE(store_job_get(s, 1, &j, &err) == STORE_OK);
	CHECK(j.state == STORE_JOB_DONE && j.sealed);
	store_job_clear(&j);
	REQUIRE(store_job_get(s, 2, &j, &err) == STORE_OK);
	CHECK(j.state == STORE_JOB_RUNNING && j.sealed);
	store_job_clear(&j);
	store_close(s);
}

struct watched_list {
	int n;
	char path[8][64];
	int64_t image[8];
};

static int collect_watched(void *ctx, const store_watched *w)
{
	struct watched_list *l = ctx;
	if (l->n < 8) {
		snprintf(l->path[l->n], sizeof l->path[0], "%s", w->path);
		l->image[l->n++] = w->image_id;
	}
	return 0;
}

static void t_watched_files(void)
{
	store *s = open_fresh("watch.db");
	store_err err;
	REQUIRE(s);
	int64_t a = add_image(s, 1), b = add_image(s, 2), dropped = -1;
	REQUIRE(a > 0 && b > 0);
	float v[2] = {1, 0};
	REQUIRE(store_embedding_put(s, STORE_IMAGE, a, "m", v, 2, NULL, &err) == STORE_OK);

	CHECK(store_watch_set(s, "/w/x.png", 100, 5, a, &dropped, &err) == STORE_OK && dropped == 0);
	CHECK(store_watch_set(s, "/w/sub/copy.png", 100, 6, a, &dropped, &err) == STORE_OK);
	CHECK(store_watch_set(s, "/w/notes.txt", 12, 7, 0, &dropped, &err) == STORE_OK);
	CHECK(store_watch_set(s, "/wx/y.png", 1, 1, b, NULL, &err) == STORE_OK);
	CHECK(store_watch_set(s, "", 1, 1, b, NULL, &err) == STORE_EINVAL);

	store_watched r;
	REQUIRE(store_watch_get(s, "/w/x.png", &r, &err) == STORE_OK);
	CHECK(strcmp(r.path, "/w/x.png") == 0 && r.size == 100 && r.mtime_ns == 5 && r.image_id == a);
	store_watched_clear(&r);
	REQUIRE(store_watch_get(s, "/w/notes.txt", &r, &err) == STORE_OK);
	CHECK(r.image_id == 0);
	store_watched_clear(&r);
	CHECK(store_watch_get(s, "/w/none", &r, &err) == STORE_ENOTFOUND);

	/* Under /w, not /wx. */
	struct watched_list l = {0};
	CHECK(store_watch_list(s, "/w", collect_watched, &l, &err) == STORE_OK);
	CHECK(l.n == 3 && strcmp(l.path[0], "/w/notes.txt") == 0 &&
	      strcmp(l.path[1], "/w/sub/copy.png") == 0 && strcmp(l.path[2], "/w/x.png") == 0);
	memset(&l, 0, sizeof l);
	CHECK(store_watch_list(s, "", collect_watched, &l, &err) == STORE_OK && l.n == 4);

	/* x.png changes to b's content: a stays, copy.png still names it. */
	CHECK(store_watch_set(s, "/w/x.png", 200, 8, b, &dropped, &err) == STORE_OK && dropped == 0);
	store_image img;
	CHECK(store_image_get(s, a, &img, &err) == STORE_OK);
	store_image_clear(&img);
	/* The last file naming a goes: a goes with it, its removal logged. */
	uint64_t before;
	REQUIRE(store_last_seq(s, &before, NULL) == STORE_OK);
	CHECK(store_watch_remove(s, "/w/sub/copy.png", &dropped, &err) == STORE_OK && dropped == a);
	CHECK(store_image_get(s, a, &img, &err) == STORE_ENOTFOUND);
	struct change_log log = {0};
	CHECK(store_changes_after(s, STORE_IMAGE, "m", before, collect, &log, &err) == STORE_OK);
	CHECK(log.n == 1 && log.id[0] == a && log.removed[0]);
	CHECK(store_watch_remove(s, "/w/sub/copy.png", &dropped, &err) == STORE_ENOTFOUND);

	/* A file that becomes refused drops its image too. */
	CHECK(store_watch_set(s, "/wx/y.png", 2, 2, 0, &dropped, &err) == STORE_OK && dropped == 0);
	CHECK(store_watch_set(s, "/w/x.png", 3, 9, 0, &dropped, &err) == STORE_OK && dropped == b);
	CHECK(store_image_get(s, b, &img, &err) == STORE_ENOTFOUND);

	/* An image deleted through the API meanwhile: nothing to drop. */
	int64_t c = add_image(s, 3);
	CHECK(store_watch_set(s, "/w/c.png", 1, 1, c, &dropped, &err) == STORE_OK);
	CHECK(store_image_delete(s, c, &err) == STORE_OK);
	CHECK(store_watch_remove(s, "/w/c.png", &dropped, &err) == STORE_OK && dropped == 0);

	/* Records survive a reopen (a restart ingests nothing again). */
	char p[512];
	path_of(p, sizeof p, "watch.db");
	store_close(s);
	REQUIRE(store_open(p, 0, &s, &err) == STORE_OK);
	memset(&l, 0, sizeof l);
	CHECK(store_watch_list(s, "/w", collect_watched, &l, &err) == STORE_OK);
	CHECK(l.n == 2 && strcmp(l.path[1], "/w/x.png") == 0 && l.image[1] == 0);
	store_close(s);
}

/* Issue 12 item 9: the watcher deletes only the images it created. An
 * image pinned by another source (an upload, a bulk or path ingest, the
 * same content sent again) stays when the last watched file naming it
 * changes or goes; the watcher's own still go. */
static void t_watch_spares_pinned(void)
{
	store *s = open_fresh("pins.db");
	store_err err;
	store_image img;
	int64_t dropped = -1;
	REQUIRE(s);
	/* Uploaded through the API (pinned), then a copy shows up in a
	 * watched folder and goes again. */
	store_image up = {.mime = "image/png", .bytes = 10, .filename = "up.png", .pinned = 1};
	sha_of(up.sha256, 11);
	int64_t a = -1;
	REQUIRE(store_image_insert(s, &up, &a, &err) == STORE_OK && a > 0);
	REQUIRE(store_image_get(s, a, &img, &err) == STORE_OK);
	CHECK(img.pinned == 1);
	store_image_clear(&img);
	CHECK(store_watch_set(s, "/w/copy.png", 10, 1, a, &dropped, &err) == STORE_OK && dropped == 0);
	CHECK(store_watch_remove(s, "/w/copy.png", &dropped, &err) == STORE_OK && dropped == 0);
	CHECK(store_image_get(s, a, &img, &err) == STORE_OK && img.id == a);
	store_image_clear(&img);
	/* The copy changes content instead of going: the upload stays too. */
	int64_t w1 = add_image(s, 12);
	CHECK(store_watch_set(s, "/w/copy.png", 10, 1, a, &dropped, &err) == STORE_OK);
	CHECK(store_watch_set(s, "/w/copy.png", 20, 2, w1, &dropped, &err) == STORE_OK && dropped == 0);
	CHECK(store_image_get(s, a, &img, &err) == STORE_OK);
	store_image_clear(&img);

	/* Made by the watcher (not pinned), then the same content uploaded:
	 * pinned from then on, so it outlives its watched file. */
	REQUIRE(store_image_get(s, w1, &img, &err) == STORE_OK);
	CHECK(img.pinned == 0);
	store_image_clear(&img);
	CHECK(store_image_pin(s, w1, &err) == STORE_OK);
	CHECK(store_image_pin(s, w1, &err) == STORE_OK); /* twice: harmless */
	CHECK(store_watch_remove(s, "/w/copy.png", &dropped, &err) == STORE_OK && dropped == 0);
	CHECK(store_image_get(s, w1, &img, &err) == STORE_OK && img.pinned == 1);
	store_image_clear(&img);

	/* The watcher's own image still goes with its last file. */
	int64_t w2 = add_image(s, 13);
	CHECK(store_watch_set(s, "/w/own.png", 5, 5, w2, &dropped, &err) == STORE_OK);
	CHECK(store_watch_remove(s, "/w/own.png", &dropped, &err) == STORE_OK && dropped == w2);
	CHECK(store_image_get(s, w2, &img, &err) == STORE_ENOTFOUND);

	CHECK(store_image_pin(s, w2, &err) == STORE_ENOTFOUND);
	/* Pinned images come back pinned from the batch read too. */
	int64_t ids[2] = {a, w1};
	store_image many[2];
	REQUIRE(store_images_get_many(s, ids, 2, many, &err) == STORE_OK);
	CHECK(many[0].pinned == 1 && many[1].pinned == 1);
	store_image_clear(&many[0]);
	store_image_clear(&many[1]);
	store_close(s);
}

/* A database of schema 2 (before pins): an image first queued by a watch
 * job stays the watcher's to delete; one first queued by an upload, a
 * batch or a folder ingest, or by no job at all, is pinned by the
 * migration. Every one of them is named by a watched file, and each file
 * then goes. */
static void t_migration_pins_from_v2(void)
{
	char p[512];
	sqlite3 *db;
	path_of(p, sizeof p, "v2.db");
	unlink(p);
	REQUIRE(sqlite3_open(p, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, store_migrations[0].sql, NULL, NULL, NULL) == SQLITE_OK);
	CHECK(sqlite3_exec(db, store_migrations[1].sql, NULL, NULL, NULL) == SQLITE_OK);
	char sql[4096];
	char sha[5][65];
	for (int i = 0; i < 5; i++)
		sha_of(sha[i], 100 + i);
	snprintf(sql, sizeof sql,
	         "PRAGMA user_version = 2;"
	         "INSERT INTO jobs (id, kind, created_ms, updated_ms) VALUES "
	         "(1, 'watch', 1, 1), (2, 'upload', 1, 1), (3, 'batch', 1, 1), (4, 'watch', 1, 1);"
	         "INSERT INTO images (id, sha256, mime, bytes, created_ms, updated_ms) VALUES "
	         "(1, '%s', 'image/png', 1, 1, 1), (2, '%s', 'image/png', 1, 1, 1), "
	         "(3, '%s', 'image/png', 1, 1, 1), (4, '%s', 'image/png', 1, 1, 1), "
	         "(5, '%s', 'image/png', 1, 1, 1);"
	         /* 1 by the watcher; 2 uploaded; 3 batch first, a watch item later;
	          * 4 by the watcher, a batch item later; 5 in no job. */
	         "INSERT INTO job_items (id, job_id, kind, item_id, updated_ms) VALUES "
	         "(1, 1, 0, 1, 1), (2, 2, 0, 2, 1), (3, 3, 0, 3, 1), (4, 4, 0, 3, 1), "
	         "(5, 4, 0, 4, 1), (6, 3, 0, 4, 1);"
	         "INSERT INTO watched_files (path, size, mtime_ns, image_id, updated_ms) VALUES "
	         "('/w/1', 1, 1, 1, 1), ('/w/2', 1, 1, 2, 1), ('/w/3', 1, 1, 3, 1), "
	         "('/w/4', 1, 1, 4, 1), ('/w/5', 1, 1, 5, 1);",
	         sha[0], sha[1], sha[2], sha[3], sha[4]);
	CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);

	store *s;
	store_err err;
	REQUIRE(store_open(p, 0, &s, &err) == STORE_OK);
	CHECK(user_version(p) == store_schema_version());
	const int want_dropped[5] = {1, 0, 0, 1, 0};
	for (int i = 0; i < 5; i++) {
		char path[16];
		int64_t dropped = -1;
		store_image img;
		snprintf(path, sizeof path, "/w/%d", i + 1);
		CHECK(store_watch_remove(s, path, &dropped, &err) == STORE_OK);
		CHECKF(dropped == (want_dropped[i] ? i + 1 : 0), "image %d: dropped %lld", i + 1,
		       (long long)dropped);
		int rc = store_image_get(s, i + 1, &img, &err);
		CHECKF(rc == (want_dropped[i] ? STORE_ENOTFOUND : STORE_OK), "image %d: %d", i + 1, rc);
		store_image_clear(&img);
	}
	store_close(s);
}

/* Migrations 004 (keywords) and 005 (EXIF) on a version-3 database (004
 * needs the store's own SQL functions, so the raw set-up stops at 3): its
 * images are unread, every EXIF column NULL; then what the store takes and
 * refuses. */
static void t_exif_columns(void)
{
	char p[512];
	sqlite3 *db;
	path_of(p, sizeof p, "v3.db");
	unlink(p);
	REQUIRE(sqlite3_open(p, &db) == SQLITE_OK);
	for (int i = 0; i < 3; i++)
		CHECK(sqlite3_exec(db, store_migrations[i].sql, NULL, NULL, NULL) == SQLITE_OK);
	char sql[1024], sha[3][65];
	for (int i = 0; i < 3; i++)
		sha_of(sha[i], 200 + i);
	snprintf(sql, sizeof sql,
	         "PRAGMA user_version = 3;"
	         "INSERT INTO images (id, sha256, mime, bytes, created_ms, updated_ms) VALUES "
	         "(1, '%s', 'image/jpeg', 1, 1, 1), (2, '%s', 'image/jpeg', 1, 1, 1), "
	         "(3, '%s', 'image/jpeg', 1, 1, 1);",
	         sha[0], sha[1], sha[2]);
	CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);

	store *s;
	store_err err;
	REQUIRE(store_open(p, 0, &s, &err) == STORE_OK);
	int64_t n = -1, ids[8];
	char shas[8][65];
	size_t k = 0;
	CHECK(store_images_exif_unread_count(s, &n, &err) == STORE_OK && n == 3);
	CHECK(store_images_exif_unread(s, 1, 8, ids, shas, &k, &err) == STORE_OK && k == 2 &&
	      ids[0] == 2 && ids[1] == 3 && strcmp(shas[0], sha[1]) == 0);
	store_image img;
	REQUIRE(store_image_get(s, 1, &img, &err) == STORE_OK);
	CHECK(!img.exif_read && !img.exif.taken && !img.exif.has_taken && !img.exif.has_gps &&
	      !img.exif.camera_make && img.exif.orientation == 0);
	store_image_clear(&img);

	/* The backfill's commit: one with fields, one with nothing known, one
	 * deleted meanwhile. */
	store_exif e = {.taken = "2021-07-04T18:30:00+02:00", .has_taken = 1,
	                .taken_ms = 1625416200000LL, .has_gps = 1, .gps_lat = -33.8568,
	                .gps_lon = 151.2153, .camera_make = "Canon", .lens = "EF 50mm",
	                .orientation = 6};
	CHECK(store_image_delete(s, 3, &err) == STORE_OK);
	store_exif_item items[3] = {{.id = 1, .exif = &e}, {.id = 2, .exif = NULL}, {.id = 3, .exif = &e}};
	CHECK(store_images_set_exif(s, items, 3, &err) == STORE_OK);
	CHECK(items[0].stored == 1 && items[1].stored == 1 && items[2].stored == 0);
	REQUIRE(store_image_get(s, 1, &img, &err) == STORE_OK);
	CHECK(img.exif_read && img.exif.taken && strcmp(img.exif.taken, e.taken) == 0 &&
	      img.exif.taken_ms == e.taken_ms && img.exif.has_gps && img.exif.gps_lat == e.gps_lat &&
	      img.exif.gps_lon == e.gps_lon && strcmp(img.exif.camera_make, "Canon") == 0 &&
	      !img.exif.camera_model && strcmp(img.exif.lens, "EF 50mm") == 0 &&
	      img.exif.orientation == 6);
	store_image_clear(&img);
	CHECK(store_images_exif_unread_count(s, &n, &err) == STORE_OK && n == 0);
	/* A second backfill commit never overwrites what is read. */
	store_exif other = {.camera_make = "Nikon"};
	store_exif_item again = {.id = 1, .exif = &other};
	CHECK(store_images_set_exif(s, &again, 1, &err) == STORE_OK && again.stored == 0);
	REQUIRE(store_image_get(s, 1, &img, &err) == STORE_OK);
	CHECK(strcmp(img.exif.camera_make, "Canon") == 0);
	store_image_clear(&img);

	/* Out of range: refused, nothing written (all or nothing). */
	store_exif bad = {.has_gps = 1, .gps_lat = 999, .gps_lon = 0};
	CHECK(store_image_set_exif(s, 2, &bad, &err) == STORE_EINVAL);
	bad = (store_exif){.orientation = 9};
	CHECK(store_image_set_exif(s, 2, &bad, &err) == STORE_EINVAL);
	bad = (store_exif){.has_taken = 1};
	CHECK(store_image_set_exif(s, 2, &bad, &err) == STORE_EINVAL);
	CHECK(store_image_set_exif(s, 99, &e, &err) == STORE_ENOTFOUND);

	/* An insert with its EXIF writes both in one go. */
	store_image ins = {.mime = "image/jpeg", .bytes = 1, .exif = e, .exif_read = 1};
	sha_of(ins.sha256, 300);
	int64_t id;
	REQUIRE(store_image_insert(s, &ins, &id, &err) == STORE_OK);
	store_image got[1];
	CHECK(store_images_get_many(s, &id, 1, got, &err) == STORE_OK && got[0].exif_read &&
	      got[0].exif.orientation == 6 && got[0].exif.has_gps && got[0].exif.gps_lat == e.gps_lat);
	store_image_clear(&got[0]);
	CHECK(store_images_exif_unread_count(s, &n, &err) == STORE_OK && n == 0);
	store_close(s);
}

/* store_filter_ids: each condition alone and together, against the rows
 * written; the metadata filter's type-exact matching; texts. */
static int64_t filter_case(store *s, store_kind kind, const store_filter *f, const char *want)
{
	store_err err;
	int64_t *ids = NULL;
	size_t n = 0;
	char got[512] = "";
	int rc = store_filter_ids(s, kind, f, &ids, &n, &err);
	if (rc != STORE_OK) {
		tap_diag(__FILE__, __LINE__, "store_filter_ids = %d: %s", rc, err.msg);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "",
		         (long long)ids[i]);
	free(ids);
	CHECKF(strcmp(got, want) == 0, "filter kept [%s], want [%s]", got, want);
	return (int64_t)n;
}

static void t_filter_ids(void)
{
	char p[512];
	path_of(p, sizeof p, "filter.db");
	unlink(p);
	store *s;
	store_err err;
	REQUIRE(store_open(p, 0, &s, &err) == STORE_OK);
	/* 1 Sydney 2021 Canon; 2 New York 2019 Apple; 3 Reykjavik 2023 no
	 * camera; 4 no EXIF; 5 Fiji (178.4 E) 2021; 6 Samoa-ish (-171.8 W, 0.3
	 * degrees from 5 across the antimeridian... no: 6 lies 630 km east). */
	static const struct {
		const char *taken;
		int64_t ms;
		double lat, lon;
		const char *make, *model, *meta;
	} rows[] = {
		{"2021-07-04T18:30:00+02:00", 1625416200000LL, -33.8568, 151.2153, "Canon",
		 "Canon EOS 5D", "{\"album\":\"trip\",\"stars\":5}"},
		{"2019-01-01T00:00:00", 1546300800000LL, 40.7128, -74.0060, "Apple", "iPhone 12",
		 "{\"album\":\"home\",\"stars\":5.0}"},
		{"2023-12-31T23:59:59", 1704067199000LL, 64.1466, -21.9426, NULL, NULL,
		 "{\"album\":\"trip\",\"fav\":true}"},
		{NULL, 0, 999, 999, NULL, NULL, "{\"fav\":false,\"x\":null}"},
		{"2021-01-01T00:00:00", 1609459200000LL, -17.7134, 178.0650, "Olympus", "E-M1", "{}"},
		{"2021-06-01T00:00:00", 1622505600000LL, -13.7590, -172.1046, "OM_1%", "X", "{}"},
	};
	for (int i = 0; i < 6; i++) {
		store_image img = {.mime = i == 2 ? "image/png" : "image/jpeg", .bytes = 1,
		                   .meta = (char *)rows[i].meta, .exif_read = 1};
		sha_of(img.sha256, 300 + i);
		img.exif = (store_exif){.taken = (char *)rows[i].taken, .has_taken = rows[i].taken != NULL,
		                        .taken_ms = rows[i].ms, .has_gps = rows[i].lat < 900,
		                        .gps_lat = rows[i].lat < 900 ? rows[i].lat : 0,
		                        .gps_lon = rows[i].lat < 900 ? rows[i].lon : 0,
		                        .camera_make = (char *)rows[i].make,
		                        .camera_model = (char *)rows[i].model};
		int64_t id;
		REQUIRE(store_image_insert(s, &img, &id, &err) == STORE_OK && id == i + 1);
	}
	store_filter f = {0};
	filter_case(s, STORE_IMAGE, &f, "1,2,3,4,5,6");
	f = (store_filter){.has_after = 1, .after_ms = 1609459200000LL};
	filter_case(s, STORE_IMAGE, &f, "1,3,5,6");               /* inclusive after */
	f.has_before = 1, f.before_ms = 1625416200000LL;
	filter_case(s, STORE_IMAGE, &f, "5,6");                   /* exclusive before */
	f = (store_filter){.has_before = 1, .before_ms = 1625416200001LL};
	filter_case(s, STORE_IMAGE, &f, "2,5,6");                 /* 1's clock says 18:30 */
	f.before_zoned = 1;                                       /* the instant: 16:30Z */
	filter_case(s, STORE_IMAGE, &f, "1,2,5,6");               /* no time: excluded */
	f.has_after = 1, f.after_ms = 1625423400000LL + 1;
	filter_case(s, STORE_IMAGE, &f, "");
	f.after_ms = 1625423400000LL;
	filter_case(s, STORE_IMAGE, &f, "1");                     /* local after, instant before */
	/* Sydney to Melbourne is 714 km. */
	f = (store_filter){.has_near = 1, .lat = -37.8136, .lon = 144.9631, .km = 720};
	filter_case(s, STORE_IMAGE, &f, "1");
	f.km = 700;
	filter_case(s, STORE_IMAGE, &f, "");
	CHECKF(fabs(store_km_between(-33.8568, 151.2153, -37.8136, 144.9631) - 714) < 5,
	       "Sydney-Melbourne %.1f km", store_km_between(-33.8568, 151.2153, -37.8136, 144.9631));
	/* Across the antimeridian: from 179.9 W near Fiji, 5 is ~220 km away. */
	f = (store_filter){.has_near = 1, .lat = -17.7, .lon = -179.9, .km = 250};
	filter_case(s, STORE_IMAGE, &f, "5");
	/* Around the North Pole: Reykjavik is 2,875 km from it. */
	f = (store_filter){.has_near = 1, .lat = 90, .lon = 0, .km = 2900};
	filter_case(s, STORE_IMAGE, &f, "3");
	f = (store_filter){.has_near = 1, .lat = 0, .lon = 0, .km = 30000};
	filter_case(s, STORE_IMAGE, &f, "1,2,3,5,6");             /* everything with GPS */
	f = (store_filter){.camera = "canon"};
	filter_case(s, STORE_IMAGE, &f, "1");
	f.camera = "apple iphone";                                /* "make model" */
	filter_case(s, STORE_IMAGE, &f, "2");
	f.camera = "1%";                                          /* wildcards are literal */
	filter_case(s, STORE_IMAGE, &f, "6");
	f.camera = "M1";
	filter_case(s, STORE_IMAGE, &f, "5");
	f = (store_filter){.meta_json = "{\"album\":\"trip\"}"};
	filter_case(s, STORE_IMAGE, &f, "1,3");
	f.meta_json = "{\"stars\":5}";                            /* 5 is not 5.0 */
	filter_case(s, STORE_IMAGE, &f, "1");
	f.meta_json = "{\"stars\":5.0}";
	filter_case(s, STORE_IMAGE, &f, "2");
	f.meta_json = "{\"fav\":true}";
	filter_case(s, STORE_IMAGE, &f, "3");
	f.meta_json = "{\"fav\":false}";
	filter_case(s, STORE_IMAGE, &f, "4");
	f.meta_json = "{\"x\":null}";
	filter_case(s, STORE_IMAGE, &f, "4");
	f.meta_json = "{\"album\":[\"home\",\"trip\"],\"mime\":\"image/jpeg\"}";
	filter_case(s, STORE_IMAGE, &f, "1,2");
	f.meta_json = "{\"album\":\"trip\",\"missing\":1}";
	filter_case(s, STORE_IMAGE, &f, "");
	f = (store_filter){.meta_json = "{\"album\":\"trip\"}", .has_after = 1,
	                   .after_ms = 1640995200000LL, .camera = NULL};
	filter_case(s, STORE_IMAGE, &f, "3");
	/* Texts: metadata only. */
	int64_t tid;
	REQUIRE(store_text_insert(s, "a dog", "{\"lang\":\"en\"}", &tid, &err) == STORE_OK);
	REQUIRE(store_text_insert(s, "ein Hund", "{\"lang\":\"de\"}", &tid, &err) == STORE_OK);
	f = (store_filter){.meta_json = "{\"lang\":\"de\"}"};
	filter_case(s, STORE_TEXT, &f, "2");
	f = (store_filter){.camera = "x"};
	int64_t *ids = NULL;
	size_t n;
	CHECK(store_filter_ids(s, STORE_TEXT, &f, &ids, &n, &err) == STORE_EINVAL);
	f = (store_filter){.has_near = 1, .lat = 91, .lon = 0, .km = 1};
	CHECK(store_filter_ids(s, STORE_IMAGE, &f, &ids, &n, &err) == STORE_EINVAL);
	/* Capture times of a result set, repeated and missing ids among them. */
	int64_t want[5] = {4, 1, 99, 1, 6}, ms[5];
	int has[5];
	CHECK(store_images_taken(s, want, 5, ms, has, &err) == STORE_OK);
	CHECK(!has[0] && has[1] && ms[1] == 1625423400000LL && !has[2] && has[3] &&
	      ms[3] == ms[1] && has[4] && ms[4] == 1622505600000LL);
	store_close(s);
}

static void t_kv(void)
{
	store *s = open_fresh("kv.db");
	store_err err;
	REQUIRE(s);
	char *v = NULL;
	CHECK(store_kv_get(s, "model.id", &v, &err) == STORE_ENOTFOUND && v == NULL);
	CHECK(store_kv_set(s, "model.id", "openai/clip-vit-base-patch32", &err) == STORE_OK);
	CHECK(store_kv_set(s, "model.id", "laion/x", &err) == STORE_OK);
	REQUIRE(store_kv_get(s, "model.id", &v, &err) == STORE_OK);
	CHECK(strcmp(v, "laion/x") == 0);
	free(v);
	CHECK(store_kv_set(s, NULL, "x", &err) == STORE_EINVAL);
	store_close(s);
}

/* Switching models (store_models.c): the work listing, the coverage, the
 * switch refused while an item lacks the target's embedding, then made in
 * one transaction that a reopen (a crash right after it) sees; old-model
 * writes refused after it (STORE_ESTALE); claims given back. */
static void t_model_switch(void)
{
	store *s = open_fresh("switch.db");
	store_err err;
	REQUIRE(s);
	float a[4] = {1, 0, 0, 0}, b[6] = {0, 1, 0, 0, 0, 0};
	int64_t ids[5], text, job, missing = -1, ready, have;
	size_t n;
	for (int i = 0; i < 5; i++) {
		REQUIRE((ids[i] = add_image(s, 500 + i)) > 0);
		CHECK(store_embedding_put(s, STORE_IMAGE, ids[i], "A", a, 4, NULL, &err) == STORE_OK);
	}
	REQUIRE(store_text_insert(s, "t", NULL, &text, &err) == STORE_OK);
	CHECK(store_embedding_put(s, STORE_TEXT, text, "A", a, 4, NULL, &err) == STORE_OK);
	REQUIRE(store_kv_set(s, "model.id", "A", &err) == STORE_OK);
	/* B is not named yet: its embeddings are refused. */
	CHECK(store_embedding_put(s, STORE_IMAGE, ids[0], "B", b, 6, NULL, &err) == STORE_ESTALE);
	REQUIRE(store_kv_set(s, "migration.model.id", "B", &err) == STORE_OK);
	REQUIRE(store_job_create_counted(s, "model_migration", &job, &err) == STORE_OK);

	int64_t got[8];
	CHECK(store_missing_embeddings(s, STORE_IMAGE, "B", 0, got, 3, &n, &err) == STORE_OK &&
	      n == 3 && got[0] == ids[0] && got[2] == ids[2]);
	CHECK(store_missing_embeddings(s, STORE_IMAGE, "B", ids[2], got, 8, &n, &err) == STORE_OK &&
	      n == 2 && got[0] == ids[3]);
	for (int i = 0; i < 4; i++)
		CHECK(store_embedding_put(s, STORE_IMAGE, ids[i], "B", b, 6, NULL, &err) == STORE_OK);
	CHECK(store_model_coverage(s, "B", &ready, &have, &err) == STORE_OK && ready == 6 &&
	      have == 4);
	/* Two items (an image and the text) still lack B: no switch. */
	CHECK(store_model_switch(s, "B", "/models/b", 6, job, &missing, &err) == STORE_OK &&
	      missing == 2);
	char *v = NULL;
	CHECK(store_kv_get(s, "model.id", &v, &err) == STORE_OK && !strcmp(v, "A"));
	free(v);
	/* A deleted item leaves both models' embeddings. */
	CHECK(store_image_delete(s, ids[4], &err) == STORE_OK);
	CHECK(store_embedding_put(s, STORE_TEXT, text, "B", b, 6, NULL, &err) == STORE_OK);
	CHECK(store_model_switch(s, "B", "/models/b", 6, job, &missing, &err) == STORE_OK &&
	      missing == 0);
	store_close(s);

	/* Reopened, as after a crash right after the commit. */
	char p[512];
	path_of(p, sizeof p, "switch.db");
	REQUIRE(store_open(p, 0, &s, &err) == STORE_OK);
	v = NULL;
	CHECK(store_kv_get(s, "model.id", &v, &err) == STORE_OK && !strcmp(v, "B"));
	free(v);
	v = NULL;
	CHECK(store_kv_get(s, "model.dir", &v, &err) == STORE_OK && !strcmp(v, "/models/b"));
	free(v);
	v = NULL;
	CHECK(store_kv_get(s, "migration.model.id", &v, &err) == STORE_ENOTFOUND);
	float back[6];
	/* A's embeddings are unused now, and pruned a batch at a time. */
	CHECK(store_embedding_get(s, STORE_IMAGE, ids[0], "A", back, 4, &err) == STORE_OK);
	int64_t pruned = 0, np;
	int done = 0, calls = 0;
	while (!done && calls++ < 10) {
		CHECK(store_embeddings_prune(s, 2, &np, &done, &err) == STORE_OK && np <= 2);
		pruned += np;
	}
	CHECK(done && pruned == 5); /* 4 images and the text; the deleted image had none left */
	CHECK(store_embedding_get(s, STORE_IMAGE, ids[0], "A", back, 4, &err) == STORE_ENOTFOUND);
	CHECK(store_embedding_get(s, STORE_IMAGE, ids[0], "B", back, 6, &err) == STORE_OK);
	CHECK(store_embeddings_prune(s, 2, &np, &done, &err) == STORE_OK && done && np == 0);
	CHECK(store_model_coverage(s, "B", &ready, &have, &err) == STORE_OK && ready == 5 &&
	      have == 5);
	store_job j;
	REQUIRE(store_job_get(s, job, &j, &err) == STORE_OK);
	CHECK(j.state == STORE_JOB_DONE && j.total == 5 && j.done == 5 &&
	      !strcmp(j.kind, "model_migration"));
	store_job_clear(&j);
	/* A worker still on A: refused, nothing written. */
	CHECK(store_embedding_put(s, STORE_IMAGE, ids[1], "A", a, 4, NULL, &err) == STORE_ESTALE);
	store_embedding_item it = {.item_id = ids[1], .vec = a};
	CHECK(store_embeddings_put_many(s, STORE_IMAGE, "A", 4, &it, 1, &err) == STORE_ESTALE &&
	      it.stored == 0);

	/* Claims given back are queued again, their attempt not counted. */
	int64_t qjob, img;
	REQUIRE(store_job_create(s, "upload", &qjob, &err) == STORE_OK);
	store_image im = {.mime = "image/png", .bytes = 1};
	sha_of(im.sha256, 777);
	REQUIRE(store_image_insert_queued(s, &im, qjob, &img, &err) == STORE_OK);
	store_work w[2];
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 2, &n, &err) == STORE_OK && n == 1);
	CHECK(w[0].attempts == 1);
	CHECK(store_work_release(s, &w[0].work_id, 1, &err) == STORE_OK);
	REQUIRE(store_work_claim(s, STORE_IMAGE, w, 2, &n, &err) == STORE_OK && n == 1);
	CHECK(w[0].attempts == 1);

	/* The model itself is never pruned, even when marked. */
	CHECK(store_kv_set(s, "prune.B", "1", &err) == STORE_OK);
	CHECK(store_embeddings_prune(s, 100, &np, &done, &err) == STORE_OK && np == 0);
	CHECK(store_embeddings_prune(s, 100, &np, &done, &err) == STORE_OK && done);
	CHECK(store_embedding_get(s, STORE_IMAGE, ids[0], "B", back, 6, &err) == STORE_OK);
	CHECK(store_kv_delete(s, "model.dir", &err) == STORE_OK &&
	      store_kv_get(s, "model.dir", &v, &err) == STORE_ENOTFOUND);
	store_close(s);
}

struct reader_arg {
	store *s;
	int errors;
	int64_t last_seen;
	int monotonic;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;
	a->monotonic = 1;
	for (int i = 0; i < 300; i++) {
		int64_t total;
		if (store_image_count(a->s, &total, NULL, NULL) != STORE_OK) {
			a->errors++;
			continue;
		}
		if (total < a->last_seen)
			a->monotonic = 0;
		a->last_seen = total;
	}
	return NULL;
}

static void t_readers_alongside_writer(void)
{
	store *s = open_fresh("conc.db");
	REQUIRE(s);
	pthread_t th[4];
	struct reader_arg args[4] = {{0}};
	for (int i = 0; i < 4; i++) {
		args[i].s = s;
		pthread_create(&th[i], NULL, reader, &args[i]);
	}
	int werr = 0;
	for (int i = 0; i < 200; i++)
		if (add_image(s, i) < 0)
			werr++;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK(args[i].errors == 0);
		CHECK(args[i].monotonic);
	}
	CHECK(werr == 0);
	int64_t total;
	CHECK(store_image_count(s, &total, NULL, NULL) == STORE_OK && total == 200);
	store_close(s);
}

static void t_bad_arguments(void)
{
	store *s = (store *)1;
	store_err err;
	CHECK(store_open("", 0, &s, &err) == STORE_EINVAL && s == NULL);
	CHECK(store_open("/nonexistent-dir/x/y.db", 0, &s, &err) == STORE_EIO && s == NULL);
	CHECKF(strstr(err.msg, "cannot open") != NULL, "message: %s", err.msg);
	store_close(NULL);
	store_image_clear(NULL);
}

/* ---- the statement helpers of store_int.h: their error paths --------------
 *
 * After every call, failing or not, no connection's mutex may still be held
 * and no statement may still be stepping (a statement left un-reset keeps a
 * read snapshot open and pins the WAL). */

/* 1 when every mutex of s is free and no statement of any connection is
 * still busy; the writer is also outside any transaction. */
static int all_given_back(store *s)
{
	store_conn *conns[STORE_NREADERS + 1];
	int n = 0, ok = 1;
	conns[n++] = &s->writer;
	for (int i = 0; i < s->nreaders; i++)
		conns[n++] = &s->readers[i];
	for (int i = 0; i < n; i++) {
		if (pthread_mutex_trylock(&conns[i]->mu) != 0) {
			printf("# connection %d is still held\n", i);
			ok = 0;
			continue;
		}
		for (sqlite3_stmt *st = sqlite3_next_stmt(conns[i]->db, NULL); st;
		     st = sqlite3_next_stmt(conns[i]->db, st))
			if (sqlite3_stmt_busy(st)) {
				printf("# connection %d has a statement still stepping\n", i);
				ok = 0;
			}
		if (!sqlite3_get_autocommit(conns[i]->db)) {
			printf("# connection %d is inside a transaction\n", i);
			ok = 0;
		}
		pthread_mutex_unlock(&conns[i]->mu);
	}
	return ok;
}

static const char SQL_T_ONE_PARAM[] = "SELECT ?1";
static const char SQL_T_ABS[] = "SELECT abs(value) FROM json_each(?1)";
static const char SQL_T_COUNT_ROWS[] = "SELECT value FROM json_each(?1)";
static const char SQL_T_KV_PUT[] = "INSERT INTO kv (key, value) VALUES (?1, ?2)";
static const char SQL_T_DEFER_FK[] = "PRAGMA defer_foreign_keys = ON";
static const char SQL_T_ORPHAN_ITEM[] =
	"INSERT INTO job_items (job_id, kind, item_id, state, updated_ms) VALUES (?1, 0, 1, 0, 0)";

static int stop_at_second(sqlite3_stmt *st, void *ctx, store_err *err)
{
	(void)err;
	int *seen = ctx;
	*seen = sqlite3_column_int(st, 0);
	return *seen == 2 ? 42 : 0;
}

static int fail_at_second(sqlite3_stmt *st, void *ctx, store_err *err)
{
	(void)ctx;
	if (sqlite3_column_int(st, 0) == 2)
		return store_fail(err, STORE_ENOMEM, "out of memory at row %d", 2);
	return 0;
}

static void t_helper_read_errors(void)
{
	store *s = open_fresh("helpers_read.db");
	store_err err;
	REQUIRE(s);

	/* A bind failure: ?2 is past the statement's only parameter. */
	store_query q = {
		.sql = SQL_T_ONE_PARAM, .what = "testing a bind", .args = {BIND_INT(1), BIND_INT(2)},
	};
	CHECK(store_read(s, &q, &err) == STORE_EINTERNAL && err.code == STORE_EINTERNAL);
	CHECKF(strncmp(err.msg, "testing a bind: ", 16) == 0, "message: %s", err.msg);
	CHECK(q.step_rc == 0 && q.rows == 0);
	CHECK(all_given_back(s));

	/* A step that fails after two rows: the rows came, then the error. */
	q = (store_query){
		.sql = SQL_T_ABS, .what = "testing a step",
		.args = {BIND_TEXT("[1, 2, -9223372036854775808, 4]")},
	};
	CHECK(store_read(s, &q, &err) == STORE_EINTERNAL);
	CHECKF(strcmp(err.msg, "testing a step: integer overflow") == 0, "message: %s", err.msg);
	CHECK(q.rows == 2 && q.step_rc == SQLITE_ERROR);
	CHECK(all_given_back(s));

	/* A row callback's own stop value comes back unchanged, err untouched. */
	int seen = 0;
	err.code = STORE_OK;
	snprintf(err.msg, sizeof err.msg, "untouched");
	q = (store_query){
		.sql = SQL_T_COUNT_ROWS, .what = "testing a stop", .args = {BIND_TEXT("[1, 2, 3]")},
		.row = stop_at_second, .ctx = &seen,
	};
	CHECK(store_read(s, &q, &err) == 42);
	CHECK(seen == 2 && q.rows == 2 && q.step_rc == SQLITE_ROW);
	CHECK(err.code == STORE_OK && strcmp(err.msg, "untouched") == 0);
	CHECK(all_given_back(s));

	/* A row callback's failure is the result, with its message. */
	q = (store_query){
		.sql = SQL_T_COUNT_ROWS, .what = "testing a failing row", .args = {BIND_TEXT("[1, 2, 3]")},
		.row = fail_at_second,
	};
	CHECK(store_read(s, &q, &err) == STORE_ENOMEM && err.code == STORE_ENOMEM);
	CHECKF(strcmp(err.msg, "out of memory at row 2") == 0, "message: %s", err.msg);
	CHECK(all_given_back(s));

	/* More failing reads than there are readers: each reader was given
	 * back, or the last ones would block for ever. */
	for (int i = 0; i < 3 * STORE_NREADERS; i++) {
		q = (store_query){.sql = SQL_T_ONE_PARAM, .what = "again", .args = {BIND_NONE, BIND_INT(1)}};
		CHECK(store_read(s, &q, &err) == STORE_EINTERNAL);
	}
	CHECK(all_given_back(s));

	/* A public read whose bind fails: a key longer than the connections'
	 * length limit. */
	char key[300];
	memset(key, 'k', sizeof key - 1);
	key[sizeof key - 1] = 0;
	for (int i = 0; i < s->nreaders; i++)
		sqlite3_limit(s->readers[i].db, SQLITE_LIMIT_LENGTH, 100);
	char *v = (char *)1;
	CHECK(store_kv_get(s, key, &v, &err) == STORE_EINTERNAL && v == NULL);
	CHECKF(strcmp(err.msg, "reading a key: string or blob too big") == 0, "message: %s", err.msg);
	CHECK(all_given_back(s));
	/* The same connections read normally afterwards. */
	CHECK(store_kv_get(s, "k", &v, &err) == STORE_ENOTFOUND);
	CHECK(all_given_back(s));
	store_close(s);
}

struct kv_pair {
	const char *key, *value;
	int fail_after; /* 1: the body fails after its insert */
};

static int put_then_maybe_fail(store *s, void *ctx, store_err *err)
{
	struct kv_pair *p = ctx;
	int rc = store_run(&s->writer, &(store_query){
		.sql = SQL_T_KV_PUT, .what = "testing a write", .args = {BIND_TEXT(p->key), BIND_TEXT(p->value)},
	}, err);
	if (rc == STORE_OK && p->fail_after)
		rc = store_fail(err, STORE_EINVAL, "refused after the insert");
	return rc;
}

static int put_two_second_unbindable(store *s, void *ctx, store_err *err)
{
	(void)ctx;
	int rc = store_run(&s->writer, &(store_query){
		.sql = SQL_T_KV_PUT, .what = "testing a write", .args = {BIND_TEXT("a"), BIND_TEXT("1")},
	}, err);
	if (rc != STORE_OK)
		return rc;
	return store_run(&s->writer, &(store_query){
		.sql = SQL_T_KV_PUT, .what = "testing a bind in a write",
		.args = {BIND_TEXT("b"), BIND_TEXT("2"), BIND_INT(3)},
	}, err);
}

static int orphan_item_at_commit(store *s, void *ctx, store_err *err)
{
	(void)ctx;
	int rc = store_run(&s->writer, &(store_query){.sql = SQL_T_DEFER_FK, .what = "deferring"}, err);
	if (rc == STORE_OK)
		rc = store_run(&s->writer, &(store_query){
			.sql = SQL_T_ORPHAN_ITEM, .what = "queueing an orphan", .args = {BIND_INT(9999)},
		}, err);
	return rc;
}

static int never_called(store *s, void *ctx, store_err *err)
{
	(void)s;
	(void)err;
	*(int *)ctx = 1;
	return STORE_OK;
}

static void t_helper_write_errors(void)
{
	store *s = open_fresh("helpers_write.db");
	store_err err;
	char *v = NULL;
	REQUIRE(s);

	/* A body that fails after its insert: rolled back, its error kept. */
	struct kv_pair p = {"x", "1", 1};
	CHECK(store_write(s, put_then_maybe_fail, &p, &err) == STORE_EINVAL);
	CHECKF(strcmp(err.msg, "refused after the insert") == 0, "message: %s", err.msg);
	CHECK(store_kv_get(s, "x", &v, NULL) == STORE_ENOTFOUND && v == NULL);
	CHECK(all_given_back(s));
	p.fail_after = 0;
	CHECK(store_write(s, put_then_maybe_fail, &p, &err) == STORE_OK);
	REQUIRE(store_kv_get(s, "x", &v, &err) == STORE_OK);
	CHECK(strcmp(v, "1") == 0);
	free(v);
	v = NULL;

	/* A step failure inside a write (x exists: the primary key) is mapped
	 * and rolls back. */
	p.value = "2";
	CHECK(store_write(s, put_then_maybe_fail, &p, &err) == STORE_EEXISTS);
	CHECKF(strcmp(err.msg, "testing a write: already exists") == 0, "message: %s", err.msg);
	REQUIRE(store_kv_get(s, "x", &v, &err) == STORE_OK);
	CHECK(strcmp(v, "1") == 0);
	free(v);
	v = NULL;
	CHECK(all_given_back(s));

	/* The second statement's bind fails: the first one's row goes too. */
	CHECK(store_write(s, put_two_second_unbindable, NULL, &err) == STORE_EINTERNAL);
	CHECKF(strncmp(err.msg, "testing a bind in a write: ", 27) == 0, "message: %s", err.msg);
	CHECK(store_kv_get(s, "a", &v, NULL) == STORE_ENOTFOUND);
	CHECK(all_given_back(s));

	/* A public write whose bind fails: a value past the length limit. */
	char big[300];
	memset(big, 'v', sizeof big - 1);
	big[sizeof big - 1] = 0;
	sqlite3_limit(s->writer.db, SQLITE_LIMIT_LENGTH, 100);
	CHECK(store_kv_set(s, "big", big, &err) == STORE_EINTERNAL);
	CHECKF(strcmp(err.msg, "setting a key: string or blob too big") == 0, "message: %s", err.msg);
	CHECK(store_kv_get(s, "big", &v, NULL) == STORE_ENOTFOUND);
	CHECK(all_given_back(s));
	sqlite3_limit(s->writer.db, SQLITE_LIMIT_LENGTH, 1000000000);

	/* The commit fails (a deferred foreign key): reported as the commit's
	 * error, and the transaction is rolled back. */
	int64_t depth = -1;
	CHECK(store_write(s, orphan_item_at_commit, NULL, &err) == STORE_EINVAL);
	CHECKF(strncmp(err.msg, "committing: ", 12) == 0, "message: %s", err.msg);
	CHECK(store_work_depth(s, &depth, NULL) == STORE_OK && depth == 0);
	CHECK(all_given_back(s));

	/* Another process holds the write lock: the begin fails with
	 * STORE_EBUSY after the busy timeout (shortened here), the body never
	 * runs, and the writer is released. */
	char path[512];
	path_of(path, sizeof path, "helpers_write.db");
	sqlite3 *other = NULL;
	REQUIRE(sqlite3_open(path, &other) == SQLITE_OK);
	REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_busy_timeout(s->writer.db, 50);
	int called = 0;
	CHECK(store_write(s, never_called, &called, &err) == STORE_EBUSY && !called);
	CHECKF(strcmp(err.msg, "starting a write: the database is locked by another process") == 0,
	       "message: %s", err.msg);
	CHECK(store_kv_set(s, "y", "1", &err) == STORE_EBUSY);
	CHECK(all_given_back(s));
	sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(other);
	CHECK(store_kv_set(s, "y", "1", &err) == STORE_OK);
	CHECK(store_write(s, never_called, &called, &err) == STORE_OK && called);
	CHECK(all_given_back(s));
	store_close(s);
}

static void rm_rf(const char *d)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", d);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/test_store.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	TAP_RUN(t_migrations_fresh_and_existing);
	TAP_RUN(t_newer_version_refused);
	TAP_RUN(t_garbage_and_truncated_refused);
	TAP_RUN(t_images_crud);
	TAP_RUN(t_dedupe_by_sha);
	TAP_RUN(t_insert_embedded);
	TAP_RUN(t_insert_many);
	TAP_RUN(t_texts);
	TAP_RUN(t_embeddings_and_changes);
	TAP_RUN(t_job_queue);
	TAP_RUN(t_delete_while_queued);
	TAP_RUN(t_resume_after_crash);
	TAP_RUN(t_texts_insert_queued);
	TAP_RUN(t_job_seal);
	TAP_RUN(t_job_errors);
	TAP_RUN(t_get_many);
	TAP_RUN(t_put_many);
	TAP_RUN(t_complete_many);
	TAP_RUN(t_batches_across_crash);
	TAP_RUN(t_migration_from_v1);
	TAP_RUN(t_watched_files);
	TAP_RUN(t_watch_spares_pinned);
	TAP_RUN(t_migration_pins_from_v2);
	TAP_RUN(t_exif_columns);
	TAP_RUN(t_filter_ids);
	TAP_RUN(t_kv);
	TAP_RUN(t_model_switch);
	TAP_RUN(t_readers_alongside_writer);
	TAP_RUN(t_bad_arguments);
	TAP_RUN(t_helper_read_errors);
	TAP_RUN(t_helper_write_errors);
	rm_rf(dir);
	return tap_done();
}
