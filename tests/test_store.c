/*
 * test_store: the SQLite store against a real SQLite database in a temporary
 * directory: migrations, refusal of newer and damaged databases, images,
 * texts, embeddings and the change log, the job queue across a crash, the
 * key-value table, and readers alongside the writer.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store.h"
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
	TAP_RUN(t_texts);
	TAP_RUN(t_embeddings_and_changes);
	TAP_RUN(t_job_queue);
	TAP_RUN(t_delete_while_queued);
	TAP_RUN(t_resume_after_crash);
	TAP_RUN(t_kv);
	TAP_RUN(t_readers_alongside_writer);
	TAP_RUN(t_bad_arguments);
	rm_rf(dir);
	return tap_done();
}
